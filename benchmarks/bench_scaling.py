"""End-to-end extraction throughput through the real queue, with 1, 2 and 4 workers.

    .venv/bin/python benchmarks/bench_scaling.py [--data DIR] [--limit 300] [--workers 1,2,4]

For each worker count: a fresh feature store, N ``celery worker -c 1`` processes
(``orchestrator.local_workers``), then ``orchestrator submit-dataset --wait``
timed from the command's start to its end (scan, store layout, enqueue,
extraction, summary). The same run measures the in-process loop
(``load_audio`` + ``extract_clip_features``, no queue, no store) as the
baseline, the Redis commands one task costs and the commands/s this Redis
sustains, and from those estimates the time of the full UrbanSound8K
(8732 clips) on larger clusters. Results are printed as a table and, with
``--json FILE``, written as JSON. docs/scaling.md discusses them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import SUBSET, subset_dataset

from contract.settings import Settings
from orchestrator.datasets import scan_dataset
from orchestrator.embedded_redis import EmbeddedRedis
from orchestrator.health import wait_for_workers
from orchestrator.local_workers import WorkerKind, start_worker, stop_worker, worker_command

DEFAULT_DATA = SUBSET.parent
US8K_CLIPS = 8732
CLI = [sys.executable, "-m", "orchestrator"]


def find_root(data: Path) -> Path:
    for candidate in (data, data / "UrbanSound8K"):
        if (candidate / "metadata" / "UrbanSound8K.csv").is_file():
            return candidate
    raise SystemExit(f"no UrbanSound8K/metadata/UrbanSound8K.csv under {data}")


def in_process(root: Path, rel_paths: list[str]) -> dict[str, float]:
    """The pure extraction loop in this process: decode + features, nothing else.

    Run with freed memory kept in the heap, as worker processes run (see
    workers/allocator.py), so that the comparison measures the queue and the store.
    """
    from workers.allocator import keep_freed_memory
    from workers.features import FeatureConfig
    from workers.featurize import featurize_file

    keep_freed_memory()
    config = FeatureConfig()

    def one(rel: str) -> int:
        return int(featurize_file(root / rel, config).windows.shape[0])

    one(rel_paths[0])  # warm-up (imports, caches)
    start = time.perf_counter()
    windows = sum(one(rel) for rel in rel_paths)
    seconds = time.perf_counter() - start
    return {"clips": len(rel_paths), "windows": windows, "seconds": seconds}


def redis_commands(client: Any) -> int:
    return int(client.info("stats")["total_commands_processed"])


def queued_run(
    root: Path, work: Path, env: dict[str, str], n_workers: int, client: Any
) -> dict[str, Any]:
    store = work / f"store-{n_workers}.zarr"
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    nodes = [f"bench-{n_workers}-{i}@bench" for i in range(n_workers)]
    procs = [
        start_worker(
            worker_command(WorkerKind.EXTRACT, concurrency=1, name=node, loglevel="WARNING"),
            env=env,
            log_path=str(logs / f"{node}.log"),
        )
        for node in nodes
    ]
    try:
        wait_for_workers(Settings.from_env(env), nodes=nodes, timeout=90)
        before = redis_commands(client)
        start = time.perf_counter()
        proc = subprocess.run(
            [*CLI, "submit-dataset", str(root), "--store", str(store), "--wait", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - start
        commands = redis_commands(client) - before
        # The same command again enqueues nothing (every clip is done): its time is the
        # fixed cost of one submission (CLI start, scan, store check, summary).
        start = time.perf_counter()
        subprocess.run(
            [*CLI, "submit-dataset", str(root), "--store", str(store), "--wait", "--json"],
            env=env,
            capture_output=True,
            check=False,
        )
        fixed = time.perf_counter() - start
    finally:
        for p in procs:
            stop_worker(p)
    if proc.returncode != 0:
        raise SystemExit(f"submit-dataset failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)
    n_objects = sum(1 for p in store.rglob("*") if p.is_file())
    return {
        "workers": n_workers,
        "clips": summary["done"],
        "failed": summary["failed"],
        "seconds": seconds,
        "fixed_seconds": fixed,
        "clips_per_second": summary["done"] / seconds,
        "steady_clips_per_second": summary["done"] / max(1e-9, seconds - fixed),
        "redis_commands": commands,
        "store_files": n_objects,
    }


def redis_rate(client: Any, n: int = 20000) -> dict[str, float]:
    """Round trips/s of one client (LPUSH then BRPOP), and pipelined commands/s."""
    key = "bench:rate"
    client.delete(key)
    payload = b"x" * 1500  # about one Celery task message
    start = time.perf_counter()
    for _ in range(n // 4):
        client.lpush(key, payload)
    for _ in range(n // 4):
        client.brpop(key, timeout=1)
    single = (n // 2) / (time.perf_counter() - start)
    start = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.lpush(key, payload)
        if i % 200 == 199:
            pipe.execute()
    pipe.execute()
    for i in range(n):
        pipe.rpop(key)
        if i % 200 == 199:
            pipe.execute()
    pipe.execute()
    pipelined = (2 * n) / (time.perf_counter() - start)
    client.delete(key)
    return {"one_client_round_trips_per_s": single, "pipelined_commands_per_s": pipelined}


def estimate(
    per_clip: float, overhead: float, commands_per_task: float, redis_capacity: float
) -> list[dict[str, Any]]:
    """Full-UrbanSound8K time with P single-threaded worker processes (one core each)."""
    rows = []
    for procs, hosts in ((8, 1), (32, 4), (128, 16)):
        task_seconds = per_clip + overhead
        compute_rate = procs / task_seconds  # clips/s if nothing else limits
        redis_limit = redis_capacity / commands_per_task  # clips/s Redis can carry
        rate = min(compute_rate, redis_limit)
        rows.append(
            {
                "processes": procs,
                "hosts": hosts,
                "clips_per_second": rate,
                "minutes": US8K_CLIPS / rate / 60,
                "redis_commands_per_s": rate * commands_per_task,
                "redis_share": rate * commands_per_task / redis_capacity,
                "limit": "redis" if redis_limit < compute_rate else "cpu",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args()
    src = find_root(args.data)
    counts = [int(x) for x in args.workers.split(",")]

    # beside the default store (ESC_HOME), not in /tmp (a tmpfs on some machines)
    work_parent = Settings.from_env().home
    work_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="esc-bench-", dir=work_parent) as tmp:
        work = Path(tmp)
        root = subset_dataset(src, work / "data", limit=args.limit)
        rel_paths = [c.rel_path for c in scan_dataset(root).clips]
        print(f"{len(rel_paths)} clips from {src}; {os.cpu_count()} CPUs", flush=True)
        home = work / "home"
        server = EmbeddedRedis.for_home(home)
        url = server.ensure_running()
        env = {
            **os.environ,
            "ESC_HOME": str(home),
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        env.pop("REDIS_URL", None)  # the embedded server of this temp ESC_HOME
        import redis

        client = redis.Redis.from_url(url)
        try:
            base = in_process(root, rel_paths)
            print(f"in-process: {base['clips'] / base['seconds']:.2f} clips/s", flush=True)
            runs = []
            for n in counts:
                r = queued_run(root, work, env, n, client)
                print(f"{n} workers: {r['clips_per_second']:.2f} clips/s", flush=True)
                runs.append(r)
            rates = redis_rate(client)
        finally:
            client.close()
            server.stop()

    per_clip = base["seconds"] / base["clips"]
    one = next((r for r in runs if r["workers"] == 1), runs[0])
    # per-task cost in a worker = (time without the fixed submission cost) / clips
    overhead = max(0.0, (one["seconds"] - one["fixed_seconds"]) / one["clips"] - per_clip)
    commands_per_task = one["redis_commands"] / one["clips"]
    # One Redis core carries roughly the pipelined rate; real clients are not
    # pipelined but many, so that rate is the ceiling we plan against.
    capacity = rates["pipelined_commands_per_s"]
    est = estimate(per_clip, overhead, commands_per_task, capacity)

    print()
    print(
        f"{'setup':<26}{'clips':>7}{'seconds':>10}{'clips/s':>10}{'speed-up':>10}"
        f"{'fixed s':>9}{'steady clips/s':>16}"
    )
    base_rate = base["clips"] / base["seconds"]
    print(f"{'in-process loop':<26}{base['clips']:>7}{base['seconds']:>10.1f}{base_rate:>10.2f}")
    for r in runs:
        label = f"queue, {r['workers']} worker proc(s)"
        speedup = r["clips_per_second"] / runs[0]["clips_per_second"]
        print(
            f"{label:<26}{r['clips']:>7}{r['seconds']:>10.1f}"
            f"{r['clips_per_second']:>10.2f}{speedup:>9.2f}x"
            f"{r['fixed_seconds']:>9.1f}{r['steady_clips_per_second']:>16.2f}"
        )
    print()
    print(f"per clip (in-process): {per_clip * 1000:.1f} ms")
    print(f"per-task overhead through the queue (1 worker): {overhead * 1000:.1f} ms")
    print(f"Redis commands per task: {commands_per_task:.1f}")
    print(f"store files per clip: {one['store_files'] / one['clips']:.2f}")
    print(
        f"Redis: {rates['one_client_round_trips_per_s']:.0f} round trips/s from one client, "
        f"{rates['pipelined_commands_per_s']:.0f} commands/s pipelined"
    )
    print()
    print(f"estimate for UrbanSound8K ({US8K_CLIPS} clips):")
    header = ("processes", 10), ("hosts", 7), ("clips/s", 10), ("minutes", 9), ("Redis cmd/s", 13)
    print("".join(f"{name:>{width}}" for name, width in header) + f"{'limit':>7}")
    for e in est:
        print(
            f"{e['processes']:>10}{e['hosts']:>7}{e['clips_per_second']:>10.1f}"
            f"{e['minutes']:>9.1f}{e['redis_commands_per_s']:>13.0f}{e['limit']:>7}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cpus": os.cpu_count(),
                    "in_process": base,
                    "runs": runs,
                    "redis": rates,
                    "per_clip_seconds": per_clip,
                    "overhead_seconds": overhead,
                    "commands_per_task": commands_per_task,
                    "estimate": est,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
