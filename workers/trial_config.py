"""``TrialConfig``: the hyper-parameters of one trial's training, as recorded in a run's
``config.json`` (``RunConfig.training``) and sent to the training workers.

No Keras here: the control plane (``submit-cv``, ``runs``, ``cv-report``) builds and
reads these records without importing a deep-learning framework.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class TrialConfig:
    """Hyper-parameters of one trial's training.

    Attributes:
        model: Model name (``workers.models.MODEL_NAMES``).
        epochs: Maximum epochs.
        batch_size: Windows per gradient step.
        learning_rate: Optimiser learning rate (``None``: the model's default, 1e-3).
        patience: Epochs without validation-loss improvement before stopping.
        reduce_lr_patience: Epochs without improvement before halving the learning
            rate (0: off).
        seed: Seed of weights, dropout, shuffling, augmentation and fsID split.
        augment: Master switch for the augmentations below.
        mixup_alpha: Beta(alpha, alpha) mixup of windows and one-hot labels (0: off).
        time_shift: Roll each training window along time by a random offset.
        max_shift_frames: Largest roll in frames (either direction).
        freq_mask_bands: Zero (after normalisation: set to the mean) one random band
            range of up to this many mel bands per training window, SpecAugment-style
            (0: off).
        time_mask_frames: The same along time: one random span of up to this many
            frames per training window (0: off; device pipeline only).
        pipeline: ``"device"``: fold data on the device, batches gathered and
            augmented inside the compiled step (``workers.device_training``);
            ``"host"``: numpy batches from a ``PyDataset`` (the previous pipeline).
        lr_scaling: How the learning rate (given for batch 64) scales with the batch
            size: ``sqrt``, ``linear`` or ``none``.
        warmup_epochs: Epochs of linear learning-rate warm-up (``None``: 0 at batch
            64, 2 above; device pipeline only).
        precision: ``auto`` (``mixed_bfloat16`` on GPUs of compute capability 8.0 or
            more, else ``float32``), ``float32`` or ``mixed_bfloat16``.
        jit_compile: XLA-compiled steps (``None``: Keras' auto, i.e. on GPUs and JAX).
        steps_per_execution: Training steps per compiled call (``None``: 1 on a
            CPU, 8 on a GPU).
        recipe: Name of the recipe these values came from (``workers.recipes``);
            a label only, the fields decide.
        schedule: Learning-rate schedule: ``"cosine"`` (cosine decay per epoch from
            the peak rate, after any warm-up, to 1% of it at ``epochs``) or
            ``"plateau"`` (constant, halved after ``reduce_lr_patience`` epochs
            without improvement).
        test_aggregation: How a clip's window predictions become its prediction:
            ``"mean_prob"`` (mean of window probabilities) or ``"mean_log_prob"``
            (mean of log-probabilities, renormalised: a geometric mean).
        variant_probability: In every training step each training window is
            replaced with this probability by its stand-in in one of the store's
            audio variants (``FeatureStore.read_variant``), the variant drawn
            uniformly; the stand-in is the variant window at the same relative
            position of the same clip, or the original where the clip lacks that
            variant (0: originals only). Variants are read for training clips
            only, never scored; a store without variants trains on originals.
        variants: Variant names to sample (empty: every variant in the store).
        early_stopping: Stop after ``patience`` epochs without a lower validation loss
            and keep the lowest-loss epoch's weights (``False``: all ``epochs`` run
            and the last epoch's weights are kept; validation is only reported,
            and drives the ``plateau`` schedule).
        refit: After early stopping has chosen the number of epochs on the validation
            windows, train a fresh model (same seed) on the training and validation
            windows together for that many epochs, each at the learning rate it had,
            and score the test clips with that model (``False``: score with the
            early-stopped model). Validation clips' audio variants are not read
            either way. Needs validation windows; a trial without them trains once.
            Without ``early_stopping`` the epoch count is ``epochs``: the validation
            windows are simply trained on too, in one run.

    ``batch_size`` ``None`` means automatic: 64 on a CPU; on a GPU the largest
    power of two up to 512 that leaves at least 50 steps per epoch. The values
    applied on the worker's device are recorded in the trial's ``result.json``
    (``training_settings``).
    """

    model: str = "default"
    epochs: int = 50
    batch_size: int | None = None
    learning_rate: float | None = None
    patience: int = 8
    reduce_lr_patience: int = 4
    seed: int = 0
    augment: bool = True
    mixup_alpha: float = 0.2
    time_shift: bool = True
    max_shift_frames: int = 20
    freq_mask_bands: int = 0
    time_mask_frames: int = 0
    pipeline: str = "device"
    lr_scaling: str = "sqrt"
    warmup_epochs: int | None = None
    precision: str = "auto"
    jit_compile: bool | None = None
    steps_per_execution: int | None = None
    recipe: str = "v2"
    schedule: str = "plateau"
    test_aggregation: str = "mean_prob"
    variant_probability: float = 0.5
    variants: tuple[str, ...] = ()
    early_stopping: bool = True
    refit: bool = False

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: use {', '.join(SCHEDULES)}")
        if self.test_aggregation not in AGGREGATIONS:
            raise ValueError(
                f"unknown test_aggregation {self.test_aggregation!r}: use {', '.join(AGGREGATIONS)}"
            )
        if not 0.0 <= self.variant_probability <= 1.0:
            raise ValueError(
                f"variant_probability must be in [0, 1], got {self.variant_probability}"
            )
        object.__setattr__(self, "variants", tuple(self.variants))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        data = asdict(self)
        data["variants"] = list(self.variants)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error.

        A record written before a field existed gets that field's value of the time
        (:data:`LEGACY_FIELDS`), so an old run is retrained as it was recorded.
        """
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown training parameters: {sorted(unknown)}")
        legacy = {k: v for k, v in LEGACY_FIELDS.items() if k not in data and k in NEW_FIELDS}
        if legacy:
            legacy.setdefault("recipe", "v1")
        return cls(**{**legacy, **data})


SCHEDULES = ("cosine", "plateau")
AGGREGATIONS = ("mean_prob", "mean_log_prob")
NEW_FIELDS = ("recipe", "schedule", "test_aggregation", "variant_probability", "variants")
LEGACY_FIELDS: dict[str, Any] = {
    "recipe": "v1",
    "schedule": "plateau",
    "test_aggregation": "mean_prob",
    "variant_probability": 0.0,
    "variants": (),
}
"""The values of the fields that issue 12 added, as they were before it (recipe ``v1``:
no variants; the schedule and aggregation of the time)."""
