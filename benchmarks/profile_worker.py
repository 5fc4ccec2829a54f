"""Where a worker's CPU goes per clip: one submission through a profiled solo-pool worker.

Starts an embedded Redis and one ``celery worker -P solo`` (consumer and task in one
process, so one profile sees message decode, the task and Celery's bookkeeping) under
``cProfile`` with a CPU-time clock, submits the first ``--limit`` clips of
../shared/data/us8k-subset with ``submit-dataset --wait``, stops the worker and prints
the CPU ms per clip of the parts named in ``PARTS`` (cumulative time of those
functions, so nested parts are not added twice), plus the ten costliest functions
by own time. The worker's start-up (imports, preload) is excluded: profiling starts
when the worker is ready (``worker_ready``). cProfile adds a cost per Python call, so
call-heavy parts (Celery, kombu) read somewhat high; bench_queue_cpu.py gives the
unprofiled totals.

    .venv/bin/python benchmarks/profile_worker.py [--limit N] [--copies K]
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import SUBSET, subset_dataset

from contract.settings import Settings
from orchestrator.embedded_redis import EmbeddedRedis
from orchestrator.health import wait_for_workers
from orchestrator.local_workers import WorkerKind, start_worker, stop_worker, worker_command

# label -> (file suffix, function name) whose cumulative CPU time is the part's cost
PARTS = {
    "whole task (Celery trace, all below)": ("celery/app/trace.py", "trace_task"),
    "features (featurize_file: decode + compute)": ("workers/featurize.py", "featurize_file"),
    "task body (_extract_message)": ("workers/tasks.py", "_extract_message"),
    "store handle (ctx.store)": ("workers/context.py", "store"),
    "chunk read-back (info)": ("storage/feature_store.py", "read_chunk_info"),
    "chunk read-back (windows)": ("storage/feature_store.py", "read_chunk_windows"),
    "chunk write (write_chunk)": ("storage/feature_store.py", "write_chunk"),
    "padded_clip": ("storage/feature_store.py", "padded_clip"),
    "Redis outcomes (record_outcomes)": ("workers/redis_records.py", "record_outcomes"),
    "message decode (ExtractBatch.from_dict)": ("contract/wire.py", "from_dict"),
    "events (EventDispatcher.send)": ("celery/events/dispatcher.py", "send"),
    "logging (Logger._log)": ("logging/__init__.py", "_log"),
    "kombu: message received (on_task_received)": (
        "celery/worker/consumer/consumer.py",
        "on_task_received",
    ),
    "kombu: ack": ("kombu/message.py", "ack"),
    "kombu: Redis poll (brpop read)": ("kombu/transport/redis.py", "_brpop_read"),
}


def _profiled_worker(prof_path: str, argv: list[str]) -> None:
    """Run ``celery`` with ``argv`` in this process, profiling from worker_ready on."""
    import cProfile
    import time

    from celery.bin.celery import main as celery_main
    from celery.signals import worker_process_init, worker_ready, worker_shutting_down

    prof = cProfile.Profile(time.process_time)

    @worker_ready.connect(weak=False)
    def _start(**_: object) -> None:
        prof.enable()

    @worker_process_init.connect(weak=False)
    def _not_in_children(**_: object) -> None:
        prof.disable()  # a prefork child: only the main process is profiled

    @worker_shutting_down.connect(weak=False)
    def _stop(**_: object) -> None:
        prof.disable()
        prof.dump_stats(prof_path)

    sys.argv = ["celery", *argv]
    celery_main()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SUBSET)
    parser.add_argument("--limit", type=int, default=786)
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--pool", default="solo", help="solo (default) or prefork")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--dump", help="also save the profile (pstats) here")
    parser.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _profiled_worker(args.worker[0], args.worker[1:])
        return
    work_parent = Settings.from_env().home
    work_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="profile-worker-", dir=work_parent) as tmp:
        work = Path(tmp)
        root = subset_dataset(args.data, work / "data", limit=args.limit, copies=args.copies)
        n = len(list(root.glob("audio/fold*/*.wav")))
        home = work / "home"
        server = EmbeddedRedis.for_home(home)
        env = {
            **os.environ,
            "OPENBLAS_NUM_THREADS": "1",
            "ESC_HOME": str(home),
            "REDIS_URL": server.ensure_running(),
        }
        prof_path = str(work / "worker.prof")
        cmd = worker_command(
            WorkerKind.EXTRACT, concurrency=1, name="prof@%h", loglevel="WARNING", pool=args.pool
        )
        celery_args = cmd[cmd.index("celery") + 1 :]
        worker = start_worker(
            [sys.executable, __file__, "--worker", prof_path, *celery_args],
            env=env,
            log_path=str(home / "worker.log"),
        )
        try:
            wait_for_workers(Settings.from_env(env), count=1)
            store = work / "store.zarr"
            subprocess.run(
                [
                    *(sys.executable, "-m", "orchestrator", "submit-dataset", str(root)),
                    *("--store", str(store), "--json"),
                ],
                env=env,
                capture_output=True,
                check=True,
            )
        finally:
            stop_worker(worker, timeout=60)
            server.stop()
        stats = pstats.Stats(prof_path)
        _report(stats, n, args.top)
        if args.dump:
            stats.dump_stats(args.dump)


def _report(stats: pstats.Stats, n: int, top: int) -> None:
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in raw.values())
    print(f"\n{n} clips; profiled worker CPU {total / n * 1000:.3f} ms per clip (all threads)")
    print(f"{'part':48} {'calls':>7} {'CPU ms/clip':>12}")
    for label, (suffix, func) in PARTS.items():
        calls = cum = 0.0
        for (file, _line, name), (_cc, nc, _tt, ct, _callers) in raw.items():
            if name == func and file.replace(os.sep, "/").endswith(suffix):
                calls += nc
                cum += ct
        print(f"{label:48} {int(calls):>7} {cum / n * 1000:>12.3f}")
    print(f"\ntop {top} functions by own CPU time (ms per clip):")
    ranked = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    for (file, line, name), (_cc, nc, tt, _ct, _callers) in ranked:
        short = "/".join(Path(file).parts[-2:])
        print(f"  {tt / n * 1000:8.3f}  {nc:>8}  {short}:{line} {name}")


if __name__ == "__main__":
    main()
