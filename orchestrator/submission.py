"""``submit-dataset``: scan, lay out the store, enqueue what is not done, follow progress.

Resubmitting is always safe: clips that the store shows as done are skipped,
clips whose task is still queued or being worked on are not enqueued again
(tasks have deterministic ids, looked up in the queue and in the broker's
unacknowledged set), and everything else is enqueued. A dataset that grew is
extended in the store (new rows appended) before its new clips are enqueued.
"""

from __future__ import annotations

import getpass
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis
from celery import Celery

from contract.settings import Settings, redact_url
from contract.wire import (
    EXTRACT_BATCH_TASK,
    EXTRACT_QUEUE,
    EXTRACT_TASK,
    ExtractBatch,
    ExtractJob,
    extract_task_prefix,
    split_variant_url,
    store_key,
)
from orchestrator.dataset_setup import scan_for_store
from orchestrator.layout_common import DatasetOptions
from orchestrator.submission_status import SubmissionStatus, submission_status
from storage.blobs import BlobStore
from storage.feature_store import FeatureStore
from storage.manifest import Manifest
from storage.store_layout import create_or_extend
from workers.broker import queued_clip_indices
from workers.features import FeatureConfig
from workers.reconciler import reconciler_alive
from workers.redis_records import SubmissionRecord, SubmissionRecords


def new_submission_id() -> str:
    """Sortable, unique id such as ``s20261126-183000-1a2b``."""
    return f"s{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"


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
    variants_added: list[str] = field(default_factory=list)


def plan_submission(
    dataset: str,
    *,
    store_url: str,
    settings: Settings,
    client: redis.Redis,
    config: FeatureConfig,
    retry_failed: bool = False,
    options: DatasetOptions | None = None,
    clips_per_chunk: int | None = None,
    variants: Mapping[str, Mapping[str, Any]] | None = None,
) -> SubmissionPlan:
    """Scan ``dataset``, create or extend the store, and split its clips by state.

    Clips recorded as failed are not enqueued again unless ``retry_failed``. The layout
    is detected unless ``options`` name it; ``config.max_seconds`` is replaced by the
    dataset's clip length (``orchestrator.dataset_setup.resolve_clip_seconds``). A new
    store gets ``clips_per_chunk`` clips per chunk (default: ``settings.extract_batch``);
    an existing one keeps its own. ``variants`` (name -> spec) are variant groups the
    store must have (``storage.store_layout.create_or_extend``); their clips are
    planned by ``orchestrator.variant_submission.plan_variants``.
    """
    manifest, config = scan_for_store(
        dataset,
        options or DatasetOptions(),
        config,
        store_url=store_url,
        storage_options=settings.storage_options(store_url),
    )
    window_shape = (config.max_windows, *config.window_shape)
    store, change = create_or_extend(
        store_url,
        manifest,
        config.to_dict(),
        window_shape,
        storage_options=settings.storage_options(store_url),
        clips_per_chunk=clips_per_chunk or settings.extract_batch,
        variants=variants,
    )
    records = SubmissionRecords(client, ttl=settings.record_ttl)
    to_enqueue, already_done, already_queued, already_failed = split_clips(
        store, manifest_indices(store, manifest), client, records, retry_failed=retry_failed
    )
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
        variants_added=change.variants_added,
    )


def manifest_indices(store: FeatureStore, manifest: Manifest) -> list[int]:
    """Store indices of the manifest's clips, in manifest order."""
    index = {cid: i for i, cid in enumerate(store.clip_ids().tolist())}
    return [index[c.clip_id] for c in manifest.clips]


