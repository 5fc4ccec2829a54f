"""Tests of orchestrator.local_features.extract_files (``orchestrator features FILE...``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from orchestrator.local_features import extract_files
from workers.features import FeatureConfig


def tone(path: Path, rate: int, seconds: float, channels: int = 1) -> Path:
    t = np.arange(round(rate * seconds)) / rate
    data = np.repeat((0.3 * np.sin(2 * np.pi * 440 * t))[:, None], channels, axis=1)
    sf.write(path, data, rate, subtype="PCM_16")
    return path


def test_writes_npy_and_reports_bad_file(tmp_path: Path) -> None:
    long_clip = tone(tmp_path / "long.wav", 44100, 4.0, channels=2)
    short_clip = tone(tmp_path / "short.wav", 48000, 0.5)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 10)
    out = tmp_path / "out"

    results = extract_files([long_clip, bad, short_clip], out, FeatureConfig())

    assert [r["path"] for r in results] == [str(long_clip), str(bad), str(short_clip)]
    first, broken, short = results
    assert first["error"] is None
    assert first["shape"] == [7, 60, 41, 2]
    assert (first["n_windows"], first["n_real"], first["n_samples"]) == (7, 7, 88200)
    assert first["seconds"] == 4.0
    saved = np.load(first["npy"])
    assert Path(first["npy"]) == out / "long.npy"
    assert saved.shape == (7, 60, 41, 2)
    assert saved.dtype == np.float32

    assert broken["error"].startswith("not an audio file")
    assert broken["shape"] is None
    assert broken["npy"] is None
    assert not (out / "bad.npy").exists()

    assert short["shape"] == [1, 60, 41, 2]
    assert (short["n_windows"], short["n_real"], short["n_samples"]) == (1, 0, 11025)
    assert np.load(out / "short.npy").shape == (1, 60, 41, 2)
    json.dumps(results)


def test_without_out_dir_saves_nothing(tmp_path: Path) -> None:
    clip = tone(tmp_path / "a.wav", 22050, 0.5)
    results = extract_files([clip], None, FeatureConfig(short_clip="drop"))
    assert results[0]["npy"] is None
    assert results[0]["shape"] == [0, 60, 41, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]


def test_repeated_stems_get_distinct_files(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a = tone(tmp_path / "x" / "clip.wav", 22050, 1.0)
    b = tone(tmp_path / "y" / "clip.flac", 22050, 1.0)
    results = extract_files([a, b], tmp_path / "out", FeatureConfig())
    assert [Path(r["npy"]).name for r in results] == ["clip.npy", "clip-2.npy"]


def test_missing_file_is_an_entry_not_an_exception(tmp_path: Path) -> None:
    results = extract_files([tmp_path / "absent.wav"], tmp_path / "out", FeatureConfig())
    assert results[0]["error"] == "no such file"
    assert results[0]["n_windows"] is None
