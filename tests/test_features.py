"""Tests of workers.features: the window features against librosa and the notebook."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import pytest
import scipy.signal

from workers.audio import load_audio
from workers.features import (
    ClipFeatures,
    FeatureConfig,
    extract_clip_features,
    log_mel_windows,
    n_full_windows,
)

SR = 22050
WINDOW = 20480
STEP = 10240
SEED_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "seed-samples"
SEED_WINDOWS = {
    "aircon.wav": 7,
    "carhorn.wav": 7,
    "dogbark.wav": 7,
    "drill.wav": 2,
    "engine.wav": 7,
    "gunshots.wav": 2,
    "jackhammer.wav": 1,
    "music.wav": 7,
    "play.wav": 7,
    "siren.wav": 7,
}


def reference_windows(y: np.ndarray, **kwargs: Any) -> np.ndarray:
    """The straightforward per-window librosa computation, (bands, frames) order."""
    out = []
    for start in range(0, len(y) - WINDOW + 1, STEP):
        window = y[start : start + WINDOW]
        mel = librosa.feature.melspectrogram(
            y=window, sr=SR, n_fft=2048, hop_length=512, n_mels=60, **kwargs
        )
        log_spec = librosa.power_to_db(mel, ref=1.0)
        out.append(np.stack([log_spec, librosa.feature.delta(log_spec)], axis=-1))
    return np.asarray(out)


def notebook_scrambled_windows(y: np.ndarray) -> np.ndarray:
    """The notebook's extraction verbatim, including its reshape of (frames, bands) data."""
    log_specgrams = []
    for start in range(0, len(y) - WINDOW + 1, STEP):
        window = y[start : start + WINDOW]
        melspec = librosa.feature.melspectrogram(
            y=window, sr=SR, n_fft=2048, hop_length=512, n_mels=60
        )
        logspec = librosa.power_to_db(melspec, ref=1.0)
        logspec = logspec.T.flatten()[:, np.newaxis].T
        log_specgrams.append(logspec)
    log_specgrams = np.asarray(log_specgrams).reshape(len(log_specgrams), 60, 41, 1)
    features = np.concatenate((log_specgrams, np.zeros(np.shape(log_specgrams))), axis=3)
    for i in range(len(features)):
        features[i, :, :, 1] = librosa.feature.delta(features[i, :, :, 0])
    return features


def assert_parity(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours[..., 0], ref[..., 0], rtol=0, atol=1e-3)
    np.testing.assert_allclose(ours[..., 1], ref[..., 1], rtol=0, atol=1e-3)


def noise(n: int, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)


@pytest.fixture(scope="module")
def seed_dir() -> Path:
    if not SEED_DIR.is_dir():
        pytest.skip(f"real audio absent: {SEED_DIR} (see shared/data/README.md)")
    return SEED_DIR


@pytest.mark.parametrize("n_samples", [20480, 30720, 50000, 88200])
def test_parity_with_librosa_on_noise(n_samples: int) -> None:
    y = noise(n_samples, seed=n_samples)
    ours, n_real = log_mel_windows(y)
    ref = reference_windows(y)
    assert_parity(ours, ref)
    assert n_real == ref.shape[0]
    assert ours.dtype == np.float32


def test_parity_with_librosa_quiet_and_loud_parts() -> None:
    y = noise(88200, seed=1)
    y[:30000] *= 1e-4
    y[60000:] = 0.0
    assert_parity(log_mel_windows(y)[0], reference_windows(y))


@pytest.mark.real_data
@pytest.mark.parametrize("name", sorted(SEED_WINDOWS))
def test_parity_with_librosa_on_seed_samples(seed_dir: Path, name: str) -> None:
    y, _ = librosa.load(seed_dir / name, sr=SR)
    ours, n_real = log_mel_windows(y)
    assert_parity(ours, reference_windows(y))
    assert ours.shape == (SEED_WINDOWS[name], 60, 41, 2)
    assert n_real == SEED_WINDOWS[name]
    assert np.isfinite(ours).all()


