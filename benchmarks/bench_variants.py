"""Extraction cost per clip of the originals and of each audio-variant kind, one process.

    .venv/bin/python benchmarks/bench_variants.py [--data DIR] [--clips N] [--set sbcnn]

``--data`` is an UrbanSound8K root (default ``../shared/data/us8k-subset``; the script
exits cleanly when it is absent). Each clip is extracted as a worker does it: the
original (``load_audio`` + ``extract_clip_features``, the baseline) and then every
variant of ``--set`` (``load_audio`` + ``Variant.apply``, with a background clip of the
same fold decoded too for ``background``, + ``extract_clip_features``), back to back per
clip, so the baseline is measured in the same run and under the same load. The table
shows the mean time per clip of each kind (over its variants and the clips) and its
ratio to the original's, then what a whole set costs per clip.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from workers.allocator import keep_freed_memory
from workers.audio import load_audio
from workers.audio_variants import VARIANT_SETS, variant_set
from workers.features import FeatureConfig, extract_clip_features

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "us8k-subset"


def _clips(data: Path, n: int) -> list[tuple[Path, str]]:
    """``(path, fold folder)`` of ``n`` clips spread over the folds, in file order."""
    root = data / "UrbanSound8K" if (data / "UrbanSound8K").is_dir() else data
    files = sorted((root / "audio").glob("fold*/*.wav"))
    by_fold: dict[str, list[Path]] = defaultdict(list)
    for f in files:
        by_fold[f.parent.name].append(f)
    chosen: list[tuple[Path, str]] = []
    while len(chosen) < n and any(by_fold.values()):
        for fold in sorted(by_fold):
            if by_fold[fold] and len(chosen) < n:
                chosen.append((by_fold[fold].pop(0), fold))
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--set", default="sbcnn", help="variant set or names (see --variants)")
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"skipped: {args.data} is absent (real clips are only on developer machines)")
        return 0
    keep_freed_memory()
    config = FeatureConfig()
    sr = config.sample_rate
    clips = _clips(args.data, args.clips)
    if len(clips) < 2:
        print(f"skipped: fewer than 2 clips under {args.data}")
        return 0
    variants = variant_set(args.set)
    by_fold: dict[str, list[Path]] = defaultdict(list)
    for path, fold in clips:
        by_fold[fold].append(path)

    def load(path: Path) -> np.ndarray:
        return load_audio(path, sr=sr, max_seconds=config.max_seconds)[0]

    load(clips[0][0])  # warm caches (filterbanks, FFT plans) before timing
    extract_clip_features(load(clips[0][0]), config)
    times: dict[str, list[float]] = defaultdict(list)
    per_variant: dict[str, list[float]] = defaultdict(list)
    for path, fold in clips:
        started = time.perf_counter()
        extract_clip_features(load(path), config)
        times["original"].append(time.perf_counter() - started)
        mates = [p for p in by_fold[fold] if p != path]
        for v in variants:
            started = time.perf_counter()
            y = load(path)
            bg = load(mates[0]) if v.needs_background and mates else None
            windows = extract_clip_features(
                v.apply(y, sr=sr, clip_id=path.stem, background=bg), config
            ).windows
            elapsed = time.perf_counter() - started
            assert np.isfinite(windows).all()
            times[v.kind].append(elapsed)
            per_variant[v.name].append(elapsed)
    base = statistics.mean(times["original"])
    print(f"{len(clips)} clips of {args.data}, set {args.set!r} ({len(variants)} variants)")
    print()
    print("| extraction of | variants | ms per clip (mean) | median | x original |")
    print("|---|---|---|---|---|")
    counts = defaultdict(int)
    for v in variants:
        counts[v.kind] += 1
    for kind in ["original", *sorted(counts)]:
        ts = times[kind]
        n = counts.get(kind, 1)
        print(
            f"| {kind} | {n} | {1000 * statistics.mean(ts):.1f} | "
            f"{1000 * statistics.median(ts):.1f} | {statistics.mean(ts) / base:.2f} |"
        )
    print()
    print("| set | variants | all variants of a clip, ms | x original |")
    print("|---|---|---|---|")
    for name, members in VARIANT_SETS.items():
        if not members or not all(v.name in per_variant for v in members):
            continue
        total = sum(statistics.mean(per_variant[v.name]) for v in members)
        print(f"| {name} | {len(members)} | {1000 * total:.0f} | {total / base:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
