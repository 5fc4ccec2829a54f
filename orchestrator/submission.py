"""``submit-dataset``: scan, lay out the store, enqueue what is not done, follow progress.

Resubmitting is always safe: clips that the store shows as done are skipped,
clips whose task is still queued or being worked on are not enqueued again
(tasks have deterministic ids, looked up in the queue and in the broker's
unacknowledged set), and everything else is enqueued. A dataset that grew is
extended in the store (new rows appended) before its new clips are enqueued.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis
from celery import Celery

from orchestrator.datasets import scan_dataset
from storage.blobs import BlobStore
from storage.feature_store import FeatureStore
from storage.manifest import Manifest
from storage.submissions import SubmissionRecords
from workers.celery_app import EXTRACT_QUEUE, EXTRACT_TASK
from workers.features import FeatureConfig
from workers.jobs import ExtractJob, store_key
from workers.settings import Settings, redact_url

MAX_FAILURES_SHOWN = 20


def new_submission_id() -> str:
    """Sortable, unique id such as ``s20261126-183000-1a2b``."""
    return f"s{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"


def queued_task_ids(client: redis.Redis, queue: str, prefix: str) -> set[str]:
    """Ids of tasks starting with ``prefix`` that wait in ``queue`` or are held by a worker.

    Reads kombu's Redis structures: the queue list and the ``unacked`` hash of
    delivered-but-unacknowledged messages (running or prefetched tasks).
    """
    ids: set[str] = set()

    def collect(raw: bytes | str) -> None:
        try:
            message = json.loads(raw)
            if isinstance(message, list):  # unacked entries: [message, exchange, routing_key]
                message = message[0]
            task_id = message["headers"]["id"]
        except (ValueError, KeyError, TypeError, IndexError):
            return
        if isinstance(task_id, str) and task_id.startswith(prefix):
            ids.add(task_id)

    for start in range(0, int(client.llen(queue)), 5000):
        for raw in client.lrange(queue, start, start + 4999):
            collect(raw)
    for _, raw in client.hscan_iter("unacked", count=5000):
        collect(raw)
    return ids


@dataclass
class SubmissionPlan:
    """What a submission will do, decided before anything is enqueued."""

    submission_id: str
    store_url: str
    manifest: Manifest
    store: FeatureStore
    to_enqueue: list[int]
    already_done: list[int]
    already_queued: list[int]
    already_failed: list[int]
    added: list[int]
    gone: list[str]
    created_store: bool


def plan_submission(
    dataset: str,
    *,
    store_url: str,
    settings: Settings,
    client: redis.Redis,
    config: FeatureConfig,
    retry_failed: bool = False,
) -> SubmissionPlan:
    """Scan ``dataset``, create or extend the store, and split its clips by state.

    Clips recorded as failed are not enqueued again unless ``retry_failed``.
    """
    manifest = scan_dataset(dataset)
    window_shape = (config.max_windows, *config.window_shape)
    store, change = FeatureStore.create_or_extend(
        store_url,
        manifest,
        config.to_dict(),
        window_shape,
        storage_options=settings.storage_options(store_url),
    )
    index = {cid: i for i, cid in enumerate(store.clip_ids().tolist())}
    wanted = [index[c.clip_id] for c in manifest.clips]
    done_mask = store.done_mask()
    records = SubmissionRecords(client, ttl=settings.record_ttl)
    known = records.done_indices(store_url)
    records.mark_done_from_store(
        store_url, [i for i in np.flatnonzero(done_mask).tolist() if i not in known]
    )
    prefix = f"extract-{store_key(store_url)}-"
    queued = {int(t.rsplit("-", 1)[1]) for t in queued_task_ids(client, EXTRACT_QUEUE, prefix)}
    failed = (
        set() if retry_failed else set(records.progress(store_url, with_failures=True).failures)
    )
    to_enqueue, already_done, already_queued, already_failed = [], [], [], []
    for i in wanted:
        if done_mask[i]:
            already_done.append(i)
        elif i in queued:
            already_queued.append(i)
        elif i in failed:
            already_failed.append(i)
        else:
            to_enqueue.append(i)
    return SubmissionPlan(
        submission_id=new_submission_id(),
        store_url=store_url,
        manifest=manifest,
        store=store,
        to_enqueue=to_enqueue,
        already_done=already_done,
        already_queued=already_queued,
        already_failed=already_failed,
        added=change.added,
        gone=change.gone,
        created_store=change.created,
    )


def enqueue(plan: SubmissionPlan, app: Celery, records: SubmissionRecords) -> dict[str, Any]:
    """Record the submission, then publish one task per clip to enqueue."""
    manifest = plan.manifest
    rel_paths = plan.store.rel_paths()
    record: dict[str, Any] = {
        "id": plan.submission_id,
        "created": time.time(),
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "dataset_root": manifest.dataset_root,
        "store_url": redact_url(plan.store_url),
        "store_key": store_key(plan.store_url),
        "clips": len(manifest.clips),
        "already_done": len(plan.already_done),
        "already_queued": len(plan.already_queued),
        "already_failed": len(plan.already_failed),
        "to_enqueue": len(plan.to_enqueue),
        "enqueued": 0,
        "added_to_store": len(plan.added),
        "gone_from_dataset": plan.gone,
        "missing_files": len(manifest.missing_files),
        "unlisted_files": len(manifest.unlisted_files),
        "invalid": [{"path": s.item, "reason": s.reason} for s in manifest.invalid],
        "done_at_start": 0,
        "state": "enqueuing",
    }
    records.clear_failures(plan.store_url, plan.to_enqueue)
    record["done_at_start"] = records.progress(plan.store_url).done
    records.save_submission(record)
    with app.producer_or_acquire() as producer:
        for n, i in enumerate(plan.to_enqueue, 1):
            job = ExtractJob(
                submission_id=plan.submission_id,
                store_url=plan.store_url,
                dataset_root=manifest.dataset_root,
                rel_path=str(rel_paths[i]),
                clip_index=i,
                generation=plan.store.generation,
            )
            app.send_task(
                EXTRACT_TASK, args=[job.to_dict()], task_id=job.task_id(), producer=producer
            )
            if n % 1000 == 0:
                record["enqueued"] = n
                records.save_submission(record)
    record["enqueued"] = len(plan.to_enqueue)
    record["state"] = "queued"
    records.save_submission(record)
    return record


@dataclass
class SubmissionStatus:
    """The state of a submission, as ``status`` and the end-of-run summary show it."""

    record: dict[str, Any]
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
        invalid = rec.get("invalid", [])
        return {
            "submission": rec["id"],
            "state": "finished" if self.finished else rec.get("state", "queued"),
            "dataset_root": rec["dataset_root"],
            "store": rec["store_url"],
            "clips": rec["clips"],
            "done": self.done,
            "done_now": max(0, self.done - rec.get("done_at_start", 0)),
            "skipped_already_done": rec["already_done"],
            "already_queued": rec["already_queued"],
            "already_failed": rec.get("already_failed", 0),
            "enqueued": rec["enqueued"],
            "failed": self.failed + len(invalid),
            "remaining": max(0, self.total - self.done - self.failed),
            "clips_per_second": round(self.rate, 2),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
            "missing_files": rec["missing_files"],
            "unlisted_files": rec["unlisted_files"],
            "failures": [*invalid, *self.failures],
        }


def submission_status(
    records: SubmissionRecords, store_url: str, record: dict[str, Any]
) -> SubmissionStatus:
    """Current counts of ``record``'s store, with rate and ETA since it was created."""
    progress = records.progress(store_url, with_failures=True)
    total = (
        record["already_done"]
        + record["already_queued"]
        + record.get("already_failed", 0)
        + record["to_enqueue"]
    )
    total = max(total, record.get("done_at_start", 0))
    done = min(progress.done, total)
    elapsed = max(1e-6, time.time() - float(record["created"]))
    new = max(0, progress.done - record.get("done_at_start", 0)) + progress.failed
    rate = new / elapsed
    remaining = max(0, total - done - progress.failed)
    eta = remaining / rate if rate > 0 else None
    failures = [
        {"path": f.get("path", ""), "reason": f.get("reason", ""), "clip_index": i}
        for i, f in sorted(progress.failures.items())
    ]
    return SubmissionStatus(record, done, progress.failed, total, rate, eta, failures)


def wait_for(
    records: SubmissionRecords,
    store_url: str,
    record: dict[str, Any],
    *,
    poll: float = 0.5,
    on_update: Callable[[SubmissionStatus], None] | None = None,
) -> SubmissionStatus:
    """Poll until every clip of the submission is done or failed."""
    while True:
        status = submission_status(records, store_url, record)
        if on_update:
            on_update(status)
        if status.finished:
            return status
        time.sleep(poll)


def save_summary(store_url: str, settings: Settings, status: SubmissionStatus) -> str:
    """Write the submission's summary (with every failure) into the store; return its key."""
    key = f"submissions/{status.record['id']}.json"
    BlobStore(store_url, settings.storage_options(store_url)).put_json(key, status.to_json())
    return key
