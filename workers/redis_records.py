"""Submission records in Redis (bookkeeping, not storage): who asked for what, how clips ended.

Any host that reaches Redis can read them (``orchestrator status`` from another
terminal or machine). Keys (named in ``contract.wire``), all under the ``esc:`` prefix:

- ``esc:subs``: sorted set of submission ids by creation time.
- ``esc:sub:<id>``: JSON record of one submission (written by the orchestrator).
- ``esc:store:<key>:done``: hash, clip index -> JSON outcome (``clip_id``,
  ``n_windows``, ``n_real``, ``seconds``), written by workers.
- ``esc:store:<key>:failed``: hash, clip index -> JSON failure (``path``,
  ``reason``), written by workers; cleared for a clip when it is retried or done.
- ``esc:open:subs``: hash, submission id -> JSON ``{"store_url": ...}`` of the
  submissions the fleet's reconciler watches (``workers.reconciler``), with
  ``esc:sub:<id>:clips``: the store rows the submission enqueued (``[start, stop)``
  ranges). The reconciler removes a submission once all its clips are done or failed.
- ``esc:open:runs``: hash, run id -> JSON ``{"store_url": ..., "trials": [...]}`` of
  training runs the reconciler watches until every trial has a result.

Outcomes are kept per store, not per submission, because a clip's outcome is a
property of the store: a second submission over the same store sees what the
first one finished. Every hash holds at most one field per clip of the store,
so memory is bounded by the dataset size, and every key expires ``ttl`` seconds
after its last write. Writing an outcome twice (a redelivered task) overwrites
the same field: it is counted once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import redis

from contract.errors import JobError
from contract.wire import (
    OPEN_RUNS_KEY,
    OPEN_SUBMISSIONS_KEY,
    SUBMISSIONS_KEY,
    ClipOutcome,
    ClipStatus,
    index_ranges,
    ranges_to_indices,
    store_outcomes_key,
    submission_clips_key,
    submission_key,
)

__all__ = ["ClipOutcome", "StoreProgress", "SubmissionRecord", "SubmissionRecords"]

SUBMISSION_FORMAT = 1


@dataclass(frozen=True)
class SubmissionRecord:
    """``esc:sub:<id>``: one submission, as ``submit-dataset`` wrote it (JSON in Redis).

    Frozen: the orchestrator saves a new copy (``dataclasses.replace``) at each step
    (``enqueuing``, ``queued``, ``finished``). Fields with a default may be absent
    from records written by older versions.
    """

    id: str
    created: float
    user: str
    host: str
    dataset_root: str
    store_url: str  # redacted: no password
    store_key: str
    clips: int
    already_done: int
    already_queued: int
    to_enqueue: int
    enqueued: int
    missing_files: int
    unlisted_files: int
    already_failed: int = 0
    added_to_store: int = 0
    gone_from_dataset: list[str] = field(default_factory=list)
    invalid: list[dict[str, str]] = field(default_factory=list)
    done_at_start: int = 0
    batch_size: int = 1
    state: str = "enqueuing"
    requeued_lost: int = 0
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["finished"] is None:
            del data["finished"]
        return {"format": SUBMISSION_FORMAT, **data}

    @classmethod
    def from_dict(cls, data: Any) -> SubmissionRecord:
        """The record; unknown fields, missing required ones or another format are refused."""
        if not isinstance(data, dict):
            raise JobError(f"SubmissionRecord: expected an object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("format", SUBMISSION_FORMAT)
        known = {f.name: f for f in fields(cls)}
        required = {
            n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING
        }
        unknown, missing = set(data) - set(known), required - set(data)
        if version != SUBMISSION_FORMAT or unknown or missing:
            raise JobError(
                f"SubmissionRecord: format {version!r}, unknown fields {sorted(unknown)}, "
                f"missing fields {sorted(missing)}"
            )
        return cls(**data)


# KEYS: done hash, failed hash; ARGV: clip index, failure JSON. Atomic in Redis.
_RECORD_FAILURE_UNLESS_DONE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
return 0
"""


@dataclass
class StoreProgress:
    """Counts of a store's clips by outcome, read from Redis."""

    done: int
    failed: int
    failures: dict[int, dict[str, Any]] = field(default_factory=dict)


