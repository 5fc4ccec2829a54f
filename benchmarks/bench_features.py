"""Throughput of the window features: the notebook's librosa loop vs ours, one process.

    .venv/bin/python benchmarks/bench_features.py [--data DIR] [--limit N] [--breakdown]

``--data`` is an UrbanSound8K root (``.../UrbanSound8K`` or a folder above it holding
``audio/fold*/*.wav``); default ``../shared/data/us8k-subset`` beside the repository.
Each method decodes the files itself, so every number includes decoding.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import librosa
import numpy as np
import scipy.fft

from workers import features as F
from workers.audio import load_audio

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "us8k-subset"


def reference_clip(path: Path) -> np.ndarray:
    """The notebook's computation, in true (bands, frames) order: ``(n, 60, 41, 2)``."""
    y, sr = librosa.load(path)
    out = []
    for start in range(0, len(y) - 20480 + 1, 10240):
        window = y[start : start + 20480]
        mel = librosa.feature.melspectrogram(y=window, sr=sr, n_fft=2048, hop_length=512, n_mels=60)
        log_spec = librosa.power_to_db(mel, ref=1.0)
        out.append(np.stack([log_spec, librosa.feature.delta(log_spec)], axis=-1))
    return np.asarray(out, dtype=np.float32).reshape(-1, 60, 41, 2)


def ours(path: Path, mode: F.ExtractionMode) -> np.ndarray:
    y, _ = load_audio(path)
    return F.log_mel_windows(y, mode=mode)[0]


def find_clips(data: Path) -> list[Path]:
    return sorted(data.glob("**/audio/fold*/*.wav")) or sorted(data.glob("fold*/*.wav"))


def run(name: str, fn: Callable[[Path], np.ndarray], paths: list[Path]) -> dict[str, float]:
    fn(paths[0])  # warm-up: numba JIT, caches, imports
    windows = 0
    start = time.perf_counter()
    for path in paths:
        windows += fn(path).shape[0]
    seconds = time.perf_counter() - start
    return {"name": name, "clips": len(paths), "windows": windows, "seconds": seconds}


def breakdown(paths: list[Path]) -> dict[str, float]:
    """Seconds per stage of the parity path over ``paths`` (default parameters)."""
    cfg = F.FeatureConfig()
    hann = F._hann_window(cfg.n_fft)
    basis_t = F._mel_basis_t(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    delta = F._delta_matrix(cfg.frames, cfg.delta_width)
    stages = ["decode+resample", "framing", "window*hann", "rfft", "power", "mel", "log", "delta"]
    totals = dict.fromkeys(stages, 0.0)
    for path in paths:
        t0 = time.perf_counter()
        y, _ = load_audio(path)
        t1 = time.perf_counter()
        n = F.n_full_windows(
            y.size, window_samples=cfg.window_samples, step_samples=cfg.step_samples
        )
        framed = F._frame_windows(
            y,
            n_windows=n,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            frames=cfg.frames,
            step=cfg.step_samples,
        )
        t2 = time.perf_counter()
        windowed = framed * hann
        t3 = time.perf_counter()
        spectrum = scipy.fft.rfft(windowed, axis=-1, workers=1)
        t4 = time.perf_counter()
        power = (np.square(spectrum.real) + np.square(spectrum.imag)).reshape(n * cfg.frames, -1)
        t5 = time.perf_counter()
        mel = (power @ basis_t).reshape(n, cfg.frames, cfg.n_mels).transpose(0, 2, 1)
        t6 = time.perf_counter()
        log_spec = F._power_to_db(mel, ref=cfg.ref, amin=cfg.amin, top_db=cfg.top_db)
        t7 = time.perf_counter()
        np.matmul(log_spec, delta)
        t8 = time.perf_counter()
        for stage, dt in zip(stages, np.diff([t0, t1, t2, t3, t4, t5, t6, t7, t8]), strict=True):
            totals[stage] += float(dt)
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="UrbanSound8K root")
    parser.add_argument("--limit", type=int, default=200, help="clips to process (default 200)")
    parser.add_argument("--breakdown", action="store_true", help="also time each parity stage")
    args = parser.parse_args(argv)

    paths = find_clips(args.data)[: args.limit] if args.data.is_dir() else []
    if not paths:
        print(
            f"error: no audio/fold*/*.wav under {args.data} (the benchmark needs the "
            "UrbanSound8K subset; pass --data PATH)",
            file=sys.stderr,
        )
        return 2

    rows = [
        run("reference (librosa loop)", reference_clip, paths),
        run("ours, parity", lambda p: ours(p, "parity"), paths),
        run("ours, fast", lambda p: ours(p, "fast"), paths),
    ]
    base = rows[0]["clips"] / rows[0]["seconds"]
    header = f"{'method':26} {'clips':>6} {'windows':>8} {'seconds':>8} {'clips/s':>8}"
    print(f"{header} {'windows/s':>10} {'vs ref':>7}")
    for row in rows:
        rate = row["clips"] / row["seconds"]
        print(
            f"{row['name']:26} {row['clips']:6d} {row['windows']:8d} {row['seconds']:8.2f} "
            f"{rate:8.1f} {row['windows'] / row['seconds']:10.1f} {rate / base:6.2f}x"
        )

    if args.breakdown:
        breakdown(paths[:1])
        totals = breakdown(paths)
        whole = sum(totals.values())
        print(f"\nparity path, {len(paths)} clips: {whole:.3f} s")
        for stage, seconds in totals.items():
            print(f"  {stage:16} {seconds:7.3f} s {100 * seconds / whole:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
