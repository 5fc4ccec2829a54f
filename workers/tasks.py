"""Celery tasks: thin wrappers that decode a job, call the real code, record the outcome.

Both tasks are idempotent. Extraction rewrites the same chunks with the same
bytes; a trial whose result is already stored returns it without training.
TensorFlow/Keras is imported only inside the training task, i.e. in the worker
child process, never in a parent that forks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import redis
from celery import Celery, Task
from celery.signals import worker_init, worker_process_init

from contract.errors import ClipError, EscError, JobError
from contract.settings import Settings
from contract.wire import (
    EXTRACT_BATCH_TASK,
    EXTRACT_TASK,
    TRAIN_TASK,
    ClipOutcome,
    ClipStatus,
    ExtractBatch,
    ExtractJob,
    TrialJob,
    trial_lease_key,
)
from workers.context import get_context, reset_context

logger = logging.getLogger(__name__)
_M = TypeVar("_M")


class ClipFailedError(EscError):
    """Raised by an extraction task whose message is invalid, or by a batch with failed clips.

    A single bad clip raises its own :class:`contract.errors.ClipError` (after its
    failure was recorded); a batch raises this one error naming each failed clip.
    """


class TrialLeaseHeldError(EscError):
    """Another delivery of the same trial is running (it holds the lease)."""


def _tune_allocator(worker: Any) -> None:
    """Apply ``keep_freed_memory`` in the worker's main process; pool children inherit it."""
    settings: Settings | None = getattr(getattr(worker, "app", None), "esc_settings", None)
    if settings is not None and settings.keep_freed_memory:
        from workers.allocator import keep_freed_memory

        if not keep_freed_memory():
            logger.info("no glibc mallopt here: freed memory goes back to the OS at once")


@worker_process_init.connect
def _fresh_context_in_child(**_: Any) -> None:
    reset_context()


@worker_init.connect
def _preload_extraction_code(sender: Any = None, **_: Any) -> None:
    """Import the audio and feature code once in the worker's main process.

    Children fork from it with librosa and scipy loaded, instead of each paying for
    the import (about two seconds) on its first task; one silent window with the
    default configuration also fills the filterbank caches. TensorFlow is never
    loaded here. The allocator is tuned here too (children inherit it).
    """
    _tune_allocator(sender)
    import numpy as np

    import workers.extraction  # noqa: F401
    from workers.features import FeatureConfig, extract_clip_features

    config = FeatureConfig()
    extract_clip_features(np.zeros(config.window_samples, dtype=np.float32), config)


def _backoff(retries: int, cap: int) -> int:
    return int(min(cap, 2 ** (retries + 1)))


def _extract_and_record(
    ctx: Any, job: ExtractJob, task_id: str | None, *, record: bool = True
) -> ClipOutcome:
    """Extract one clip and record its outcome in Redis (a success only if ``record``).

    Raises:
        ClipError: bad input; the failure is recorded (unless the job names no
            clip of the store, which is only logged).
        OSError, StoreError: transient trouble with the store; nothing recorded.
    """
    from workers.extraction import extract_to_store

    try:
        store = ctx.store(job.store_url, generation=job.generation)
        outcome = extract_to_store(job, store)
    except ClipError as exc:
        if exc.job_mismatch:
            # Names no clip of the store: recording it would mark another clip as failed
            # (or add a field beyond the clip count). Refused, logged, and shown as a
            # failed task (Flower); the store's outcome hashes stay untouched.
            logger.error("refused job %s: %s", task_id, exc)
        else:
            _record_failure(ctx, job, exc.reason)
        raise
    if record:
        ctx.records.record_outcome(job.store_url, outcome)
    return outcome


def _summary(outcome: ClipOutcome) -> dict[str, Any]:
    return {
        "clip_index": outcome.clip_index,
        "clip_id": outcome.clip_id,
        "windows": outcome.n_windows,
        "real_windows": outcome.n_real,
        "seconds": outcome.seconds,
    }


def _decode(task: Task, parse: Callable[[Any], _M], payload: Any, what: str) -> tuple[Settings, _M]:
    """The worker's settings and the decoded message; a bad message fails the task."""
    try:
        message = parse(payload)
    except JobError as exc:
        raise ClipFailedError(f"invalid {what} message: {exc}") from None
    return task.app.esc_settings, message  # type: ignore[attr-defined]


