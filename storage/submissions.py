"""Submission records in Redis: who asked for what, and how each clip ended.

Any host that reaches Redis can read them (``orchestrator status`` from another
terminal or machine). Keys, all under the ``esc:`` prefix:

- ``esc:subs``: sorted set of submission ids by creation time.
- ``esc:sub:<id>``: JSON record of one submission (written by the orchestrator).
- ``esc:store:<key>:done``: hash, clip index -> JSON outcome (``clip_id``,
  ``n_windows``, ``n_real``, ``seconds``), written by workers.
- ``esc:store:<key>:failed``: hash, clip index -> JSON failure (``path``,
  ``reason``), written by workers; cleared for a clip when it is retried or done.

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
from dataclasses import dataclass, field
from typing import Any

import redis

from workers.jobs import ClipStatus, store_key

PREFIX = "esc"
# KEYS: done hash, failed hash; ARGV: clip index, failure JSON. Atomic in Redis.
_RECORD_FAILURE_UNLESS_DONE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
return 0
"""


@dataclass
class ClipOutcome:
    """What a worker reports for one clip."""

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

    # keys
    @staticmethod
    def _sub_key(submission_id: str) -> str:
        return f"{PREFIX}:sub:{submission_id}"

    @staticmethod
    def _store_key(store_url: str, what: str) -> str:
        return f"{PREFIX}:store:{store_key(store_url)}:{what}"

    # submissions (orchestrator side)
    def save_submission(self, record: dict[str, Any]) -> None:
        """Create or replace a submission record (must hold ``id`` and ``created``)."""
        pipe = self.client.pipeline()
        pipe.set(self._sub_key(record["id"]), json.dumps(record), ex=self.ttl)
        pipe.zadd(f"{PREFIX}:subs", {record["id"]: float(record["created"])})
        pipe.execute()

    def get_submission(self, submission_id: str) -> dict[str, Any] | None:
        raw = self.client.get(self._sub_key(submission_id))
        return json.loads(raw) if raw else None

    def latest_submission_id(self) -> str | None:
        """The newest submission whose record still exists."""
        for raw in self.client.zrevrange(f"{PREFIX}:subs", 0, 50):
            sid = raw.decode() if isinstance(raw, bytes) else str(raw)
            if self.client.exists(self._sub_key(sid)):
                return sid
        return None

    def list_submissions(self, limit: int = 20) -> list[dict[str, Any]]:
        out = []
        for raw in self.client.zrevrange(f"{PREFIX}:subs", 0, limit - 1):
            rec = self.get_submission(raw.decode() if isinstance(raw, bytes) else str(raw))
            if rec:
                out.append(rec)
        return out

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
        done = self._store_key(store_url, "done")
        failed = self._store_key(store_url, "failed")
        pipe = self.client.pipeline()
        for outcome in outcomes:
            if outcome.status is ClipStatus.DONE:
                pipe.hset(done, str(outcome.clip_index), outcome.to_json())
                pipe.hdel(failed, str(outcome.clip_index))
            else:
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
        done = self._store_key(store_url, "done")
        pipe = self.client.pipeline()
        for start in range(0, len(indices), 5000):
            chunk = indices[start : start + 5000]
            pipe.hset(done, mapping={str(i): '{"from_store": true}' for i in chunk})
        pipe.expire(done, self.ttl)
        pipe.execute()

    def clear_failures(self, store_url: str, indices: list[int]) -> None:
        """Forget earlier failures of clips that are about to be retried."""
        if indices:
            self.client.hdel(self._store_key(store_url, "failed"), *map(str, indices))

    def done_indices(self, store_url: str) -> set[int]:
        return {int(k) for k in self.client.hkeys(self._store_key(store_url, "done"))}

    def progress(self, store_url: str, *, with_failures: bool = False) -> StoreProgress:
        """Counts of done and failed clips of a store (cheap: two HLENs)."""
        pipe = self.client.pipeline()
        pipe.hlen(self._store_key(store_url, "done"))
        pipe.hlen(self._store_key(store_url, "failed"))
        done, failed = pipe.execute()
        failures: dict[int, dict[str, Any]] = {}
        if with_failures and failed:
            raw = self.client.hgetall(self._store_key(store_url, "failed"))
            failures = {int(k): json.loads(v) for k, v in raw.items()}
        return StoreProgress(done=int(done), failed=int(failed), failures=failures)
