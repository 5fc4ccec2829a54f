"""Tests for the synthetic dataset generator (orchestrator.synthetic)."""

from __future__ import annotations

import csv
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from orchestrator.datasets import scan_dataset
from orchestrator.synthetic import (
    CSV_COLUMNS,
    SYNTHETIC_CLASS_NAMES,
    make_synthetic_dataset,
    synthetic_summary,
)

SR = 22050


@pytest.fixture(scope="module")
def two_fold_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 classes x 2 folds x 6 clips, seed 0."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), folds=2, seed=0)


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "metadata" / "UrbanSound8K.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_layout_and_csv(two_fold_root: Path) -> None:
    root = two_fold_root
    assert root.name == "UrbanSound8K"
    with open(root / "metadata" / "UrbanSound8K.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert tuple(header) == CSV_COLUMNS
    rows = _rows(root)
    assert len(rows) == 10 * 2 * 6
    assert [r["slice_file_name"] for r in rows] == sorted(r["slice_file_name"] for r in rows)
    for row in rows:
        path = root / "audio" / f"fold{row['fold']}" / row["slice_file_name"]
        fsid, class_id, _occ, _slice = Path(row["slice_file_name"]).stem.split("-")
        assert (fsid, class_id) == (row["fsID"], row["classID"])
        assert row["class"] == SYNTHETIC_CLASS_NAMES[int(class_id)]
        assert float(row["end"]) > float(row["start"])
        assert row["salience"] in {"1", "2"}
        assert path.is_file()


def test_wav_format_and_durations(two_fold_root: Path) -> None:
    durations = []
    for path in sorted((two_fold_root / "audio").glob("fold*/*.wav")):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        durations.append(info.duration)
    assert min(durations) >= 0.5 - 1e-3
    assert max(durations) <= 4.0 + 1e-3
    assert sum(d < 3.9 for d in durations) >= 10, "short clips (to be padded) must exist"
    assert sum(d > 3.99 for d in durations) >= 10


def test_recordings_stay_in_one_fold(two_fold_root: Path) -> None:
    folds_of: dict[str, set[str]] = {}
    for row in _rows(two_fold_root):
        folds_of.setdefault(row["fsID"], set()).add(row["fold"])
    assert all(len(f) == 1 for f in folds_of.values())
    assert len(folds_of) < 120, "some recordings must have several slices"


def test_scan_counts(two_fold_root: Path) -> None:
    manifest = scan_dataset(two_fold_root.parent)
    assert len(manifest.clips) == 120
    assert manifest.folds == [1, 2]
    assert manifest.class_names == list(SYNTHETIC_CLASS_NAMES)
    assert manifest.missing_files == manifest.unlisted_files == manifest.invalid == []
    summary = synthetic_summary(two_fold_root)
    assert summary["per_fold"] == {1: 60, 2: 60}
    assert set(summary["per_class"].values()) == {12}
    assert set(summary["class_descriptions"]) == set(SYNTHETIC_CLASS_NAMES)


def test_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    kwargs = {"n_classes": 3, "folds": 2, "clips_per_class_per_fold": 2, "seconds": 1.0}
    a = make_synthetic_dataset(tmp_path / "a", seed=7, **kwargs)
    b = make_synthetic_dataset(tmp_path / "b", seed=7, **kwargs)
    c = make_synthetic_dataset(tmp_path / "c", seed=8, **kwargs)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    assert len(files_a) == 3 * 2 * 2 + 1
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    wavs = [f for f in files_a if f.suffix == ".wav"]
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in wavs if (c / f).exists())


def test_existing_dataset_not_overwritten_silently(tmp_path: Path) -> None:
    kwargs = {"n_classes": 2, "folds": 1, "clips_per_class_per_fold": 1, "seconds": 0.5}
    root = make_synthetic_dataset(tmp_path, **kwargs)
    (root / "audio" / "fold1" / "stale.wav").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        make_synthetic_dataset(tmp_path, **kwargs)
    make_synthetic_dataset(tmp_path, overwrite=True, **kwargs)
    assert not (root / "audio" / "fold1" / "stale.wav").exists()
    assert len(scan_dataset(root).clips) == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"n_classes": 11}, {"n_classes": 0}, {"folds": 0}, {"seconds": 0.2}, {"sample_rate": 8000}],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        make_synthetic_dataset(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "UrbanSound8K").exists()


def _mean_log_mel(path: Path) -> np.ndarray:
    """Per-clip mean log-mel spectrum, shape (40,), level-normalised (mean removed), dB."""
    y, sr = sf.read(path, dtype="float32")
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_mels=40)
    spectrum = librosa.power_to_db(mel).mean(axis=1)
    return spectrum - spectrum.mean()


def test_classes_distinguishable_but_not_trivial(two_fold_root: Path) -> None:
    features: dict[int, list[np.ndarray]] = {1: [], 2: []}
    labels: dict[int, list[int]] = {1: [], 2: []}
    for row in _rows(two_fold_root):
        fold = int(row["fold"])
        path = two_fold_root / "audio" / f"fold{fold}" / row["slice_file_name"]
        features[fold].append(_mean_log_mel(path))
        labels[fold].append(int(row["classID"]))
    train, test = np.stack(features[1]), np.stack(features[2])
    y_train, y_test = np.array(labels[1]), np.array(labels[2])
    centroids = np.stack([train[y_train == c].mean(axis=0) for c in range(10)])
    distances = ((test[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    accuracy = float((distances.argmin(axis=1) == y_test).mean())
    assert accuracy >= 0.6, f"nearest-centroid accuracy {accuracy:.2f} (chance 0.10)"
    # Up and down chirps share a mean spectrum: a time-agnostic feature can't be perfect.
    assert accuracy < 1.0
