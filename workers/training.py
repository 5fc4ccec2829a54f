"""Train and evaluate one trial from in-memory arrays (no store, no queue).

The procedure (see ``docs/training.md``): seeds set, per-band normalisation
statistics from the training windows only, optional augmentation (time shift,
mixup), early stopping on the validation windows with the best weights restored,
then window probabilities on the test windows and clip probabilities as the mean
of each clip's window probabilities. A test clip with no window gets the class
prior of the training windows, so every clip is scored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import keras
import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from workers.augment import AugmentSettings
from workers.device_training import (
    CosineDecay,
    EpochTimer,
    LearningRateLog,
    ReplayLearningRates,
    ResolvedSettings,
    alternative_rows,
    build_optimizer_state,
    fit_on_device,
    resolve_settings,
)
from workers.models import DEFAULT_LEARNING_RATE, build_model
from workers.normalization import Normalization, compute_normalization
from workers.trial_config import AGGREGATIONS, TrialConfig

ProgressFn = Callable[[dict[str, Any]], None]


def split_by_fsid(
    clips: np.ndarray, fsids: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about ``fraction`` of the clips for validation, whole recordings at a time.

    All clips of one fsID (source recording) land on the same side, so near-duplicate
    slices never straddle the split. The split is stratified by class where the
    data allow it (``StratifiedGroupKFold`` with ``k = round(1 / fraction)`` folds,
    first fold held out, when there are at least ``k`` recordings and every class has
    at least ``k`` clips), else a plain ``GroupShuffleSplit`` (unstratified groups).
    With a single recording nothing is held out (the trial then trains every epoch
    without early stopping). A clip with an unknown fsID (``-1``) is its own group.

    Args:
        clips: ``(n,)`` clip identifiers (only their count matters).
        fsids: ``(n,)`` int source recording ids.
        labels: ``(n,)`` int class ids.
        fraction: Share of clips to hold out, in ``(0, 1)``.
        seed: Shuffling seed.

    Returns:
        ``(train_mask, valid_mask)``: complementary ``(n,)`` bool masks; both have at
        least one clip when there are two or more groups, else ``valid_mask`` is empty.
    """
    n = len(clips)
    fsids = np.asarray(fsids, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if not (len(fsids) == len(labels) == n):
        raise ValueError("clips, fsids and labels must have the same length")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    groups = fsids.copy()
    unknown = groups < 0
    groups[unknown] = groups.min(initial=0) - 1 - np.arange(unknown.sum())
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        return np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
    n_splits = max(2, round(1.0 / fraction))
    smallest_class = int(np.unique(labels, return_counts=True)[1].min())
    if n_groups >= n_splits and smallest_class >= n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        _, valid_idx = next(splitter.split(np.zeros(n), labels, groups))
    else:
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        _, valid_idx = next(splitter.split(np.zeros(n), labels, groups))
    valid_mask = np.zeros(n, dtype=bool)
    valid_mask[valid_idx] = True
    return ~valid_mask, valid_mask


@dataclass(frozen=True)
class _TestClips:
    """A trial's test set: windows ``(n_windows, n_mels, frames, 2)``, their labels and
    clip index ``(n_windows,)``, every test clip ``(n_clips,)`` and their labels."""

    windows: np.ndarray
    window_labels: np.ndarray
    window_clips: np.ndarray
    clips: np.ndarray
    clip_labels: np.ndarray

    def empty(self) -> _TestClips:
        """No test clip at all (a run that is not scored)."""
        return _TestClips(*(np.asarray(getattr(self, f.name))[:0] for f in fields(self)))


@dataclass
class TrialOutcome:
    """What one trial produced.

    Attributes:
        model: The trained model (best validation weights restored).
        normalization: Statistics of the training windows, applied to every input.
        window_probs: ``(n_test_windows, n_classes)`` float32.
        window_labels: ``(n_test_windows,)`` int64.
        window_clip_index: ``(n_test_windows,)`` int64 clip of each test window.
        clip_index: ``(n_test_clips,)`` int64, every test clip.
        clip_labels: ``(n_test_clips,)`` int64.
        clip_probs: ``(n_test_clips, n_classes)`` float32, mean of the clip's window
            probabilities (the training class prior for a clip without windows).
        n_clips_without_windows: Test clips scored with the prior.
        history: Per-epoch ``loss, accuracy, val_loss, val_accuracy`` (and ``learning_rate``).
        epochs_run: Epochs trained before stopping.
        best_epoch: 1-based epoch whose weights were kept.
        training_seconds: Wall time of ``fit``.
        device: Backend and device trained on, e.g. ``"tensorflow:CPU"``.
        settings: Throughput settings applied (``ResolvedSettings.to_dict``).
        epoch_seconds: Wall time of each epoch (validation included).
        total_seconds: Wall time of the whole call (setup, fit, scoring).
    """

    model: keras.Model
    normalization: Normalization
    window_probs: np.ndarray
    window_labels: np.ndarray
    window_clip_index: np.ndarray
    clip_index: np.ndarray
    clip_labels: np.ndarray
    clip_probs: np.ndarray
    n_clips_without_windows: int
    history: dict[str, list[float]] = field(default_factory=dict)
    epochs_run: int = 0
    best_epoch: int = 0
    training_seconds: float = 0.0
    device: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    epoch_seconds: list[float] = field(default_factory=list)
    total_seconds: float = 0.0


def training_device() -> str:
    """``"<backend>:<device>"`` that Keras trains on (TensorFlow/JAX imported lazily)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return f"tensorflow:{gpus[0].name}" if gpus else "tensorflow:CPU"
    if backend == "jax":
        import jax

        return f"jax:{jax.devices()[0]}"
    return f"{backend}:unknown"


class _AugmentedBatches(keras.utils.PyDataset):
    """Shuffled training batches with optional time shift and mixup (numpy, any backend)."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        config: TrialConfig,
        batch_size: int | None = None,
        alternatives: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.x, self.y, self.config = x, y, config
        self.n = len(y)  # rows of x beyond n are variant windows
        self.alternatives = alternatives
        self.batch_size = batch_size or config.batch_size or 64
        self.rng = np.random.default_rng(config.seed)
        self.order = self.rng.permutation(self.n)

    def __len__(self) -> int:
        return max(1, -(-self.n // self.batch_size))

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        y = self.y[idx].copy()
        if self.alternatives is not None:
            k = self.rng.integers(0, self.alternatives.shape[1], len(idx))
            swap = self.rng.random(len(idx)) < self.config.variant_probability
            idx = np.where(swap, self.alternatives[idx, k], idx)
        x = self.x[idx].copy()
        c = self.config
        if c.augment and c.time_shift and c.max_shift_frames > 0:
            shifts = self.rng.integers(-c.max_shift_frames, c.max_shift_frames + 1, len(x))
            for j, s in enumerate(shifts):
                x[j] = np.roll(x[j], int(s), axis=1)
        if c.augment and c.freq_mask_bands > 0:
            widths = self.rng.integers(0, c.freq_mask_bands + 1, len(x))
            for j, w in enumerate(widths):
                start = int(self.rng.integers(0, x.shape[1] - w + 1))
                x[j, start : start + w] = 0.0
        if c.augment and c.mixup_alpha > 0 and len(x) > 1:
            lam = self.rng.beta(c.mixup_alpha, c.mixup_alpha, len(x)).astype(np.float32)
            perm = self.rng.permutation(len(x))
            x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[perm]
            y = lam[:, None] * y + (1 - lam[:, None]) * y[perm]
        return x.astype(np.float32), y.astype(np.float32)

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(self.n)


class _Progress(keras.callbacks.Callback):
    """Reports each finished epoch to ``progress`` as a small JSON-able dict."""

    def __init__(self, progress: ProgressFn, epochs: int) -> None:
        super().__init__()
        self.progress, self.epochs = progress, epochs

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        info: dict[str, Any] = {"epoch": epoch + 1, "epochs": self.epochs}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs:
                info[key] = float(logs[key])
        self.progress(info)


def aggregate_windows(window_probs: np.ndarray, aggregation: str = "mean_prob") -> np.ndarray:
    """One clip's ``(n_windows, n_classes)`` probabilities -> ``(n_classes,)`` (n_windows >= 1).

    ``aggregation`` as in :func:`clip_probabilities`.
    """
    window_probs = np.asarray(window_probs, dtype=np.float64)
    n = len(window_probs)
    probs, _ = clip_probabilities(
        window_probs, np.zeros(n, np.int64), np.zeros(1, np.int64),
        np.full(window_probs.shape[1], 1.0 / window_probs.shape[1]), aggregation,
    )  # fmt: skip
    return probs[0]


def clip_probabilities(
    window_probs: np.ndarray,
    window_clip_index: np.ndarray,
    clip_index: np.ndarray,
    prior: np.ndarray,
    aggregation: str = "mean_prob",
) -> tuple[np.ndarray, int]:
    """Window probabilities aggregated per clip; ``prior`` for clips without windows.

    Args:
        window_probs: ``(n_windows, n_classes)``.
        window_clip_index: ``(n_windows,)`` clip of each window.
        clip_index: ``(n_clips,)`` clips to score (windows of other clips are ignored).
        prior: ``(n_classes,)`` fallback distribution.
        aggregation: ``"mean_prob"`` (arithmetic mean) or ``"mean_log_prob"`` (mean
            of ``log(max(p, 1e-7))``, exponentiated and renormalised to sum to 1).

    Returns:
        ``((n_clips, n_classes) float32, number of clips that got the prior)``.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}: use {', '.join(AGGREGATIONS)}")
    if aggregation == "mean_log_prob":
        logs = np.log(np.maximum(np.asarray(window_probs, dtype=np.float64), 1e-7))
        mean_logs, n_empty = clip_probabilities(logs, window_clip_index, clip_index, prior)
        probs = np.exp(mean_logs.astype(np.float64) - mean_logs.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        counts = np.isin(clip_index, window_clip_index)
        probs[~counts] = prior
        return probs.astype(np.float32), n_empty
    n_classes = len(prior)
    pos = {int(c): i for i, c in enumerate(clip_index)}
    sums = np.zeros((len(clip_index), n_classes), dtype=np.float64)
    counts = np.zeros(len(clip_index), dtype=np.int64)
    rows = np.array([pos.get(int(c), -1) for c in window_clip_index], dtype=np.int64)
    keep = rows >= 0
    np.add.at(sums, rows[keep], window_probs[keep])
    np.add.at(counts, rows[keep], 1)
    empty = counts == 0
    probs = sums / np.maximum(counts, 1)[:, None]
    probs[empty] = prior
    return probs.astype(np.float32), int(empty.sum())


def _train_once(
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    test: _TestClips,
    *,
    n_classes: int,
    config: TrialConfig,
    progress: ProgressFn | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    variant_windows: np.ndarray | None = None,
    variant_rows: np.ndarray | None = None,
) -> TrialOutcome:
    """One training run of ``config.model`` and its scoring (``config.refit`` ignored);
    the arguments are :func:`train_and_evaluate`'s."""
    if len(train_x) == 0:
        raise ValueError("no training windows")
    started = time.perf_counter()
    # a process may train several trials (a training worker's child with
    # ESC_TRIALS_PER_CHILD > 1, the in-process tests): each starts from Keras' blank
    # state, with the layer names and the seeded generators of a fresh process
    keras.utils.clear_session()
    keras.utils.set_random_seed(config.seed)
    train_y = np.asarray(train_y, dtype=np.int64)
    norm = compute_normalization(train_x)
    settings = resolve_settings(
        pipeline=config.pipeline,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate or DEFAULT_LEARNING_RATE,
        lr_scaling=config.lr_scaling,
        warmup_epochs=config.warmup_epochs,
        precision=config.precision,
        jit_compile=config.jit_compile,
        steps_per_execution=config.steps_per_execution,
        n_train=len(train_x),
    )
    model = _build_classifier(config, settings, tuple(train_x.shape[1:]), n_classes)
    has_valid = len(valid_x) > 0
    stops_early = has_valid and config.early_stopping
    timer = EpochTimer()
    # first, so that it logs the rate an epoch trained at before ReduceLROnPlateau changes it
    callbacks = [timer, LearningRateLog(), *callbacks]
    if stops_early:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=config.patience,
                restore_best_weights=settings.pipeline == "host",
            )
        )
    if has_valid and config.reduce_lr_patience > 0 and config.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=config.reduce_lr_patience
            )
        )
    if config.schedule == "cosine":
        callbacks.append(CosineDecay(settings.learning_rate, config.epochs, settings.warmup_epochs))
    if progress is not None:
        callbacks.append(_Progress(progress, config.epochs))
    use_variants = (
        config.variant_probability > 0
        and variant_rows is not None
        and variant_windows is not None
        and len(variant_windows) > 0
    )
    if use_variants:
        variant_rows = np.asarray(variant_rows, dtype=np.int64)
        if variant_rows.shape[0] != len(train_x):
            raise ValueError("variant_rows must have one row per training window")
    else:
        variant_windows, variant_rows = None, None
    test_x = np.asarray(test.windows)
    if settings.pipeline == "device":
        augment = (
            AugmentSettings(
                max_shift_frames=config.max_shift_frames if config.time_shift else 0,
                freq_mask_bands=config.freq_mask_bands,
                time_mask_frames=config.time_mask_frames,
                mixup_alpha=config.mixup_alpha,
            )
            if config.augment
            else None
        )
        result = fit_on_device(
            model,
            train_x=train_x,
            train_y=train_y,
            valid_x=valid_x,
            valid_y=np.asarray(valid_y, dtype=np.int64),
            test_x=test_x,
            mean=norm.mean,
            std=norm.std,
            n_classes=n_classes,
            settings=settings,
            augment=augment,
            epochs=config.epochs,
            seed=config.seed,
            callbacks=callbacks,
            variant_x=variant_windows,
            variant_rows=variant_rows,
            variant_probability=config.variant_probability,
            keep_best=stops_early,
        )
        history, window_probs = result.history, result.window_probs
        seconds = result.fit_seconds
        if settings.precision != "float32":
            model = _float32_copy(model, config, tuple(train_x.shape[1:]), n_classes)
    else:
        history, window_probs, seconds = _fit_host(
            model, norm, train_x, train_y, valid_x, valid_y, test_x,
            n_classes=n_classes, config=config, settings=settings, callbacks=callbacks,
            variant_x=variant_windows, variant_rows=variant_rows,
        )  # fmt: skip
    epochs_run = len(history.get("loss", []))
    best_epoch = (
        int(np.argmin(history["val_loss"])) + 1
        if stops_early and history.get("val_loss")
        else epochs_run
    )
    window_probs = np.asarray(window_probs, dtype=np.float32)
    prior = np.bincount(train_y, minlength=n_classes).astype(np.float64)
    prior /= prior.sum()
    test_clips = np.asarray(test.clips, dtype=np.int64)
    window_clips = np.asarray(test.window_clips, dtype=np.int64)
    clip_probs, n_empty = clip_probabilities(
        window_probs, window_clips, test_clips, prior, config.test_aggregation
    )
    return TrialOutcome(
        model=model,
        normalization=norm,
        window_probs=window_probs,
        window_labels=np.asarray(test.window_labels, dtype=np.int64),
        window_clip_index=window_clips,
        clip_index=test_clips,
        clip_labels=np.asarray(test.clip_labels, dtype=np.int64),
        clip_probs=clip_probs,
        n_clips_without_windows=n_empty,
        history=history,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        training_seconds=seconds,
        device=training_device(),
        settings={
            **settings.to_dict(),
            "variant_windows": 0 if variant_windows is None else len(variant_windows),
        },
        epoch_seconds=list(timer.seconds),
        total_seconds=time.perf_counter() - started,
    )


