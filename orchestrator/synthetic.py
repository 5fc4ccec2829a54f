"""A small synthetic dataset with the UrbanSound8K layout, for demos and tests.

A fresh machine has no UrbanSound8K, so the one-command demo runs on this: ten
synthetic sound classes that differ clearly in a log-mel representation (frequency
region and temporal pattern), each clip with random variation (frequency jitter,
level, background noise, onset, duration), written as 16-bit PCM WAV files with an
8-column ``metadata/UrbanSound8K.csv``. See ``docs/datasets.md``.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from orchestrator.datasets import METADATA_CSV_NAME, scan_dataset, summarize

CSV_COLUMNS: tuple[str, ...] = (
    "slice_file_name",
    "fsID",
    "start",
    "end",
    "salience",
    "fold",
    "classID",
    "class",
)
MIN_CLIP_SECONDS = 0.5
MIN_SAMPLE_RATE = 16000
FIRST_FSID = 100000
MAX_SLICES_PER_RECORDING = 3
FADE_SECONDS = 0.01

Renderer = Callable[[np.random.Generator, int, int, float], np.ndarray]
"""``(rng, n_samples, sample_rate, freq_scale) -> signal`` of shape ``(n_samples,)``."""


# ---------------------------------------------------------------------------
# Signal building blocks (all return float64 arrays of shape (n,), unit RMS)
# ---------------------------------------------------------------------------


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x**2)))
    return x / rms if rms > 0 else x


def _fast_len(n: int) -> int:
    """The next power of two >= ``n`` (FFT of a prime length is slow)."""
    return 1 << max(0, n - 1).bit_length()


def _band_noise(
    rng: np.random.Generator, n: int, sr: int, lo_hz: float, hi_hz: float
) -> np.ndarray:
    """White noise band-limited to ``[lo_hz, hi_hz]`` (Hz) in the frequency domain."""
    hi_hz = min(hi_hz, 0.45 * sr)
    lo_hz = min(lo_hz, 0.8 * hi_hz)
    m = _fast_len(n)
    freqs = np.fft.rfftfreq(m, 1.0 / sr)
    spectrum = rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size)
    spectrum[(freqs < lo_hz) | (freqs > hi_hz)] = 0.0
    return _unit_rms(np.fft.irfft(spectrum, m)[:n])


def _pink_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Noise with a 1/f power spectrum above 20 Hz (background ambience)."""
    m = _fast_len(n)
    freqs = np.fft.rfftfreq(m, 1.0 / sr)
    spectrum = rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size)
    spectrum /= np.sqrt(np.maximum(freqs, 20.0))
    return _unit_rms(np.fft.irfft(spectrum, m)[:n])


def _tone(n: int, sr: int, hz: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    return np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))


def _sweep(n: int, sr: int, f_start: float, f_end: float) -> np.ndarray:
    """Exponential sweep from ``f_start`` to ``f_end`` Hz over ``n`` samples."""
    duration = n / sr
    ratio = f_end / f_start
    t = np.arange(n) / sr
    phase = 2 * np.pi * f_start * duration / np.log(ratio) * (ratio ** (t / duration) - 1)
    return np.sin(phase)


def _gate(
    n: int,
    sr: int,
    rng: np.random.Generator,
    on_s: tuple[float, float],
    period_s: tuple[float, float],
) -> np.ndarray:
    """A 0/1 envelope of bursts: each ``on_s`` long, starting every ``period_s`` (seconds)."""
    env = np.zeros(n)
    pos = int(rng.uniform(0, period_s[0]) * sr)
    while pos < n:
        env[pos : pos + int(rng.uniform(*on_s) * sr)] = 1.0
        pos += int(rng.uniform(*period_s) * sr)
    return env


# ---------------------------------------------------------------------------
# The classes
# ---------------------------------------------------------------------------