def extract_clip_task(task: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Body of ``esc.extract_clip`` (see :func:`register`)."""
    settings, job = _decode(task, ExtractJob.from_dict, payload, "job")
    ctx = get_context(settings)
    from storage.feature_store import StoreError

    try:
        outcome = _extract_and_record(ctx, job, task.request.id)
    except (OSError, StoreError) as exc:
        attempts = task.request.retries + 1
        if task.request.retries >= settings.task_max_retries:
            reason = (
                f"store not writable or not readable: {exc} (gave up after {attempts} attempts)"
            )
            _record_failure(ctx, job, reason)
            raise ClipError(job.rel_path, reason) from None
        logger.warning("%s: %s; retry %d", job.rel_path, exc, attempts)
        raise task.retry(
            exc=exc, countdown=_backoff(task.request.retries, settings.retry_backoff_max)
        ) from None
    return _summary(outcome)


def extract_clips_task(task: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Body of ``esc.extract_clips``: each clip of the batch on its own (see ExtractBatch)."""
    settings, batch = _decode(task, ExtractBatch.from_dict, payload, "batch")
    ctx = get_context(settings)
    from storage.feature_store import StoreError

    done: list[ClipOutcome] = []
    failed: list[str] = []
    resent: list[str] = []
    for job in batch.jobs:
        try:
            done.append(_extract_and_record(ctx, job, task.request.id, record=False))
        except ClipError as exc:
            failed.append(str(exc))
        except (OSError, StoreError) as exc:
            # Retried on its own: one attempt is spent, ESC_TASK_MAX_RETRIES remain.
            logger.warning("%s: %s; retried as its own task", job.rel_path, exc)
            task.app.send_task(
                EXTRACT_TASK,
                args=[job.to_dict()],
                task_id=job.task_id(),
                countdown=_backoff(0, settings.retry_backoff_max),
                retries=1,
            )
            resent.append(job.rel_path)
    # the batch's successes in one round trip (failures were recorded as they happened)
    ctx.records.record_outcomes(batch.jobs[0].store_url, done)
    if failed:
        raise ClipFailedError(
            f"{len(failed)} of {len(batch.jobs)} clips failed: " + "; ".join(failed)
        )
    return {
        "clips": len(batch.jobs),
        "done": len(done),
        "retried_alone": resent,
        "first_clip": batch.jobs[0].clip_index,
        "seconds": round(sum(o.seconds for o in done), 4),
    }


def _record_failure(ctx: Any, job: ExtractJob, reason: str) -> None:
    ctx.records.record_outcome(
        job.store_url,
        ClipOutcome(
            clip_index=job.clip_index,
            status=ClipStatus.FAILED,
            clip_id=job.rel_path.rsplit("/", 1)[-1].rsplit(".", 1)[0],
            path=job.rel_path,
            reason=reason,
        ),
    )


@contextlib.contextmanager
def trial_lease(client: redis.Redis, job: TrialJob, seconds: int) -> Iterator[None]:
    """Hold ``job``'s lease while the block runs, renewing it from a thread.

    Raises:
        TrialLeaseHeldError: another delivery holds a live lease.
    """
    key = trial_lease_key(job.run_id, job.trial_index)
    token = uuid.uuid4().hex
    if not client.set(key, token, nx=True, ex=seconds):
        raise TrialLeaseHeldError(key)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(seconds / 3):
            with contextlib.suppress(redis.RedisError):
                if client.get(key) == token.encode():
                    client.expire(key, seconds)

    thread = threading.Thread(target=renew, name="trial-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):
            if client.get(key) == token.encode():
                client.delete(key)


def train_trial_task(task: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Body of ``esc.train_trial`` (see :func:`register`)."""
    settings: Settings = task.app.esc_settings  # type: ignore[attr-defined]
    job = TrialJob.from_dict(payload)
    ctx = get_context(settings)
    from storage.run_records import TrialResult
    from storage.runs import RunStore
    from workers.run_report import finalize_run

    runs = RunStore(job.store_url, storage_options=settings.storage_options(job.store_url))
    try:
        with trial_lease(ctx.redis, job, settings.trial_lease_seconds):
            existing = runs.trial_result(job.run_id, job.trial_index)
            if existing is not None:
                # a redelivered copy of a finished trial: nothing to train, so Keras and
                # TensorFlow (seconds to import) are not loaded
                done = TrialResult.from_dict(existing)
                summary = {
                    "run_id": job.run_id,
                    "trial": done.trial,
                    "clip_accuracy": done.clip_accuracy,
                    "epochs": done.epochs,
                    "seconds": done.seconds,
                    "device": done.device,
                }
            else:
                from workers.trial_runner import run_trial

                store = ctx.store(job.store_url)

                def progress(info: dict[str, Any]) -> None:
                    meta = {"run_id": job.run_id, "trial": job.trial_index, **info}
                    task.update_state(state="PROGRESS", meta=meta)
                    task.send_event("task-progress", **meta)

                summary = run_trial(store, runs, job.run_id, job.trial_index, progress=progress)
    except TrialLeaseHeldError:
        # A copy of this trial is running elsewhere (the message came back after the
        # visibility timeout). Wait for it; if its worker dies, the lease expires and
        # this copy takes over.
        raise task.retry(
            countdown=max(5, settings.trial_lease_seconds // 2), max_retries=None
        ) from None
    started = time.perf_counter()
    report = finalize_run(runs, job.run_id)
    if report is not None:
        logger.info(
            "run %s complete; report written in %.2f s", job.run_id, time.perf_counter() - started
        )
    return {**summary, "run_complete": report is not None}


def register(app: Celery) -> None:
    """Register the project's tasks on ``app``."""
    settings: Settings = app.esc_settings  # type: ignore[attr-defined]

    @app.task(
        name=EXTRACT_TASK,
        bind=True,
        ignore_result=True,
        max_retries=settings.task_max_retries,
        throws=(ClipError, ClipFailedError),
    )
    def extract_clip(self: Task, job: dict[str, Any]) -> dict[str, Any]:
        """Extract one clip into its feature store (``job``: an ExtractJob record)."""
        return extract_clip_task(self, job)

    @app.task(
        name=EXTRACT_BATCH_TASK,
        bind=True,
        ignore_result=True,
        throws=(ClipError, ClipFailedError),
    )
    def extract_clips(self: Task, batch: dict[str, Any]) -> dict[str, Any]:
        """Extract several clips, each on its own (``batch``: an ExtractBatch record)."""
        return extract_clips_task(self, batch)

    @app.task(name=TRAIN_TASK, bind=True, max_retries=None)
    def train_trial(self: Task, job: dict[str, Any]) -> dict[str, Any]:
        """Train and evaluate one cross-validation trial (``job``: a TrialJob record)."""
        return train_trial_task(self, job)
