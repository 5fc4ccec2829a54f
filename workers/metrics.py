"""Trial metrics (scikit-learn) and their aggregation over the trials of a run.

Every value returned is a plain Python ``float``/``int``/``list``/``str`` so that
results are JSON-serialisable as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

SCALAR_METRICS = (
    "window_accuracy",
    "clip_accuracy",
    "roc_auc_macro",
    "f1_macro",
    "f1_micro",
)


def _roc_auc(
    labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]
) -> tuple[float | None, str]:
    """One-vs-rest macro ROC AUC over the classes present in ``labels``, and a note."""
    present = np.unique(labels)
    if len(present) < 2:
        return None, "ROC AUC undefined: fewer than two classes in the test clips"
    # Each present class against the rest, on the full probability column; an
    # absent class has no positive example and no AUC.
    aucs = [roc_auc_score((labels == c).astype(int), probs[:, c]) for c in present.tolist()]
    absent = [class_names[c] for c in range(len(class_names)) if c not in set(present.tolist())]
    note = (
        f"over the {len(present)} classes present; absent from the test clips: {absent}"
        if absent
        else "over all classes"
    )
    return float(np.mean(aucs)), note


def trial_metrics(
    clip_labels: np.ndarray,
    clip_probs: np.ndarray,
    window_labels: np.ndarray,
    window_probs: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Metrics of one trial's test fold.

    Args:
        clip_labels: ``(n_clips,)`` int true class of every test clip.
        clip_probs: ``(n_clips, n_classes)`` clip probabilities.
        window_labels: ``(n_windows,)`` int true class of each test window.
        window_probs: ``(n_windows, n_classes)`` window probabilities.
        class_names: Name of each class id.

    Returns:
        ``window_accuracy, clip_accuracy, roc_auc_macro`` (one-vs-rest, clip level,
        over the classes present; ``None`` if fewer than two), ``roc_auc_note``,
        ``f1_macro, f1_micro`` (clip level, over all classes), ``per_class`` (name ->
        precision, recall, f1, support), ``confusion_matrix`` (clip level, rows = true
        class, all classes), ``n_clips, n_windows``.
    """
    n_classes = len(class_names)
    labels = list(range(n_classes))
    clip_labels = np.asarray(clip_labels, dtype=np.int64)
    clip_probs = np.asarray(clip_probs, dtype=np.float64)
    window_labels = np.asarray(window_labels, dtype=np.int64)
    window_probs = np.asarray(window_probs, dtype=np.float64)
    clip_pred = clip_probs.argmax(axis=1) if len(clip_probs) else np.zeros(0, np.int64)
    window_pred = window_probs.argmax(axis=1) if len(window_probs) else np.zeros(0, np.int64)
    auc, note = _roc_auc(clip_labels, clip_probs, class_names)
    precision, recall, f1, support = precision_recall_fscore_support(
        clip_labels, clip_pred, labels=labels, zero_division=0
    )
    return {
        "window_accuracy": float(accuracy_score(window_labels, window_pred))
        if len(window_labels)
        else None,
        "clip_accuracy": float(accuracy_score(clip_labels, clip_pred)),
        "roc_auc_macro": auc,
        "roc_auc_note": note,
        "f1_macro": float(
            f1_score(clip_labels, clip_pred, labels=labels, average="macro", zero_division=0)
        ),
        "f1_micro": float(
            f1_score(clip_labels, clip_pred, labels=labels, average="micro", zero_division=0)
        ),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(clip_labels, clip_pred, labels=labels).tolist(),
        "n_clips": len(clip_labels),
        "n_windows": len(window_labels),
    }


def aggregate(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread of the trials' metrics.

    Args:
        trials: One :func:`trial_metrics` dict per trial, optionally with ``trial``,
            ``train_folds``, ``valid_folds``, ``test_fold``, ``epochs``, ``seconds``,
            ``device`` (copied into the table rows).

    Returns:
        ``mean`` and ``std`` (population std over trials) of each scalar metric
        (``None`` values skipped), ``confusion_matrix`` summed over trials, ``rows``
        (one per trial) and ``n_trials``.
    """
    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    for key in SCALAR_METRICS:
        values = [t[key] for t in trials if t.get(key) is not None]
        mean[key] = float(np.mean(values)) if values else None
        std[key] = float(np.std(values)) if values else None
    matrices = [np.asarray(t["confusion_matrix"], dtype=np.int64) for t in trials]
    summed = np.sum(matrices, axis=0).tolist() if matrices else []
    row_keys = (
        "trial",
        "train_folds",
        "valid_folds",
        "test_fold",
        *SCALAR_METRICS,
        "epochs",
        "seconds",
        "device",
        "n_clips",
    )
    rows = [{k: t[k] for k in row_keys if k in t} for t in trials]
    return {
        "n_trials": len(trials),
        "mean": mean,
        "std": std,
        "confusion_matrix": summed,
        "rows": rows,
    }