@pytest.mark.real_data
def test_music_wav_gives_seven_windows(seed_dir: Path) -> None:
    y, _ = load_audio(seed_dir / "music.wav")
    features = extract_clip_features(y, FeatureConfig())
    assert y.shape == (88200,)
    assert features.windows.shape == (7, 60, 41, 2)
    assert features.n_real == 7
    assert features.n_samples == 88200


def test_not_the_notebook_scrambled_layout() -> None:
    y = librosa.chirp(fmin=100, fmax=8000, sr=SR, duration=2.0).astype(np.float32)
    y += noise(y.size, seed=2, scale=0.01)
    ours, _ = log_mel_windows(y)
    scrambled = notebook_scrambled_windows(y)
    straightforward = reference_windows(y)
    assert ours.shape == scrambled.shape == straightforward.shape
    assert_parity(ours, straightforward)
    assert np.abs(ours[..., 0] - scrambled[..., 0]).mean() > 5.0
    # The notebook's rows are frames*bands flattened in frame-major order: row b of its
    # window holds frames (41 * b) // 60 ... onwards, not band b.
    flat = straightforward[0, :, :, 0].T.reshape(60, 41)
    np.testing.assert_allclose(scrambled[0, :, :, 0], flat, atol=1e-3)


def test_pure_tone_lands_in_nearest_mel_band() -> None:
    freq = 1000.0
    t = np.arange(WINDOW) / SR
    y = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    windows, _ = log_mel_windows(y)
    centers = librosa.mel_frequencies(n_mels=62, fmin=0.0, fmax=SR / 2)[1:-1]
    expected = int(np.argmin(np.abs(centers - freq)))
    band_energy = windows[0, :, 5:36, 0].mean(axis=1)
    assert int(np.argmax(band_energy)) == expected


def test_silence_is_constant_floor_with_zero_delta() -> None:
    windows, n_real = log_mel_windows(np.zeros(30720, dtype=np.float32), amin=1e-10)
    assert windows.shape == (2, 60, 41, 2)
    assert n_real == 2
    log_spec = windows[..., 0]
    assert np.all(log_spec == log_spec.flat[0])
    assert log_spec.flat[0] == pytest.approx(10 * np.log10(1e-10), abs=1e-4)
    np.testing.assert_array_equal(windows[..., 1], 0.0)


def test_chirp_peak_band_rises_over_frames() -> None:
    y = librosa.chirp(fmin=200, fmax=8000, sr=SR, length=WINDOW, linear=True)
    windows, _ = log_mel_windows(y.astype(np.float32))
    peak = windows[0, :, :, 0].argmax(axis=0)
    interior = peak[3:-3]
    assert interior[0] < interior[-1]
    assert np.all(np.diff(interior) >= 0)
    assert np.corrcoef(np.arange(interior.size), interior)[0, 1] > 0.95


@pytest.mark.parametrize(
    ("n_samples", "expected_windows", "expected_real"),
    [(1, 1, 0), (20479, 1, 0), (20480, 1, 1), (30719, 1, 1), (30720, 2, 2), (88200, 7, 7)],
)
def test_window_count(n_samples: int, expected_windows: int, expected_real: int) -> None:
    windows, n_real = log_mel_windows(noise(n_samples))
    assert windows.shape == (expected_windows, 60, 41, 2)
    assert n_real == expected_real
    assert n_full_windows(n_samples, window_samples=WINDOW, step_samples=STEP) == expected_real


def test_short_clip_zero_padding() -> None:
    y = noise(5000)
    windows, n_real = log_mel_windows(y, short_clip="pad", pad_mode="zeros")
    padded = np.concatenate([y, np.zeros(WINDOW - y.size, dtype=np.float32)])
    assert n_real == 0
    assert_parity(windows, reference_windows(padded))


