"""Trial metrics agree with direct scikit-learn calls; aggregation over trials."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

from workers.metrics import aggregate, trial_metrics

CLASSES = ["a", "b", "c"]


def _probs(rng: np.random.Generator, n: int, k: int = 3) -> np.ndarray:
    p = rng.random((n, k))
    return p / p.sum(axis=1, keepdims=True)


def test_trial_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    clip_labels = rng.integers(0, 3, 40)
    clip_probs = _probs(rng, 40)
    window_labels = rng.integers(0, 3, 100)
    window_probs = _probs(rng, 100)
    m = trial_metrics(clip_labels, clip_probs, window_labels, window_probs, CLASSES)
    pred = clip_probs.argmax(1)
    assert m["clip_accuracy"] == pytest.approx(accuracy_score(clip_labels, pred))
    assert m["window_accuracy"] == pytest.approx(
        accuracy_score(window_labels, window_probs.argmax(1))
    )
    assert m["roc_auc_macro"] == pytest.approx(
        roc_auc_score(clip_labels, clip_probs, multi_class="ovr", average="macro")
    )
    assert m["f1_macro"] == pytest.approx(f1_score(clip_labels, pred, average="macro"))
    assert m["f1_micro"] == pytest.approx(f1_score(clip_labels, pred, average="micro"))
    assert m["confusion_matrix"] == confusion_matrix(clip_labels, pred).tolist()
    assert m["per_class"]["b"]["support"] == int((clip_labels == 1).sum())
    assert m["roc_auc_note"] == "over all classes"
    json.dumps(m)


def test_absent_class_is_reported_and_matrix_keeps_all_classes() -> None:
    rng = np.random.default_rng(1)
    clip_labels = np.array([0, 1, 0, 1, 0, 1])
    clip_probs = _probs(rng, 6)
    m = trial_metrics(clip_labels, clip_probs, clip_labels, clip_probs, CLASSES)
    expected = np.mean([roc_auc_score(clip_labels == c, clip_probs[:, c]) for c in (0, 1)])
    assert m["roc_auc_macro"] == pytest.approx(expected)
    assert "'c'" in m["roc_auc_note"]
    assert np.asarray(m["confusion_matrix"]).shape == (3, 3)
    assert m["per_class"]["c"]["support"] == 0


def test_single_class_auc_is_none() -> None:
    probs = np.full((3, 3), 1 / 3)
    m = trial_metrics(np.zeros(3, int), probs, np.zeros(3, int), probs, CLASSES)
    assert m["roc_auc_macro"] is None


def test_aggregate_mean_std_and_summed_confusion() -> None:
    rng = np.random.default_rng(2)
    trials = []
    for i in range(3):
        labels = rng.integers(0, 3, 30)
        probs = _probs(rng, 30)
        m = trial_metrics(labels, probs, labels, probs, CLASSES)
        m.update(trial=i, test_fold=i + 1, epochs=5, seconds=1.0, device="cpu")
        trials.append(m)
    agg = aggregate(trials)
    accs = [t["clip_accuracy"] for t in trials]
    assert agg["mean"]["clip_accuracy"] == pytest.approx(np.mean(accs))
    assert agg["std"]["clip_accuracy"] == pytest.approx(np.std(accs))
    summed = np.sum([t["confusion_matrix"] for t in trials], axis=0)
    assert agg["confusion_matrix"] == summed.tolist()
    assert [r["test_fold"] for r in agg["rows"]] == [1, 2, 3]
    assert "per_class" not in agg["rows"][0]
    assert agg["n_trials"] == 3
    json.dumps(agg)
