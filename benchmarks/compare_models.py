"""The accuracy target, reproduced through the real queue: default model versus the notebook's.

On ../shared/data/us8k-subset (two real folds), with an embedded Redis in a
temporary state directory, one extraction worker and one training worker (real
``celery worker`` processes):

1. ``orchestrator submit-dataset`` extracts the subset into a new store;
2. ``orchestrator submit-cv --plan official --model notebook --wait``;
3. ``orchestrator submit-cv --plan official --model default --wait``;
4. both reports are printed (``orchestrator cv-report``) and the difference of
   mean clip accuracy.

With two folds the official plan has two trials: train on one fold (minus a 15%
validation part split by Freesound recording id), test on the other. Nothing is
tuned on the test folds: early stopping watches the validation part only.

    .venv/bin/python benchmarks/compare_models.py [--data PATH] [--epochs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import SUBSET

from orchestrator.embedded_redis import EmbeddedRedis
from orchestrator.local_workers import (
    WorkerKind,
    start_worker,
    stop_worker,
    worker_command,
)

DEFAULT_DATA = SUBSET.parent


def orchestrator(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], env=env, text=True, capture_output=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--keep", type=Path, help="keep the store and logs in this folder")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"no dataset at {args.data}", file=sys.stderr)
        raise SystemExit(2)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        home = work / "home"
        server = EmbeddedRedis.for_home(home)
        env = {**os.environ, "ESC_HOME": str(home), "REDIS_URL": server.ensure_running()}
        store = str(work / "us8k-subset.zarr")
        procs = [
            start_worker(
                worker_command(WorkerKind.EXTRACT, concurrency=2, name="extract@%h"),
                env=env,
                log_path=str(work / "extract.log"),
            ),
            start_worker(
                worker_command(WorkerKind.TRAIN, name="train@%h"),
                env=env,
                log_path=str(work / "train.log"),
            ),
        ]
        try:
            extracted = orchestrator(env, "submit-dataset", str(args.data), "--store", store)
            print(extracted.stderr.strip().splitlines()[-1], file=sys.stderr)
            means = {}
            for model in ("notebook", "default"):
                run = orchestrator(
                    env,
                    *("submit-cv", "--store", store, "--plan", "official", "--model", model),
                    *("--epochs", str(args.epochs), "--wait", "--json"),
                )
                if run.returncode != 0:
                    raise SystemExit(f"{model}: submit-cv failed\n{run.stderr[-3000:]}")
                report = json.loads(run.stdout)
                means[model] = report["aggregate"]["mean"]["clip_accuracy"]
                shown = orchestrator(
                    {**env, "COLUMNS": "160"}, "cv-report", report["run_id"], "--store", store
                )
                print(shown.stdout)
        finally:
            for p in procs:
                stop_worker(p)
            server.stop()
    gain = 100 * (means["default"] - means["notebook"])
    print(
        f"mean clip accuracy: notebook {means['notebook']:.3f}, default {means['default']:.3f} "
        f"({gain:+.1f} points)"
    )


if __name__ == "__main__":
    main()