def test_short_clip_loop_padding() -> None:
    y = noise(7000)
    windows, n_real = log_mel_windows(y, short_clip="pad", pad_mode="loop")
    looped = np.tile(y, 3)[:WINDOW]
    assert n_real == 0
    assert_parity(windows, reference_windows(looped))
    zero_padded, _ = log_mel_windows(y, pad_mode="zeros")
    assert np.abs(windows - zero_padded).max() > 10.0


def test_short_clip_drop() -> None:
    windows, n_real = log_mel_windows(noise(20479), short_clip="drop")
    assert windows.shape == (0, 60, 41, 2)
    assert windows.dtype == np.float32
    assert n_real == 0


def test_custom_parameters_match_librosa() -> None:
    y = noise(40000, seed=3)
    windows, _ = log_mel_windows(
        y, n_mels=40, fmin=50.0, fmax=8000.0, top_db=None, delta_width=5, ref=0.5
    )
    ref = []
    for start in range(0, y.size - WINDOW + 1, STEP):
        mel = librosa.feature.melspectrogram(
            y=y[start : start + WINDOW], sr=SR, n_mels=40, fmin=50.0, fmax=8000.0
        )
        log_spec = librosa.power_to_db(mel, ref=0.5, top_db=None)
        ref.append(np.stack([log_spec, librosa.feature.delta(log_spec, width=5)], axis=-1))
    assert_parity(windows, np.asarray(ref))


def test_delta_is_savgol_along_time() -> None:
    windows, _ = log_mel_windows(noise(30720, seed=4))
    expected = scipy.signal.savgol_filter(
        windows[..., 0], 9, polyorder=1, deriv=1, mode="interp", axis=-1
    )
    np.testing.assert_allclose(windows[..., 1], expected, atol=1e-4)


def reference_windows_general(
    y: np.ndarray,
    *,
    sr: int,
    n_fft: int,
    hop_length: int,
    frames: int,
    step_frames: int,
    n_mels: int = 40,
    top_db: float | None = 80.0,
    delta_width: int = 9,
) -> np.ndarray:
    """Per-window librosa reference for any framing parameters: ``(n, n_mels, frames, 2)``."""
    window = hop_length * (frames - 1)
    out = []
    for start in range(0, len(y) - window + 1, hop_length * step_frames):
        mel = librosa.feature.melspectrogram(
            y=y[start : start + window], sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels
        )
        log_spec = librosa.power_to_db(mel, ref=1.0, top_db=top_db)
        delta = librosa.feature.delta(log_spec, width=delta_width)
        out.append(np.stack([log_spec, delta], axis=-1))
    return np.asarray(out)


# (sr, n_fft, hop_length, frames, step_frames, delta_width): edge frames per window end are
# ceil(n_fft / 2 / hop_length): 2 by default, 1 for n_fft 1024 (hop 512) and when hop >
# n_fft / 2, all 3 frames when the window (1024 samples) is shorter than n_fft; step_frames
# >= frames leaves gaps between the shared frames.
FRAMINGS = [
    (22050, 2048, 512, 41, 20, 9),
    (22050, 1024, 512, 41, 20, 9),
    (16000, 1024, 256, 41, 20, 9),
    (44100, 2048, 512, 21, 7, 5),
    (22050, 2048, 512, 41, 41, 9),
    (22050, 2048, 512, 11, 30, 9),
    (8000, 512, 512, 25, 10, 9),
    (22050, 2048, 512, 3, 1, 3),
    (48000, 4096, 1024, 33, 16, 7),
]


