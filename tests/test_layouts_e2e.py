"""``orchestrator run`` end to end on an ESC-10 layout (5 s, 44.1 kHz clips), real workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from orchestrator.synthetic_layouts import ESC10_TARGETS, make_layout_dataset
from storage.feature_store import FeatureStore
from storage.runs import RunStore

pytestmark = pytest.mark.timeout(900)


@pytest.mark.visibility_timeout(300)  # trials may train longer than 20 s; nothing is killed
def test_run_on_esc10_subset_with_its_own_folds(cluster, tmp_path):
    # 3 classes, 5 folds of 1 clip per class: targets 0, 1, 10; esc10 keeps 0 and 10
    root = make_layout_dataset(
        tmp_path / "data", "esc50", n_classes=3, folds=5, clips_per_class_per_fold=1, seed=3
    )
    store_url = str(tmp_path / "esc10.zarr")
    args = ("run", str(root), "--subset", "esc10", "--store", store_url, "--workers", "1")
    proc = cluster.cli(*args, "--epochs", "1", "--batch-size", "16", timeout=850)
    assert proc.returncode == 0, proc.stderr[-3000:]

    store = FeatureStore.open(store_url)
    assert store.done_mask().all() and store.n_clips == 10
    assert store.dataset_name == "ESC-10"
    assert store.class_names == ["tone_low", "chirp_up"]
    assert store.class_ids == [ESC10_TARGETS[0], ESC10_TARGETS[2]]
    # 5 s clips: 9 windows of 41 frames at 22,050 Hz, however long the clip is
    assert store.feature_config["max_seconds"] == 5.0 and store.window_shape[0] == 9
    info = np.array([store.clip_info(i) for i in range(store.n_clips)])
    assert info[:, 2].max() == 5 * 22050 and info[:, 0].max() == 9

    runs = RunStore(store_url)
    run_id = runs.latest_run()
    report = runs.get_report(run_id)
    assert report["complete"] and report["plan"]["folds"] == [1, 2, 3, 4, 5]
    assert [t["test_fold"] for t in report["trials"]] == [1, 2, 3, 4, 5]
    assert report["dataset"]["name"] == "ESC-10"
    assert report["dataset"]["class_ids"] == [0, 10]
    assert "dataset ESC-10" in proc.stdout and "chirp_up (10)" in proc.stdout

    code, shown = cluster.cli_json("cv-report", run_id, "--store", store_url)
    assert code == 0 and shown["dataset"]["name"] == "ESC-10"

    # predict takes a 5 s 44.1 kHz file like the training clips
    clip = sorted((root / "audio").glob("*-10.wav"))[0]
    assert sf.info(clip).samplerate == 44100
    proc = cluster.cli("predict", str(clip), "--store", store_url, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result,) = json.loads(proc.stdout)
    assert result["n_models"] == 5 and 1 <= result["n_windows"] <= 9
    assert set(result["probabilities"]) == {"tone_low", "chirp_up"}
