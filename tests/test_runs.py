"""Run records (RunStore) and the trial runner over a real feature store."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from orchestrator.cv_submission import create_training_run
from storage.feature_store import FeatureStore
from storage.manifest import ClipRecord, Manifest
from storage.runs import PREDICTION_KEYS, RunStore, run_status
from storage.store_layout import create_or_extend
from workers import trial_runner
from workers.features import FeatureConfig
from workers.run_report import build_report, finalize_run
from workers.trial_config import TrialConfig
from workers.trial_runner import run_trial

CLASSES = ["hum", "bark", "siren"]
N_MELS, FRAMES, MAX_WINDOWS = 16, 11, 3


def _predictions(rng: np.random.Generator, n_clips: int = 5) -> dict[str, np.ndarray]:
    probs = rng.random((n_clips, 3)).astype("float32")
    return {
        "clip_index": np.arange(n_clips),
        "clip_labels": np.arange(n_clips) % 3,
        "clip_probs": probs / probs.sum(1, keepdims=True),
        "window_clip_index": np.repeat(np.arange(n_clips), 2),
        "window_labels": np.repeat(np.arange(n_clips) % 3, 2),
        "window_probs": np.repeat(probs, 2, axis=0),
    }


def test_run_ids_sort_and_list(tmp_path: Path) -> None:
    runs = RunStore(str(tmp_path / "store"))
    assert runs.list_runs() == [] and runs.latest_run() is None
    first = runs.create_run({"trials": []}, run_id="20260101-000000-aaaa")
    second = runs.create_run({"trials": []})
    assert runs.list_runs() == [first, second]
    assert runs.latest_run() == second
    config = runs.get_config(second)
    assert config["store_url"] == str(tmp_path / "store")
    assert "numpy" in config["package_versions"] and "keras" in config["package_versions"]
    assert {"version", "git_commit"} <= set(config["project"])
    with pytest.raises(FileNotFoundError):
        runs.get_config("nope")


def test_trial_round_trip_and_overwrite(tmp_path: Path) -> None:
    runs = RunStore(str(tmp_path / "store"))
    run_id = runs.create_run({"trials": []})
    assert runs.trial_result(run_id, 0) is None
    model = tmp_path / "m.keras"
    model.write_bytes(b"first model")
    preds = _predictions(np.random.default_rng(0))
    runs.save_trial(run_id, 0, {"clip_accuracy": 0.5}, preds, model, {"mean": [1], "std": [2]})
    assert runs.trial_result(run_id, 0) == {"clip_accuracy": 0.5}
    loaded = runs.load_predictions(run_id, 0)
    assert set(loaded) == set(PREDICTION_KEYS)
    for key in PREDICTION_KEYS:
        np.testing.assert_array_equal(loaded[key], preds[key])
    assert runs.load_normalization(run_id, 0) == {"mean": [1], "std": [2]}
    model.write_bytes(b"second model")
    runs.save_trial(run_id, 0, {"clip_accuracy": 0.7}, preds, model, {"mean": [3], "std": [4]})
    assert runs.trial_results(run_id) == {0: {"clip_accuracy": 0.7}}
    assert runs.model_path(run_id, 0, tmp_path / "dl").read_bytes() == b"second model"
    assert runs.get_report(run_id) is None
    runs.save_report(run_id, {"x": 1})
    assert runs.get_report(run_id) == {"x": 1}


def test_result_json_is_written_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = RunStore(str(tmp_path / "store"))
    run_id = runs.create_run({"trials": []})
    model = tmp_path / "m.keras"
    model.write_bytes(b"m")
    order: list[str] = []
    original = runs.blobs.put_bytes
    monkeypatch.setattr(
        runs.blobs,
        "put_bytes",
        lambda key, data: (order.append(key.rsplit("/", 1)[-1]), original(key, data)),
    )
    runs.save_trial(run_id, 2, {"a": 1}, _predictions(np.random.default_rng(1)), model, {})
    assert order[-1] == "result.json"
    assert {"predictions.npz", "model.keras", "normalization.json"} <= set(order)


@pytest.fixture
def feature_store(tmp_path: Path) -> FeatureStore:
    """Two folds of 12 clips (4 recordings each); one clip of fold 2 never extracted."""
    rng = np.random.default_rng(0)
    clips = []
    for fold in (1, 2):
        for i in range(12):
            clips.append(
                ClipRecord(
                    clip_id=f"{fold}-{i}",
                    rel_path=f"audio/fold{fold}/{fold}-{i}.wav",
                    fold=fold,
                    label=i % 3,
                    fsid=100 * fold + i // 3,
                )
            )
    manifest = Manifest(dataset_root=str(tmp_path), clips=clips, class_names=CLASSES)
    config = FeatureConfig(n_mels=N_MELS, frames=FRAMES).to_dict()
    store, _ = create_or_extend(
        str(tmp_path / "features.zarr"), manifest, config, (MAX_WINDOWS, N_MELS, FRAMES, 2)
    )
    for index, clip in enumerate(store.manifest_records()):
        if clip.clip_id == "2-11":
            continue
        windows = rng.normal(size=(2, N_MELS, FRAMES, 2)).astype("float32")
        windows[:, 4 * clip.label : 4 * clip.label + 4, :, 0] += 3.0
        store.write_clip(index, windows, n_real=2, n_samples=30000)
    return store


def test_run_trial_is_idempotent_and_finalize_waits(
    tmp_path: Path, feature_store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = RunStore(str(tmp_path / "store"))
    training = TrialConfig(model="default", epochs=2, batch_size=8, patience=2)
    run_id = create_training_run(feature_store, runs, plan="official", training=training)
    config = runs.get_config(run_id)
    assert [t["test_fold"] for t in config["trials"]] == [1, 2]
    assert config["class_names"] == CLASSES and config["training"]["epochs"] == 2

    events: list[dict] = []
    summary = run_trial(feature_store, runs, run_id, 1, progress=events.append)
    assert summary["run_id"] == run_id and summary["trial"] == 1 and summary["epochs"] == 2
    assert [e["epoch"] for e in events] == [1, 2]
    result = runs.trial_result(run_id, 1)
    assert result is not None
    assert result["n_clips"] == 12 and result["n_clips_without_windows"] == 1
    assert result["n_valid_windows"] > 0 and result["valid_folds"] == []
    assert run_status(runs, run_id)["missing"] == [0]
    assert finalize_run(runs, run_id) is None
    assert runs.get_report(run_id) is None

    result_file = tmp_path / "store" / "runs" / run_id / "trials" / "1" / "result.json"
    mtime = os.stat(result_file).st_mtime_ns
    time.sleep(0.01)

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished trial was retrained")

    monkeypatch.setattr(trial_runner, "train_and_evaluate", no_training)
    assert run_trial(feature_store, runs, run_id, 1) == summary
    assert os.stat(result_file).st_mtime_ns == mtime
    monkeypatch.undo()

    run_trial(feature_store, runs, run_id, 0)
    status = run_status(runs, run_id)
    assert status["complete"] and status["done"] == [0, 1]
    report = finalize_run(runs, run_id)
    assert report is not None and report["complete"]
    assert runs.get_report(run_id) == report
    assert report == build_report(runs, run_id)
    accs = [t["clip_accuracy"] for t in report["trials"]]
    assert report["aggregate"]["mean"]["clip_accuracy"] == pytest.approx(np.mean(accs))
    assert np.sum(report["aggregate"]["confusion_matrix"]) == 24
    assert finalize_run(runs, run_id) == report


def test_predict_files_ensembles_trials_and_reports_bad_files(tmp_path: Path) -> None:
    import soundfile as sf

    from orchestrator.predict import predict_files
    from workers.models import build_model
    from workers.normalization import Normalization

    runs = RunStore(str(tmp_path / "store"))
    features = FeatureConfig(n_mels=N_MELS, frames=FRAMES)
    run_id = runs.create_run({"class_names": CLASSES, "feature_config": features.to_dict()})
    norm = Normalization(np.zeros((N_MELS, 2), "float32"), np.ones((N_MELS, 2), "float32"))
    for k in (0, 1):
        model = build_model("default", input_shape=(N_MELS, FRAMES, 2), n_classes=3, seed=k)
        model.save(tmp_path / f"m{k}.keras")
        runs.save_trial(
            run_id, k, {"trial": k}, _predictions(np.random.default_rng(k)),
            tmp_path / f"m{k}.keras", norm.to_dict(),
        )  # fmt: skip
    good = tmp_path / "tone.wav"
    t = np.arange(22050) / 22050
    sf.write(good, (0.3 * np.sin(2 * np.pi * 440 * t)).astype("float32"), 22050)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")

    out = predict_files([good, bad], runs, run_id, top_k=2)
    assert out[0]["n_models"] == 2 and len(out[0]["top"]) == 2
    probs = out[0]["probabilities"]
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert out[0]["top"][0]["probability"] == pytest.approx(max(probs.values()))
    assert out[1]["path"] == str(bad) and "error" in out[1]
