"""The wire contract: everything two processes must agree on, written once.

Queue names, task names, task-id formats, Redis key names and the job records that
are the only arguments tasks take. A task receives ``job.to_dict()`` and rebuilds
the record with ``from_dict``, which checks every field's type, so a malformed
message fails loudly instead of being half-understood. Messages carry no
credentials: workers take those from their own settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from contract.errors import JobError

# queues (the training queue is called "gpu" on the wire: compose files and worker
# command lines name it, whether the worker has a GPU or not)
EXTRACT_QUEUE = "extract"
TRAIN_QUEUE = "gpu"

# task names
EXTRACT_TASK = "esc.extract_clip"
EXTRACT_BATCH_TASK = "esc.extract_clips"
TRAIN_TASK = "esc.train_trial"

# Redis keys of the project's own records (kombu's keys are in workers.broker)
KEY_PREFIX = "esc"
SUBMISSIONS_KEY = f"{KEY_PREFIX}:subs"
# what the fleet's reconciler watches (workers.reconciler): open submissions and runs,
# the lease that elects the one reconciler, and its counters
OPEN_SUBMISSIONS_KEY = f"{KEY_PREFIX}:open:subs"
OPEN_RUNS_KEY = f"{KEY_PREFIX}:open:runs"
RECONCILER_LEASE_KEY = f"{KEY_PREFIX}:reconciler:lease"
RECONCILER_STATS_KEY = f"{KEY_PREFIX}:reconciler:stats"

# where the embedded Redis server records its URL, under the state directory
EMBEDDED_REDIS_DIR = "redis"
EMBEDDED_CONNECTION_FILE = "connection.json"


def embedded_redis_dir(home: Path) -> Path:
    """The embedded Redis server's directory under the state directory ``home``."""
    return home / EMBEDDED_REDIS_DIR


def embedded_connection_file(home: Path) -> Path:
    """The file where the embedded server under ``home`` records its URL (mode 0600)."""
    return embedded_redis_dir(home) / EMBEDDED_CONNECTION_FILE


# A variant of a store's clips (docs/store-layout.md, "Variants") is addressed on the
# wire as ``<store URL>#variant=<name>``: its own task ids, outcome hashes and
# submissions, keyed like a store of its own. The fragment never reaches the storage.
VARIANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+-]{0,63}$")
_VARIANT_FRAGMENT = "#variant="


def variant_url(store_url: str, variant: str) -> str:
    """The wire address of ``variant`` of the store at ``store_url`` (``""``: the store)."""
    if not variant:
        return store_url
    if not VARIANT_NAME.match(variant):
        raise JobError(f"invalid variant name {variant!r} (lower-case letters, digits, _.+-)")
    return f"{split_variant_url(store_url)[0]}{_VARIANT_FRAGMENT}{variant}"


def split_variant_url(url: str) -> tuple[str, str]:
    """``(store URL, variant name)`` of a wire address; the name is ``""`` for the store."""
    base, sep, name = url.rpartition(_VARIANT_FRAGMENT)
    if not sep:
        return url, ""
    if not VARIANT_NAME.match(name):
        raise JobError(f"invalid variant name {name!r} in {url!r}")
    return base, name


def store_key(store_url: str) -> str:
    """Short, stable key of a store URL for Redis key names (no credentials inside).

    A variant's address (:func:`variant_url`) gets the store's key followed by
    ``.<variant>``: so no prefix of the store's keys matches a variant's, and back.
    """
    base, variant = split_variant_url(store_url)
    key = hashlib.sha1(base.rstrip("/").encode()).hexdigest()[:12]
    return f"{key}.{variant}" if variant else key


def submission_key(submission_id: str) -> str:
    """Redis key of a submission's JSON record."""
    return f"{KEY_PREFIX}:sub:{submission_id}"


def submission_clips_key(submission_id: str) -> str:
    """Redis key of the store rows a submission enqueued (JSON list of ``[start, stop)``)."""
    return f"{KEY_PREFIX}:sub:{submission_id}:clips"


def store_outcomes_key(store_url: str, what: str) -> str:
    """Redis hash of a store's clip outcomes: ``what`` is ``done`` or ``failed``."""
    return f"{KEY_PREFIX}:store:{store_key(store_url)}:{what}"


def trial_lease_key(run_id: str, trial_index: int) -> str:
    """Redis key of a training trial's lease."""
    return f"{KEY_PREFIX}:lease:{run_id}:{trial_index}"


def trial_task_prefix(run_id: str) -> str:
    """Start of every training task id of a run."""
    return f"trial-{run_id}-"


def extract_task_prefix(store_url: str) -> str:
    """Start of every extraction task id of the store (single clips and batches)."""
    return f"extract-{store_key(store_url)}-"


def trial_task_id(run_id: str, trial_index: int) -> str:
    """Deterministic Celery task id of a training trial."""
    return f"{trial_task_prefix(run_id)}{trial_index}"


def index_ranges(indices: list[int] | set[int]) -> list[list[int]]:
    """``[start, stop)`` runs of sorted ``indices``: a compact record of store rows."""
    ranges: list[list[int]] = []
    for i in sorted(indices):
        if ranges and ranges[-1][1] == i:
            ranges[-1][1] = i + 1
        else:
            ranges.append([i, i + 1])
    return ranges


def ranges_to_indices(ranges: list[list[int]]) -> set[int]:
    """The indices of :func:`index_ranges`' output."""
    return {i for start, stop in ranges for i in range(int(start), int(stop))}


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
        return f"{extract_task_prefix(self.store_url)}{self.clip_index}"


MAX_BATCH = 256


@dataclass(frozen=True)
class ExtractBatch:
    """Several clips of one store in one message, to spread the per-message cost.

    The orchestrator puts the clips to extract of one store chunk in one message.
    Each clip keeps its own outcome (a bad file fails alone); a transient error (the
    store) retries the whole message, which writes the chunk whole.
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
        return f"{extract_task_prefix(first.store_url)}{first.clip_index}-n{len(self.jobs)}"


@dataclass(frozen=True)
class TrialJob(_Record):
    """Train and evaluate one cross-validation trial of a run."""

    store_url: str
    run_id: str
    trial_index: int

    def task_id(self) -> str:
        """Deterministic Celery task id of the trial."""
        return trial_task_id(self.run_id, self.trial_index)


@dataclass
class ClipOutcome:
    """What a worker reports for one clip (stored as JSON in the store's outcome hash)."""

    clip_index: int
    status: ClipStatus
    clip_id: str = ""
    path: str = ""
    n_windows: int = 0
    n_real: int = 0
    seconds: float = 0.0
    reason: str = ""

    def to_json(self) -> str:
        data: dict[str, Any] = {"clip_id": self.clip_id, "path": self.path}
        if self.status is ClipStatus.DONE:
            data.update(n_windows=self.n_windows, n_real=self.n_real, seconds=self.seconds)
        else:
            data["reason"] = self.reason
        return json.dumps(data)
