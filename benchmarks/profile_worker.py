"""Where a worker's CPU goes per clip: one submission through a profiled solo-pool worker.

Starts an embedded Redis and one ``celery worker -P solo`` (consumer and task in one
process, so one profile sees message decode, the task and Celery's bookkeeping) under
``cProfile`` with a CPU-time clock, submits the first ``--limit`` clips of
../shared/data/us8k-subset with ``submit-dataset --wait``, stops the worker and prints
the CPU ms per clip of the parts named in ``PARTS`` (cumulative time of those functions:
a part includes the parts it calls, so the rows do not add up), plus the costliest
functions by own time. The worker's start-up (imports, preload) is excluded: profiling
starts when the worker is ready (``worker_ready``). ``--pool prefork`` profiles the main
process of a prefork worker instead (receiving, hand-over, acknowledgement, events).
cProfile adds a cost per Python call, so code that makes many calls (path checks,
Celery, kombu) reads several times too high; ``--in-process`` and bench_queue_cpu.py
give unprofiled numbers.

``--in-process`` measures instead, without a profiler, Celery or Redis: for each store
chunk of clips in turn, the pure loop (``featurize_file``) and ``extract_jobs`` (what a
task does with the chunk: checks, features, the chunk assembled and written), each in
CPU time, and within ``extract_jobs`` the chunk write, the job checks and the row copy.

    .venv/bin/python benchmarks/profile_worker.py [--limit N] [--copies K] [--pool prefork]
    .venv/bin/python benchmarks/profile_worker.py --in-process [--limit N] [--repeat R]
"""

from __future__ import annotations

import argparse
import collections
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    "job checks (check_job)": ("workers/extraction.py", "check_job"),
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
    "redis-py client objects made (Redis.__init__)": ("redis/client.py", "__init__"),
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


def _in_process(root: Path, work: Path, repeat: int) -> None:
    """CPU ms per clip of the pure loop and of ``extract_jobs``, chunk by chunk, interleaved."""
    from contract.wire import ExtractJob
    from orchestrator.datasets import scan_dataset
    from storage.feature_store import FeatureStore
    from storage.store_layout import create_or_extend
    from workers import extraction
    from workers.allocator import keep_freed_memory
    from workers.features import FeatureConfig
    from workers.featurize import featurize_file

    keep_freed_memory()
    config = FeatureConfig()
    manifest = scan_dataset(root)
    cpu: collections.Counter[str] = collections.Counter()

    def timed(fn: Callable[..., Any], key: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                cpu[key] += time.process_time() - started

        return wrapper

    extraction.check_job = timed(extraction.check_job, "  job checks (check_job)")
    n = 0
    for r in range(repeat):
        url = str(work / f"in-process-{r}.zarr")
        shape = (config.max_windows, *config.window_shape)
        create_or_extend(url, manifest, config.to_dict(), shape)
        store = FeatureStore.open(url, mode="r+")
        store.write_chunk = timed(store.write_chunk, "  chunk write (write_chunk)")  # type: ignore[method-assign]
        store.padded_clip = timed(store.padded_clip, "  row copy (padded_clip)")  # type: ignore[method-assign]
        rel = store.rel_paths()
        jobs = [
            ExtractJob("profile", url, store.dataset_root, str(rel[i]), i, store.generation)
            for i in range(store.n_clips)
        ]
        featurize_file(Path(store.dataset_root) / jobs[0].rel_path, config)  # warm-up
        per = store.clips_per_chunk
        for start in range(0, len(jobs), per):
            chunk = jobs[start : start + per]
            started = time.process_time()
            for job in chunk:
                featurize_file(Path(store.dataset_root) / job.rel_path, config)
            cpu["pure loop (featurize_file)"] += time.process_time() - started
            started = time.process_time()
            extraction.extract_jobs(chunk, store)
            cpu["extract_jobs (one chunk at a time)"] += time.process_time() - started
        n += len(jobs)
    print(
        f"\n{n // repeat} clips x {repeat} rounds, CPU ms per clip (load average "
        f"{os.getloadavg()[0]:.1f} at the end)"
    )
    order = ["pure loop (featurize_file)", "extract_jobs (one chunk at a time)"]
    for key in [*order, *sorted(k for k in cpu if k not in order)]:
        print(f"{key:44} {cpu[key] / n * 1000:8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SUBSET)
    parser.add_argument("--limit", type=int, default=786)
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--pool", default="solo", help="solo (default) or prefork")
    parser.add_argument("--in-process", action="store_true", help="no worker: see above")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of --in-process")
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
        if args.in_process:
            _in_process(root, work, args.repeat)
            return
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
        calls = cum = 0.0  # the outermost of the functions of that name in that file
        for (file, _line, name), (_cc, nc, _tt, ct, _callers) in raw.items():
            if name == func and file.replace(os.sep, "/").endswith(suffix) and ct > cum:
                calls, cum = nc, ct
        print(f"{label:48} {int(calls):>7} {cum / n * 1000:>12.3f}")
    print(f"\ntop {top} functions by own CPU time (ms per clip):")
    ranked = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    for (file, line, name), (_cc, nc, tt, _ct, _callers) in ranked:
        short = "/".join(Path(file).parts[-2:])
        print(f"  {tt / n * 1000:8.3f}  {nc:>8}  {short}:{line} {name}")


if __name__ == "__main__":
    main()
