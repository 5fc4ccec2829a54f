"""The body of the training task: one trial of a run, from the feature store to its record.

``create_training_run`` writes a run's config (plan, trials, training config,
feature config, class names); ``run_trial`` trains and scores one of its trials;
``finalize_run`` aggregates once every trial has a result. All three are
idempotent, so a redelivered task or a second finaliser is harmless.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.cv_plan import Trial, build_plan
from orchestrator.metrics import aggregate, trial_metrics
from storage.feature_store import FeatureStore, FoldData
from storage.runs import RunStore
from workers.training import TrialConfig, split_by_fsid, train_and_evaluate

ProgressFn = Callable[[dict[str, Any]], None]


def create_training_run(
    store: FeatureStore,
    runs: RunStore,
    *,
    plan: str = "official",
    training: TrialConfig | None = None,
    n_trials: int | None = None,
    custom: Sequence[tuple[Sequence[int], Sequence[int], int]] | None = None,
    valid_fraction: float = 0.15,
    only_real: bool = False,
) -> str:
    """Build the plan over the store's folds and record a new run; its id.

    Raises ``orchestrator.cv_plan.PlanError`` when the plan does not fit the folds.
    """
    training = training or TrialConfig()
    folds = sorted({int(f) for f in np.asarray(store.folds()).tolist()})
    trials, explanation = build_plan(
        plan, folds, n_trials=n_trials, custom=custom, valid_fraction=valid_fraction
    )
    config = {
        "plan": {"kind": plan, "explanation": explanation, "folds": folds},
        "trials": [t.to_dict() for t in trials],
        "model": training.model,
        "training": training.to_dict(),
        "only_real": only_real,
        "feature_config": store.feature_config,
        "class_names": list(store.class_names),
        "n_clips": int(store.n_clips),
    }
    return runs.create_run(config)


def _trial(config: dict[str, Any], trial_index: int) -> Trial:
    for t in config["trials"]:
        if int(t["index"]) == trial_index:
            return Trial.from_dict(t)
    raise ValueError(f"the run has no trial {trial_index} ({len(config['trials'])} trials)")


def _summary(run_id: str, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "trial": result["trial"],
        "clip_accuracy": result["clip_accuracy"],
        "epochs": result["epochs"],
        "seconds": result["seconds"],
        "device": result["device"],
    }


def _select(data: FoldData, clip_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Windows and labels of the clips of ``data.clips[clip_mask]``."""
    keep = np.isin(data.clip_index, data.clips[clip_mask])
    return data.windows[keep], data.labels[keep]


