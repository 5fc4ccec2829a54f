"""Classify audio files with a finished run's models.

Every trial of the run trained its own model (on different folds). A window's class
probabilities are the mean over the trials' models (an equal-weight ensemble; each
model sees the windows standardised with its own trial's training statistics); a
file's probabilities aggregate its windows' as the run's trials were scored
(``TrialConfig.test_aggregation``: their mean, or their renormalised geometric mean).
An exported model (``orchestrator.export``) outputs the same window probabilities, so
both paths give a file the same probabilities.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from storage.runs import RunStore
from workers.features import FeatureConfig
from workers.featurize import featurize_file
from workers.normalization import Normalization
from workers.training import aggregate_windows
from workers.trial_config import TrialConfig


def _load_models(
    runs: RunStore, run_id: str, local_dir: Path
) -> list[tuple[keras.Model, Normalization]]:
    models = []
    for k in sorted(runs.trial_results(run_id)):
        model = keras.saving.load_model(runs.model_path(run_id, k, local_dir), compile=False)
        norm = Normalization.from_dict(runs.load_normalization(run_id, k))
        models.append((model, norm))
    if not models:
        raise FileNotFoundError(f"run {run_id!r} has no finished trial (no model to predict with)")
    return models


def predict_files(
    paths: Sequence[str | Path], runs: RunStore, run_id: str, *, top_k: int = 3
) -> list[dict[str, Any]]:
    """Top-``k`` classes of each file by the ensemble of the run's trial models.

    Returns:
        One dict per path, in order: ``path``, ``top`` (list of ``{"class", "probability"}``,
        best first), ``probabilities`` (class name -> probability), ``n_windows``,
        ``n_models``; or ``path`` and ``error`` when the file cannot be read or featurised.

    Raises:
        FileNotFoundError: The run does not exist or has no finished trial.
    """
    config = runs.get_config(run_id)
    class_names = list(config["class_names"])
    features = FeatureConfig.from_dict(config["feature_config"])
    aggregation = TrialConfig.from_dict(config.get("training", {})).test_aggregation
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="esc-predict-") as tmp:
        models = _load_models(runs, run_id, Path(tmp))
        for path in paths:
            try:
                windows = featurize_file(path, features).windows
                if len(windows) == 0:
                    raise ValueError("no window could be extracted (clip too short)")
                window_probs = np.mean(
                    [model.predict(norm.apply(windows), verbose=0) for model, norm in models],
                    axis=0,
                )
                probs = aggregate_windows(window_probs, aggregation)
            except Exception as exc:  # one bad file must not stop the others
                out.append({"path": str(path), "error": f"{type(exc).__name__}: {exc}"})
                continue
            out.append(file_result(path, probs, class_names, len(windows), len(models), top_k))
    return out


def file_result(
    path: str | Path,
    probs: np.ndarray,
    class_names: Sequence[str],
    n_windows: int,
    n_models: int,
    top_k: int,
) -> dict[str, Any]:
    """One file's entry of :func:`predict_files` from its ``(n_classes,)`` probabilities."""
    order = np.argsort(probs)[::-1][:top_k]
    return {
        "path": str(path),
        "top": [{"class": class_names[i], "probability": float(probs[i])} for i in order],
        "probabilities": {c: float(p) for c, p in zip(class_names, probs, strict=True)},
        "n_windows": n_windows,
        "n_models": n_models,
    }
