"""An ESC-10 layout (5 s, 44.1 kHz clips) end to end: the pipeline's logic in the middle
tier, ``orchestrator run`` on real workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from contract.wire import EXTRACT_QUEUE, TRAIN_QUEUE
from orchestrator.synthetic_layouts import ESC10_TARGETS, make_layout_dataset
from storage.feature_store import FeatureStore
from storage.runs import RunStore

pytestmark = pytest.mark.timeout(900)


def _esc10(tmp_path):
    # 3 classes, 5 folds of 1 clip per class: targets 0, 1, 10; esc10 keeps 0 and 10
    return make_layout_dataset(
        tmp_path / "data", "esc50", n_classes=3, folds=5, clips_per_class_per_fold=1, seed=3
    )


def _check_store(store_url: str) -> None:
    store = FeatureStore.open(store_url)
    assert store.done_mask().all() and store.n_clips == 10
    assert store.dataset_name == "ESC-10"
    assert store.class_names == ["tone_low", "chirp_up"]
    assert store.class_ids == [ESC10_TARGETS[0], ESC10_TARGETS[2]]
    # 5 s clips: 9 windows of 41 frames at 22,050 Hz, however long the clip is
    assert store.feature_config["max_seconds"] == 5.0 and store.window_shape[0] == 9
    info = np.array([store.clip_info(i) for i in range(store.n_clips)])
    assert info[:, 2].max() == 5 * 22050 and info[:, 0].max() == 9


def test_esc10_subset_with_its_own_folds(cluster, tmp_path):
    """Middle tier: the same commands as ``run``, the tasks run in this process."""
    root = _esc10(tmp_path)
    store_url = str(tmp_path / "esc10.zarr")
    burst = cluster.burst_worker()
    code, queued = cluster.cli_json(
        "submit-dataset", str(root), "--subset", "esc10", "--store", store_url, "--no-wait"
    )
    assert code == 0 and queued["enqueued"] == 10
    assert not any(d.error for d in burst.burst(EXTRACT_QUEUE))
    _check_store(store_url)

    args = ("submit-cv", "--store", store_url, "--plan", "official")
    code, cv = cluster.cli_json(*args, "--epochs", "1", "--batch-size", "16", "--no-wait")
    assert code == 0, cv
    trials = burst.burst(TRAIN_QUEUE)
    assert len(trials) == 5 and not any(t.error for t in trials), [str(t.error) for t in trials]

    runs = RunStore(store_url)
    run_id = runs.latest_run()
    assert run_id == cv["run_id"]
    report = runs.get_report(run_id)
    assert report["complete"] and report["plan"]["folds"] == [1, 2, 3, 4, 5]
    assert [t["test_fold"] for t in report["trials"]] == [1, 2, 3, 4, 5]
    assert report["dataset"]["name"] == "ESC-10"
    assert report["dataset"]["class_ids"] == [0, 10]
    shown_text = cluster.cli("cv-report", run_id, "--store", store_url)
    assert shown_text.returncode == 0, shown_text.stderr[-2000:]
    assert "dataset ESC-10" in shown_text.stdout and "chirp_up (10)" in shown_text.stdout

    code, shown = cluster.cli_json("cv-report", run_id, "--store", store_url)
    assert code == 0 and shown["dataset"]["name"] == "ESC-10"

    # predict takes a 5 s 44.1 kHz file like the training clips
    clip = sorted((root / "audio").glob("*-10.wav"))[0]
    assert sf.info(clip).samplerate == 44100
    proc = cluster.cli("predict", str(clip), "--store", store_url, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result,) = json.loads(proc.stdout)
    assert result["n_models"] == 5 and 1 <= result["n_windows"] <= 9


@pytest.mark.visibility_timeout(300)  # trials may train longer than 20 s; nothing is killed
def test_run_on_esc10_subset_with_its_own_folds(cluster, tmp_path):
    """Subprocess tier: ``run`` passes the layout options to its steps, real workers
    extract and train (one trial: the five are the test above)."""
    root = _esc10(tmp_path)
    store_url = str(tmp_path / "esc10.zarr")
    args = ("run", str(root), "--subset", "esc10", "--store", store_url, "--workers", "1")
    proc = cluster.cli(*args, "--epochs", "1", "--batch-size", "16", "--trials", "1", timeout=850)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_store(store_url)

    runs = RunStore(store_url)
    report = runs.get_report(runs.latest_run())
    assert report["complete"] and report["plan"]["folds"] == [1, 2, 3, 4, 5]
    assert [t["test_fold"] for t in report["trials"]] == [1]
    assert report["dataset"]["name"] == "ESC-10"
    assert report["dataset"]["class_ids"] == [0, 10]
    assert "dataset ESC-10" in proc.stdout and "chirp_up (10)" in proc.stdout
