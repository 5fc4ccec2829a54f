"""Throughput of the window features: the notebook's librosa loop vs ours, one process.

    .venv/bin/python benchmarks/bench_features.py [--data DIR] [--limit N] [--repeat R]
        [--chunk C] [--glibc-defaults] [--breakdown]

``--data`` is an UrbanSound8K root (``.../UrbanSound8K`` or a folder above it holding
``audio/fold*/*.wav``); default ``../shared/data/us8k-subset`` beside the repository.

Every method is measured twice per round: *from files* (each call decodes its file:
``librosa.load`` for the reference, ``load_audio`` for ours) and *in memory* (on the
clips decoded once beforehand by ``load_audio``, which equals ``librosa.load`` on these
files). The process keeps freed memory in its heap as worker processes do
(``workers.allocator.keep_freed_memory``) unless ``--glibc-defaults``. The host is
shared and its speed drifts, so within a round every chunk of ``--chunk`` clips goes
through all three methods back to back (the reference first, then parity and fast in
alternating order), once from files and once in memory. The table shows each row's
best round and the median over rounds of the ratios taken within a round; the
parity / fast lines add the median over chunks of the ratio within a chunk.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import librosa
import numpy as np
import scipy.fft

from workers import features as F
from workers.allocator import keep_freed_memory
from workers.audio import load_audio

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "us8k-subset"
METHODS = ("reference", "parity", "fast")
LABELS = {
    "reference": "reference (librosa loop)",
    "parity": "ours, parity",
    "fast": "ours, fast",
}


def reference_windows(y: np.ndarray, sr: int) -> np.ndarray:
    """The notebook's computation, in true (bands, frames) order: ``(n, 60, 41, 2)``."""
    out = []
    for start in range(0, len(y) - 20480 + 1, 10240):
        window = y[start : start + 20480]
        mel = librosa.feature.melspectrogram(y=window, sr=sr, n_fft=2048, hop_length=512, n_mels=60)
        log_spec = librosa.power_to_db(mel, ref=1.0)
        out.append(np.stack([log_spec, librosa.feature.delta(log_spec)], axis=-1))
    return np.asarray(out, dtype=np.float32).reshape(-1, 60, 41, 2)


def from_file(method: str) -> Callable[[Path], np.ndarray]:
    if method == "reference":
        return lambda path: reference_windows(*librosa.load(path))
    mode: F.ExtractionMode = "parity" if method == "parity" else "fast"
    return lambda path: F.log_mel_windows(load_audio(path)[0], mode=mode)[0]


def in_memory(method: str) -> Callable[[np.ndarray], np.ndarray]:
    if method == "reference":
        return lambda y: reference_windows(y, 22050)
    mode: F.ExtractionMode = "parity" if method == "parity" else "fast"
    return lambda y: F.log_mel_windows(y, mode=mode)[0]


def find_clips(data: Path) -> list[Path]:
    return sorted(data.glob("**/audio/fold*/*.wav")) or sorted(data.glob("fold*/*.wav"))


