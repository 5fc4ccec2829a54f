"""Typed job messages: the only arguments tasks take (JSON-serialisable records).

A task receives ``job.to_dict()`` and rebuilds the record with ``from_dict``,
which checks every field's type, so a malformed message fails loudly instead of
being half-understood. Messages carry no credentials: workers take those from
their own settings.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any, Self


class JobError(ValueError):
    """A task message that does not describe a valid job."""


class ClipStatus(StrEnum):
    """Outcome of one clip's extraction."""

    DONE = "done"
    FAILED = "failed"


class _Record:
    @classmethod
    def from_dict(cls, data: Any) -> Self:
        if not isinstance(data, dict):
            raise JobError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        names = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - set(names)
        missing = set(names) - set(data)
        if unknown or missing:
            raise JobError(
                f"{cls.__name__}: unknown fields {sorted(unknown)}, "
                f"missing fields {sorted(missing)}"
            )
        for name, f in names.items():
            expected = {"str": str, "int": int}[str(f.type)]
            value = data[name]
            if not isinstance(value, expected) or isinstance(value, bool):
                raise JobError(f"{cls.__name__}.{name}: expected {f.type}, got {value!r}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class ExtractJob(_Record):
    """Extract one clip of a dataset into one row of a feature store.

    Attributes:
        submission_id: The submission that enqueued it.
        store_url: Feature store URL.
        dataset_root: Absolute dataset root; must equal the store's recorded root.
        rel_path: Audio file, relative to ``dataset_root``; must equal the store's
            path for ``clip_index``.
        clip_index: Row of the clip in the store.
        generation: Layout generation the index belongs to (a worker whose store
            handle is older reopens it).
    """

    submission_id: str
    store_url: str
    dataset_root: str
    rel_path: str
    clip_index: int
    generation: int

    def task_id(self) -> str:
        """Deterministic Celery task id: one id per (store, clip), whoever enqueues it."""
        return f"extract-{store_key(self.store_url)}-{self.clip_index}"


MAX_BATCH = 256


@dataclass(frozen=True)
class ExtractBatch:
    """Several clips of one store in one message, to spread the per-message cost.

    Each clip is still its own unit: its outcome is recorded on its own, a bad file
    fails alone, and a clip that meets a transient error is sent again on its own
    as an ``ExtractJob`` with its own retry budget.
    """

    jobs: tuple[ExtractJob, ...]

    @classmethod
    def from_dict(cls, data: Any) -> ExtractBatch:
        if not isinstance(data, dict) or set(data) != {"jobs"}:
            raise JobError("ExtractBatch: expected an object with the single field 'jobs'")
        raw = data["jobs"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_BATCH:
            raise JobError(f"ExtractBatch.jobs: expected a list of 1 to {MAX_BATCH} jobs")
        jobs = tuple(ExtractJob.from_dict(j) for j in raw)
        if len({j.store_url for j in jobs}) != 1:
            raise JobError("ExtractBatch: all jobs of a batch must target one store")
        return cls(jobs)

    def to_dict(self) -> dict[str, Any]:
        return {"jobs": [j.to_dict() for j in self.jobs]}

    def task_id(self) -> str:
        """Deterministic Celery task id: store, first clip index and size."""
        first = self.jobs[0]
        return f"extract-{store_key(first.store_url)}-{first.clip_index}-n{len(self.jobs)}"


@dataclass(frozen=True)
class TrialJob(_Record):
    """Train and evaluate one cross-validation trial of a run."""

    store_url: str
    run_id: str
    trial_index: int

    def task_id(self) -> str:
        """Deterministic Celery task id of the trial."""
        return f"trial-{self.run_id}-{self.trial_index}"


def store_key(store_url: str) -> str:
    """Short, stable key of a store URL for Redis key names (no credentials inside)."""
    return hashlib.sha1(store_url.rstrip("/").encode()).hexdigest()[:12]
