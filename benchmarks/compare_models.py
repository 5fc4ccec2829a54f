"""The accuracy target, reproduced through the real queue: three recipes side by side.

On ../shared/data/us8k-subset (two real folds), with an embedded Redis in a
temporary state directory, one extraction worker and one training worker (real
``celery worker`` processes):

1. ``orchestrator submit-dataset --variants VARIANTS`` extracts the subset and its
   audio variants into a new store (the CPU seconds of the extraction worker are
   printed, originals and variants apart);
2. for each recipe (``notebook``, ``v1`` = the default before issue 12, ``v2`` = its
   first default, ``default`` = ``v3``) and each seed: ``orchestrator submit-cv --plan
   official --recipe R --seed S --wait``;
3. one table: mean and std of clip accuracy over all trials of the recipe's seeds
   (2 folds x seeds), and the training worker's CPU minutes per recipe.

With two folds the official plan has two trials: train on one fold (minus a 15%
validation part split by Freesound recording id), test on the other. Nothing is
tuned on the test folds: early stopping (where a recipe stops early) watches the
validation part only, and a variant is read for training clips only.

    .venv/bin/python benchmarks/compare_models.py [--data PATH] [--epochs 50] \
        [--seeds 0 1] [--recipes notebook v1 v2 default] [--variants light]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import SUBSET, orchestrator, process_tree_cpu

from orchestrator.embedded_redis import EmbeddedRedis
from orchestrator.local_workers import (
    WorkerKind,
    start_worker,
    stop_worker,
    worker_command,
)

DEFAULT_DATA = SUBSET.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--recipes", nargs="+", default=["notebook", "v1", "v2", "default"])
    parser.add_argument("--variants", default="light", help="submit-dataset --variants")
    parser.add_argument("--keep", type=Path, help="keep the store and logs in this folder")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"no dataset at {args.data}", file=sys.stderr)
        raise SystemExit(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        home = work / "home"
        server = EmbeddedRedis.for_home(home)
        env = {**os.environ, "ESC_HOME": str(home), "REDIS_URL": server.ensure_running()}
        store = str(work / "us8k-subset.zarr")
        extract = start_worker(
            worker_command(WorkerKind.EXTRACT, concurrency=2, name="extract@%h"),
            env=env,
            log_path=str(work / "extract.log"),
        )
        train = start_worker(
            worker_command(WorkerKind.TRAIN, name="train@%h"),
            env=env,
            log_path=str(work / "train.log"),
        )
        try:
            for variants in ("none", args.variants):
                before = process_tree_cpu(extract.pid)
                extracted = orchestrator(
                    env, "submit-dataset", str(args.data), "--store", store, "--variants", variants
                )
                if extracted.returncode not in (0, 1):
                    raise SystemExit(f"submit-dataset failed\n{extracted.stderr[-3000:]}")
                spent = process_tree_cpu(extract.pid) - before
                what = "originals" if variants == "none" else f"variants {variants}"
                print(f"extraction of the {what}: {spent / 60:.1f} CPU min", file=sys.stderr)
                if args.variants == "none":
                    break
            for recipe in args.recipes:
                accs, cpu, wall = [], 0.0, 0.0
                for seed in args.seeds:
                    before, started = process_tree_cpu(train.pid), time.perf_counter()
                    run = orchestrator(
                        env,
                        *("submit-cv", "--store", store, "--plan", "official"),
                        *("--recipe", recipe, "--seed", str(seed)),
                        *("--epochs", str(args.epochs), "--wait", "--json"),
                    )
                    if run.returncode != 0:
                        raise SystemExit(f"{recipe}: submit-cv failed\n{run.stderr[-3000:]}")
                    cpu += process_tree_cpu(train.pid) - before
                    wall += time.perf_counter() - started
                    report = json.loads(run.stdout)
                    accs += [t["clip_accuracy"] for t in report["trials"]]
                    shown = orchestrator(
                        {**env, "COLUMNS": "160"}, "cv-report", report["run_id"], "--store", store
                    )
                    print(f"recipe {recipe}, seed {seed}:\n{shown.stdout}", flush=True)
                rows.append((recipe, accs, cpu, wall))
        finally:
            for p in (extract, train):
                stop_worker(p)
            server.stop()
    print("\n| recipe | trials | clip accuracy (mean ± std) | CPU min | wall min |")
    print("|---|---|---|---|---|")
    for recipe, accs, cpu, wall in rows:
        print(
            f"| {recipe} | {len(accs)} | {np.mean(accs):.3f} ± {np.std(accs):.3f} | "
            f"{cpu / 60:.1f} | {wall / 60:.1f} |"
        )


if __name__ == "__main__":
    main()
