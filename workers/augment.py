"""Training augmentations of log-mel windows as backend-neutral ``keras.ops``.

Every function works on a whole batch of device tensors, so it runs inside the
compiled training step under any Keras backend (TensorFlow, JAX): nothing is
done per window in Python. The random draws come from a ``keras.random``
seed generator, so a seeded run repeats. The semantics are those of the host
pipeline (``workers.training._AugmentedBatches``): a roll along time, a band of
zeroed mel bands, a span of zeroed frames, then mixup of windows and one-hot
labels with a random permutation of the batch.

Windows are ``(batch, n_mels, frames, channels)``; after normalisation zero is
the training mean, so a mask sets the masked cells to the mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
from keras import ops


@dataclass(frozen=True)
class AugmentSettings:
    """Which augmentations run, and their sizes (``TrialConfig`` fields of the same names).

    Attributes:
        max_shift_frames: Largest roll along time, either direction (0: off).
        freq_mask_bands: Largest band of zeroed mel bands per window (0: off).
        time_mask_frames: Largest span of zeroed frames per window (0: off).
        mixup_alpha: Beta(alpha, alpha) mixup of windows and labels (0: off).
    """

    max_shift_frames: int = 20
    freq_mask_bands: int = 0
    time_mask_frames: int = 0
    mixup_alpha: float = 0.2

    @property
    def active(self) -> bool:
        """Whether any augmentation runs."""
        return bool(
            self.max_shift_frames > 0
            or self.freq_mask_bands > 0
            or self.time_mask_frames > 0
            or self.mixup_alpha > 0
        )


def roll_time(x: Any, shifts: Any) -> Any:
    """Roll each window along time (axis 2) by its own number of frames.

    Args:
        x: ``(batch, n_mels, frames, channels)`` tensor.
        shifts: ``(batch,)`` int shifts; window ``i`` becomes
            ``np.roll(x[i], shifts[i], axis=1)`` (positive: later in time).

    Returns:
        Tensor of the shape and dtype of ``x``.
    """
    frames = x.shape[2]
    t = ops.arange(frames, dtype="int32")
    source = ops.mod(t[None, :] - ops.cast(shifts, "int32")[:, None], frames)  # (batch, frames)
    index = ops.broadcast_to(source[:, None, :, None], ops.shape(x))
    return ops.take_along_axis(x, index, axis=2)


def band_mask(length: int, starts: Any, widths: Any) -> Any:
    """``(batch, length)`` float32: 1 where ``starts <= i < starts + widths``, else 0."""
    i = ops.arange(length, dtype="int32")[None, :]
    starts = ops.cast(starts, "int32")[:, None]
    ends = starts + ops.cast(widths, "int32")[:, None]
    return ops.cast(ops.logical_and(i >= starts, i < ends), "float32")


def mask_axis(x: Any, starts: Any, widths: Any, axis: int) -> Any:
    """Zero window ``i`` along ``axis`` (1: mel bands, 2: frames) over ``[start, start + width)``.

    Args:
        x: ``(batch, n_mels, frames, channels)`` tensor.
        starts: ``(batch,)`` int first masked position.
        widths: ``(batch,)`` int masked length (0: nothing masked).
        axis: 1 or 2.
    """
    if axis not in (1, 2):
        raise ValueError(f"axis must be 1 (mel bands) or 2 (frames), got {axis}")
    keep = 1.0 - band_mask(x.shape[axis], starts, widths)
    keep = keep[:, :, None, None] if axis == 1 else keep[:, None, :, None]
    return x * ops.cast(keep, x.dtype)


def mixup(x: Any, y: Any, lam: Any, perm: Any) -> tuple[Any, Any]:
    """``lam * x + (1 - lam) * x[perm]`` and the same for the one-hot labels ``y``.

    Args:
        x: ``(batch, n_mels, frames, channels)`` windows.
        y: ``(batch, n_classes)`` targets.
        lam: ``(batch,)`` mixing weights in [0, 1].
        perm: ``(batch,)`` int permutation of the batch (each window's partner).
    """
    lam = ops.cast(lam, x.dtype)
    lx = lam[:, None, None, None]
    ly = ops.cast(lam, y.dtype)[:, None]
    x_mixed = lx * x + (1.0 - lx) * ops.take(x, perm, axis=0)
    y_mixed = ly * y + (1.0 - ly) * ops.take(y, perm, axis=0)
    return x_mixed, y_mixed


def _draw_spans(
    n: Any, max_batch: int, length: int, max_width: int, seed: keras.random.SeedGenerator
) -> tuple[Any, Any]:
    """Widths uniform in ``[0, max_width]``, starts uniform in ``[0, length - width]``."""
    max_width = min(max_width, length)
    widths = keras.random.randint((max_batch,), 0, max_width + 1, seed=seed)[:n]
    u = keras.random.uniform((max_batch,), seed=seed)[:n]
    room = ops.cast(length - widths + 1, "float32")
    starts = ops.minimum(ops.cast(ops.floor(u * room), "int32"), length - widths)
    return starts, widths


def augment_batch(
    x: Any,
    y: Any,
    settings: AugmentSettings,
    seed: keras.random.SeedGenerator,
    max_batch: int,
) -> tuple[Any, Any]:
    """Random roll, frequency mask, time mask and mixup of one training batch.

    Same order and distributions as the host pipeline: shifts uniform in
    ``[-max_shift_frames, max_shift_frames]``, mask widths uniform in ``[0, max]``
    with a uniform start that keeps the mask inside the window, mixup weights
    ``Beta(alpha, alpha)`` per window with a random permutation of the batch
    (a batch of one is not mixed: its partner is itself).

    Args:
        x: ``(batch, n_mels, frames, channels)`` normalised windows.
        y: ``(batch, n_classes)`` one-hot (or soft) targets.
        settings: What runs.
        seed: Seed generator (its state advances with every call).
        max_batch: Largest batch (the configured batch size). Random values are
            drawn for ``max_batch`` windows and cut to the batch, so the draws
            have a static shape even where the backend traces the batch
            dimension as unknown (TensorFlow) and the last batch is smaller.

    Returns:
        ``(x, y)`` of the same shapes.
    """
    n = ops.shape(x)[0]
    n_mels, frames = x.shape[1], x.shape[2]
    if settings.max_shift_frames > 0:
        m = settings.max_shift_frames
        shifts = keras.random.randint((max_batch,), -m, m + 1, seed=seed)[:n]
        x = roll_time(x, shifts)
    if settings.freq_mask_bands > 0:
        starts, widths = _draw_spans(n, max_batch, n_mels, settings.freq_mask_bands, seed)
        x = mask_axis(x, starts, widths, axis=1)
    if settings.time_mask_frames > 0:
        starts, widths = _draw_spans(n, max_batch, frames, settings.time_mask_frames, seed)
        x = mask_axis(x, starts, widths, axis=2)
    if settings.mixup_alpha > 0:
        a = float(settings.mixup_alpha)
        lam = keras.random.beta((max_batch,), a, a, seed=seed)[:n]
        perm = ops.cast(ops.argsort(keras.random.uniform((max_batch,), seed=seed)[:n]), "int32")
        x, y = mixup(x, y, lam, perm)
    return x, y