def split_clips(
    store: FeatureStore,
    wanted: list[int],
    client: redis.Redis,
    records: SubmissionRecords,
    *,
    retry_failed: bool,
) -> tuple[list[int], list[int], list[int], list[int]]:
    """``wanted`` split into (to enqueue, done, queued or held, failed before).

    ``store`` is the store or one of its variants (``FeatureStore.variant_store``): its
    ``url`` keys the outcomes and task ids. Done clips the records lack are recorded.
    """
    store_url = store.url
    done_mask = store.done_mask()
    known = records.done_indices(store_url)
    records.mark_done_from_store(
        store_url, [i for i in np.flatnonzero(done_mask).tolist() if i not in known]
    )
    queued = queued_clip_indices(client, EXTRACT_QUEUE, extract_task_prefix(store_url))
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
    return to_enqueue, already_done, already_queued, already_failed


def enqueue(plan: SubmissionPlan, app: Celery, records: SubmissionRecords) -> SubmissionRecord:
    """Record the submission, then publish the clips to enqueue.

    The clips of one store chunk go in one message (``esc.extract_clips``); a store
    with one clip per chunk gets one ``esc.extract_clip`` message per clip.
    """
    batch_size = plan.store.clips_per_chunk
    manifest = plan.manifest
    created = time.time()
    records.clear_failures(plan.store_url, plan.to_enqueue)
    record = SubmissionRecord(
        id=plan.submission_id,
        created=created,
        user=getpass.getuser(),
        host=socket.gethostname(),
        dataset_root=manifest.dataset_root,
        store_url=redact_url(plan.store_url),
        store_key=store_key(plan.store_url),
        clips=len(manifest.clips),
        already_done=len(plan.already_done),
        already_queued=len(plan.already_queued),
        already_failed=len(plan.already_failed),
        to_enqueue=len(plan.to_enqueue),
        enqueued=0,
        added_to_store=len(plan.added),
        gone_from_dataset=list(plan.gone),
        missing_files=len(manifest.missing_files),
        unlisted_files=len(manifest.unlisted_files),
        invalid=[{"path": s.item, "reason": s.reason} for s in manifest.invalid],
        done_at_start=records.progress(plan.store_url).done,
        batch_size=batch_size,
        state="enqueuing",
    )
    records.save_submission(record)

    def progress(sent: int) -> None:
        records.save_submission(replace(record, enqueued=sent))

    publish(plan, app, plan.to_enqueue, on_progress=progress)
    record = replace(record, enqueued=len(plan.to_enqueue), state="queued")
    records.save_submission(record)
    # Only now, with every message published, do the workers' reconciler watch it: a
    # clip not yet published is not lost (a killed enqueue is finished by a rerun).
    records.open_submission(record.id, plan.store_url, [*plan.to_enqueue, *plan.already_queued])
    return record


