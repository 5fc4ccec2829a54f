"""The Hann window, mel filterbank and delta filter that extraction writes out in numpy,
against the librosa and scipy functions they replace (so workers import neither)."""

from __future__ import annotations

import subprocess
import sys

import librosa
import numpy as np
import pytest
import scipy.signal

from workers import features as F

MEL_CASES = [
    (22050, 2048, 60, 0.0, None),  # the default
    (22050, 1024, 60, 0.0, None),  # Piczak's n_fft
    (44100, 2048, 128, 20.0, 16000.0),
    (16000, 512, 40, 300.0, 8000.0),
    (8000, 256, 60, 0.0, None),  # empty bands at this rate
    (48000, 4096, 96, 50.0, None),
]


@pytest.mark.filterwarnings("ignore:Empty filters detected")
@pytest.mark.parametrize(("sr", "n_fft", "n_mels", "fmin", "fmax"), MEL_CASES)
def test_mel_basis_is_librosa_to_the_bit(sr, n_fft, n_mels, fmin, fmax) -> None:
    ours = F.slaney_mel_basis(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    ref = librosa.filters.mel(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float32
    )
    assert ours.dtype == np.float32 and ours.shape == (n_mels, 1 + n_fft // 2)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("n", [1, 2, 3, 512, 1000, 1024, 2048, 4096])
def test_hann_window_is_scipy_to_the_bit(n: int) -> None:
    ref = scipy.signal.get_window("hann", n, fftbins=True).astype(np.float32)
    np.testing.assert_array_equal(F._hann_window(n), ref)


@pytest.mark.parametrize(("frames", "width"), [(3, 3), (10, 9), (41, 9), (41, 11), (101, 9)])
def test_delta_matrix_is_scipy_savgol(frames: int, width: int) -> None:
    ours = F._delta_matrix(frames, width)
    ref = scipy.signal.savgol_filter(
        np.eye(frames), width, polyorder=1, deriv=1, mode="interp", axis=-1
    ).astype(np.float32)
    nonzero = ours != 0
    np.testing.assert_array_equal(ours[nonzero], ref[nonzero])  # every coefficient, exactly
    assert np.abs(ref[~nonzero]).max() < 1e-16  # scipy's rounding noise where 0 is exact
    x = np.random.default_rng(0).normal(size=(60, frames)).astype(np.float32)
    np.testing.assert_allclose(x @ ours, librosa.feature.delta(x, width=width), atol=1e-5)


@pytest.mark.parametrize(("frames", "width"), [(41, 8), (41, 1), (5, 7)])
def test_delta_matrix_refuses_bad_widths(frames: int, width: int) -> None:
    with pytest.raises(ValueError, match="delta width"):
        F._delta_matrix(frames, width)


def test_extraction_imports_neither_librosa_nor_scipy_signal() -> None:
    code = (
        "import sys, numpy as np\n"
        "from workers.featurize import featurize_file\n"
        "from workers.features import FeatureConfig, extract_clip_features\n"
        "for mode in ('parity', 'fast'):\n"
        "    c = FeatureConfig(mode=mode)\n"
        "    extract_clip_features(np.ones(3 * c.window_samples, dtype=np.float32), c)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'librosa'"
        " or m.startswith('scipy.signal')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