def train_and_evaluate(
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    *,
    test_windows: np.ndarray,
    test_window_labels: np.ndarray,
    test_window_clips: np.ndarray,
    test_clips: np.ndarray,
    test_clip_labels: np.ndarray,
    n_classes: int,
    config: TrialConfig,
    progress: ProgressFn | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    variant_windows: np.ndarray | None = None,
    variant_rows: np.ndarray | None = None,
) -> TrialOutcome:
    """Train ``config.model`` on the training windows and score the test clips.

    With ``config.refit`` and validation windows, two runs: the early-stopped search
    on the training windows (validation as usual, test clips not scored), then
    a refit (:func:`_refit`) on training and validation windows together, whose
    model is scored and returned.

    Args:
        train_x: ``(n_train, n_mels, frames, 2)`` float32 training windows.
        train_y: ``(n_train,)`` int class ids.
        valid_x: ``(n_valid, n_mels, frames, 2)`` windows for early stopping (may be
            empty: then all ``config.epochs`` run and the last weights are kept).
        valid_y: ``(n_valid,)`` int class ids.
        test_windows: ``(n_test_windows, n_mels, frames, 2)``.
        test_window_labels: ``(n_test_windows,)``.
        test_window_clips: ``(n_test_windows,)`` clip index of each test window.
        test_clips: ``(n_test_clips,)`` every test clip, with or without windows.
        test_clip_labels: ``(n_test_clips,)``.
        n_classes: Number of classes.
        config: Hyper-parameters.
        progress: Called after every epoch with ``epoch, epochs, loss, accuracy,
            val_loss, val_accuracy`` (and ``phase: "refit"`` in a refit's epochs).
        callbacks: More Keras callbacks for ``fit`` (e.g. TensorBoard logging; the
            search's ``fit`` only, when refitting).
        variant_windows: ``(n_variant, n_mels, frames, 2)`` windows of the TRAINING
            clips' audio variants (``None``: none).
        variant_rows: ``(n_train, k)`` int: for each training window, up to ``k``
            rows of ``variant_windows`` it may be replaced by (``-1``: none), one per
            variant (``workers.trial_runner.variant_training_data``). Used when
            ``config.variant_probability > 0``.
    """
    test = _TestClips(
        test_windows, test_window_labels, test_window_clips, test_clips, test_clip_labels
    )
    variants = {"variant_windows": variant_windows, "variant_rows": variant_rows}
    common = {"n_classes": n_classes, "progress": progress, "callbacks": callbacks}
    if not (config.refit and len(valid_x) > 0):
        return _train_once(
            train_x, train_y, valid_x, valid_y, test, config=config, **common, **variants
        )
    if not config.early_stopping:
        # the epoch count is fixed: nothing to search, the validation windows train too
        return _train_once(
            np.concatenate([train_x, valid_x]),
            np.concatenate([np.asarray(train_y), np.asarray(valid_y)]),
            valid_x[:0],
            np.asarray(valid_y)[:0],
            test,
            config=replace(config, refit=False),
            **common,
            **_with_valid_rows(variants, len(valid_x)),
        )
    search_config = replace(config, refit=False)
    search = _train_once(
        train_x, train_y, valid_x, valid_y, test.empty(), config=search_config, **common, **variants
    )
    return _refit(
        search, train_x, train_y, valid_x, valid_y, test, config=config, n_classes=n_classes,
        progress=progress, **variants,
    )  # fmt: skip