def publish(
    plan: SubmissionPlan,
    app: Celery,
    indices: list[int],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Send the extraction messages of ``indices`` (store rows): one message per chunk."""
    rel_paths = plan.store.rel_paths()
    per = plan.store.clips_per_chunk
    by_chunk: dict[int, list[ExtractJob]] = {}
    for i in sorted(indices):
        job = ExtractJob(
            submission_id=plan.submission_id,
            store_url=plan.store_url,
            dataset_root=plan.manifest.dataset_root,
            rel_path=str(rel_paths[i]),
            clip_index=i,
            generation=plan.store.generation,
        )
        by_chunk.setdefault(i // per, []).append(job)
    sent = 0
    with app.producer_or_acquire() as producer:
        for chunk in by_chunk.values():
            if per == 1:
                name, payload, task_id = EXTRACT_TASK, chunk[0].to_dict(), chunk[0].task_id()
            else:
                batch = ExtractBatch(tuple(chunk))
                name, payload, task_id = EXTRACT_BATCH_TASK, batch.to_dict(), batch.task_id()
            app.send_task(name, args=[payload], task_id=task_id, producer=producer)
            before, sent = sent, sent + len(chunk)
            if on_progress is not None and sent // 1000 != before // 1000:
                on_progress(sent)


def lost_clips(plan: SubmissionPlan, records: SubmissionRecords, client: redis.Redis) -> set[int]:
    """Clips of the submission that are neither done, failed, queued nor held by a worker.

    Redis delivery is not atomic: a worker that fetches a message (BRPOP) and dies
    before kombu has added it to its unacknowledged set loses that message for good
    (no visibility timeout brings it back). Such a clip shows up here.
    """
    url = plan.store_url
    wanted = set(plan.to_enqueue) | set(plan.already_queued)
    settled = records.done_indices(url) | set(records.progress(url, with_failures=True).failures)
    pending = wanted - settled
    if not pending:
        return set()
    return pending - queued_clip_indices(client, EXTRACT_QUEUE, extract_task_prefix(url))


def wait_for(
    records: SubmissionRecords,
    store_url: str,
    record: SubmissionRecord,
    *,
    poll: float = 0.05,
    on_update: Callable[[SubmissionStatus], None] | None = None,
    requeue_lost: Callable[[], int] | None = None,
    stall_check: float = 5.0,
) -> SubmissionStatus:
    """Poll the counts (two HLENs every ``poll`` seconds) until every clip is done or failed.

    When nothing has finished for ``stall_check`` seconds, ``requeue_lost`` (if
    given) is called: it re-enqueues clips whose message was lost and returns how
    many it sent. The returned status lists every failure.
    """
    last_count, last_change = -1, time.monotonic()
    while True:
        status = submission_status(records, store_url, record, with_failures=False)
        if on_update:
            on_update(status)
        if status.finished:
            return submission_status(records, store_url, record)
        count = status.done + status.failed
        now = time.monotonic()
        if count != last_count:
            last_count, last_change = count, now
        elif requeue_lost is not None and now - last_change >= stall_check:
            requeue_lost()
            last_change = now
        time.sleep(poll)


class LostClipRequeuer:
    """Re-enqueues clips whose message was lost, once they were seen lost twice.

    Two sightings some seconds apart rule out the instant between a worker's fetch
    and its bookkeeping, when a message is legitimately in neither place. This is
    the waiting client's fallback for workers that run no reconciler
    (``ESC_RECONCILE_INTERVAL=0``): while a worker holds the reconciler's lease, the
    repairs are left to it (``workers.reconciler``), so the two never both send.
    """

    def __init__(
        self,
        plan: SubmissionPlan,
        app: Celery,
        records: SubmissionRecords,
        client: redis.Redis,
    ) -> None:
        self.plan, self.app, self.records, self.client = plan, app, records, client
        self._seen: set[int] = set()
        self.requeued: list[int] = []

    def __call__(self) -> int:
        if reconciler_alive(self.client):
            self._seen.clear()
            return 0
        lost = lost_clips(self.plan, self.records, self.client)
        confirmed = sorted(lost & self._seen)
        self._seen = lost - set(confirmed)
        if confirmed:
            publish(self.plan, self.app, confirmed)
            self.requeued.extend(confirmed)
        return len(confirmed)


def save_summary(store_url: str, settings: Settings, status: SubmissionStatus) -> str:
    """Write the submission's summary (with every failure) into the store; return its key."""
    key = f"submissions/{status.record.id}.json"
    base = split_variant_url(store_url)[0]  # a variant's summary goes beside the others
    BlobStore(base, settings.storage_options(base)).put_json(key, status.to_json())
    return key


def finish_submission(
    records: SubmissionRecords,
    settings: Settings,
    store_url: str,
    record: SubmissionRecord,
    status: SubmissionStatus,
    *,
    requeued_lost: int = 0,
) -> tuple[SubmissionStatus, str]:
    """Mark the submission finished in Redis and save its summary in the store.

    Returns the final status and the summary's key in the store.
    """
    changes: dict[str, Any] = {"state": "finished", "finished": time.time()}
    if requeued_lost:
        changes["requeued_lost"] = requeued_lost
    record = replace(record, **changes)
    records.save_submission(record)
    status = replace(status, record=record)
    return status, save_summary(store_url, settings, status)
