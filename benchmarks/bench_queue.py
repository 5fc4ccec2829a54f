"""End-to-end extraction throughput through the real queue versus the pure loop.

Measures, in one run, on the real clips of ../shared/data/us8k-subset:

1. the pure extraction loop in one process (load_audio + extract_clip_features),
   each time in a fresh process: with glibc's default allocator settings, and with
   freed memory kept in the heap as worker processes run it
   (``ESC_KEEP_FREED_MEMORY``, see workers/allocator.py); ratios use the faster;
2. ``orchestrator submit-dataset --wait`` end to end with one worker process
   (concurrency 1);
3. the same with two worker processes (concurrency 1 each);
4. the same with one worker process of concurrency 2.

Each queue configuration has its own embedded Redis and workers, started before
the first round and idle between runs. Every submission goes to a fresh store and
is timed from the start of the ``submit-dataset`` command (interpreter start,
imports, scan, store layout, enqueue) to its exit after the last clip. The host's
speed drifts by 10-30% over minutes, so each round measures every row once, back
to back, and the table shows each row's best round plus the median over rounds of
the ratios taken within one round. All processes run with OPENBLAS_NUM_THREADS=1.
Stores and the dataset copy go under ``--work-dir`` (default: ESC_HOME, where the
default store lives), not /tmp, which is a tmpfs on some machines.

``--copies K`` repeats the subset K times under new fsIDs (hard links, extra
metadata rows), to measure at the scale of the full dataset (8,732 clips), where
the command's fixed start-up (about one second) weighs less.

    .venv/bin/python benchmarks/bench_queue.py [--limit N] [--copies K] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SUBSET, subset_dataset

from contract.settings import Settings
from orchestrator.embedded_redis import EmbeddedRedis
from orchestrator.health import wait_for_workers
from orchestrator.local_workers import WorkerKind, start_worker, stop_worker, worker_command

DEFAULT_DATA = SUBSET
BASE_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}


def pure_loop(root: Path, *, keep_freed_memory: bool) -> float:
    """Seconds of the pure loop over ``root``'s clips, run in a fresh process."""
    cmd = [sys.executable, __file__, "--pure-loop", str(root)]
    if keep_freed_memory:
        cmd.append("--keep-freed-memory")
    out = subprocess.run(cmd, env=BASE_ENV, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout)["seconds"])


def _pure_loop_here(root: Path, keep_freed_memory: bool) -> None:
    from workers.allocator import keep_freed_memory as keep
    from workers.features import FeatureConfig
    from workers.featurize import featurize_file

    if keep_freed_memory and not keep():
        raise SystemExit("mallopt is not available here")
    config = FeatureConfig()
    files = sorted(root.glob("audio/fold*/*.wav"))
    featurize_file(files[0], config)  # warm-up
    started = time.perf_counter()
    for f in files:
        featurize_file(f, config)
    print(json.dumps({"clips": len(files), "seconds": time.perf_counter() - started}))


class QueueSetup:
    """An embedded Redis and idle worker processes (one per entry: its concurrency)."""

    def __init__(self, workers: list[int], work: Path, batch_size: int | None) -> None:
        self.tag = "-".join(map(str, workers))
        self.work = work
        home = work / f"home-{self.tag}"
        self.server = EmbeddedRedis.for_home(home)
        self.env = {**BASE_ENV, "ESC_HOME": str(home), "REDIS_URL": self.server.ensure_running()}
        if batch_size:
            self.env["ESC_EXTRACT_BATCH"] = str(batch_size)
        self.procs = []
        for n, conc in enumerate(workers):
            cmd = worker_command(
                WorkerKind.EXTRACT, concurrency=conc, name=f"bench{n}@%h", loglevel="WARNING"
            )
            log = str(home / f"worker{n}.log")
            self.procs.append(start_worker(cmd, env=self.env, log_path=log))
        wait_for_workers(Settings.from_env(self.env), count=len(workers))
        self.runs = 0

    def submit(self, root: Path) -> tuple[int, float]:
        """One ``submit-dataset --wait`` into a fresh store: clips done, seconds."""
        store = self.work / f"store-{self.tag}-{self.runs}.zarr"
        self.runs += 1
        started = time.perf_counter()
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "orchestrator", "submit-dataset", str(root)),
                *("--store", str(store), "--json"),
            ],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"submit-dataset failed:\n{proc.stderr[-2000:]}")
        shutil.rmtree(store, ignore_errors=True)
        return int(json.loads(proc.stdout)["done_now"]), elapsed

    def close(self) -> None:
        for p in self.procs:
            stop_worker(p)
        self.server.stop()


