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


def compute_normalization(windows: np.ndarray) -> Normalization:
    """Statistics of ``(n, n_mels, frames, channels)`` TRAINING windows (n >= 1)."""
    if len(windows) == 0:
        raise ValueError("cannot compute normalisation statistics from zero windows")
    x = np.asarray(windows, dtype=np.float64)
    mean = x.mean(axis=(0, 2))
    std = np.maximum(x.std(axis=(0, 2)), 1e-6)
    return Normalization(mean=mean.astype(np.float32), std=std.astype(np.float32))
