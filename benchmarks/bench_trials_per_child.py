"""A whole CV run through a real training worker: a fresh pool child per trial (the
default) against one child that runs several trials in a row.

A training worker replaces its pool child after every ``--max-tasks-per-child`` trials
(``ESC_TRIALS_PER_CHILD``, default 1). Each fresh child imports Keras and its backend
and starts it before its trial can train; a child that stays pays that once.

With an embedded Redis in a temporary state directory, one extraction worker extracts
a synthetic 4-fold dataset once; then, alternating the settings each round, a fresh
training worker (a real ``celery worker`` process) with ``--max-tasks-per-child N``
runs ``orchestrator submit-cv --plan official --trials T --wait``. The table: best and
median wall time of the whole ``submit-cv --wait`` (from its start to its exit), the
training worker's CPU seconds over the run, and the run's mean clip accuracy (the
trials are seeded, so a reused child should train what a fresh one trains).

    .venv/bin/python benchmarks/bench_trials_per_child.py [--trials 4] [--epochs 3] \
        [--per-child 1 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from _common import orchestrator, process_tree_cpu

from contract.settings import Settings
from orchestrator.embedded_redis import EmbeddedRedis
from orchestrator.health import expanded_node_name, wait_for_workers
from orchestrator.local_workers import WorkerKind, start_worker, stop_worker, worker_command
from orchestrator.synthetic import make_synthetic_dataset


def run_sampling_rss(
    env: dict[str, str], worker_pid: int, *args: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    """``orchestrator ARGS`` to its exit, and the largest resident set (MB) any pool
    child of the worker had meanwhile (sampled every 0.2 s)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    peak, worker = 0.0, psutil.Process(worker_pid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.2):
            for child in worker.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    peak = max(peak, child.memory_info().rss / 2**20)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-child", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clips", type=int, default=6, help="clips per class per fold")
    args = parser.parse_args()
    runs: dict[int, list[tuple[float, float, float, float]]] = {n: [] for n in args.per_child}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home = work / "home"
        server = EmbeddedRedis.for_home(home)
        env = {**os.environ, "ESC_HOME": str(home), "REDIS_URL": server.ensure_running()}
        root = make_synthetic_dataset(
            work / "data", n_classes=5, folds=max(4, args.trials), seed=3,
            clips_per_class_per_fold=args.clips,
        )  # fmt: skip
        settings = Settings.from_env(env)
        store = str(work / "features.zarr")
        extract = start_worker(
            worker_command(WorkerKind.EXTRACT, concurrency=2, name="extract@%h"),
            env=env,
            log_path=str(work / "extract.log"),
        )
        try:
            done = orchestrator(env, "submit-dataset", str(root), "--store", store, "--json")
            if done.returncode != 0:
                raise SystemExit(f"submit-dataset failed\n{done.stderr[-3000:]}")
        finally:
            stop_worker(extract)
        print(f"extracted {json.loads(done.stdout)['done']} clips", file=sys.stderr)
        for round_ in range(args.rounds):
            for n in args.per_child:
                cmd = worker_command(WorkerKind.TRAIN, name=f"train{n}@%h", max_tasks_per_child=n)
                train = start_worker(cmd, env=env, log_path=str(work / f"train{n}.log"))
                try:
                    wait_for_workers(settings, nodes=[expanded_node_name(f"train{n}@%h")])
                    cpu_before = process_tree_cpu(train.pid)
                    started = time.perf_counter()
                    run, peak = run_sampling_rss(
                        env,
                        train.pid,
                        *("submit-cv", "--store", store, "--plan", "official"),
                        *("--trials", str(args.trials), "--epochs", str(args.epochs)),
                        *("--patience", str(args.epochs), "--wait", "--json"),
                    )
                    wall = time.perf_counter() - started
                    cpu = process_tree_cpu(train.pid) - cpu_before
                finally:
                    stop_worker(train)
                if run.returncode != 0:
                    raise SystemExit(f"submit-cv failed\n{run.stderr[-3000:]}")
                acc = json.loads(run.stdout)["aggregate"]["mean"]["clip_accuracy"]
                runs[n].append((wall, cpu, acc, peak))
                print(
                    f"round {round_}, {n} trial(s) per child: {wall:.1f} s wall, "
                    f"{cpu:.1f} s CPU, clip accuracy {acc:.4f}, peak child RSS {peak:.0f} MB",
                    file=sys.stderr,
                )
        server.stop()
    base = min(r[0] for r in runs[args.per_child[0]])
    print(
        f"\n{args.trials} trials x {args.epochs} epochs, {args.rounds} round(s); "
        "wall = the whole `submit-cv --wait`"
    )
    print("| trials per child | best wall s | median wall s | per trial s | worker CPU s "
          "(median) | vs first row | peak child RSS MB | mean clip accuracy |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for n, rows in runs.items():
        walls = [r[0] for r in rows]
        accs = sorted({f"{r[2]:.4f}" for r in rows})
        print(
            f"| {n} | {min(walls):.1f} | {statistics.median(walls):.1f} | "
            f"{min(walls) / args.trials:.1f} | {statistics.median(r[1] for r in rows):.1f} | "
            f"{base / min(walls):.2f}x | {max(r[3] for r in rows):.0f} | {', '.join(accs)} |"
        )


if __name__ == "__main__":
    main()
