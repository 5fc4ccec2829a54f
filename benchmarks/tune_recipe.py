"""Score training designs on a validation split of ONE fold (no test fold is read).

The recipe of issue 12 was chosen with this script. It reads only ``--fold`` (fold 1
of ../shared/data/us8k-subset), holds out ``--valid-fraction`` of its clips by
Freesound recording id (``split_by_fsid``, whole recordings), trains on the rest with
the production ``train_and_evaluate`` and scores the held-out clips (clip accuracy,
mean of window probabilities or the design's own aggregation). The held-out part is
also the early-stopping set, as in a trial. Every scored design is appended to
``--log`` (JSON lines), so the number of designs tried is on record.

    .venv/bin/python benchmarks/tune_recipe.py --store /tmp/recipe/us8k-subset.zarr \
        --name v1 --recipe v1 --epochs 30 --set freq_mask_bands=8
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import SUBSET, build_store

from storage.feature_store import FeatureStore


def main() -> None:
    """Command-line entry point."""
    from workers.recipes import recipe_config
    from workers.training import clip_probabilities, split_by_fsid, train_and_evaluate
    from workers.trial_runner import variant_training_data

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="/tmp/recipe/us8k-subset.zarr")
    parser.add_argument("--data", type=Path, default=SUBSET)
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--valid-fraction", type=float, default=0.25)
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--name", required=True, help="design name for the log")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--log", type=Path, default=Path("/tmp/recipe/tuning.jsonl"))
    args = parser.parse_args()
    store = FeatureStore.open(args.store) if Path(args.store).exists() else None
    store = store or build_store(args.data, args.store)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    config = replace(recipe_config(args.recipe), epochs=args.epochs, seed=args.seed, **overrides)
    data = store.read_folds([args.fold])
    train_mask, valid_mask = split_by_fsid(
        data.clips, data.clip_fsids, data.clip_labels, args.valid_fraction, seed=args.seed
    )
    tr = np.isin(data.clip_index, data.clips[train_mask])
    va = np.isin(data.clip_index, data.clips[valid_mask])
    variant_x, variant_rows = variant_training_data(
        store, config, data.clips[train_mask], data.clip_index[tr]
    )
    started = time.process_time()
    wall = time.perf_counter()
    outcome = train_and_evaluate(
        data.windows[tr],
        data.labels[tr],
        data.windows[va],
        data.labels[va],
        test_windows=data.windows[va],
        test_window_labels=data.labels[va],
        test_window_clips=data.clip_index[va],
        test_clips=data.clips[valid_mask],
        test_clip_labels=data.clip_labels[valid_mask],
        n_classes=len(store.class_names),
        config=config,
        variant_windows=variant_x,
        variant_rows=variant_rows,
    )
    acc = float((outcome.clip_probs.argmax(1) == outcome.clip_labels).mean())
    # the other test-time aggregation of the same window probabilities: a second design
    # scored at no training cost
    other = "mean_log_prob" if config.test_aggregation == "mean_prob" else "mean_prob"
    prior = np.full(len(store.class_names), 1.0 / len(store.class_names))
    other_probs, _ = clip_probabilities(
        outcome.window_probs, outcome.window_clip_index, outcome.clip_index, prior, other
    )
    other_acc = float((other_probs.argmax(1) == outcome.clip_labels).mean())
    row = {
        "design": args.name,
        f"valid_clip_accuracy_{other}": round(other_acc, 4),
        "scored_on": f"fold {args.fold} fsID-split validation ({args.valid_fraction})",
        "valid_clip_accuracy": round(acc, 4),
        "valid_clips": int(valid_mask.sum()),
        "train_windows": int(tr.sum()),
        "epochs_run": outcome.epochs_run,
        "best_epoch": outcome.best_epoch,
        "cpu_seconds": round(time.process_time() - started, 1),
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "config": config.to_dict(),
    }
    with args.log.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k != "config"}))


if __name__ == "__main__":
    main()