class SubmissionRecords:
    """Reads and writes the records above on a Redis connection that is passed in."""

    def __init__(self, client: redis.Redis, *, ttl: int) -> None:
        self.client = client
        self.ttl = ttl

    # submissions (orchestrator side)
    def save_submission(self, record: SubmissionRecord) -> None:
        """Create or replace a submission record."""
        pipe = self.client.pipeline()
        pipe.set(submission_key(record.id), json.dumps(record.to_dict()), ex=self.ttl)
        pipe.zadd(SUBMISSIONS_KEY, {record.id: float(record.created)})
        pipe.execute()

    def get_submission(self, submission_id: str) -> SubmissionRecord | None:
        raw = self.client.get(submission_key(submission_id))
        return SubmissionRecord.from_dict(json.loads(raw)) if raw else None

    def latest_submission_id(self) -> str | None:
        """The newest submission whose record still exists."""
        for raw in self.client.zrevrange(SUBMISSIONS_KEY, 0, 50):
            sid = raw.decode() if isinstance(raw, bytes) else str(raw)
            if self.client.exists(submission_key(sid)):
                return sid
        return None

    # what the fleet's reconciler watches (workers.reconciler)
    def open_submission(self, submission_id: str, store_url: str, indices: list[int]) -> None:
        """Hand a fully published submission to the reconciler: its store and clip rows."""
        pipe = self.client.pipeline()
        pipe.set(
            submission_clips_key(submission_id), json.dumps(index_ranges(indices)), ex=self.ttl
        )
        pipe.hset(OPEN_SUBMISSIONS_KEY, submission_id, json.dumps({"store_url": store_url}))
        pipe.expire(OPEN_SUBMISSIONS_KEY, self.ttl)
        pipe.execute()

    def open_submissions(self) -> dict[str, str]:
        """Open submission id -> store URL."""
        out = {}
        for sid, raw in self.client.hgetall(OPEN_SUBMISSIONS_KEY).items():
            key = sid.decode() if isinstance(sid, bytes) else str(sid)
            out[key] = str(json.loads(raw)["store_url"])
        return out

    def submission_clips(self, submission_id: str) -> set[int] | None:
        """The store rows an open submission enqueued; ``None`` once the record expired."""
        raw = self.client.get(submission_clips_key(submission_id))
        return ranges_to_indices(json.loads(raw)) if raw else None

    def close_submission(self, submission_id: str) -> None:
        self.client.hdel(OPEN_SUBMISSIONS_KEY, submission_id)
        self.client.delete(submission_clips_key(submission_id))

    def open_run(self, run_id: str, store_url: str, trials: list[int]) -> None:
        """Hand a training run whose trials were sent to the reconciler."""
        payload = json.dumps({"store_url": store_url, "trials": sorted(trials)})
        pipe = self.client.pipeline()
        pipe.hset(OPEN_RUNS_KEY, run_id, payload)
        pipe.expire(OPEN_RUNS_KEY, self.ttl)
        pipe.execute()

    def open_runs(self) -> dict[str, tuple[str, list[int]]]:
        """Open run id -> (store URL, trial indices)."""
        out = {}
        for rid, raw in self.client.hgetall(OPEN_RUNS_KEY).items():
            key = rid.decode() if isinstance(rid, bytes) else str(rid)
            data = json.loads(raw)
            out[key] = (str(data["store_url"]), [int(k) for k in data["trials"]])
        return out

    def close_run(self, run_id: str) -> None:
        self.client.hdel(OPEN_RUNS_KEY, run_id)

    # clip outcomes (worker side)
    def record_outcome(self, store_url: str, outcome: ClipOutcome) -> None:
        """Record a clip's outcome; a clip is never both done and failed."""
        self.record_outcomes(store_url, [outcome])

    def record_outcomes(self, store_url: str, outcomes: Sequence[ClipOutcome]) -> None:
        """Record several clips' outcomes in one round trip (see :meth:`record_outcome`).

        Done wins: a failure of a clip already recorded as done (a redelivered copy, or a
        replayed message, that failed after the clip was stored) is not recorded, since
        the store holds the clip's complete features.
        """
        if not outcomes:
            return
        done = store_outcomes_key(store_url, "done")
        failed = store_outcomes_key(store_url, "failed")
        pipe = self.client.pipeline()
        # the done clips in two commands (one HSET, one HDEL), whatever the batch size
        finished = {str(o.clip_index): o.to_json() for o in outcomes if o.status is ClipStatus.DONE}
        if finished:
            pipe.hset(done, mapping=finished)
            pipe.hdel(failed, *finished)
        for outcome in outcomes:
            if outcome.status is not ClipStatus.DONE:
                pipe.eval(
                    _RECORD_FAILURE_UNLESS_DONE,
                    2,
                    done,
                    failed,
                    str(outcome.clip_index),
                    outcome.to_json(),
                )
        pipe.expire(done, self.ttl)
        pipe.expire(failed, self.ttl)
        pipe.execute()

    def mark_done_from_store(self, store_url: str, indices: list[int]) -> None:
        """Note clips that the store shows as done but Redis does not know (e.g. after a flush)."""
        if not indices:
            return
        done = store_outcomes_key(store_url, "done")
        pipe = self.client.pipeline()
        for start in range(0, len(indices), 5000):
            chunk = indices[start : start + 5000]
            pipe.hset(done, mapping={str(i): '{"from_store": true}' for i in chunk})
        pipe.expire(done, self.ttl)
        pipe.execute()

    def clear_failures(self, store_url: str, indices: list[int]) -> None:
        """Forget earlier failures of clips that are about to be retried."""
        if indices:
            self.client.hdel(store_outcomes_key(store_url, "failed"), *map(str, indices))

    def done_indices(self, store_url: str) -> set[int]:
        return {int(k) for k in self.client.hkeys(store_outcomes_key(store_url, "done"))}

    def progress(self, store_url: str, *, with_failures: bool = False) -> StoreProgress:
        """Counts of done and failed clips of a store (cheap: two HLENs)."""
        pipe = self.client.pipeline()
        pipe.hlen(store_outcomes_key(store_url, "done"))
        pipe.hlen(store_outcomes_key(store_url, "failed"))
        done, failed = pipe.execute()
        failures: dict[int, dict[str, Any]] = {}
        if with_failures and failed:
            raw = self.client.hgetall(store_outcomes_key(store_url, "failed"))
            failures = {int(k): json.loads(v) for k, v in raw.items()}
        return StoreProgress(done=int(done), failed=int(failed), failures=failures)
