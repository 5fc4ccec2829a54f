"""Score training designs on held-out clips of ONE fold (no test fold is read).

The recipes of issue 12 were chosen with this script. It reads only ``--fold`` (fold
1 of ../shared/data/us8k-subset) and trains with the production ``train_and_evaluate``.

* ``--splits 1`` (the first round): holds out ``--valid-fraction`` of the fold's clips
  by Freesound recording id (``split_by_fsid``, whole recordings), trains on the rest
  and scores the held-out clips, which are also the early-stopping set, as in a trial.
* ``--splits K`` (K >= 2, nested, how ``v3`` was chosen): the fold's clips are cut into
  K parts by recording (``StratifiedGroupKFold``); each part in turn is the *scored*
  part, and the other K - 1 parts are split as a trial splits its training fold
  (``split_by_fsid`` with ``--valid-fraction``) into training clips and validation
  clips (early stopping, the plateau schedule). The scored clips never steer training,
  every clip of the fold is scored once, and the pooled accuracy is over all of them
  (about 390 clips instead of about 100).

Every scored design is appended to ``--log`` (JSON lines), so the number of designs
tried is on record.

    .venv/bin/python benchmarks/tune_recipe.py --store /tmp/recipe/us8k-subset.zarr \\
        --name v1 --recipe v1 --epochs 30 --set freq_mask_bands=8
    .venv/bin/python benchmarks/tune_recipe.py --splits 3 --name v3 --recipe v3 --epochs 30
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _common import SUBSET, build_store

from storage.feature_store import FeatureStore, FoldData
from workers.trial_config import TrialConfig


def score_split(
    store: FeatureStore,
    data: FoldData,
    config: TrialConfig,
    train_clips: np.ndarray,
    valid_clips: np.ndarray,
    scored_clips: np.ndarray,
) -> dict[str, Any]:
    """Train on ``train_clips`` (validation ``valid_clips``), score ``scored_clips``.

    Returns the clip accuracy with the design's aggregation and with the other one
    (a second design at no training cost), the counts and the epochs.
    """
    from workers.training import clip_probabilities, train_and_evaluate
    from workers.trial_runner import variant_training_data

    tr, va, sc = (np.isin(data.clip_index, c) for c in (train_clips, valid_clips, scored_clips))
    labels = dict(zip(data.clips.tolist(), data.clip_labels.tolist(), strict=True))
    variant_x, variant_rows = variant_training_data(store, config, train_clips, data.clip_index[tr])
    outcome = train_and_evaluate(
        data.windows[tr],
        data.labels[tr],
        data.windows[va],
        data.labels[va],
        test_windows=data.windows[sc],
        test_window_labels=data.labels[sc],
        test_window_clips=data.clip_index[sc],
        test_clips=scored_clips,
        test_clip_labels=np.array([labels[c] for c in scored_clips.tolist()], dtype=np.int64),
        n_classes=len(store.class_names),
        config=config,
        variant_windows=variant_x,
        variant_rows=variant_rows,
    )
    right = int((outcome.clip_probs.argmax(1) == outcome.clip_labels).sum())
    other = "mean_log_prob" if config.test_aggregation == "mean_prob" else "mean_prob"
    prior = np.full(len(store.class_names), 1.0 / len(store.class_names))
    other_probs, _ = clip_probabilities(
        outcome.window_probs, outcome.window_clip_index, outcome.clip_index, prior, other
    )
    return {
        "right": right,
        f"right_{other}": int((other_probs.argmax(1) == outcome.clip_labels).sum()),
        "scored_clips": len(scored_clips),
        "valid_clips": len(valid_clips),
        "train_windows": int(tr.sum()),
        "epochs_run": outcome.epochs_run,
        "best_epoch": outcome.best_epoch,
    }


def main() -> None:
    """Command-line entry point."""
    from sklearn.model_selection import StratifiedGroupKFold

    from workers.recipes import recipe_config
    from workers.training import split_by_fsid

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="/tmp/recipe/us8k-subset.zarr")
    parser.add_argument("--data", type=Path, default=SUBSET)
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--valid-fraction", type=float, default=0.25)
    parser.add_argument("--splits", type=int, default=1, help="K >= 2: nested, see above")
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

    def split(clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = np.searchsorted(data.clips, clips)
        train, valid = split_by_fsid(
            clips, data.clip_fsids[at], data.clip_labels[at], args.valid_fraction, args.seed
        )
        return clips[train], clips[valid]

    if args.splits < 2:
        train_clips, valid_clips = split(data.clips)
        parts = [(train_clips, valid_clips, valid_clips)]
        scored_on = f"fold {args.fold} fsID-split validation ({args.valid_fraction})"
    else:
        outer = StratifiedGroupKFold(n_splits=args.splits, shuffle=True, random_state=args.seed)
        cuts = outer.split(np.zeros(len(data.clips)), data.clip_labels, data.clip_fsids)
        parts = [(*split(data.clips[rest]), data.clips[scored]) for rest, scored in cuts]
        scored_on = (
            f"fold {args.fold}, each of {args.splits} recording-grouped parts scored once "
            f"(trained on the rest minus a {args.valid_fraction} validation split)"
        )
    started, wall = time.process_time(), time.perf_counter()
    results = []
    for k, (train_clips, valid_clips, scored_clips) in enumerate(parts):
        result = score_split(store, data, config, train_clips, valid_clips, scored_clips)
        results.append(result)
        if args.splits >= 2:
            print(json.dumps({"design": args.name, "split": k, **result}), flush=True)
    other = "mean_log_prob" if config.test_aggregation == "mean_prob" else "mean_prob"
    n = sum(r["scored_clips"] for r in results)
    row = {
        "design": args.name,
        "scored_on": scored_on,
        "clip_accuracy": round(sum(r["right"] for r in results) / n, 4),
        f"clip_accuracy_{other}": round(sum(r[f"right_{other}"] for r in results) / n, 4),
        "scored_clips": n,
        "splits": results,
        "cpu_seconds": round(time.process_time() - started, 1),
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "config": config.to_dict(),
    }
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with args.log.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k not in ("config", "splits")}))


if __name__ == "__main__":
    main()
