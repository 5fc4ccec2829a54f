"""Log-mel + delta window features (Piczak 2015), as pure numpy functions.

No file I/O here: audio comes in as a mono float32 signal at the target rate
(see ``workers.audio.load_audio``), features go out as numpy arrays.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse

# Extraction imports neither librosa nor scipy.signal (together 2.6 s of CPU at
# start-up, benchmarks/bench_startup.py): the Hann window, the mel filterbank and the
# delta filter are written out in numpy below, equal to librosa's and scipy's
# (tests/test_filterbanks.py); the tests compare the features with librosa itself.

ShortClipPolicy = Literal["pad", "drop"]
PadMode = Literal["zeros", "loop"]
ExtractionMode = Literal["parity", "fast"]


@dataclass(frozen=True)
class FeatureConfig:
    """Every parameter of the window features. Defaults equal the notebook we replace.

    Attributes:
        sample_rate: Target rate in Hz; audio is resampled to it on load.
        n_fft: FFT size in samples.
        hop_length: STFT hop in samples.
        n_mels: Number of mel bands (the feature's first axis).
        frames: STFT frames per window (the feature's second axis); a window
            spans ``hop_length * (frames - 1)`` samples (20480 by default).
        step_frames: Window step in STFT hops; ``step_frames * hop_length``
            samples (10240 by default: 50% overlap).
        fmin: Lowest mel filter edge in Hz.
        fmax: Highest mel filter edge in Hz (``None``: ``sample_rate / 2``).
        ref: Reference power for ``power_to_db`` (0 dB).
        amin: Power floor for ``power_to_db``.
        top_db: Dynamic range below each window's peak kept by ``power_to_db``
            in dB (``None``: no clipping).
        delta_width: Window length (odd, >= 3) of ``librosa.feature.delta``.
        short_clip: ``"pad"``: a clip shorter than one window is padded to one
            window (see ``pad_mode``); ``"drop"``: it yields no window.
        pad_mode: ``"zeros"`` (silence) or ``"loop"`` (the clip repeated).
        mode: ``"parity"``: one STFT per window, equal to the per-window librosa
            reference; ``"fast"``: one STFT per clip, windows sliced from it.
        max_seconds: Audio beyond this many seconds is not read (bounded memory
            and time for long files); it also fixes the store's windows per clip.
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 60
    frames: int = 41
    step_frames: int = 20
    fmin: float = 0.0
    fmax: float | None = None
    ref: float = 1.0
    amin: float = 1e-10
    top_db: float | None = 80.0
    delta_width: int = 9
    short_clip: ShortClipPolicy = "pad"
    pad_mode: PadMode = "zeros"
    mode: ExtractionMode = "parity"
    max_seconds: float = 4.0

    @property
    def window_samples(self) -> int:
        """Samples per window (20480 by default)."""
        return self.hop_length * (self.frames - 1)

    @property
    def step_samples(self) -> int:
        """Samples between window starts (10240 by default)."""
        return self.hop_length * self.step_frames

    @property
    def max_samples(self) -> int:
        """Samples read at most from one file (88200 by default)."""
        return math.ceil(self.max_seconds * self.sample_rate)

    @property
    def max_windows(self) -> int:
        """Windows of the longest clip kept (7 by default): the store's slots per clip."""
        full = (self.max_samples - self.window_samples) // self.step_samples + 1
        return max(1, full)

    @property
    def window_shape(self) -> tuple[int, int, int]:
        """Shape of one window: ``(n_mels, frames, 2)`` (log-mel, delta)."""
        return (self.n_mels, self.frames, 2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, as recorded in the store and in run configs."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown feature parameters: {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class ClipFeatures:
    """Result of :func:`extract_clip_features`.

    Attributes:
        windows: ``(n_windows, n_mels, frames, 2)`` float32; channel 0 is the
            log-mel power in dB, channel 1 its delta along time.
        n_real: How many leading windows are made only of the clip's own audio
            (a padded short clip has ``n_windows == 1`` and ``n_real == 0``).
        n_samples: Length of the input signal in samples.
    """

    windows: np.ndarray
    n_real: int
    n_samples: int


_N_CHANNELS = 2


@functools.lru_cache(maxsize=8)
def _hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window, ``(n_fft,)`` float32, as ``librosa.stft`` builds it (read-only).

    The same float64 operations as ``scipy.signal.get_window("hann", n_fft,
    fftbins=True)`` (so the same bits; tests/test_filterbanks.py), without importing
    scipy.signal.
    """
    if n_fft <= 1:
        window = np.ones(n_fft, dtype=np.float32)
    else:
        fac = np.linspace(-np.pi, np.pi, n_fft + 1, dtype=np.float64)
        full = np.zeros(n_fft + 1, dtype=np.float64)
        for k, a in enumerate((0.5, 0.5)):
            full += a * np.cos(k * fac)
        window = full[:-1].astype(np.float32)
    window.setflags(write=False)
    return window


# Slaney's mel scale (librosa's htk=False): linear below 1 kHz, logarithmic above
_MEL_F_SP = 200.0 / 3  # Hz per mel in the linear part
_MEL_MIN_LOG_HZ = 1000.0
_MEL_MIN_LOG_MEL = _MEL_MIN_LOG_HZ / _MEL_F_SP
_MEL_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(frequencies: np.ndarray) -> np.ndarray:
    """Slaney mel of ``frequencies`` (Hz), float64: ``librosa.hz_to_mel(htk=False)``."""
    mels = frequencies / _MEL_F_SP
    log_t = frequencies >= _MEL_MIN_LOG_HZ
    mels[log_t] = _MEL_MIN_LOG_MEL + np.log(frequencies[log_t] / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Hz of Slaney ``mels``, float64: ``librosa.mel_to_hz(htk=False)``."""
    freqs = _MEL_F_SP * mels
    log_t = mels >= _MEL_MIN_LOG_MEL
    freqs[log_t] = _MEL_MIN_LOG_HZ * np.exp(_MEL_LOGSTEP * (mels[log_t] - _MEL_MIN_LOG_MEL))
    return freqs


def slaney_mel_basis(
    *, sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Slaney-normalised mel filterbank, ``(n_mels, 1 + n_fft // 2)`` float32.

    Equal, bit for bit, to ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels,
    fmin=fmin, fmax=fmax, dtype=np.float32)`` (librosa's defaults: Slaney mel scale,
    Slaney area normalisation; the same operations in the same order, checked in
    tests/test_filterbanks.py). Written out here so that extraction does not import
    librosa, whose import (with scipy.signal) is 2.6 s of CPU in every worker and
    every command that computes features (``benchmarks/bench_startup.py``).
    """
    fmax = float(sr) / 2 if fmax is None else fmax
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    edges = _hz_to_mel(np.asarray([fmin, fmax], dtype=np.float64))
    mel_f = _mel_to_hz(np.linspace(edges[0], edges[1], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


@functools.lru_cache(maxsize=8)
def _mel_basis_t(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None
) -> scipy.sparse.csr_array:
    """Transposed Slaney mel filterbank, ``(1 + n_fft // 2, n_mels)`` float32, sparse.

    Each FFT bin feeds at most two bands, so ``power @ basis_t`` as a sparse product
    does ~1/30 of the dense work, single-threaded: a dense BLAS product of this size
    wakes OpenBLAS's threads, which costs more than the product on a busy machine.
    """
    import scipy.sparse

    basis = slaney_mel_basis(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    return scipy.sparse.csr_array(basis.T)


@functools.lru_cache(maxsize=8)
def _delta_matrix(frames: int, width: int) -> np.ndarray:
    """``(frames, frames)`` float32 matrix ``M`` with ``x @ M == librosa.feature.delta(x)``.

    ``librosa.feature.delta`` is ``savgol_filter(x, width, polyorder=1, deriv=1,
    mode="interp")`` along time, which is linear in ``x``. Its interior output at frame
    ``t`` is the least-squares slope ``sum_k k * x[t + k] / sum_k k**2`` over
    ``k = -h..h`` (``h = width // 2``); ``interp`` fits one line to the first (last)
    ``width`` frames, whose slope is the output at frame ``h`` (``frames - 1 - h``), so
    every edge frame takes that value. Every non-zero entry equals scipy's to the last
    float32 bit; where the exact value is 0, scipy's least-squares solve leaves
    rounding noise (below 5e-17) and this has 0 (tests/test_filterbanks.py).

    Raises:
        ValueError: ``width`` is even, below 3, or more than ``frames``.
    """
    if width < 3 or width % 2 == 0 or width > frames:
        raise ValueError(f"delta width must be odd, >= 3 and <= frames ({frames}), got {width}")
    h = width // 2
    norm = float(sum(k * k for k in range(-h, h + 1)))
    centre = np.clip(np.arange(frames), h, frames - 1 - h)  # the frame each output copies
    offset = np.arange(frames)[:, None] - centre[None, :]  # k = i - t' for input frame i
    matrix = np.where(np.abs(offset) <= h, offset / norm, 0.0).astype(np.float32)
    matrix.setflags(write=False)
    return matrix


def n_full_windows(n_samples: int, *, window_samples: int, step_samples: int) -> int:
    """Number of full windows starting at ``0, step, 2*step, ...`` in ``n_samples`` samples.

    ``0`` when ``n_samples < window_samples``, else
    ``(n_samples - window_samples) // step_samples + 1``.
    """
    if n_samples < window_samples:
        return 0
    return (n_samples - window_samples) // step_samples + 1


def _validate(
    *,
    sr: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    frames: int,
    step_frames: int,
    fmin: float,
    fmax: float | None,
    ref: float,
    amin: float,
    top_db: float | None,
    delta_width: int,
    short_clip: str,
    pad_mode: str,
    mode: str,
) -> None:
    positive = {
        "sr": sr,
        "n_fft": n_fft,
        "hop_length": hop_length,
        "n_mels": n_mels,
        "step_frames": step_frames,
    }
    for name, value in positive.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if n_fft % 2:
        # center=True pads n_fft // 2 on each side: an odd n_fft would give frames - 1 frames.
        raise ValueError(f"n_fft must be even, got {n_fft!r}")
    if isinstance(frames, bool) or not isinstance(frames, int | np.integer) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2, got {frames!r}")
    if (
        isinstance(delta_width, bool)
        or not isinstance(delta_width, int | np.integer)
        or delta_width < 3
        or delta_width % 2 == 0
    ):
        raise ValueError(f"delta_width must be an odd integer >= 3, got {delta_width!r}")
    if delta_width > frames:
        raise ValueError(f"delta_width ({delta_width}) must not exceed frames ({frames})")
    nyquist = sr / 2
    if not 0 <= fmin < nyquist:
        raise ValueError(f"fmin must be in [0, sr/2 = {nyquist:g}) Hz, got {fmin!r}")
    if fmax is not None and not fmin < fmax <= nyquist:
        raise ValueError(f"fmax must be in (fmin, sr/2 = {nyquist:g}] Hz or None, got {fmax!r}")
    if not ref > 0:
        raise ValueError(f"ref must be > 0, got {ref!r}")
    if not amin > 0:
        raise ValueError(f"amin must be > 0, got {amin!r}")
    if top_db is not None and not top_db >= 0:
        raise ValueError(f"top_db must be >= 0 or None, got {top_db!r}")
    if short_clip not in ("pad", "drop"):
        raise ValueError(f"short_clip must be 'pad' or 'drop', got {short_clip!r}")
    if pad_mode not in ("zeros", "loop"):
        raise ValueError(f"pad_mode must be 'zeros' or 'loop', got {pad_mode!r}")
    if mode not in ("parity", "fast"):
        raise ValueError(f"mode must be 'parity' or 'fast', got {mode!r}")


def _as_signal(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D mono audio, got shape {y.shape}")
    if y.size == 0:
        raise ValueError("y is empty (0 samples)")
    if not np.issubdtype(y.dtype, np.floating):
        raise ValueError(f"y must be floating-point audio, got dtype {y.dtype}")
    y = np.ascontiguousarray(y, dtype=np.float32)
    if not np.isfinite(y).all():
        raise ValueError("y contains NaN or infinite samples")
    return y


def _pad_short(y: np.ndarray, window_samples: int, pad_mode: PadMode) -> np.ndarray:
    """``y`` (shorter than one window) brought to exactly ``window_samples`` samples."""
    if pad_mode == "loop":
        return np.resize(y, window_samples)
    return np.pad(y, (0, window_samples - y.size))


def _frame_clip(
    y: np.ndarray, *, n_windows: int, n_fft: int, hop_length: int, frames: int, step_frames: int
) -> np.ndarray:
    """STFT frames of the whole clip (``center=True``, zero padding) that some window uses.

    Returns ``(n_frames, n_fft)`` float32 (read-only view), ``n_frames = (n_windows - 1)
    * step_frames + frames``; frame ``t`` is centred on sample ``t * hop_length``.
    """
    pad = n_fft // 2
    n_frames = (n_windows - 1) * step_frames + frames
    needed = (n_frames - 1) * hop_length + n_fft
    padded = np.zeros(needed, dtype=np.float32)
    body = y[: needed - pad]
    padded[pad : pad + body.size] = body
    return np.lib.stride_tricks.as_strided(
        padded,
        shape=(n_frames, n_fft),
        strides=(hop_length * padded.strides[0], padded.strides[0]),
        writeable=False,
    )


@dataclass(frozen=True)
class _ParityPlan:
    """Which STFT frames of a clip's windows are the clip's own frames, and which are not.

    Window ``k`` starts at sample ``k * step_frames * hop_length``, a multiple of the hop,
    so its frame ``j`` covers the same samples as the clip's frame ``t = k * step_frames + j``
    (``center=True``). The two are equal unless that support reaches audio of the clip that
    lies outside the window, which the window replaces by its zero padding: those are the
    *edge* frames (``ceil((n_fft // 2) / hop_length)`` at each end of every window; fewer
    where the clip's own zero padding coincides, as at the clip's start).

    Attributes:
        shared: Clip frame indices used unchanged, ``(n_shared,)`` ascending, or a
            ``slice`` when they are contiguous.
        n_shared: Number of shared clip frames.
        edge_frames: ``(n_edge,)`` clip frame index of each edge frame.
        edge_windows: ``(n_edge, n_fft)`` float32: the Hann window times the window's
            zero padding (0 outside the window's samples), per edge frame.
        rows: ``(n_windows, frames)`` row of each window frame in the stacked spectra
            ``[shared frames; edge frames]``.
    """

    shared: slice | np.ndarray
    n_shared: int
    edge_frames: np.ndarray
    edge_windows: np.ndarray
    rows: np.ndarray


@functools.lru_cache(maxsize=64)
def _parity_plan(
    n_windows: int,
    ends_with_last_window: bool,
    *,
    n_fft: int,
    hop_length: int,
    frames: int,
    step_frames: int,
) -> _ParityPlan:
    """The :class:`_ParityPlan` for ``n_windows`` windows of a clip.

    ``ends_with_last_window``: the clip has no sample after its last window, so the
    clip's own zero padding there equals the window's; otherwise how far the clip goes
    on does not matter (each right edge frame's support holds the sample just after its
    window). Everything is derived from the support of each frame; nothing assumes the
    default sizes.
    """
    pad = n_fft // 2
    window_samples = hop_length * (frames - 1)
    step = hop_length * step_frames
    n_samples = (n_windows - 1) * step + window_samples + (0 if ends_with_last_window else 1)
    starts = np.arange(n_windows)[:, None] * step
    first = starts + np.arange(frames)[None, :] * hop_length - pad  # first sample of each frame
    # Samples outside [0, n_samples) are the clip's zero padding: they agree with the window's.
    shared = (np.maximum(first, 0) >= starts) & (
        np.minimum(first + n_fft, n_samples) <= starts + window_samples
    )
    clip_frame = starts // hop_length + np.arange(frames)[None, :]
    shared_frames = np.unique(clip_frame[shared])
    edge_frames = clip_frame[~shared]
    edge_j = np.nonzero(~shared)[1]
    rows = np.empty((n_windows, frames), dtype=np.intp)
    rows[shared] = np.searchsorted(shared_frames, clip_frame[shared])
    rows[~shared] = shared_frames.size + np.arange(edge_frames.size)
    offset = edge_j[:, None] * hop_length - pad + np.arange(n_fft)[None, :]
    inside = (offset >= 0) & (offset < window_samples)
    edge_windows = (_hann_window(n_fft) * inside).astype(np.float32)
    contiguous = shared_frames.size == 0 or (
        shared_frames[-1] - shared_frames[0] + 1 == shared_frames.size
    )
    if contiguous and shared_frames.size:
        shared_index: slice | np.ndarray = slice(int(shared_frames[0]), int(shared_frames[-1]) + 1)
    else:
        shared_index = shared_frames
    for array in (shared_frames, edge_frames, edge_windows, rows):
        array.setflags(write=False)
    return _ParityPlan(
        shared=shared_index,
        n_shared=int(shared_frames.size),
        edge_frames=edge_frames,
        edge_windows=edge_windows,
        rows=rows,
    )


def _parity_mel(
    y: np.ndarray,
    basis_t: scipy.sparse.csr_array,
    *,
    n_windows: int,
    n_fft: int,
    hop_length: int,
    frames: int,
    step_frames: int,
) -> np.ndarray:
    """Mel power of each window as if each had its own zero-padded STFT (``center=True``).

    The clip's frames that windows share are transformed once; each window's edge frames
    (those whose support crosses the window's boundary) are transformed again with the
    samples outside the window zeroed. ``y`` holds at least ``n_windows`` full windows.

    Returns:
        ``(n_windows, frames, n_mels)`` float32 mel power.
    """
    clip = _frame_clip(
        y,
        n_windows=n_windows,
        n_fft=n_fft,
        hop_length=hop_length,
        frames=frames,
        step_frames=step_frames,
    )
    last_end = (n_windows - 1) * step_frames * hop_length + hop_length * (frames - 1)
    plan = _parity_plan(
        n_windows,
        y.size == last_end,
        n_fft=n_fft,
        hop_length=hop_length,
        frames=frames,
        step_frames=step_frames,
    )
    windowed = np.empty((plan.n_shared + plan.edge_frames.size, n_fft), dtype=np.float32)
    np.multiply(clip[plan.shared], _hann_window(n_fft), out=windowed[: plan.n_shared])
    np.multiply(clip[plan.edge_frames], plan.edge_windows, out=windowed[plan.n_shared :])
    mel_rows = _power_of_windowed(windowed) @ basis_t
    return mel_rows[plan.rows]


def _power_spectrum(frames: np.ndarray, n_fft: int) -> np.ndarray:
    """``|rfft(hann * frames)|**2`` along the last axis: ``(..., 1 + n_fft // 2)`` float32."""
    return _power_of_windowed(frames * _hann_window(n_fft))


def _power_of_windowed(windowed: np.ndarray) -> np.ndarray:
    """``|rfft(windowed)|**2`` along the last axis: ``(..., 1 + n // 2)`` float32."""
    import scipy.fft

    spectrum = scipy.fft.rfft(windowed, axis=-1, workers=1)
    return np.square(spectrum.real) + np.square(spectrum.imag)


def _power_to_db(mel: np.ndarray, *, ref: float, amin: float, top_db: float | None) -> np.ndarray:
    """``librosa.power_to_db`` of each window ``mel[k]`` of ``(n_windows, n_mels, frames)``."""
    log_spec = 10.0 * np.log10(np.maximum(mel, np.float32(amin)))
    log_spec -= np.float32(10.0 * np.log10(max(amin, ref)))
    if top_db is not None:
        floor = log_spec.max(axis=(1, 2), keepdims=True) - np.float32(top_db)
        np.maximum(log_spec, floor, out=log_spec)
    return log_spec


def log_mel_windows(
    y: np.ndarray,
    *,
    sr: int = 22050,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 60,
    frames: int = 41,
    step_frames: int = 20,
    fmin: float = 0.0,
    fmax: float | None = None,
    ref: float = 1.0,
    amin: float = 1e-10,
    top_db: float | None = 80.0,
    delta_width: int = 9,
    short_clip: ShortClipPolicy = "pad",
    pad_mode: PadMode = "zeros",
    mode: ExtractionMode = "parity",
) -> tuple[np.ndarray, int]:
    """Log-mel spectrogram and its delta for each window of a clip.

    Windows of ``hop_length * (frames - 1)`` samples (20480 by default) start at
    sample ``0, s, 2s, ...`` with ``s = hop_length * step_frames`` (10240); only full
    windows are kept. For each window, in ``"parity"`` mode::

        S = librosa.feature.melspectrogram(y=window, sr=sr, n_fft=n_fft,
                                           hop_length=hop_length, n_mels=n_mels,
                                           fmin=fmin, fmax=fmax)
        log_s = librosa.power_to_db(S, ref=ref, amin=amin, top_db=top_db)
        out = stack([log_s, librosa.feature.delta(log_s, width=delta_width)], -1)

    computed for all windows at once (within 1e-3 dB of the above): window starts are
    multiples of the hop, so a window's frames equal the clip's own STFT frames except
    the ``ceil((n_fft // 2) / hop_length)`` frames at each window end whose support
    crosses the window's boundary (2 by default: frames 0, 1, 39, 40). The clip's frames
    are transformed once and only those edge frames again, with the window's zero
    padding. ``"fast"`` mode uses the clip's frames for the edge frames too: they then
    see the neighbouring audio rather than zero padding. In both modes ``power_to_db``
    (with ``top_db`` relative to each window's peak) and delta are per window.

    A clip shorter than one window gives one window padded with zeros
    (``pad_mode="zeros"``) or with the clip repeated (``"loop"``) when
    ``short_clip="pad"``, and no window when ``short_clip="drop"``.

    Args:
        y: Mono audio at rate ``sr``, shape ``(n_samples,)``; cast to float32.
        sr: Sample rate in Hz.
        n_fft: FFT size in samples.
        hop_length: STFT hop in samples.
        n_mels: Mel bands.
        frames: STFT frames per window (>= 2).
        step_frames: Window step in hops.
        fmin: Lowest mel filter edge in Hz.
        fmax: Highest mel filter edge in Hz (``None``: ``sr / 2``).
        ref: Power giving 0 dB.
        amin: Power floor.
        top_db: Range kept below each window's peak in dB (``None``: all).
        delta_width: Delta filter length in frames (odd, 3 <= width <= frames).
        short_clip: ``"pad"`` or ``"drop"``.
        pad_mode: ``"zeros"`` or ``"loop"`` (used by ``short_clip="pad"``).
        mode: ``"parity"`` or ``"fast"``.

    Returns:
        ``(windows, n_real)``: ``windows`` is float32 ``(n_windows, n_mels, frames, 2)``
        with channel 0 the log-mel power in dB and channel 1 its delta (dB per frame);
        ``n_real`` is the number of windows made only of the clip's own audio
        (``n_windows`` for a clip of at least one window, ``0`` for a short clip).

    Raises:
        ValueError: ``y`` is empty, not 1-D, not finite, or a parameter is invalid.
    """
    _validate(
        sr=sr,
        n_fft=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        frames=frames,
        step_frames=step_frames,
        fmin=fmin,
        fmax=fmax,
        ref=ref,
        amin=amin,
        top_db=top_db,
        delta_width=delta_width,
        short_clip=short_clip,
        pad_mode=pad_mode,
        mode=mode,
    )
    y = _as_signal(y)
    window_samples = hop_length * (frames - 1)
    step = hop_length * step_frames
    n_windows = n_full_windows(y.size, window_samples=window_samples, step_samples=step)
    n_real = n_windows
    if n_windows == 0:
        if short_clip == "drop":
            return np.zeros((0, n_mels, frames, _N_CHANNELS), dtype=np.float32), 0
        y = _pad_short(y, window_samples, pad_mode)
        n_windows = 1

    basis_t = _mel_basis_t(sr, n_fft, n_mels, fmin, fmax)
    if mode == "parity":
        mel = _parity_mel(
            y,
            basis_t,
            n_windows=n_windows,
            n_fft=n_fft,
            hop_length=hop_length,
            frames=frames,
            step_frames=step_frames,
        )
    else:
        framed = _frame_clip(
            y,
            n_windows=n_windows,
            n_fft=n_fft,
            hop_length=hop_length,
            frames=frames,
            step_frames=step_frames,
        )
        clip_mel = _power_spectrum(framed, n_fft) @ basis_t
        mel = np.lib.stride_tricks.as_strided(
            clip_mel,
            shape=(n_windows, frames, n_mels),
            strides=(step_frames * clip_mel.strides[0], *clip_mel.strides),
            writeable=False,
        )

    out = np.empty((n_windows, n_mels, frames, _N_CHANNELS), dtype=np.float32)
    log_spec = _power_to_db(mel.transpose(0, 2, 1), ref=ref, amin=amin, top_db=top_db)
    out[..., 0] = log_spec
    # Delta ignores constants; removing each window's peak first makes it exactly 0 on
    # silence and keeps float32 rounding relative to the window's range.
    centred = log_spec - log_spec.max(axis=(1, 2), keepdims=True)
    out[..., 1] = np.matmul(centred, _delta_matrix(frames, delta_width))
    return out, n_real


def extract_clip_features(y: np.ndarray, config: FeatureConfig) -> ClipFeatures:
    """:func:`log_mel_windows` of ``y[:config.max_samples]`` with every parameter from ``config``.

    Args:
        y: Mono audio at ``config.sample_rate``, shape ``(n_samples,)``.
        config: Feature parameters.

    Returns:
        The windows, ``n_real`` and the number of samples used (after truncation).
    """
    y = np.asarray(y)[: config.max_samples]
    windows, n_real = log_mel_windows(
        y,
        sr=config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
        frames=config.frames,
        step_frames=config.step_frames,
        fmin=config.fmin,
        fmax=config.fmax,
        ref=config.ref,
        amin=config.amin,
        top_db=config.top_db,
        delta_width=config.delta_width,
        short_clip=config.short_clip,
        pad_mode=config.pad_mode,
        mode=config.mode,
    )
    return ClipFeatures(windows=windows, n_real=n_real, n_samples=int(y.shape[0]))