@pytest.mark.filterwarnings("ignore:n_fft=.* is too large:UserWarning")
@pytest.mark.parametrize(("sr", "n_fft", "hop_length", "frames", "step_frames", "width"), FRAMINGS)
@pytest.mark.parametrize("extra_windows", [0, 1, 3])
@pytest.mark.parametrize("tail", ["none", "short", "half_fft", "almost_step"])
def test_parity_edge_frames_match_librosa_for_any_framing(
    sr: int,
    n_fft: int,
    hop_length: int,
    frames: int,
    step_frames: int,
    width: int,
    extra_windows: int,
    tail: str,
) -> None:
    # The clip ends exactly at a window's end, just after it, within n_fft / 2 of it (the
    # last window's right edge frames reach the clip's end), or one sample short of the
    # next window.
    window = hop_length * (frames - 1)
    step = hop_length * step_frames
    extra = {"none": 0, "short": 37, "half_fft": n_fft // 2 - 5, "almost_step": step - 1}[tail]
    n = window + extra_windows * step + max(0, extra)
    seed = zlib.crc32(repr((sr, n_fft, frames, step_frames, extra_windows, tail)).encode())
    y = noise(n, seed=seed)
    y[: n // 3] *= 1e-3  # a quiet part: the edge frames hold the peak or the floor
    kwargs = {
        "sr": sr,
        "n_fft": n_fft,
        "hop_length": hop_length,
        "frames": frames,
        "step_frames": step_frames,
        "delta_width": width,
        "n_mels": 40,
    }
    ours, n_real = log_mel_windows(y, **kwargs)
    ref = reference_windows_general(
        y,
        sr=sr,
        n_fft=n_fft,
        hop_length=hop_length,
        frames=frames,
        step_frames=step_frames,
        delta_width=width,
    )
    assert n_real == extra_windows + 1 + (extra >= step)
    assert_parity(ours, ref)


@pytest.mark.parametrize(
    ("n_fft", "hop_length", "ends", "expected"),
    [
        # ceil((n_fft / 2) / hop) = 2 edge frames per end; window 0's first frames are the
        # clip's own (clip and window both zero-pad there).
        (2048, 512, False, [[39, 40], [0, 1, 39, 40], [0, 1, 39, 40]]),
        # The clip ends with the last window: its last frames are the clip's own too.
        (2048, 512, True, [[39, 40], [0, 1, 39, 40], [0, 1]]),
        (1024, 512, False, [[40], [0, 40], [0, 40]]),
        (
            4096,
            512,
            False,
            [[37, 38, 39, 40], [0, 1, 2, 3, 37, 38, 39, 40], [0, 1, 2, 3, 37, 38, 39, 40]],
        ),
    ],
)
def test_parity_recomputes_only_the_frames_that_see_the_window_padding(
    n_fft: int, hop_length: int, ends: bool, expected: list[list[int]]
) -> None:
    from workers.features import _parity_plan

    plan = _parity_plan(3, ends, n_fft=n_fft, hop_length=hop_length, frames=41, step_frames=20)
    edge = plan.rows >= plan.n_shared
    assert [np.flatnonzero(row).tolist() for row in edge] == expected
    assert plan.edge_frames.size == edge.sum()
    # Every other window frame is a clip frame, transformed once however many windows use it.
    shared_clip_frames = {20 * k + j for k, j in zip(*np.nonzero(~edge), strict=True)}
    assert plan.n_shared == len(shared_clip_frames)


def test_parity_zero_padding_hides_loud_audio_next_to_each_window() -> None:
    # Quiet audio with a loud burst just before each window's start: the window's first two
    # frames must see its zero padding, not the burst (the fast mode's frames see it).
    y = noise(88200, seed=11, scale=1e-3)
    for start in range(STEP, 88200 - WINDOW + 1, STEP):
        y[start - 900 : start] = noise(900, seed=start, scale=0.5)
    ours, _ = log_mel_windows(y)
    assert_parity(ours, reference_windows(y))
    fast, _ = log_mel_windows(y, mode="fast")
    assert np.abs(fast[1:, :, :2, 0] - ours[1:, :, :2, 0]).max() > 20.0


def test_odd_n_fft_is_rejected() -> None:
    # librosa's center=True gives frames - 1 frames per window for an odd n_fft.
    with pytest.raises(ValueError, match="n_fft must be even"):
        log_mel_windows(noise(30000), n_fft=2047)


def test_fast_mode_differs_from_parity_only_at_window_edges() -> None:
    y = noise(88200, seed=5)
    parity, _ = log_mel_windows(y, top_db=None)
    fast, n_real = log_mel_windows(y, top_db=None, mode="fast")
    assert fast.shape == parity.shape
    assert n_real == 7
    # Frames 2..38 only see samples inside the window; delta reaches 4 frames further.
    np.testing.assert_allclose(fast[:, :, 2:39, 0], parity[:, :, 2:39, 0], atol=1e-3)
    np.testing.assert_allclose(fast[:, :, 6:35, 1], parity[:, :, 6:35, 1], atol=1e-3)
    # Window 0 starts at the clip's start, where both zero-pad.
    np.testing.assert_allclose(fast[0, :, :2, 0], parity[0, :, :2, 0], atol=1e-3)
    assert np.abs(fast[1:, :, :2, 0] - parity[1:, :, :2, 0]).max() > 1.0
    assert np.abs(fast[:, :, 39:, 0] - parity[:, :, 39:, 0]).max() > 1.0


def test_fast_mode_short_clip_and_finite() -> None:
    windows, n_real = log_mel_windows(noise(9000), mode="fast")
    assert windows.shape == (1, 60, 41, 2)
    assert n_real == 0
    assert np.isfinite(windows).all()


def test_output_is_float32_for_float64_input() -> None:
    windows, _ = log_mel_windows(noise(30000).astype(np.float64))
    assert windows.dtype == np.float32
    assert np.isfinite(windows).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sr": 0}, "sr"),
        ({"n_fft": -1}, "n_fft"),
        ({"hop_length": 0}, "hop_length"),
        ({"n_mels": 0}, "n_mels"),
        ({"frames": 1}, "frames"),
        ({"step_frames": 0}, "step_frames"),
        ({"delta_width": 4}, "delta_width"),
        ({"delta_width": 1}, "delta_width"),
        ({"frames": 5, "delta_width": 9}, "must not exceed"),
        ({"fmin": -1.0}, "fmin"),
        ({"fmax": 20000.0}, "fmax"),
        ({"fmin": 500.0, "fmax": 400.0}, "fmax"),
        ({"ref": 0.0}, "ref"),
        ({"amin": 0.0}, "amin"),
        ({"top_db": -1.0}, "top_db"),
        ({"short_clip": "truncate"}, "short_clip"),
        ({"pad_mode": "reflect"}, "pad_mode"),
        ({"mode": "turbo"}, "mode"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        log_mel_windows(noise(30000), **kwargs)


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.zeros((2, 30000), dtype=np.float32), "1-D"),
        (np.zeros(30000, dtype=np.int16), "floating"),
        (np.full(30000, np.nan, dtype=np.float32), "NaN"),
    ],
)
def test_invalid_signal(y: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        log_mel_windows(y)


def test_config_round_trip() -> None:
    config = FeatureConfig(n_mels=40, fmax=8000.0, top_db=None, short_clip="drop", mode="fast")
    data = json.loads(json.dumps(config.to_dict()))
    assert FeatureConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown"):
        FeatureConfig.from_dict({**data, "hop": 256})


def test_extract_clip_features_uses_config_and_truncates() -> None:
    y = noise(200000, seed=6)
    config = FeatureConfig(n_mels=40, max_seconds=2.0, mode="parity")
    result = extract_clip_features(y, config)
    assert isinstance(result, ClipFeatures)
    assert result.n_samples == 44100
    expected = n_full_windows(44100, window_samples=WINDOW, step_samples=STEP)
    assert result.windows.shape == (expected, 40, 41, 2)
    assert result.n_real == expected
    direct, _ = log_mel_windows(y[:44100], n_mels=40)
    np.testing.assert_array_equal(result.windows, direct)


def test_extract_clip_features_default_config_window_count() -> None:
    config = FeatureConfig()
    result = extract_clip_features(noise(10 * SR), config)
    assert result.windows.shape == (config.max_windows, *config.window_shape)
    assert result.n_samples == config.max_samples