def _refit(
    search: TrialOutcome,
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    test: _TestClips,
    *,
    n_classes: int,
    config: TrialConfig,
    progress: ProgressFn | None = None,
    variant_windows: np.ndarray | None = None,
    variant_rows: np.ndarray | None = None,
) -> TrialOutcome:
    """Train a fresh model on training + validation windows for ``search.best_epoch``
    epochs and score the test clips with it.

    ``search`` is the early-stopped run of the same config on ``train_x`` with
    ``valid_x`` as validation: its best epoch sets the number of epochs, each epoch
    trains at the learning rate the search used in it (``history["learning_rate"]``),
    with the search's batch size; the seed, and so the initial weights, are the
    same. Normalisation statistics come from all the windows trained on. Validation
    windows get no audio variant (their clips' variants are never read).

    Returns:
        The refit's outcome, with the search's ``history`` and ``best_epoch``, both
        runs' epochs, seconds and epoch times, and ``settings["refit_epochs"]``,
        ``settings["refit_windows"]``.
    """
    epochs = search.best_epoch
    rates = search.history.get("learning_rate", [])[:epochs]
    if epochs < 1 or len(rates) < epochs:
        raise ValueError(f"the search recorded {len(rates)} learning rates for {epochs} epochs")
    x = np.concatenate([train_x, valid_x])
    y = np.concatenate([np.asarray(train_y), np.asarray(valid_y)])
    variant_rows = _with_valid_rows({"variant_rows": variant_rows}, len(valid_x))["variant_rows"]
    tagged = None if progress is None else (lambda info: progress({**info, "phase": "refit"}))
    refit_config = replace(
        config,
        refit=False,
        epochs=epochs,
        batch_size=search.settings.get("batch_size", config.batch_size),
        schedule="plateau",  # no validation: nothing but the replayed rates changes the rate
    )
    refit = _train_once(
        x, y, valid_x[:0], np.asarray(valid_y)[:0], test, n_classes=n_classes,
        config=refit_config, progress=tagged, callbacks=[ReplayLearningRates(rates)],
        variant_windows=variant_windows, variant_rows=variant_rows,
    )  # fmt: skip
    return replace(
        refit,
        history=search.history,
        epochs_run=search.epochs_run + refit.epochs_run,
        best_epoch=search.best_epoch,
        training_seconds=search.training_seconds + refit.training_seconds,
        settings={**refit.settings, "refit_epochs": epochs, "refit_windows": len(x)},
        epoch_seconds=[*search.epoch_seconds, *refit.epoch_seconds],
        total_seconds=search.total_seconds + refit.total_seconds,
    )


