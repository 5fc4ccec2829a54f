"""Where a queued clip's time goes: CPU seconds and Redis commands per clip, by batch size.

CPU time (user + system) depends much less on other jobs than wall time does, so this
attributes the queue's cost on a busy machine. In one run, on the real clips of
../shared/data/us8k-subset, each round measures:

1. the pure loop (``featurize_file`` over every clip) in this process, with freed
   memory kept in the heap as worker processes run it: CPU ms per clip;
2. for each batch size (clips per store chunk and per message): one
   ``submit-dataset --wait`` into a fresh store, through one idle worker process of
   concurrency 1 with its own embedded Redis: the worker's CPU (main process and pool
   child) per clip, the CLI process's CPU for the whole submission, and the Redis
   commands per clip (``INFO stats``).

    .venv/bin/python benchmarks/bench_queue_cpu.py [--limit N] [--batch-sizes 8,32] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import redis
from _common import SUBSET, children_cpu, subset_dataset, worker_tree_cpu
from bench_queue import QueueSetup

from contract.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SUBSET)
    parser.add_argument("--limit", type=int, default=786)
    parser.add_argument("--batch-sizes", default="8,32")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    from workers.allocator import keep_freed_memory
    from workers.features import FeatureConfig
    from workers.featurize import featurize_file

    keep_freed_memory()
    load_before = os.getloadavg()[0]
    config = FeatureConfig()
    work_parent = Settings.from_env().home
    work_parent.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[tuple[float, float, float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-queue-cpu-", dir=work_parent) as tmp:
        work = Path(tmp)
        root = subset_dataset(args.data, work / "data", limit=args.limit, copies=1)
        files = sorted(root.glob("audio/fold*/*.wav"))
        n = len(files)
        setups: dict[int, QueueSetup] = {}
        try:
            for b in sizes:
                (work / f"b{b}").mkdir()
                setups[b] = QueueSetup([1], work / f"b{b}", b)
            featurize_file(files[0], config)  # warm-up
            for _ in range(args.repeat):
                started = time.process_time()
                for f in files:
                    featurize_file(f, config)
                loop = (time.process_time() - started) / n * 1000
                rows.setdefault("pure loop (this process)", []).append((loop, 0, 0, 0, 0))
                for b, setup in setups.items():
                    client = redis.Redis.from_url(setup.env["REDIS_URL"])
                    cmds = client.info("stats")["total_commands_processed"]
                    (main, child), cli = worker_tree_cpu(setup.procs[0].pid), children_cpu()
                    done, _secs = setup.submit(root)
                    if done != n:
                        raise SystemExit(f"{done} of {n} clips done with batch size {b}")
                    main_after, child_after = worker_tree_cpu(setup.procs[0].pid)
                    main = (main_after - main) / n * 1000
                    child = (child_after - child) / n * 1000
                    cli = children_cpu() - cli
                    cmds = (client.info("stats")["total_commands_processed"] - cmds) / n
                    rows.setdefault(f"queue, {b} clips per chunk/message", []).append(
                        (main + child, main, child, cli, cmds)
                    )
        finally:
            for setup in setups.values():
                setup.close()
    loop = statistics.median(v[0] for v in rows["pure loop (this process)"])
    print(
        f"\n{'method':38} {'CPU ms/clip':>12} {'vs loop':>8} {'main ms':>8} {'child ms':>9} "
        f"{'CLI CPU s':>10} {'Redis cmds/clip':>16}"
    )
    for label, values in rows.items():
        cpu, main, child, cli, cmds = (statistics.median(v[k] for v in values) for k in range(5))
        print(
            f"{label:38} {cpu:>12.2f} {loop / cpu:>7.2f}x {main:>8.2f} {child:>9.2f} "
            f"{cli:>10.2f} {cmds:>16.2f}"
        )
    print(
        f"\n{n} clips, medians of {args.repeat} rounds; worker CPU = main process + pool "
        f"child ('main ms', 'child ms': each per clip); load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after; cores: {os.cpu_count()}"
    )


if __name__ == "__main__":
    main()
