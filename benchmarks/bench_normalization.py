"""A trial's normalisation statistics: blockwise (production) against one float64 copy (before).

``workers.normalization.compute_normalization`` computes the per band and channel mean
and standard deviation of a trial's training windows. It used to convert all windows
to one float64 array (``np.asarray(windows, np.float64).std(axis=(0, 2))``), seconds
of every trial spent outside the epochs at full fold size; it now works through
blocks of ``STATISTICS_BLOCK`` windows. For each size, both run in this process on the
same random dB-like windows (mean -45, std 15, default shape 60 x 41 x 2), best of
``--rounds``; peak is the largest traced allocation on top of the windows
(``tracemalloc``, which sees numpy's buffers).

    .venv/bin/python benchmarks/bench_normalization.py
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from workers.normalization import compute_normalization


def whole_array(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The previous implementation: one float64 copy of every window."""
    x = np.asarray(windows, dtype=np.float64)
    mean = x.mean(axis=(0, 2))
    std = np.maximum(x.std(axis=(0, 2)), 1e-6)
    return mean.astype(np.float32), std.astype(np.float32)


def blockwise(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norm = compute_normalization(windows)
    return norm.mean, norm.std


def measure(
    fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], windows: np.ndarray, rounds: int
) -> tuple[float, float, tuple[np.ndarray, np.ndarray]]:
    """Best seconds of ``rounds`` calls, peak traced MB of one call, its result."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        result = fn(windows)
        best = min(best, time.perf_counter() - started)
    tracemalloc.start()
    fn(windows)
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return best, peak, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[2300, 35000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(
        "| windows | data MB | before: s | before: peak MB | blockwise: s | blockwise: peak MB "
        "| speed-up | max abs diff (mean, std) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for n in args.windows:
        windows = (rng.normal(size=(n, 60, 41, 2)) * 15 - 45).astype(np.float32)
        old_s, old_peak, (old_mean, old_std) = measure(whole_array, windows, args.rounds)
        new_s, new_peak, (new_mean, new_std) = measure(blockwise, windows, args.rounds)
        diff = f"{np.abs(new_mean - old_mean).max():.1e}, {np.abs(new_std - old_std).max():.1e}"
        print(
            f"| {n:,} | {windows.nbytes / 1e6:,.0f} | {old_s:.2f} | {old_peak:,.0f} | "
            f"{new_s:.2f} | {new_peak:,.0f} | {old_s / new_s:.1f}x | {diff} |"
        )


if __name__ == "__main__":
    main()
