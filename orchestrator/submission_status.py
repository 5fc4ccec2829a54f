"""Where a submission stands: its counts, rate and ETA, read from its Redis records.

Kept apart from ``orchestrator.submission`` (scanning, the store layout, publishing) so
that ``orchestrator status`` and every progress poll import only Redis bookkeeping,
not zarr or Celery: a ``status`` process costs a Python start-up and little more.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from contract.settings import Settings
from contract.wire import split_variant_url, store_key, variant_url
from workers.redis_records import SubmissionRecord, SubmissionRecords


@dataclass
class SubmissionStatus:
    """The state of a submission, as ``status`` and the end-of-run summary show it."""

    record: SubmissionRecord
    done: int
    failed: int
    total: int
    rate: float
    eta_seconds: float | None
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.done + self.failed >= self.total

    def to_json(self) -> dict[str, Any]:
        """The documented ``--json`` shape (see docs/cli.md)."""
        rec = self.record
        invalid = rec.invalid
        return {
            "submission": rec.id,
            "state": "finished" if self.finished else rec.state,
            "dataset_root": rec.dataset_root,
            "store": rec.store_url,
            "clips": rec.clips,
            "done": self.done,
            "done_now": max(0, self.done - rec.done_at_start),
            "skipped_already_done": rec.already_done,
            "already_queued": rec.already_queued,
            "already_failed": rec.already_failed,
            "enqueued": rec.enqueued,
            "requeued_lost": rec.requeued_lost,
            "failed": self.failed + len(invalid),
            "remaining": max(0, self.total - self.done - self.failed),
            "clips_per_second": round(self.rate, 2),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
            "missing_files": rec.missing_files,
            "unlisted_files": rec.unlisted_files,
            "failures": [*invalid, *self.failures],
        }


def submission_status(
    records: SubmissionRecords,
    store_url: str,
    record: SubmissionRecord,
    *,
    with_failures: bool = True,
) -> SubmissionStatus:
    """Current counts of ``record``'s store, with rate and ETA since it was created.

    ``with_failures=False`` reads only the counts (two HLENs), not each failure.
    """
    progress = records.progress(store_url, with_failures=with_failures)
    total = record.already_done + record.already_queued + record.already_failed + record.to_enqueue
    total = max(total, record.done_at_start)
    done = min(progress.done, total)
    elapsed = max(1e-6, time.time() - float(record.created))
    new = max(0, progress.done - record.done_at_start) + progress.failed
    rate = new / elapsed
    remaining = max(0, total - done - progress.failed)
    eta = remaining / rate if rate > 0 else None
    failures = [
        {"path": f.get("path", ""), "reason": f.get("reason", ""), "clip_index": i}
        for i, f in sorted(progress.failures.items())
    ]
    return SubmissionStatus(record, done, progress.failed, total, rate, eta, failures)


def store_url_for(settings: Settings, record: SubmissionRecord) -> str:
    """The URL (with credentials) of the submission's store, as this host's settings know it.

    The record holds the redacted URL; a configured URL with the same key is preferred.
    """
    variant = split_variant_url(record.store_url)[1]
    for candidate in (settings.store_url, settings.default_store_url, record.store_url):
        if candidate and store_key(variant_url(candidate, variant)) == record.store_key:
            return variant_url(candidate, variant)
    return record.store_url


def status_of(
    records: SubmissionRecords, settings: Settings, submission: str
) -> SubmissionStatus | None:
    """The status of submission ``submission`` (what ``status`` shows), ``None`` if unknown."""
    record = records.get_submission(submission)
    if record is None:
        return None
    return submission_status(records, store_url_for(settings, record), record)
