"""Training with the fold data on the device and augmentation inside the compiled step.

A trial's training, validation and test windows are copied once into one
non-trainable Keras variable (on the accelerator where there is one; on a CPU
the variable is the only copy besides the caller's arrays). ``fit`` is fed only
shuffled int32 row indices; the compiled step gathers its batch on the device,
standardises it, augments it (``workers.augment``) and runs the classifier.
The same code runs under TensorFlow and JAX.

The wrapper's output packs the class probabilities and the (mixed) one-hot
targets, ``(batch, 2 * n_classes)``, so that mixup's label mixing, drawn inside
the step, reaches the loss without a backend-specific ``train_step``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from workers.augment import AugmentSettings, augment_batch

REFERENCE_BATCH = 64
"""Batch size the models' default learning rate was tuned at (1e-3)."""
GPU_MAX_BATCH = 512
GPU_MIN_STEPS_PER_EPOCH = 50
GPU_STEPS_PER_EXECUTION = 8
PREDICT_BATCH = {"cpu": 256, "gpu": 1024}


@dataclass(frozen=True)
class ResolvedSettings:
    """Throughput settings of one trial as applied on its device (recorded in ``result.json``).

    Attributes:
        accelerator: ``"cpu"`` or ``"gpu"``.
        pipeline: ``"device"`` (this module) or ``"host"`` (numpy batches, ``PyDataset``).
        batch_size: Windows per gradient step.
        learning_rate: Peak learning rate after the scaling rule.
        warmup_epochs: Epochs of linear warm-up to ``learning_rate``.
        precision: Keras dtype policy of the classifier (``float32``, ``mixed_bfloat16``).
        jit_compile: ``True``/``False`` or ``"auto"`` (Keras: XLA on accelerators and JAX).
        steps_per_execution: Training steps per compiled call.
        predict_batch_size: Windows per batch when scoring validation and test windows.
    """

    accelerator: str
    pipeline: str
    batch_size: int
    learning_rate: float
    warmup_epochs: int
    precision: str
    jit_compile: bool | str
    steps_per_execution: int
    predict_batch_size: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def accelerator() -> tuple[str, float | None]:
    """``("gpu", compute capability or None)`` on a GPU backend a GPU, else ``("cpu", None)``."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
            return "gpu", (float(f"{cc[0]}.{cc[1]}") if cc else None)
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "gpu":
            cc = getattr(device, "compute_capability", None)
            try:
                return "gpu", float(cc) if cc else None
            except (TypeError, ValueError):
                return "gpu", None
    return "cpu", None


def use_compilation_cache(directory: Path) -> str | None:
    """Under JAX, keep every compiled program in ``directory`` for the next trial's process.

    A training worker runs each trial in a fresh child process by default
    (``ESC_TRIALS_PER_CHILD`` 1), which under JAX compiled the training and prediction
    steps again (one H200, 35,000 windows: the first epoch took 20.1 s with
    compilation, 1.8-2.4 s with the steps from this cache;
    ``benchmarks/bench_gpu_trial.py --cv-run``). Every program is kept, not
    only those that took JAX's default 1 s to compile: the many small ones (variable
    initialisers, the optimizer's slots, the float32 copy of the model) cost a later
    trial 3.6-4.4 s outside ``fit`` on this project's 2-core CPU when compiled again,
    1.2 s when loaded (2,000 windows, ``--cv-run --cv-train-windows 2000``, JAX's
    default threshold against this one in the same session). A cache directory
    already configured (``JAX_COMPILATION_CACHE_DIR``) is kept with its settings.
    Other backends: nothing to do.

    Returns:
        The cache directory in use, or ``None`` (not JAX).
    """
    if keras.backend.backend() != "jax":
        return None
    import jax

    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return str(configured)
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return str(directory)


def auto_batch_size(kind: str, n_train: int) -> int:
    """64 on a CPU; on a GPU the largest power of two in [64, 512] leaving >= 50 steps/epoch."""
    if kind != "gpu":
        return REFERENCE_BATCH
    batch = REFERENCE_BATCH
    while batch * 2 <= GPU_MAX_BATCH and n_train // (batch * 2) >= GPU_MIN_STEPS_PER_EPOCH:
        batch *= 2
    return batch


def scaled_learning_rate(base: float, batch_size: int, rule: str) -> float:
    """``base`` (the rate at batch 64) scaled to ``batch_size`` by ``rule`` (sqrt/linear/none)."""
    ratio = batch_size / REFERENCE_BATCH
    if rule == "sqrt":
        return base * math.sqrt(ratio)
    if rule == "linear":
        return base * ratio
    if rule == "none":
        return base
    raise ValueError(f"unknown learning-rate scaling rule {rule!r}: use sqrt, linear or none")


def resolve_settings(
    *,
    pipeline: str,
    batch_size: int | None,
    learning_rate: float,
    lr_scaling: str,
    warmup_epochs: int | None,
    precision: str,
    jit_compile: bool | None,
    steps_per_execution: int | None,
    n_train: int,
    device: tuple[str, float | None] | None = None,
) -> ResolvedSettings:
    """Apply the automatic choices (``None``/``"auto"``) for this device; explicit values win.

    Args:
        pipeline: ``"device"`` or ``"host"``.
        batch_size: ``None``: :func:`auto_batch_size`.
        learning_rate: Rate at batch 64 (the model's default when the config has none).
        lr_scaling: ``sqrt`` (default), ``linear`` or ``none``.
        warmup_epochs: ``None``: 0 at batch 64 or less, else 2.
        precision: ``auto`` (``mixed_bfloat16`` on a GPU of compute capability >= 8.0,
            else ``float32``), ``float32`` or ``mixed_bfloat16``.
        jit_compile: ``None``: Keras' ``"auto"``.
        steps_per_execution: ``None``: 1 on a CPU, 8 on a GPU.
        n_train: Training windows.
        device: ``accelerator()`` result (queried when ``None``).
    """
    if pipeline not in ("device", "host"):
        raise ValueError(f"unknown input pipeline {pipeline!r}: use device or host")
    if precision not in ("auto", "float32", "mixed_bfloat16"):
        raise ValueError(f"unknown precision {precision!r}: use auto, float32 or mixed_bfloat16")
    kind, capability = device if device is not None else accelerator()
    batch = batch_size if batch_size is not None else auto_batch_size(kind, n_train)
    if batch < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch}")
    if precision == "auto":
        precision = "mixed_bfloat16" if kind == "gpu" and (capability or 0.0) >= 8.0 else "float32"
    return ResolvedSettings(
        accelerator=kind,
        pipeline=pipeline,
        batch_size=batch,
        learning_rate=scaled_learning_rate(learning_rate, batch, lr_scaling),
        warmup_epochs=(0 if batch <= REFERENCE_BATCH else 2)
        if warmup_epochs is None
        else warmup_epochs,
        precision=precision,
        jit_compile="auto" if jit_compile is None else bool(jit_compile),
        steps_per_execution=steps_per_execution
        if steps_per_execution is not None
        else (GPU_STEPS_PER_EXECUTION if kind == "gpu" else 1),
        predict_batch_size=max(PREDICT_BATCH.get(kind, 256), batch),
    )


class DeviceTrainer(keras.Model):
    """Training wrapper: row indices in, packed ``[probabilities, targets]`` out.

    Rows ``[0, n)`` of ``windows`` are addressed by the int32 indices given to
    ``fit``/``predict``. In training mode the gathered batch is augmented.
    """

    def __init__(
        self,
        classifier: keras.Model,
        windows: np.ndarray,
        labels: np.ndarray,
        mean: np.ndarray,
        std: np.ndarray,
        n_classes: int,
        augment: AugmentSettings | None,
        seed: int,
        max_batch: int,
        count_visits: bool = False,
        alternatives: np.ndarray | None = None,
        variant_probability: float = 0.0,
    ) -> None:
        super().__init__(name="device_trainer", dtype="float32")
        self.classifier = classifier
        self.n_classes = n_classes
        self.augment = augment
        self.max_batch = max_batch
        self.windows = keras.Variable(
            np.asarray(windows, dtype=np.float32), trainable=False, name="windows"
        )
        self.labels = keras.Variable(
            np.asarray(labels, dtype=np.int32), trainable=False, dtype="int32", name="labels"
        )
        # Variables, not constants: the compiled program is then the same for every
        # trial with the same shapes (a persistent XLA cache can reuse it).
        self.mean = keras.Variable(
            np.asarray(mean, np.float32)[:, None, :], trainable=False, name="mean"
        )
        self.inv_std = keras.Variable(
            1.0 / np.asarray(std, np.float32)[:, None, :], trainable=False, name="inv_std"
        )
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Training windows drawn from a variant: row i may become alternatives[i, j].
        self.variant_probability = float(variant_probability)
        self.alternatives = None
        if alternatives is not None and self.variant_probability > 0:
            table = np.tile(np.arange(len(windows), dtype=np.int32)[:, None], alternatives.shape[1])
            table[: len(alternatives)] = alternatives
            self.n_alternatives = int(alternatives.shape[1])
            self.alternatives = keras.Variable(
                table.reshape(-1), trainable=False, dtype="int32", name="alternatives"
            )
        # Test hook: how often each row was gathered in training mode.
        self.visits = (
            keras.Variable(np.zeros(len(windows), np.float32), trainable=False, name="visits")
            if count_visits
            else None
        )

    def call(self, rows: Any, training: bool = False) -> Any:
        rows = ops.cast(ops.reshape(rows, (-1,)), "int32")
        # A negative entry -(k + 1) is padding that fills the last batch: a copy of
        # row k, with sample weight 0.
        real = rows >= 0
        rows = ops.where(real, rows, -rows - 1)
        if training and self.alternatives is not None:
            n = ops.shape(rows)[0]
            k = keras.random.randint(
                (self.max_batch,), 0, self.n_alternatives, seed=self.seed_generator
            )[:n]
            u = keras.random.uniform((self.max_batch,), seed=self.seed_generator)[:n]
            swapped = ops.take(self.alternatives, rows * self.n_alternatives + k, axis=0)
            rows = ops.where(u < self.variant_probability, swapped, rows)
        x = (ops.take(self.windows, rows, axis=0) - self.mean) * self.inv_std
        y = ops.one_hot(ops.take(self.labels, rows, axis=0), self.n_classes)
        if training:
            if self.visits is not None:
                hits = ops.one_hot(rows, self.visits.shape[0]) * ops.cast(real, "float32")[:, None]
                self.visits.assign(self.visits + ops.sum(hits, axis=0))
            if self.augment is not None and self.augment.active:
                x, y = augment_batch(x, y, self.augment, self.seed_generator, self.max_batch)
        probs = ops.cast(self.classifier(x, training=training), "float32")
        return ops.concatenate([probs, ops.cast(y, "float32")], axis=-1)


class PackedCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy of the packed output (``y_true`` is ignored).

    The mean is weighted by the sample weights, so zero-weight padding does not
    dilute a batch's loss.
    """

    def __init__(self, n_classes: int) -> None:
        super().__init__(name="packed_crossentropy", reduction="mean_with_sample_weight")
        self.n_classes = n_classes

    def call(self, y_true: Any, y_pred: Any) -> Any:
        n = self.n_classes
        return keras.losses.categorical_crossentropy(y_pred[:, n:], y_pred[:, :n])


def packed_accuracy(n_classes: int) -> Callable[[Any, Any], Any]:
    """Accuracy of the packed output against the argmax of its (mixed) targets."""

    def accuracy(y_true: Any, y_pred: Any) -> Any:
        hit = ops.equal(
            ops.argmax(y_pred[:, :n_classes], axis=-1), ops.argmax(y_pred[:, n_classes:], axis=-1)
        )
        return ops.cast(hit, "float32")

    return accuracy


class KeepBest(keras.callbacks.Callback):
    """Keeps the classifier's weights of the lowest-``val_loss`` epoch; restores them at the end.

    Only the classifier's weights are copied (not the trainer's data variable).
    """

    def __init__(self, classifier: keras.Model) -> None:
        super().__init__()
        self.classifier = classifier
        self.best = math.inf
        self.weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("val_loss")
        if loss is not None and float(loss) < self.best:
            self.best = float(loss)
            self.weights = self.classifier.get_weights()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.weights is not None:
            self.classifier.set_weights(self.weights)


class WarmUp(keras.callbacks.Callback):
    """Linear warm-up per epoch: epoch ``e < n`` trains at ``peak * (e + 1) / (n + 1)``.

    Set at epoch starts only, where every backend reads the variable afresh (JAX
    holds the optimizer state outside the Keras variables within an epoch).
    """

    def __init__(self, peak: float, epochs: int) -> None:
        super().__init__()
        self.peak, self.epochs = peak, epochs

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch < self.epochs:
            self.model.optimizer.learning_rate = self.peak * (epoch + 1) / (self.epochs + 1)
        elif epoch == self.epochs:
            self.model.optimizer.learning_rate = self.peak


class CosineDecay(keras.callbacks.Callback):
    """Cosine learning-rate decay per epoch, after ``warmup`` warm-up epochs.

    Epoch ``e >= warmup`` trains at ``floor + (peak - floor) * (1 + cos(pi * t)) / 2``
    with ``t = (e - warmup) / max(1, epochs - warmup)`` and ``floor = 0.01 * peak``
    (so the last epoch trains a little above the floor; the warm-up epochs are left
    to :class:`WarmUp`). Set at epoch starts only.
    """

    def __init__(self, peak: float, epochs: int, warmup: int = 0) -> None:
        super().__init__()
        self.peak, self.epochs, self.warmup = peak, epochs, warmup

    def rate(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch`` (``peak`` during the warm-up epochs)."""
        if epoch < self.warmup:
            return self.peak
        t = min(1.0, (epoch - self.warmup) / max(1, self.epochs - self.warmup))
        floor = 0.01 * self.peak
        return floor + (self.peak - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch >= self.warmup:
            self.model.optimizer.learning_rate = self.rate(epoch)


class LearningRateLog(keras.callbacks.Callback):
    """Records the learning rate each epoch trained at as ``logs["learning_rate"]``.

    Put it before any callback that changes the rate at an epoch's end
    (``ReduceLROnPlateau``): the value logged is the one the epoch's steps used.
    """

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))


class ReplayLearningRates(keras.callbacks.Callback):
    """Trains epoch ``e`` at ``rates[e]`` (the last rate after the list ends).

    A refit replays the rates its early-stopped search trained at (warm-up, plateau
    halvings or cosine). Set at epoch starts only, after any warm-up callback.
    """

    def __init__(self, rates: Sequence[float]) -> None:
        super().__init__()
        if not rates:
            raise ValueError("no learning rates to replay")
        self.rates = [float(r) for r in rates]

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.model.optimizer.learning_rate = self.rates[min(epoch, len(self.rates) - 1)]


def alternative_rows(variant_rows: np.ndarray, offset: int) -> np.ndarray:
    """Rows a training window may be replaced by: its variants', else itself.

    Args:
        variant_rows: ``(n_train, k)`` int, index into the variant windows or ``-1``.
        offset: Row of the first variant window in the combined data.

    Returns:
        ``(n_train, k)`` int32: ``offset + variant_rows``, with row ``i`` itself where
        ``variant_rows[i, j] < 0`` (so a uniform draw over ``k`` keeps the original
        for variants the clip lacks).
    """
    variant_rows = np.asarray(variant_rows, dtype=np.int64)
    own = np.arange(len(variant_rows), dtype=np.int64)[:, None]
    return np.where(variant_rows >= 0, offset + variant_rows, own).astype(np.int32)


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of every epoch (validation included)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


ROW_BUCKET = 4096
"""The data variable's rows are padded to a multiple of this, so that trials of
similar size compile the same program."""


def build_optimizer_state(model: keras.Model) -> None:
    """Create the compiled optimizer's slots (Adam's moments) for ``model``'s weights now.

    Keras' TensorFlow trainer otherwise creates them inside the first trace of the
    training step, and TensorFlow traces a function that creates variables twice (a
    2-epoch CPU trial of 240 windows: 10.9 s with the second trace, 8.5 s without).
    Other backends build them the same way before their first step, so this changes
    nothing there.
    """
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def padded_rows(rows: np.ndarray, multiple: int, rng: np.random.Generator) -> np.ndarray:
    """``rows`` followed by padding entries ``-(k + 1)`` (copies of random rows k) up to a multiple.

    Args:
        rows: ``(n,)`` int32 row indices, n >= 1.
        multiple: Length the result is a multiple of (a batch size).
        rng: Picks which rows the padding copies.

    Returns:
        ``(ceil(n / multiple) * multiple,)`` int32.
    """
    n_pad = (-len(rows)) % multiple
    copies = rows[rng.choice(len(rows), n_pad, replace=n_pad > len(rows))]
    return np.concatenate([rows, -copies - 1]).astype(np.int32)


def _crossentropy(targets: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-row categorical cross-entropy with Keras' clipping (epsilon 1e-7)."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1.0 - 1e-7)
    return -(targets * np.log(p)).sum(axis=1)


class _Validation(keras.callbacks.Callback):
    """Writes ``val_loss`` and ``val_accuracy`` into the epoch's logs (it must run first).

    Scores the validation rows with the trainer's prediction function, in padded
    full batches, so validation and test scoring share one compiled program.
    """

    def __init__(self, score: Callable[[np.ndarray], np.ndarray], rows: np.ndarray,
                 labels: np.ndarray, n_classes: int) -> None:  # fmt: skip
        super().__init__()
        self.score, self.rows = score, rows
        self.labels = np.asarray(labels, dtype=np.int64)
        self.targets = np.eye(n_classes)[self.labels]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        probs = self.score(self.rows)
        logs["val_loss"] = float(_crossentropy(self.targets, probs).mean())
        logs["val_accuracy"] = float((probs.argmax(axis=1) == self.labels).mean())


@dataclass
class DeviceFit:
    """What :func:`fit_on_device` returns."""

    history: dict[str, list[float]]
    window_probs: np.ndarray
    trainer: DeviceTrainer
    fit_seconds: float


def fit_on_device(
    classifier: keras.Model,
    *,
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    test_x: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    n_classes: int,
    settings: ResolvedSettings,
    augment: AugmentSettings | None,
    epochs: int,
    seed: int,
    callbacks: list[keras.callbacks.Callback],
    count_visits: bool = False,
    variant_x: np.ndarray | None = None,
    variant_rows: np.ndarray | None = None,
    variant_probability: float = 0.0,
    keep_best: bool = True,
) -> DeviceFit:
    """Train ``classifier`` with the fold data on the device; test-window probabilities.

    Every batch has ``settings.batch_size`` entries: the training rows are padded
    with zero-weight copies (:func:`padded_rows`), and validation and test rows are
    scored in padded batches of ``settings.predict_batch_size``; so each backend
    compiles one training and one prediction program per trial. Each epoch visits
    every training window exactly once with weight 1, in a new shuffled order.

    Args:
        classifier: Built model (its optimizer is used; it is recompiled here).
        train_x, valid_x, test_x: ``(n, n_mels, frames, channels)`` raw windows
            (standardised inside the step with ``mean``/``std``, ``(n_mels, channels)``).
        train_y, valid_y: ``(n,)`` int class ids.
        n_classes: Classes.
        settings: Resolved throughput settings.
        augment: Augmentations of training batches (``None``: none).
        epochs: Maximum epochs.
        seed: Seed of the augmentation draws and padding (shuffling follows Keras'
            global seed).
        callbacks: Extra callbacks (early stopping, learning-rate schedule,
            progress); they see ``val_loss``/``val_accuracy`` in the epoch logs.
        count_visits: Record per-row training visits (tests).
        variant_x: ``(n_variant, n_mels, frames, channels)`` windows of the training
            clips' variants, stored after the test rows (``None``: none).
        variant_rows: ``(n_train, k)`` int into ``variant_x`` (``-1``: none): in each
            training step a window is replaced with probability
            ``variant_probability`` by ``variant_rows[i, j]``, ``j`` uniform (itself
            where that entry is ``-1``); label and sample weight stay the window's.
        keep_best: With validation windows, restore the lowest-``val_loss`` epoch's
            weights at the end (``False``: the last epoch's weights stay).

    Returns:
        History, ``(n_test, n_classes)`` float32 probabilities and the trainer.
    """
    n_train, n_valid, n_test = len(train_x), len(valid_x), len(test_x)
    shape = train_x.shape[1:]
    n_rows = n_train + n_valid + n_test
    use_variants = variant_x is not None and variant_rows is not None and len(variant_x) > 0
    n_variant = len(variant_x) if use_variants else 0
    n_alloc = -(-(n_rows + n_variant) // ROW_BUCKET) * ROW_BUCKET
    windows = np.zeros((n_alloc, *shape), dtype=np.float32)
    windows[:n_train] = train_x
    windows[n_train : n_train + n_valid] = np.asarray(valid_x).reshape(-1, *shape)
    windows[n_train + n_valid : n_rows] = np.asarray(test_x).reshape(-1, *shape)
    labels = np.zeros(n_alloc, np.int32)
    labels[:n_train] = train_y
    labels[n_train : n_train + n_valid] = valid_y
    alternatives = None
    if use_variants:
        windows[n_rows : n_rows + n_variant] = variant_x
        alternatives = alternative_rows(variant_rows, n_rows)
        # a variant row carries the label of the training window it stands in for
        labels[alternatives.reshape(-1)] = np.repeat(
            np.asarray(train_y, np.int32), alternatives.shape[1]
        )
    trainer = DeviceTrainer(
        classifier,
        windows,
        labels,
        mean,
        std,
        n_classes,
        augment,
        seed,
        settings.batch_size,
        count_visits=count_visits,
        alternatives=alternatives,
        variant_probability=variant_probability if use_variants else 0.0,
    )
    del windows
    optimizer = classifier.optimizer
    optimizer.learning_rate = settings.learning_rate
    trainer.compile(
        optimizer=optimizer,
        loss=PackedCrossentropy(n_classes),
        weighted_metrics=[
            keras.metrics.MeanMetricWrapper(packed_accuracy(n_classes), name="accuracy")
        ],
        jit_compile=settings.jit_compile,
        steps_per_execution=settings.steps_per_execution,
    )
    build_optimizer_state(trainer)
    rng = np.random.default_rng(seed)
    predict_batch = settings.predict_batch_size

    def score(rows: np.ndarray) -> np.ndarray:
        padded = padded_rows(rows, predict_batch, rng)
        packed = trainer.predict(padded, batch_size=predict_batch, verbose=0)
        return np.asarray(packed, dtype=np.float32)[: len(rows), :n_classes]

    all_callbacks = list(callbacks)
    if settings.warmup_epochs > 0:
        all_callbacks.insert(0, WarmUp(settings.learning_rate, settings.warmup_epochs))
    if n_valid:
        vrows = np.arange(n_train, n_train + n_valid, dtype=np.int32)
        all_callbacks.insert(0, _Validation(score, vrows, valid_y, n_classes))
        if keep_best:
            all_callbacks.append(KeepBest(classifier))
    rows = padded_rows(np.arange(n_train, dtype=np.int32), settings.batch_size, rng)
    weights = (rows >= 0).astype(np.float32)
    start = time.perf_counter()
    fit = trainer.fit(
        rows,
        rows,
        sample_weight=weights,
        batch_size=settings.batch_size,
        epochs=epochs,
        shuffle=True,
        callbacks=all_callbacks,
        verbose=0,
    )
    fit_seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    if n_test:
        window_probs = score(np.arange(n_train + n_valid, n_rows, dtype=np.int32))
    else:
        window_probs = np.zeros((0, n_classes), dtype=np.float32)
    return DeviceFit(
        history=history, window_probs=window_probs, trainer=trainer, fit_seconds=fit_seconds
    )