def timed_interleaved(
    fns: dict[str, Callable[[object], np.ndarray]], items: Sequence[object], chunk: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Seconds per method and chunk over ``items``, and windows produced, interleaved.

    Each chunk of ``chunk`` items goes through every method back to back, so the host's
    drift over the loop weighs on all methods alike while each method still runs a
    stretch of clips with warm caches. The first method (the reference) opens every
    chunk and the others follow in an order rotating from chunk to chunk: each of them
    comes right after the reference (whose OpenBLAS threads and cache footprint linger)
    equally often, and right after each other equally often.
    """
    names = list(fns)
    for name in names:
        fns[name](items[0])  # warm-up: numba JIT, caches, imports
    seconds: dict[str, list[float]] = {name: [] for name in names}
    windows = dict.fromkeys(names, 0)
    for c, first in enumerate(range(0, len(items), chunk)):
        part = items[first : first + chunk]
        rest = names[1:]
        for name in [names[0], *rest[c % len(rest) :], *rest[: c % len(rest)]]:
            fn = fns[name]
            start = time.perf_counter()
            for item in part:
                windows[name] += fn(item).shape[0]
            seconds[name].append(time.perf_counter() - start)
    return seconds, windows


def breakdown(paths: list[Path]) -> dict[str, float]:
    """Seconds per stage of the parity path over ``paths`` (default parameters)."""
    cfg = F.FeatureConfig()
    hann = F._hann_window(cfg.n_fft)
    basis_t = F._mel_basis_t(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    delta = F._delta_matrix(cfg.frames, cfg.delta_width)
    stages = [
        "decode+resample",
        "framing",
        "window*hann",
        "rfft",
        "power",
        "mel",
        "assemble",
        "log",
        "delta",
    ]
    totals = dict.fromkeys(stages, 0.0)
    for path in paths:
        t0 = time.perf_counter()
        y, _ = load_audio(path)
        t1 = time.perf_counter()
        n = F.n_full_windows(
            y.size, window_samples=cfg.window_samples, step_samples=cfg.step_samples
        )
        clip = F._frame_clip(
            y,
            n_windows=n,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            frames=cfg.frames,
            step_frames=cfg.step_frames,
        )
        last_end = (n - 1) * cfg.step_samples + cfg.window_samples
        plan = F._parity_plan(
            n,
            y.size == last_end,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            frames=cfg.frames,
            step_frames=cfg.step_frames,
        )
        t2 = time.perf_counter()
        windowed = np.empty((plan.n_shared + plan.edge_frames.size, cfg.n_fft), np.float32)
        np.multiply(clip[plan.shared], hann, out=windowed[: plan.n_shared])
        np.multiply(clip[plan.edge_frames], plan.edge_windows, out=windowed[plan.n_shared :])
        t3 = time.perf_counter()
        spectrum = scipy.fft.rfft(windowed, axis=-1, workers=1)
        t4 = time.perf_counter()
        power = np.square(spectrum.real) + np.square(spectrum.imag)
        t5 = time.perf_counter()
        mel_rows = power @ basis_t
        t6 = time.perf_counter()
        mel = mel_rows[plan.rows].transpose(0, 2, 1)
        t7 = time.perf_counter()
        log_spec = F._power_to_db(mel, ref=cfg.ref, amin=cfg.amin, top_db=cfg.top_db)
        t8 = time.perf_counter()
        np.matmul(log_spec, delta)
        t9 = time.perf_counter()
        times = [t0, t1, t2, t3, t4, t5, t6, t7, t8, t9]
        for stage, dt in zip(stages, np.diff(times), strict=True):
            totals[stage] += float(dt)
    return totals


def parity_error(clips: list[np.ndarray]) -> tuple[float, float]:
    """Max |parity - reference| over ``clips``: (log-mel in dB, delta)."""
    log_err = delta_err = 0.0
    for y in clips:
        diff = np.abs(F.log_mel_windows(y)[0] - reference_windows(y, 22050))
        log_err = max(log_err, float(diff[..., 0].max(initial=0.0)))
        delta_err = max(delta_err, float(diff[..., 1].max(initial=0.0)))
    return log_err, delta_err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="UrbanSound8K root")
    parser.add_argument("--limit", type=int, default=200, help="clips to process (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--chunk", type=int, default=10, help="clips per method between switches (default 10)"
    )
    parser.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="leave glibc's allocator settings (default: keep freed memory, as workers do)",
    )
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
    allocator = "glibc defaults"
    if not args.glibc_defaults:
        allocator = "freed memory kept (as workers)" if keep_freed_memory() else "no mallopt"

    clips = [load_audio(path)[0] for path in paths]
    sources: dict[str, Sequence[object]] = {"files": paths, "memory": clips}
    # seconds[(method, source)] = one entry per round
    seconds: dict[tuple[str, str], list[float]] = {}
    chunk_ratios: dict[str, list[float]] = {source: [] for source in sources}  # fast / parity
    windows: dict[tuple[str, str], int] = {}
    for _ in range(args.repeat):
        for source, items in sources.items():
            make = from_file if source == "files" else in_memory
            fns = {method: make(method) for method in METHODS}
            secs, n_windows = timed_interleaved(fns, items, args.chunk)  # type: ignore[arg-type]
            for method in METHODS:
                seconds.setdefault((method, source), []).append(sum(secs[method]))
                windows[(method, source)] = n_windows[method]
            pairs = zip(secs["fast"], secs["parity"], strict=True)
            chunk_ratios[source] += [fast / parity for fast, parity in pairs]

    n = len(paths)
    print(
        f"{n} clips, {windows[('parity', 'files')]} windows, {args.repeat} rounds, "
        f"allocator: {allocator}"
    )
    header = (
        f"{'method':26} {'files clips/s':>13} {'vs ref':>7} {'median':>7} "
        f"{'memory clips/s':>14} {'vs ref':>7} {'median':>7}"
    )
    print(header)
    for method in METHODS:
        cells = []
        for source, width in zip(sources, (13, 14), strict=True):
            secs = seconds[(method, source)]
            ref = seconds[("reference", source)]
            best = n / min(secs)
            ratio = min(ref) / min(secs)
            median = statistics.median(r / s for r, s in zip(ref, secs, strict=True))
            cells.append(f"{best:{width}.1f} {ratio:6.2f}x {median:6.2f}x")
        print(f"{LABELS[method]:26} {' '.join(cells)}")
    for source in sources:
        parity, fast = seconds[("parity", source)], seconds[("fast", source)]
        per_round = [f / p for p, f in zip(parity, fast, strict=True)]
        print(
            f"parity / fast clips/s, {source:6}: best rounds {min(fast) / min(parity):.2f}x, "
            f"per round {' '.join(f'{r:.2f}' for r in per_round)}, "
            f"median over {len(chunk_ratios[source])} chunks "
            f"{statistics.median(chunk_ratios[source]):.2f}x"
        )
    log_err, delta_err = parity_error(clips)
    print(f"parity max |diff| vs reference: {log_err:.2e} dB (log-mel), {delta_err:.2e} (delta)")

    if args.breakdown:
        breakdown(paths[:1])
        totals = breakdown(paths)
        whole = sum(totals.values())
        print(f"\nparity path, {len(paths)} clips: {whole:.3f} s")
        for stage, secs in totals.items():
            print(f"  {stage:16} {secs:7.3f} s {100 * secs / whole:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
