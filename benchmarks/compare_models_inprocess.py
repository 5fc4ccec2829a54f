"""Compare the ``notebook`` and ``default`` models on real UrbanSound8K folds, in-process.

No queue: the clips are extracted in this process into a feature store (cached at
``--cache``; a rerun only extracts what is missing) with the workers' own
``featurize_file``, and every trial of the official plan over the folds present is
recorded and trained with the production code (``create_training_run``, then the
training worker's ``run_trial``). With the subset's two folds that is two trials, each
training on one fold with a 15% fsID-split validation part and testing on the other.

Usage::

    .venv/bin/python benchmarks/compare_models_inprocess.py \
        --data /work/shared/data/us8k-subset/UrbanSound8K --epochs 50
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import SUBSET, build_store

from orchestrator.cv_submission import create_training_run
from storage.feature_store import FeatureStore
from storage.run_records import RunConfig, TrialResult
from storage.runs import RunStore


def run_comparison(
    store_url: str, models: list[str], epochs: int, overrides: dict[str, object]
) -> None:
    """Train every model on every trial of the official plan and print a table.

    ``overrides`` replace ``TrialConfig`` defaults (for both models).
    """
    from dataclasses import replace

    from orchestrator.cv_submission import resolve_training
    from workers.trial_runner import run_trial

    store = FeatureStore.open(store_url)
    runs = RunStore(store_url)
    results: dict[str, list[TrialResult]] = {m: [] for m in models}
    trials = []
    for model in models:
        # a model name that is a recipe name (notebook, default, v1, ...) trains that recipe
        training = replace(resolve_training(None, model, overrides), epochs=epochs)
        run_id = create_training_run(store, runs, plan="official", training=training)
        config = RunConfig.from_dict(runs.get_config(run_id))
        print(f"{model}: run {run_id}: {config.plan['explanation']}")
        trials = list(config.trials)
        for trial in trials:
            run_trial(store, runs, run_id, trial.index)
            m = TrialResult.from_dict(runs.trial_result(run_id, trial.index))
            results[model].append(m)
            best = (m.best_epoch or len(m.history["val_loss"])) - 1
            print(
                f"{model:8s} test fold {trial.test_fold}: clip acc {m.clip_accuracy:.3f} "
                f"window acc {m.window_accuracy:.3f} AUC {m.roc_auc_macro:.3f} "
                f"macro F1 {m.f1_macro:.3f} epochs {m.epochs} {m.seconds:.0f} s "
                f"(best val loss {m.history['val_loss'][best]:.3f}, "
                f"val window acc {m.history['val_accuracy'][best]:.3f})",
                flush=True,
            )
    print("\n| model | test fold | clip acc | window acc | ROC AUC | macro F1 | epochs | s |")
    print("|---|---|---|---|---|---|---|---|")
    for model in models:
        for trial, m in zip(trials, results[model], strict=True):
            print(
                f"| {model} | {trial.test_fold} | {m.clip_accuracy:.3f} | "
                f"{m.window_accuracy:.3f} | {m.roc_auc_macro:.3f} | {m.f1_macro:.3f} | "
                f"{m.epochs} | {m.seconds:.0f} |"
            )
        acc = [m.clip_accuracy for m in results[model]]
        print(f"| {model} | mean | {np.mean(acc):.3f} ± {np.std(acc):.3f} | | | | | |")
    if {"notebook", "default"} <= set(models):
        means = {x: np.mean([m.clip_accuracy for m in results[x]]) for x in models}
        gain = 100 * (means["default"] - means["notebook"])
        print(f"\ndefault - notebook: {gain:+.1f} points of mean clip accuracy")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SUBSET)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("/tmp/esc-bench/us8k-subset.zarr"),
        help="feature store to extract into (reused by later runs)",
    )
    parser.add_argument("--models", nargs="+", default=["notebook", "default"])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--extract-only", action="store_true")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="TrialConfig overrides for both models, e.g. patience=10 freq_mask_bands=8",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    store = build_store(args.data, str(args.cache))
    print(f"{store.n_clips} clips in {args.cache} ({time.perf_counter() - started:.0f} s)")
    if not args.extract_only:
        overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
        run_comparison(str(args.cache), args.models, args.epochs, overrides)


if __name__ == "__main__":
    main()
