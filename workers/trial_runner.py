"""The body of the training task: one trial of a run, from the feature store to its record.

``run_trial`` trains and scores one trial of a run whose config the orchestrator
recorded (``orchestrator.cv_submission.create_training_run``). It is idempotent, so a
redelivered task is harmless; ``workers.run_report.finalize_run`` writes the report
once every trial has a result.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from storage.feature_store import FeatureStore, FoldData
from storage.run_records import RunConfig, TrialResult
from storage.runs import RunStore
from workers.metrics import trial_metrics
from workers.tensorboard_logs import save_logs, tensorboard_callback
from workers.training import split_by_fsid, train_and_evaluate
from workers.trial_config import TrialConfig

ProgressFn = Callable[[dict[str, Any]], None]


def _summary(run_id: str, result: TrialResult) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "trial": result.trial,
        "clip_accuracy": result.clip_accuracy,
        "epochs": result.epochs,
        "seconds": result.seconds,
        "device": result.device,
    }


def _select(data: FoldData, clip_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Windows and labels of the clips of ``data.clips[clip_mask]``."""
    keep = np.isin(data.clip_index, data.clips[clip_mask])
    return data.windows[keep], data.labels[keep]


def _positions(window_clips: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows grouped by clip: ``(position in clip, clip window count, clip first row)``."""
    window_clips = np.asarray(window_clips, dtype=np.int64)
    n = len(window_clips)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    new_clip = np.r_[True, window_clips[1:] != window_clips[:-1]]
    first = np.flatnonzero(new_clip)
    group = np.cumsum(new_clip) - 1
    counts = np.diff(np.r_[first, n])
    return np.arange(n) - first[group], counts[group], first[group]


def variant_training_data(
    store: FeatureStore,
    config: TrialConfig,
    train_clips: np.ndarray,
    train_window_clips: np.ndarray,
    *,
    only_real: bool = False,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The variant windows of the TRAINING clips and, per training window, its stand-ins.

    Only ``train_clips`` are read from the store (``FeatureStore.read_variant``): a
    variant of a validation or test clip is never loaded. For training window ``i``
    (``train_window_clips[i]``, at position ``p`` of the clip's ``n`` windows) and
    variant ``j`` with ``m`` windows of that clip, the stand-in is the variant window
    at position ``round(p * (m - 1) / (n - 1))``: the same relative place in the clip
    (a time-stretched clip has more or fewer windows).

    Returns:
        ``(variant_windows (n_variant, n_mels, frames, 2), variant_rows (n_train, k))``
        with ``-1`` where a clip lacks variant ``j``; ``(None, None)`` when
        ``config.variant_probability`` is 0 or the store has no variant.

    Raises:
        ValueError: ``config.variants`` names a variant the store lacks.
    """
    if config.variant_probability <= 0 or not hasattr(store, "variant_names"):
        return None, None
    available = store.variant_names()
    missing = sorted(set(config.variants) - set(available))
    if missing:
        raise ValueError(
            f"the store has no variant {', '.join(missing)} "
            f"(it has: {', '.join(available) or 'none'})"
        )
    names = [n for n in available if not config.variants or n in config.variants]
    if not names:
        return None, None
    train_clips = np.unique(np.asarray(train_clips, dtype=np.int64))
    window_clips = np.asarray(train_window_clips, dtype=np.int64)
    pos, count, _ = _positions(window_clips)
    rows = np.full((len(window_clips), len(names)), -1, dtype=np.int64)
    parts: list[np.ndarray] = []
    offset = 0
    for j, name in enumerate(names):
        variant = store.read_variant(name, train_clips, only_real=only_real)
        v_clips = np.asarray(variant.clip_index, dtype=np.int64)
        if not np.isin(v_clips, train_clips).all():
            raise ValueError(f"variant {name!r} returned windows of clips that are not training")
        if len(v_clips) == 0:
            continue
        _, v_count, v_first = _positions(v_clips)
        uniq, first_idx = np.unique(v_clips, return_index=True)
        at = np.searchsorted(uniq, window_clips)
        has = (at < len(uniq)) & (uniq[np.minimum(at, len(uniq) - 1)] == window_clips)
        start = v_first[first_idx[at[has]]]
        m = v_count[first_idx[at[has]]]
        rel = np.rint(pos[has] * (m - 1) / np.maximum(count[has] - 1, 1)).astype(np.int64)
        rows[has, j] = offset + start + np.minimum(rel, m - 1)
        parts.append(np.asarray(variant.windows, dtype=np.float32))
        offset += len(v_clips)
    if not parts:
        return None, None
    return np.concatenate(parts), rows


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
        return _summary(run_id, TrialResult.from_dict(existing))
    config = RunConfig.from_dict(runs.get_config(run_id))
    trial = config.trial(trial_index)
    training = TrialConfig.from_dict(config.training)
    training = replace(training, seed=training.seed + trial.index)
    class_names = list(config.class_names)
    only_real = config.only_real

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
    train_window_clips = train.clip_index[np.isin(train.clip_index, train.clips[train_mask])]
    variant_x, variant_rows = variant_training_data(
        store, training, train.clips[train_mask], train_window_clips, only_real=only_real
    )
    test = store.read_folds([trial.test_fold], only_real=only_real)

    logs = tempfile.TemporaryDirectory(prefix="esc-tensorboard-")  # also removed when collected
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
        callbacks=[tensorboard_callback(logs.name)],
        variant_windows=variant_x,
        variant_rows=variant_rows,
    )
    metrics = trial_metrics(
        outcome.clip_labels,
        outcome.clip_probs,
        outcome.window_labels,
        outcome.window_probs,
        class_names,
    )
    result = TrialResult(
        **trial.result_fields(),
        **metrics,
        epochs=outcome.epochs_run,
        best_epoch=outcome.best_epoch,
        seconds=outcome.training_seconds,
        device=outcome.device,
        training_settings=outcome.settings,
        trial_seconds=outcome.total_seconds,
        history=outcome.history,
        seed=training.seed,
        n_train_windows=len(train_x),
        n_valid_windows=len(valid_x),
        n_test_windows=len(test.windows),
        n_clips_without_windows=outcome.n_clips_without_windows,
    )
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
        save_logs(runs, run_id, trial.index, logs.name)
        runs.save_trial(
            run_id,
            trial.index,
            result.to_dict(),
            predictions,
            model_file,
            outcome.normalization.to_dict(),
        )
    logs.cleanup()
    return _summary(run_id, result)
