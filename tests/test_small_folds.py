"""Small folds must not crash a trial: the official plan's fsID validation split on 2 folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator.cv_submission import create_training_run
from orchestrator.datasets import scan_dataset
from orchestrator.synthetic import make_synthetic_dataset
from orchestrator.trainability import check_manifest
from storage.runs import RunStore
from storage.store_layout import create_or_extend
from workers.features import FeatureConfig
from workers.trial_config import TrialConfig
from workers.trial_runner import run_trial

N_MELS, FRAMES, MAX_WINDOWS = 16, 11, 3


@pytest.mark.parametrize("per_class", [1, 2, 3, 5])
def test_official_two_fold_trial_trains_with_few_clips_per_class(
    tmp_path: Path, per_class: int
) -> None:
    # 2 folds, 3 classes, per_class clips of each class per fold (recordings of 1-3 clips)
    root = make_synthetic_dataset(
        tmp_path / "d", n_classes=3, folds=2, clips_per_class_per_fold=per_class, seconds=0.5
    )
    manifest = scan_dataset(root)
    check_manifest(manifest, "official")
    config = FeatureConfig(n_mels=N_MELS, frames=FRAMES).to_dict()
    store, _ = create_or_extend(
        str(tmp_path / "f.zarr"), manifest, config, (MAX_WINDOWS, N_MELS, FRAMES, 2)
    )
    rng = np.random.default_rng(per_class)
    for i in range(store.n_clips):
        store.write_clip(
            i, rng.normal(size=(2, N_MELS, FRAMES, 2)).astype("float32"), n_real=2, n_samples=11025
        )
    runs = RunStore(store.url)
    training = TrialConfig(epochs=2, batch_size=8, augment=False)
    run_id = create_training_run(store, runs, plan="official", training=training)
    summary = run_trial(store, runs, run_id, 0)
    result = runs.trial_result(run_id, 0)
    assert summary["trial"] == 0 and 0.0 <= summary["clip_accuracy"] <= 1.0
    assert result["n_train_windows"] > 0
    # validation carved out of the single training fold whenever it has 2+ recordings
    n_recordings = len({c.fsid for c in manifest.clips if c.fold == 2})
    assert (result["n_valid_windows"] > 0) == (n_recordings >= 2)
