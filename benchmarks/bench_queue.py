"""End-to-end extraction throughput through the real queue versus the pure loop.

Measures, in one run, on the real clips of ../shared/data/us8k-subset:

1. the pure extraction loop in one process (load_audio + extract_clip_features);
2. ``orchestrator submit-dataset --wait`` end to end with one worker process
   (concurrency 1);
3. the same with two worker processes (concurrency 1 each);
4. the same with one worker process of concurrency 2.

Each queue run uses a fresh store and a fresh embedded Redis; its time runs from
the start of ``submit-dataset`` (scan, store layout, enqueue) to the last clip
recorded, with workers already started and idle. Prints clips/s and ratios.

    .venv/bin/python benchmarks/bench_queue.py [--data PATH] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.embedded_redis import EmbeddedRedis  # noqa: E402
from orchestrator.local_workers import (  # noqa: E402
    WorkerKind,
    start_worker,
    stop_worker,
    worker_command,
)
from workers.audio import load_audio  # noqa: E402
from workers.features import FeatureConfig, extract_clip_features  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "us8k-subset" / "UrbanSound8K"


def subset_dataset(source: Path, limit: int, out: Path) -> Path:
    """A dataset holding the first ``limit`` files of ``source`` (links, same metadata)."""
    root = out / "UrbanSound8K"
    files = sorted(source.glob("audio/fold*/*.wav"))[:limit]
    for f in files:
        target = root / "audio" / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    (root / "metadata").mkdir(parents=True)
    shutil.copyfile(
        source / "metadata" / "UrbanSound8K.csv", root / "metadata" / "UrbanSound8K.csv"
    )
    return root


def pure_loop(root: Path) -> tuple[int, float]:
    config = FeatureConfig()
    files = sorted(root.glob("audio/fold*/*.wav"))
    y, _ = load_audio(files[0])
    extract_clip_features(y, config)  # warm-up
    started = time.perf_counter()
    for f in files:
        y, _ = load_audio(f, sr=config.sample_rate, max_seconds=config.max_seconds)
        extract_clip_features(y, config)
    return len(files), time.perf_counter() - started


def queue_run(root: Path, workers: list[int], work: Path) -> tuple[int, float]:
    """Extract ``root`` through Redis with one worker process per entry (its concurrency)."""
    home = work / f"home-{'-'.join(map(str, workers))}"
    server = EmbeddedRedis.for_home(home)
    url = server.ensure_running()
    env = {**os.environ, "ESC_HOME": str(home), "REDIS_URL": url, "OPENBLAS_NUM_THREADS": "1"}
    procs = []
    try:
        for n, conc in enumerate(workers):
            cmd = worker_command(
                WorkerKind.EXTRACT, concurrency=conc, name=f"bench{n}@%h", loglevel="WARNING"
            )
            procs.append(start_worker(cmd, env=env, log_path=str(home / f"worker{n}.log")))
        _wait_ready(env, len(workers))
        store = work / f"store-{'-'.join(map(str, workers))}.zarr"
        started = time.perf_counter()
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "orchestrator", "submit-dataset", str(root)),
                *("--store", str(store), "--json"),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"submit-dataset failed:\n{proc.stderr[-2000:]}")
        import json

        return int(json.loads(proc.stdout)["done_now"]), elapsed
    finally:
        for p in procs:
            stop_worker(p)
        server.stop()


def _wait_ready(env: dict[str, str], n: int) -> None:
    from workers.celery_app import create_app
    from workers.settings import Settings

    app = create_app(Settings.from_env(env))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(app.control.ping(timeout=1.0) or []) >= n:
            app.close()
            return
    raise SystemExit("workers did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=400, help="clips to use (default 400)")
    args = parser.parse_args()
    if not (args.data / "audio").is_dir():
        print(f"no dataset at {args.data} (needs ../shared/data/us8k-subset)", file=sys.stderr)
        raise SystemExit(2)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = subset_dataset(args.data, args.limit, work / "data")
        rows = []
        n, secs = pure_loop(root)
        base = n / secs
        rows.append(("pure loop, 1 process", n, secs, base))
        for label, workers in (
            ("queue, 1 worker process (c=1)", [1]),
            ("queue, 2 worker processes (c=1 each)", [1, 1]),
            ("queue, 1 worker process (c=2)", [2]),
        ):
            n, secs = queue_run(root, workers, work)
            rows.append((label, n, secs, n / secs))
    one = rows[1][3]
    header = f"{'method':40} {'clips':>6} {'seconds':>8} {'clips/s':>8} {'vs loop':>8}"
    print(f"\n{header} {'vs 1 proc':>9}")
    for label, n, secs, rate in rows:
        print(
            f"{label:40} {n:>6} {secs:>8.2f} {rate:>8.1f} {rate / base:>7.2f}x {rate / one:>8.2f}x"
        )
    print(f"\ncores: {os.cpu_count()}; the pure loop is single-process")


if __name__ == "__main__":
    main()