def _with_valid_rows(variants: dict[str, Any], n_valid: int) -> dict[str, Any]:
    """``variants`` with ``variant_rows`` extended by ``n_valid`` rows of ``-1``: the
    validation windows appended to the training windows get no variant stand-in."""
    rows = variants.get("variant_rows")
    if rows is None:
        return variants
    rows = np.asarray(rows, dtype=np.int64)
    none = np.full((n_valid, rows.shape[1]), -1, dtype=np.int64)
    return {**variants, "variant_rows": np.concatenate([rows, none])}


def _build_classifier(
    config: TrialConfig, settings: ResolvedSettings, shape: tuple[int, ...], n_classes: int
) -> keras.Model:
    """``config.model`` built under the trial's dtype policy (restored afterwards)."""
    previous = keras.config.dtype_policy()
    if settings.precision != "float32" and settings.pipeline == "device":
        keras.config.set_dtype_policy(settings.precision)
    try:
        return build_model(
            config.model,
            input_shape=shape,
            n_classes=n_classes,
            seed=config.seed,
            learning_rate=settings.learning_rate,
        )
    finally:
        keras.config.set_dtype_policy(previous)


def _float32_copy(
    model: keras.Model, config: TrialConfig, shape: tuple[int, ...], n_classes: int
) -> keras.Model:
    """The same weights in a float32 model (what is saved and used for prediction)."""
    copy = build_model(config.model, input_shape=shape, n_classes=n_classes, seed=config.seed)
    copy.set_weights(model.get_weights())
    return copy


