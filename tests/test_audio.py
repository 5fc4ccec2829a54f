"""Tests of workers.audio.load_audio on generated files of many formats and on real clips."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from workers.audio import AudioDecodeError, AudioInfo, load_audio

SR = 22050
SEED_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "seed-samples"
SEED_SAMPLES = {
    "aircon.wav": 88200,
    "carhorn.wav": 88200,
    "dogbark.wav": 88200,
    "drill.wav": 31532,
    "engine.wav": 88200,
    "gunshots.wav": 33516,
    "jackhammer.wav": 26168,
    "music.wav": 88200,
    "play.wav": 88200,
    "siren.wav": 88200,
}


def sine(rate: int, seconds: float, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    """``(frames, channels)`` float32 sine at amplitude 0.5 (every channel the same)."""
    t = np.arange(round(rate * seconds)) / rate
    tone = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(tone[:, None], channels, axis=1)


def write(
    path: Path,
    data: np.ndarray,
    rate: int,
    *,
    subtype: str = "PCM_16",
    fmt: str = "WAV",
) -> Path:
    sf.write(path, data, rate, subtype=subtype, format=fmt)
    return path


def dominant_frequency(y: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    return float(np.fft.rfftfreq(y.size, 1 / sr)[np.argmax(spectrum)])


@pytest.mark.parametrize(
    ("fmt", "subtype", "suffix"),
    [
        ("WAV", "PCM_U8", "wav"),
        ("WAV", "PCM_16", "wav"),
        ("WAV", "PCM_24", "wav"),
        ("WAV", "PCM_32", "wav"),
        ("WAV", "FLOAT", "wav"),
        ("WAV", "DOUBLE", "wav"),
        ("FLAC", "PCM_16", "flac"),
        ("FLAC", "PCM_24", "flac"),
        ("OGG", "VORBIS", "ogg"),
    ],
)
def test_formats(tmp_path: Path, fmt: str, subtype: str, suffix: str) -> None:
    path = write(tmp_path / f"tone.{suffix}", sine(44100, 1.0, 2), 44100, subtype=subtype, fmt=fmt)
    y, info = load_audio(path)
    assert y.dtype == np.float32
    assert y.ndim == 1
    assert y.size == SR
    assert info.subtype == subtype
    assert info.channels == 2
    assert info.orig_sample_rate == 44100
    assert info.frames_read == info.orig_frames == 44100
    assert not info.truncated
    assert dominant_frequency(y, SR) == pytest.approx(440.0, abs=2.0)
    assert np.abs(y).max() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000, 192000])
def test_sample_rates(tmp_path: Path, rate: int) -> None:
    frames = round(rate * 1.3) + 7
    data = sine(rate, frames / rate, freq=1000.0)
    y, info = load_audio(write(tmp_path / f"r{rate}.wav", data, rate))
    assert y.dtype == np.float32
    assert y.size == math.ceil(frames * SR / rate)
    assert info.orig_sample_rate == rate
    assert dominant_frequency(y, SR) == pytest.approx(1000.0, abs=2.0)
    np.testing.assert_allclose(y, librosa.load(tmp_path / f"r{rate}.wav", sr=SR)[0], atol=1e-5)


@pytest.mark.parametrize("channels", [1, 2, 6, 8])
def test_channels_are_averaged(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(channels)
    data = (rng.uniform(-0.5, 0.5, size=(SR, channels))).astype(np.float32)
    path = write(tmp_path / f"c{channels}.wav", data, SR, subtype="FLOAT")
    y, info = load_audio(path)
    assert info.channels == channels
    np.testing.assert_allclose(y, data.mean(axis=1), atol=1e-6)


def test_target_rate_is_a_parameter(tmp_path: Path) -> None:
    path = write(tmp_path / "tone.wav", sine(48000, 1.0), 48000)
    y, _ = load_audio(path, sr=16000)
    assert y.size == 16000
    assert dominant_frequency(y, 16000) == pytest.approx(440.0, abs=2.0)


def test_cap_reads_bounded_frames(tmp_path: Path) -> None:
    path = write(tmp_path / "long.wav", sine(44100, 30.0), 44100)
    y, info = load_audio(path, max_seconds=4.0)
    assert info.orig_frames == 30 * 44100
    assert info.frames_read == 4 * 44100
    assert info.truncated
    assert y.size == 88200
    full, _ = librosa.load(path, sr=SR)
    # soxr sees the cut as the signal's end only in its last few milliseconds.
    np.testing.assert_allclose(y[:80000], full[:80000], atol=1e-4)


def test_no_cap_reads_everything(tmp_path: Path) -> None:
    path = write(tmp_path / "long.wav", sine(22050, 6.0), 22050)
    y, info = load_audio(path, max_seconds=None)
    assert y.size == 6 * SR
    assert info.frames_read == 6 * SR
    assert not info.truncated


def test_short_file_is_not_truncated(tmp_path: Path) -> None:
    y, info = load_audio(write(tmp_path / "short.wav", sine(22050, 1.0), 22050))
    assert y.size == SR
    assert not info.truncated
    assert isinstance(info, AudioInfo)


def test_non_audio_bytes(tmp_path: Path) -> None:
    path = tmp_path / "fake.wav"
    path.write_bytes(b"this is a text file, not a RIFF/WAVE header\n" * 20)
    with pytest.raises(AudioDecodeError) as err:
        load_audio(path)
    assert err.value.path == str(path)
    assert err.value.reason.startswith("not an audio file")
    assert str(err.value) == f"{path}: {err.value.reason}"
    assert isinstance(err.value, ValueError)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match=r"file is empty \(0 bytes\)"):
        load_audio(path)


def test_truncated_header(tmp_path: Path) -> None:
    path = write(tmp_path / "good.wav", sine(22050, 1.0), 22050)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(path.read_bytes()[:20])
    with pytest.raises(AudioDecodeError, match="libsndfile") as err:
        load_audio(cut)
    assert err.value.path == str(cut)


def test_header_without_frames(tmp_path: Path) -> None:
    path = write(tmp_path / "good.wav", sine(22050, 1.0), 22050)
    cut = tmp_path / "header_only.wav"
    cut.write_bytes(path.read_bytes()[:44])
    with pytest.raises(AudioDecodeError, match="no audio frames"):
        load_audio(cut)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path: Path, bad: float) -> None:
    data = sine(22050, 1.0)
    data[1000, 0] = bad
    path = write(tmp_path / "bad.wav", data, 22050, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN or infinite"):
        load_audio(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="no such file"):
        load_audio(tmp_path / "absent.wav")


def test_error_survives_pickling() -> None:
    err = pickle.loads(pickle.dumps(AudioDecodeError("a.wav", "file is empty (0 bytes)")))
    assert (err.path, err.reason, str(err)) == (
        "a.wav",
        "file is empty (0 bytes)",
        "a.wav: file is empty (0 bytes)",
    )


@pytest.mark.parametrize(("kwargs", "match"), [({"sr": 0}, "sr"), ({"max_seconds": 0}, "max")])
def test_invalid_arguments(tmp_path: Path, kwargs: dict[str, float], match: str) -> None:
    path = write(tmp_path / "tone.wav", sine(22050, 1.0), 22050)
    with pytest.raises(ValueError, match=match):
        load_audio(path, **kwargs)


@pytest.mark.real_data
@pytest.mark.parametrize("name", sorted(SEED_SAMPLES))
def test_seed_samples_match_librosa_load(name: str) -> None:
    if not SEED_DIR.is_dir():
        pytest.skip(f"real audio absent: {SEED_DIR} (see shared/data/README.md)")
    path = SEED_DIR / name
    y, info = load_audio(path)
    expected, _ = librosa.load(path, sr=SR)
    assert y.shape == expected.shape == (SEED_SAMPLES[name],)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-4)
    assert info.orig_sample_rate == sf.info(path).samplerate
    assert not info.truncated
