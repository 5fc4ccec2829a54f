"""Piczak's long segments (101 frames, step 50) end to end: store, training, predict."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.cv_submission import create_training_run
from orchestrator.local_workers import WorkerKind
from storage.feature_store import FeatureStore
from storage.runs import RunStore
from workers.trial_config import TrialConfig
from workers.trial_runner import run_trial

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


def test_101_frame_windows_from_submit_dataset_to_predict(cluster, make_dataset, tmp_path):
    root = make_dataset(n_classes=3, folds=2, clips_per_class_per_fold=3, seconds=4.0, seed=2)
    store_url = str(tmp_path / "long.zarr")
    cluster.start_worker(WorkerKind.EXTRACT, concurrency=1)
    code, summary = cluster.cli_json(
        "submit-dataset", str(root), "--store", store_url, "--frames", "101",
        "--step-frames", "50", "--n-fft", "1024",
    )  # fmt: skip
    assert code == 0 and summary["done"] == 18, summary
    store = FeatureStore.open(store_url)
    assert store.feature_config["frames"] == 101 and store.feature_config["step_frames"] == 50
    # 4 s = 88200 samples: windows of 51200 samples every 25600 -> at most 2 per clip
    assert tuple(store.window_shape) == (2, 60, 101, 2)
    data = store.read_folds([1, 2])
    assert data.windows.shape[1:] == (60, 101, 2) and len(data.windows) > 0

    runs = RunStore(store_url)
    training = TrialConfig(epochs=1, batch_size=8, variant_probability=0.0)
    run_id = create_training_run(store, runs, plan="official", training=training, n_trials=1)
    run_trial(store, runs, run_id, 0)
    assert runs.trial_result(run_id, 0)["n_train_windows"] > 0

    clip = sorted((root / "audio" / "fold1").glob("*.wav"))[0]
    code, shown = cluster.cli_json("predict", str(clip), "--store", store_url, "--run", run_id)
    assert code == 0, shown
    (result,) = shown if isinstance(shown, list) else shown["results"]
    assert result["n_windows"] >= 1
    assert np.isclose(sum(result["probabilities"].values()), 1.0, atol=1e-4)