def _tone_low(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    return _tone(n, sr, 220 * s, rng) + 0.15 * _tone(n, sr, 440 * s, rng)


def _tone_high(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    return _tone(n, sr, 3000 * s, rng)


def _chirp_up(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    return _sweep(n, sr, 400 * s, min(3200 * s, 0.45 * sr))


def _chirp_down(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    return _sweep(n, sr, min(3200 * s, 0.45 * sr), 400 * s)


def _noise_low(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    return _band_noise(rng, n, sr, 60 * s, 450 * s)


def _noise_high(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    return _band_noise(rng, n, sr, 5000 * s, 9000 * s)


def _clicks(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    """Short decaying broadband clicks at 6..14 per second."""
    out = np.zeros(n)
    click_len = int(0.004 * sr)
    decay = np.exp(-np.arange(click_len) / (0.0008 * sr))
    period = int(sr / (rng.uniform(6, 14) * s))
    for start in range(int(rng.uniform(0, period)), n - click_len, period):
        out[start : start + click_len] = rng.standard_normal(click_len) * decay
    return _unit_rms(out) if out.any() else out


def _am_tone(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    t = np.arange(n) / sr
    modulation = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(4, 10) * t)
    return _tone(n, sr, 1000 * s, rng) * modulation


def _harmonic(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    f0 = 300 * s
    partials = [_tone(n, sr, k * f0, rng) / k for k in range(1, 9) if k * f0 < 0.45 * sr]
    return np.sum(partials, axis=0)


def _noise_bursts(rng: np.random.Generator, n: int, sr: int, s: float) -> np.ndarray:
    gate = _gate(n, sr, rng, on_s=(0.05, 0.15), period_s=(0.2, 0.4))
    return _band_noise(rng, n, sr, 1200 * s, 2400 * s) * gate


@dataclass(frozen=True)
class SyntheticClass:
    """One synthetic sound class: its name, a description and its signal renderer."""

    name: str
    description: str
    render: Renderer


SYNTHETIC_CLASSES: tuple[SyntheticClass, ...] = (
    SyntheticClass("tone_low", "steady sine near 220 Hz with a weak 2nd harmonic", _tone_low),
    SyntheticClass("tone_high", "steady sine near 3 kHz", _tone_high),
    SyntheticClass("chirp_up", "exponential sweep 400 Hz -> 3.2 kHz", _chirp_up),
    SyntheticClass("chirp_down", "exponential sweep 3.2 kHz -> 400 Hz", _chirp_down),
    SyntheticClass("noise_low", "noise band 60-450 Hz", _noise_low),
    SyntheticClass("noise_high", "noise band 5-9 kHz", _noise_high),
    SyntheticClass("clicks", "broadband 4 ms clicks, 6-14 per second", _clicks),
    SyntheticClass("am_tone", "1 kHz sine amplitude-modulated at 4-10 Hz", _am_tone),
    SyntheticClass("harmonic", "300 Hz fundamental with 8 decaying harmonics", _harmonic),
    SyntheticClass("noise_bursts", "1.2-2.4 kHz noise in 50-150 ms bursts", _noise_bursts),
)
SYNTHETIC_CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in SYNTHETIC_CLASSES)


# ---------------------------------------------------------------------------
# Clips, recordings, the dataset
# ---------------------------------------------------------------------------


def _fade(n: int, sr: int) -> np.ndarray:
    """Envelope of shape ``(n,)`` with linear 10 ms fade-in and fade-out."""
    ramp = max(1, min(int(FADE_SECONDS * sr), n // 2))
    env = np.ones(n)
    env[:ramp] = np.linspace(0, 1, ramp)
    env[n - ramp :] = np.linspace(1, 0, ramp)
    return env


def render_clip(
    rng: np.random.Generator, cls: SyntheticClass, freq_scale: float, seconds: float, sr: int
) -> np.ndarray:
    """One clip as float32 samples in [-1, 1], shape ``(n,)`` with 0.5 s <= n / sr <= seconds.

    Half the clips last ``seconds``; the others a random 0.5 s..``seconds``. The event
    starts at a random onset and lasts 50-100 % of the rest, over pink background noise
    6-24 dB below it; ``freq_scale`` (about 1) shifts the class's frequencies.
    """
    duration = seconds if rng.random() < 0.5 else rng.uniform(MIN_CLIP_SECONDS, seconds)
    n = round(duration * sr)
    onset = int(rng.uniform(0, 0.25) * n)
    event_len = max(int(rng.uniform(0.5, 1.0) * (n - onset)), min(n - onset, int(0.25 * sr)))
    level = rng.uniform(0.05, 0.3)
    event = cls.render(rng, event_len, sr, freq_scale * rng.uniform(0.97, 1.03))
    clip = _pink_noise(rng, n, sr) * level * 10 ** (-rng.uniform(6, 24) / 20)
    clip[onset : onset + event_len] += level * event * _fade(event_len, sr)
    peak = float(np.max(np.abs(clip)))
    if peak > 0.99:
        clip *= 0.99 / peak
    return clip.astype(np.float32)


@dataclass(frozen=True)
class _Slice:
    """One row of the metadata CSV (a written clip)."""

    file_name: str
    fsid: int
    start: float
    end: float
    salience: int
    fold: int
    class_id: int
    class_name: str

    def row(self) -> list[str]:
        return [
            self.file_name,
            str(self.fsid),
            f"{self.start:.6f}",
            f"{self.end:.6f}",
            str(self.salience),
            str(self.fold),
            str(self.class_id),
            self.class_name,
        ]


def _recording_sizes(rng: np.random.Generator, total: int) -> list[int]:
    """Split ``total`` slices into recordings of 1..MAX_SLICES_PER_RECORDING slices."""
    sizes: list[int] = []
    while sum(sizes) < total:
        size = int(rng.integers(1, MAX_SLICES_PER_RECORDING + 1))
        sizes.append(min(size, total - sum(sizes)))
    return sizes


def _write_recording(
    audio_dir: Path,
    seed: int,
    fsid: int,
    class_id: int,
    fold: int,
    n_slices: int,
    seconds: float,
    sr: int,
) -> list[_Slice]:
    """Write the slices of one recording (shared frequency scale) into ``audio_dir``."""
    rng = np.random.default_rng([seed, fsid, class_id, fold])
    cls = SYNTHETIC_CLASSES[class_id]
    freq_scale = rng.uniform(0.85, 1.15)
    salience = int(rng.integers(1, 3))
    slices: list[_Slice] = []
    start = round(float(rng.uniform(0, 30)), 3)
    for slice_id in range(n_slices):
        samples = render_clip(rng, cls, freq_scale, seconds, sr)
        name = f"{fsid}-{class_id}-0-{slice_id}.wav"
        sf.write(audio_dir / name, samples, sr, subtype="PCM_16", format="WAV")
        end = start + samples.size / sr
        slices.append(_Slice(name, fsid, start, end, salience, fold, class_id, cls.name))
        start = end
    return slices


def _check_arguments(
    n_classes: int, folds: int, clips_per_class_per_fold: int, seconds: float, sample_rate: int
) -> None:
    if not 1 <= n_classes <= len(SYNTHETIC_CLASSES):
        raise ValueError(f"n_classes must be 1..{len(SYNTHETIC_CLASSES)}, got {n_classes}")
    if folds < 1 or clips_per_class_per_fold < 1:
        raise ValueError("folds and clips_per_class_per_fold must be >= 1")
    if seconds < MIN_CLIP_SECONDS:
        raise ValueError(f"seconds must be >= {MIN_CLIP_SECONDS}, got {seconds}")
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be >= {MIN_SAMPLE_RATE} Hz, got {sample_rate}")


def _prepare_root(root: Path, overwrite: bool) -> None:
    """Create ``root``; an existing non-empty one is replaced only when ``overwrite``."""
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{str(root)!r} already exists and is not empty")
        shutil.rmtree(root)
    (root / "metadata").mkdir(parents=True, exist_ok=True)


def make_synthetic_dataset(
    out_dir: Path,
    *,
    n_classes: int = 10,
    folds: int = 4,
    clips_per_class_per_fold: int = 6,
    seconds: float = 4.0,
    sample_rate: int = 22050,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic UrbanSound8K-shaped dataset under ``out_dir``; deterministic in ``seed``.

    Layout: ``out_dir/UrbanSound8K/metadata/UrbanSound8K.csv`` (8 columns) and
    ``out_dir/UrbanSound8K/audio/fold<N>/<fsID>-<classID>-0-<slice>.wav`` (16-bit PCM,
    mono, ``sample_rate`` Hz, 0.5..``seconds`` s). Each (class, fold) gets
    ``clips_per_class_per_fold`` clips, grouped into recordings (fsIDs) of 1-3 slices;
    all slices of one fsID are in the same fold.

    Args:
        out_dir: Folder to write into (created if needed).
        n_classes: Number of classes, the first ``n_classes`` of :data:`SYNTHETIC_CLASSES`.
        folds: Number of folds, numbered 1..``folds``.
        clips_per_class_per_fold: Clips per class in each fold.
        seconds: Longest clip duration in seconds (>= 0.5).
        sample_rate: Sample rate in Hz (>= 16000).
        seed: Random seed; the same arguments give byte-identical files.
        overwrite: Replace an existing non-empty ``out_dir/UrbanSound8K``.

    Returns:
        The dataset root ``out_dir/UrbanSound8K``.

    Raises:
        ValueError: An argument is out of range.
        FileExistsError: The dataset root exists, is not empty and ``overwrite`` is false.
    """
    _check_arguments(n_classes, folds, clips_per_class_per_fold, seconds, sample_rate)
    root = Path(out_dir) / "UrbanSound8K"
    _prepare_root(root, overwrite)
    layout_rng = np.random.default_rng([seed, n_classes, folds, clips_per_class_per_fold])
    slices: list[_Slice] = []
    fsid = FIRST_FSID
    for fold in range(1, folds + 1):
        audio_dir = root / "audio" / f"fold{fold}"
        audio_dir.mkdir(parents=True, exist_ok=True)
        for class_id in range(n_classes):
            for size in _recording_sizes(layout_rng, clips_per_class_per_fold):
                slices += _write_recording(
                    audio_dir, seed, fsid, class_id, fold, size, seconds, sample_rate
                )
                fsid += 1
    _write_metadata(root / "metadata" / METADATA_CSV_NAME, slices)
    return root


def _write_metadata(csv_path: Path, slices: list[_Slice]) -> None:
    """Write the 8-column metadata CSV, rows sorted by file name like the real one."""
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(s.row() for s in sorted(slices, key=lambda s: s.file_name))


def synthetic_summary(dataset_root: Path) -> dict[str, Any]:
    """CLI-friendly summary of a generated dataset: :func:`summarize` plus class descriptions.

    Returns:
        The :func:`orchestrator.datasets.summarize` dict (any fold number accepted) with
        ``class_descriptions`` (class name -> what it sounds like) added.
    """
    summary = summarize(scan_dataset(dataset_root, folds=None))
    summary["class_descriptions"] = {
        c.name: c.description for c in SYNTHETIC_CLASSES if c.name in summary["per_class"]
    }
    return summary