LOOP_ROWS = ("pure loop, glibc defaults", "pure loop, freed memory kept")
QUEUE_ROWS = (
    ("queue, 1 worker process (c=1)", [1]),
    ("queue, 2 worker processes (c=1 each)", [1, 1]),
    ("queue, 1 worker process (c=2)", [2]),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=400, help="clips to use (default 400)")
    parser.add_argument("--copies", type=int, default=1, help="the subset this many times")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--batch-size", type=int, help="clips per message (default: settings)")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where stores go (default: ESC_HOME)"
    )
    parser.add_argument("--pure-loop", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--keep-freed-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pure_loop:
        _pure_loop_here(args.pure_loop, args.keep_freed_memory)
        return
    if not (args.data / "audio").is_dir():
        print(f"no dataset at {args.data} (needs ../shared/data/us8k-subset)", file=sys.stderr)
        raise SystemExit(2)
    work_parent = args.work_dir or Settings.from_env().home
    work_parent.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, list[float]] = {}
    clips: dict[str, int] = {}
    loads: list[float] = []  # 1-minute load average before each row's run, and at the end
    with tempfile.TemporaryDirectory(prefix="bench-queue-", dir=work_parent) as tmp:
        work = Path(tmp)
        root = subset_dataset(args.data, work / "data", limit=args.limit, copies=args.copies)
        n = len(list(root.glob("audio/fold*/*.wav")))
        setups = {}
        try:
            for label, workers in QUEUE_ROWS:
                setups[label] = QueueSetup(workers, work, args.batch_size)
            for _ in range(args.repeat):
                for label, keep in zip(LOOP_ROWS, (False, True), strict=True):
                    loads.append(os.getloadavg()[0])
                    seconds.setdefault(label, []).append(pure_loop(root, keep_freed_memory=keep))
                    clips[label] = n
                for label, setup in setups.items():
                    loads.append(os.getloadavg()[0])
                    done, secs = setup.submit(root)
                    seconds.setdefault(label, []).append(secs)
                    clips[label] = done
            loads.append(os.getloadavg()[0])
        finally:
            for setup in setups.values():
                setup.close()
    _print_table(seconds, clips, args, work_parent)
    print(f"load average (1 min) {min(loads):.1f}-{max(loads):.1f} during the run")


def _print_table(
    seconds: dict[str, list[float]], clips: dict[str, int], args: argparse.Namespace, where: Path
) -> None:
    rounds = len(seconds[LOOP_ROWS[0]])
    loop = [min(a, b) for a, b in zip(*(seconds[r] for r in LOOP_ROWS), strict=True)]
    one = seconds[QUEUE_ROWS[0][0]]
    best_loop = min(loop)
    best_one = min(one)
    header = f"{'method':38} {'clips':>6} {'best s':>7} {'clips/s':>8} {'vs loop':>8}"
    print(f"\n{header} {'vs 1 proc':>9} {'median vs loop':>15} {'median vs 1 proc':>17}")
    for label, secs in seconds.items():
        rate = clips[label] / min(secs)
        per_round_loop = statistics.median(loop[i] / secs[i] for i in range(rounds))
        per_round_one = statistics.median(one[i] / secs[i] for i in range(rounds))
        print(
            f"{label:38} {clips[label]:>6} {min(secs):>7.2f} {rate:>8.1f} "
            f"{best_loop / min(secs):>7.2f}x {best_one / min(secs):>8.2f}x "
            f"{per_round_loop:>14.2f}x {per_round_one:>16.2f}x"
        )
    batch = args.batch_size or Settings.from_env().extract_batch
    print(
        f"\n{rounds} rounds; 'vs loop' against the faster pure loop; clips per message "
        f"{batch}; cores: {os.cpu_count()}; stores under {where}"
    )


if __name__ == "__main__":
    main()