def _fit_host(
    model: keras.Model,
    norm: Normalization,
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    test_x: np.ndarray,
    *,
    n_classes: int,
    config: TrialConfig,
    settings: ResolvedSettings,
    callbacks: list[keras.callbacks.Callback],
    variant_x: np.ndarray | None = None,
    variant_rows: np.ndarray | None = None,
) -> tuple[dict[str, list[float]], np.ndarray, float]:
    """Host-fed pipeline: numpy batches augmented in a ``PyDataset``; history, probs, seconds."""
    x_train = norm.apply(train_x)
    alternatives = None
    if variant_x is not None and variant_rows is not None:
        alternatives = alternative_rows(variant_rows, len(train_x))
        x_train = np.concatenate([x_train, norm.apply(variant_x)])
    y_train = keras.utils.to_categorical(train_y, n_classes).astype(np.float32)
    # Mixup needs soft targets: train on one-hot labels with the same optimiser.
    model.compile(optimizer=model.optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    build_optimizer_state(model)
    validation_data = None
    if len(valid_x):
        validation_data = (
            norm.apply(valid_x),
            keras.utils.to_categorical(np.asarray(valid_y), n_classes).astype(np.float32),
        )
    batches = _AugmentedBatches(
        x_train, y_train, config, batch_size=settings.batch_size, alternatives=alternatives
    )
    start = time.perf_counter()
    fit = model.fit(
        batches,
        epochs=config.epochs,
        validation_data=validation_data,
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    if len(test_x):
        window_probs = model.predict(norm.apply(test_x), batch_size=256, verbose=0)
    else:
        window_probs = np.zeros((0, n_classes), dtype=np.float32)
    return history, np.asarray(window_probs, dtype=np.float32), seconds
