"""Typed records of a training run, as stored under ``runs/<run_id>/`` (see storage.runs).

Written by the orchestrator (the run's config) and the workers (trial results, the
report), read by both: one definition for writer and reader. Each document carries
``"format": 1``; readers accept documents without it (written before it existed)
and refuse unknown fields.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from contract.errors import EscError


@dataclass(frozen=True)
class Trial:
    """One train/validate/test assignment of folds.

    Attributes:
        index: Position of the trial in its plan (0-based).
        train_folds: Folds whose clips train the model.
        valid_folds: Folds used for early stopping; ``()`` when the validation part
            is split off the training folds by fsID.
        test_fold: The held-out fold that is scored.
        valid_from_train_fraction: Fraction of the training clips (whole fsID
            groups) held out for validation; ``0.0`` when ``valid_folds`` is used.
    """

    index: int
    train_folds: tuple[int, ...]
    valid_folds: tuple[int, ...]
    test_fold: int
    valid_from_train_fraction: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (lists instead of tuples)."""
        d = asdict(self)
        d["train_folds"] = list(self.train_folds)
        d["valid_folds"] = list(self.valid_folds)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        """Inverse of :meth:`to_dict`."""
        return cls(
            index=int(data["index"]),
            train_folds=tuple(int(f) for f in data["train_folds"]),
            valid_folds=tuple(int(f) for f in data["valid_folds"]),
            test_fold=int(data["test_fold"]),
            valid_from_train_fraction=float(data.get("valid_from_train_fraction", 0.0)),
        )

    def result_fields(self) -> dict[str, Any]:
        """The trial's fields as a trial result and a report row show them."""
        return {
            "trial": self.index,
            "train_folds": list(self.train_folds),
            "valid_folds": list(self.valid_folds),
            "test_fold": self.test_fold,
            "valid_from_train_fraction": self.valid_from_train_fraction,
        }


FORMAT_VERSION = 1


class RecordError(EscError, ValueError):
    """A stored record that does not have the shape its reader expects."""


def _checked(cls: type, data: Any) -> dict[str, Any]:
    """``data`` without its ``format`` field, after checking it fits ``cls``'s fields.

    Unknown fields and missing required ones are refused; fields with a default may be
    absent (documents written before they existed). A document without ``format`` is
    read as format 1 (every document written before the field existed).
    """
    name = cls.__name__
    if not isinstance(data, dict):
        raise RecordError(f"{name}: expected an object, got {type(data).__name__}")
    data = dict(data)
    version = data.pop("format", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise RecordError(f"{name}: format {version!r} is not supported (this is {FORMAT_VERSION})")
    known = {f.name: f for f in fields(cls)}
    required = {
        n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING
    }
    unknown, missing = set(data) - set(known), required - set(data)
    if unknown or missing:
        raise RecordError(
            f"{name}: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}"
        )
    return data


@dataclass(frozen=True)
class RunConfig:
    """``runs/<run_id>/config.json``: everything a trial needs, travelling with the run.

    Written by ``orchestrator.cv_submission.create_training_run``; the provenance fields
    (``run_id`` to ``project``) are filled in by ``storage.runs.RunStore.create_run``.
    """

    plan: dict[str, Any]  # kind, explanation, folds
    trials: tuple[Trial, ...]
    model: str
    training: dict[str, Any]  # workers.trial_config.TrialConfig.to_dict()
    feature_config: dict[str, Any]
    class_names: tuple[str, ...]
    n_clips: int
    only_real: bool = False
    dataset: dict[str, Any] | None = None  # name, root, class_ids, fold_source (None: older)
    run_id: str | None = None
    created: str | None = None
    store_url: str | None = None
    package_versions: dict[str, str] | None = None
    project: dict[str, Any] | None = None

    def trial(self, index: int) -> Trial:
        """The plan's trial ``index``."""
        for t in self.trials:
            if t.index == index:
                return t
        raise ValueError(f"the run has no trial {index} ({len(self.trials)} trials)")

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (provenance fields left out while unset)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["trials"] = [t.to_dict() for t in self.trials]
        data["class_names"] = list(self.class_names)
        provenance = ("run_id", "created", "store_url", "package_versions", "project", "dataset")
        return {
            "format": FORMAT_VERSION,
            **{k: v for k, v in data.items() if not (k in provenance and v is None)},
        }

    @classmethod
    def from_dict(cls, data: Any) -> RunConfig:
        data = _checked(cls, data)
        data["trials"] = tuple(Trial.from_dict(t) for t in data["trials"])
        data["class_names"] = tuple(data["class_names"])
        return cls(**data)


@dataclass(frozen=True)
class TrialResult:
    """``runs/<run_id>/trials/<k>/result.json``: a trial's metrics and training record.

    The fields of the trial, then those of ``workers.metrics.trial_metrics``, then the
    training record. Written by ``workers.trial_runner.run_trial`` (last, after every
    other artifact of the trial).
    """

    trial: int
    train_folds: list[int]
    valid_folds: list[int]
    test_fold: int
    valid_from_train_fraction: float
    window_accuracy: float | None
    clip_accuracy: float
    roc_auc_macro: float | None
    roc_auc_note: str | None
    f1_macro: float
    f1_micro: float
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    n_clips: int
    n_windows: int
    epochs: int
    seconds: float
    device: str
    best_epoch: int | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    seed: int | None = None
    n_train_windows: int | None = None
    n_valid_windows: int | None = None
    n_test_windows: int | None = None
    n_clips_without_windows: int = 0
    # Throughput settings applied on the worker's device (workers.device_training.
    # ResolvedSettings) and wall seconds of the whole trial; absent in older results.
    training_settings: dict[str, Any] = field(default_factory=dict)
    trial_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Any) -> TrialResult:
        return cls(**_checked(cls, data))


@dataclass(frozen=True)
class Report:
    """``runs/<run_id>/report.json`` and what ``cv-report`` shows.

    ``trials`` holds one row per trial with a result (its ``TrialResult`` fields with
    metrics recomputed from the stored predictions, ``history`` cut to the losses);
    ``aggregate`` is ``workers.metrics.aggregate`` over them.
    """

    run_id: str
    model: str
    plan: dict[str, Any]
    training: dict[str, Any]
    class_names: list[str]
    n_trials: int
    complete: bool
    trials: list[dict[str, Any]]
    aggregate: dict[str, Any]
    dataset: dict[str, Any] | None = None  # as in RunConfig; None in older reports

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Any) -> Report:
        return cls(**_checked(cls, data))