def run_trial(
    store: FeatureStore,
    runs: RunStore,
    run_id: str,
    trial_index: int,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Train and score trial ``trial_index`` of ``run_id``; save its artifacts.

    If the trial already has a ``result.json`` it is not retrained (redelivery).
    The trial trains with ``seed = training.seed + trial_index``.

    Returns:
        ``run_id, trial, clip_accuracy, epochs, seconds, device``.
    """
    existing = runs.trial_result(run_id, trial_index)
    if existing is not None:
        return _summary(run_id, existing)
    config = runs.get_config(run_id)
    trial = _trial(config, trial_index)
    training = TrialConfig.from_dict(config["training"])
    training = replace(training, seed=training.seed + trial.index)
    class_names = list(config["class_names"])
    only_real = bool(config.get("only_real", False))

    train = store.read_folds(list(trial.train_folds), only_real=only_real)
    train_mask = np.ones(len(train.clips), dtype=bool)
    if trial.valid_folds:
        valid = store.read_folds(list(trial.valid_folds), only_real=only_real)
        valid_x, valid_y = valid.windows, valid.labels
    elif trial.valid_from_train_fraction <= 0:
        valid_x, valid_y = train.windows[:0], train.labels[:0]
    else:
        train_mask, valid_mask = split_by_fsid(
            train.clips,
            train.clip_fsids,
            train.clip_labels,
            trial.valid_from_train_fraction,
            seed=training.seed,
        )
        valid_x, valid_y = _select(train, valid_mask)
    train_x, train_y = _select(train, train_mask)
    test = store.read_folds([trial.test_fold], only_real=only_real)

    outcome = train_and_evaluate(
        train_x,
        train_y,
        valid_x,
        valid_y,
        test_windows=test.windows,
        test_window_labels=test.labels,
        test_window_clips=test.clip_index,
        test_clips=test.clips,
        test_clip_labels=test.clip_labels,
        n_classes=len(class_names),
        config=training,
        progress=progress,
    )
    metrics = trial_metrics(
        outcome.clip_labels,
        outcome.clip_probs,
        outcome.window_labels,
        outcome.window_probs,
        class_names,
    )
    result = {
        **_trial_row(trial),
        **metrics,
        "epochs": outcome.epochs_run,
        "best_epoch": outcome.best_epoch,
        "seconds": outcome.training_seconds,
        "device": outcome.device,
        "history": outcome.history,
        "seed": training.seed,
        "n_train_windows": len(train_x),
        "n_valid_windows": len(valid_x),
        "n_test_windows": len(test.windows),
        "n_clips_without_windows": outcome.n_clips_without_windows,
    }
    predictions = {
        "clip_index": outcome.clip_index,
        "clip_labels": outcome.clip_labels,
        "clip_probs": outcome.clip_probs,
        "window_clip_index": outcome.window_clip_index,
        "window_labels": outcome.window_labels,
        "window_probs": outcome.window_probs,
    }
    with tempfile.TemporaryDirectory(prefix="esc-trial-") as tmp:
        model_file = Path(tmp) / "model.keras"
        outcome.model.save(model_file)
        runs.save_trial(
            run_id, trial.index, result, predictions, model_file, outcome.normalization.to_dict()
        )
    return _summary(run_id, result)


def _trial_row(trial: Trial) -> dict[str, Any]:
    return {
        "trial": trial.index,
        "train_folds": list(trial.train_folds),
        "valid_folds": list(trial.valid_folds),
        "test_fold": trial.test_fold,
        "valid_from_train_fraction": trial.valid_from_train_fraction,
    }


def run_status(runs: RunStore, run_id: str) -> dict[str, Any]:
    """``n_trials``, ``done`` and ``missing`` trial indices, ``complete``, ``has_report``."""
    config = runs.get_config(run_id)
    wanted = [int(t["index"]) for t in config["trials"]]
    done = sorted(runs.trial_results(run_id))
    return {
        "run_id": run_id,
        "n_trials": len(wanted),
        "done": [k for k in wanted if k in done],
        "missing": [k for k in wanted if k not in done],
        "complete": all(k in done for k in wanted),
        "has_report": runs.get_report(run_id) is not None,
    }


def build_report(runs: RunStore, run_id: str) -> dict[str, Any]:
    """Report over the trials that have results so far, metrics recomputed from predictions.

    ``complete`` says whether every trial of the plan is in it. The content depends
    only on the stored artifacts, so two builders produce the same report.
    """
    config = runs.get_config(run_id)
    class_names = list(config["class_names"])
    results = runs.trial_results(run_id)
    trials = []
    for t in config["trials"]:
        k = int(t["index"])
        if k not in results:
            continue
        stored = results[k]
        p = runs.load_predictions(run_id, k)
        metrics = trial_metrics(
            p["clip_labels"], p["clip_probs"], p["window_labels"], p["window_probs"], class_names
        )
        trials.append(
            {
                **_trial_row(Trial.from_dict(t)),
                **metrics,
                "epochs": stored["epochs"],
                "best_epoch": stored.get("best_epoch"),
                "seconds": stored["seconds"],
                "device": stored["device"],
                "n_clips_without_windows": stored.get("n_clips_without_windows", 0),
                "history": {
                    k2: v
                    for k2, v in stored.get("history", {}).items()
                    if k2 in ("loss", "val_loss")
                },
            }
        )
    return {
        "run_id": run_id,
        "model": config["model"],
        "plan": config["plan"],
        "training": config["training"],
        "class_names": class_names,
        "n_trials": len(config["trials"]),
        "complete": len(trials) == len(config["trials"]),
        "trials": trials,
        "aggregate": aggregate(trials),
    }


def finalize_run(runs: RunStore, run_id: str) -> dict[str, Any] | None:
    """Aggregate and save ``report.json`` once every trial has a result; else ``None``."""
    if not run_status(runs, run_id)["complete"]:
        return None
    report = build_report(runs, run_id)
    runs.save_report(run_id, report)
    return report
