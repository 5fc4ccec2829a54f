"""Start-up cost of the processes the pipeline starts often: workers and ``status``.

In one run, with an embedded Redis of its own, each measured ``--repeat`` times (best
shown; wall seconds and the CPU seconds of the process and its children):

1. an extraction worker and a training worker, from ``Popen`` until they answer a ping
   (``orchestrator.health.wait_for_workers``), with the CPU they used by then;
2. ``orchestrator status <id> --json`` for an unknown submission (Python start-up, the
   imports, one Redis round trip, the error message);
3. for reference: a bare ``python -c pass``, and ``import librosa.filters, scipy.signal``,
   which extraction needed for its filterbank and window before they were written out
   in numpy (``workers.features``), so every worker paid it at start.

    .venv/bin/python benchmarks/bench_startup.py [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from contract.settings import Settings
from orchestrator.embedded_redis import EmbeddedRedis
from orchestrator.health import wait_for_workers
from orchestrator.local_workers import WorkerKind, start_worker, stop_worker, worker_command


def _worker(kind: WorkerKind, env: dict[str, str], log: str) -> tuple[float, float]:
    cmd = worker_command(kind, concurrency=1, name=f"startup-{kind.value}@%h", loglevel="WARNING")
    started = time.perf_counter()
    proc = start_worker(cmd, env=env, log_path=log)
    try:
        wait_for_workers(Settings.from_env(env), count=1)
        wall = time.perf_counter() - started
        tree = psutil.Process(proc.pid)
        cpu = 0.0
        for p in [tree, *tree.children(recursive=True)]:
            t = p.cpu_times()
            cpu += t.user + t.system
    finally:
        stop_worker(proc)
    return wall, cpu


def _command(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(args, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    py = sys.executable
    rows: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        server = EmbeddedRedis.for_home(Path(tmp) / "home")
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "REDIS_URL": server.ensure_running()}
        env["ESC_HOME"] = str(Path(tmp) / "home")
        log = str(Path(tmp) / "worker.log")
        try:
            for _ in range(args.repeat):
                for kind in (WorkerKind.EXTRACT, WorkerKind.TRAIN):
                    label = f"{kind.value} worker, until it answers a ping"
                    rows.setdefault(label, []).append(_worker(kind, env, log))
                status = [py, "-m", "orchestrator", "status", "no-such-id", "--json"]
                rows.setdefault("orchestrator status --json", []).append(_command(status, env))
                rows.setdefault("python -c pass", []).append(_command([py, "-c", "pass"], env))
                old = [py, "-c", "import librosa.filters, scipy.signal"]
                rows.setdefault("import librosa.filters, scipy.signal", []).append(
                    _command(old, env)
                )
        finally:
            server.stop()
    print(f"\n{'process':42} {'best wall s':>12} {'best CPU s':>11}")
    for label, values in rows.items():
        print(f"{label:42} {min(w for w, _ in values):>12.2f} {min(c for _, c in values):>11.2f}")
    print(f"\nbest of {args.repeat}; cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
