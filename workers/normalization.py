"""Per mel band and channel standardisation of windows: the statistics a trial computes
from its training windows and saves beside its model (``normalization.json``).

Numpy only, so that commands that read a run (export, reports) do not import Keras.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Normalization:
    """Per mel band and channel standardisation.

    Attributes:
        mean: ``(n_mels, channels)`` float32 mean over training windows and frames.
        std: ``(n_mels, channels)`` float32 standard deviation (floored at 1e-6).
    """

    mean: np.ndarray
    std: np.ndarray

    def apply(self, windows: np.ndarray) -> np.ndarray:
        """``(n, n_mels, frames, channels)`` -> standardised float32 copy, same shape."""
        return ((windows - self.mean[:, None, :]) / self.std[:, None, :]).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        """Inverse of :meth:`to_dict`."""
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float32),
            std=np.asarray(data["std"], dtype=np.float32),
        )


STATISTICS_BLOCK = 512
"""Windows converted to float64 at a time by :func:`compute_normalization` (~20 MB each)."""


def compute_normalization(windows: np.ndarray) -> Normalization:
    """Statistics of ``(n, n_mels, frames, channels)`` TRAINING windows (n >= 1).

    Two passes in float64 over blocks of :data:`STATISTICS_BLOCK` windows (the mean,
    then the mean squared deviation from it), so no float64 copy of all windows is
    made: for 35,000 default windows (689 MB) one float64 array took 5.6 s and 2.8 GB
    of temporaries, blocks take 2.3 s and 40 MB, with the same float32 results
    (``benchmarks/bench_normalization.py``).
    """
    if len(windows) == 0:
        raise ValueError("cannot compute normalisation statistics from zero windows")
    windows = np.asarray(windows)
    n, n_mels, frames, channels = windows.shape
    count = n * frames
    total = np.zeros((n_mels, channels), dtype=np.float64)
    for start in range(0, n, STATISTICS_BLOCK):
        total += windows[start : start + STATISTICS_BLOCK].sum(axis=(0, 2), dtype=np.float64)
    mean = total / count
    squares = np.zeros_like(total)
    for start in range(0, n, STATISTICS_BLOCK):
        deviation = windows[start : start + STATISTICS_BLOCK].astype(np.float64)
        deviation -= mean[:, None, :]
        squares += np.einsum("nmfc,nmfc->mc", deviation, deviation)
    std = np.maximum(np.sqrt(squares / count), 1e-6)
    return Normalization(mean=mean.astype(np.float32), std=std.astype(np.float32))
