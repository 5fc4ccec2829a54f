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
    EXTRACT_QUEUE,
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


def _consumes_extraction(worker: Any) -> bool:
    """Whether a worker (``WorkController``) consumes the extraction queue.

    ``-Q`` selects queues into ``app.amqp.queues.consume_from``; without it a worker
    consumes every queue, extraction included.
    """
    app = getattr(worker, "app", None)
    if app is None:
        return True
    selected = app.amqp.queues.consume_from
    return not selected or EXTRACT_QUEUE in selected


@worker_init.connect
def _preload_extraction_code(sender: Any = None, **_: Any) -> None:
    """Import the audio and feature code once in an extraction worker's main process.

    Children fork from it with the audio code, scipy.fft and scipy.sparse loaded,
    instead of each paying for the imports on its first task; one silent window with
    the default configuration also fills the filterbank caches (extraction imports
    neither librosa nor scipy.signal: ``workers.features``). A training-only worker
    (``-Q gpu``) skips it (half a second of CPU at its start, ``benchmarks/bench_startup.py``;
    its children never extract).
    TensorFlow is never loaded here. The allocator is tuned here too (children inherit
    it).
    """
    _tune_allocator(sender)
    if not _consumes_extraction(sender):
        return
    import numpy as np

    import workers.extraction  # noqa: F401
    from workers.features import FeatureConfig, extract_clip_features

    config = FeatureConfig()
    extract_clip_features(np.zeros(config.window_samples, dtype=np.float32), config)


def _backoff(retries: int, cap: int) -> int:
    return int(min(cap, 2 ** (retries + 1)))


def _summary(outcomes: list[ClipOutcome], jobs: tuple[ExtractJob, ...]) -> dict[str, Any]:
    done = [o for o in outcomes if o.status is ClipStatus.DONE]
    return {
        "clips": len(jobs),
        "first_clip": jobs[0].clip_index,
        "done": len(done),
        "windows": sum(o.n_windows for o in done),
        "seconds": round(sum(o.seconds for o in done), 4),
    }


def _decode(task: Task, parse: Callable[[Any], _M], payload: Any, what: str) -> tuple[Settings, _M]:
    """The worker's settings and the decoded message; a bad message fails the task."""
    try:
        message = parse(payload)
    except JobError as exc:
        raise ClipFailedError(f"invalid {what} message: {exc}") from None
    return task.app.esc_settings, message  # type: ignore[attr-defined]


def _extract_message(
    task: Task, settings: Settings, jobs: tuple[ExtractJob, ...]
) -> dict[str, Any]:
    """Extract a message's clips (whole chunks, see ``workers.extraction``) and record them.

    All outcomes of the message go to Redis in one round trip. Store trouble (OSError,
    StoreError) is transient: the whole message is retried with backoff, since no chunk
    is written half; after ``ESC_TASK_MAX_RETRIES`` retries every clip of the message is
    recorded as failed with the reason.

    Raises:
        ClipError: a single clip failed (bad input, or it gave up on the store).
        ClipFailedError: several clips failed, or a job names no clip of the store.
    """
    from storage.feature_store import StoreError
    from workers.extraction import extract_jobs, failure_outcome

    ctx = get_context(settings)
    url = jobs[0].store_url
    try:
        store = ctx.store(url, generation=max(j.generation for j in jobs))
        result = extract_jobs(jobs, store)
    except (OSError, StoreError) as exc:
        attempts = task.request.retries + 1
        if task.request.retries >= settings.task_max_retries:
            reason = (
                f"store not writable or not readable: {exc} (gave up after {attempts} attempts)"
            )
            ctx.records.record_outcomes(url, [failure_outcome(j, reason) for j in jobs])
            if len(jobs) == 1:
                raise ClipError(jobs[0].rel_path, reason) from None
            raise ClipFailedError(f"{len(jobs)} clips failed: {reason}") from None
        logger.warning("clips %s..: %s; retry %d", jobs[0].rel_path, exc, attempts)
        raise task.retry(
            exc=exc, countdown=_backoff(task.request.retries, settings.retry_backoff_max)
        ) from None
    ctx.records.record_outcomes(url, result.outcomes)
    for exc in result.refused:
        # Names no clip of the store: recording it would mark another clip as failed
        # (or add a field beyond the clip count). Refused, logged, and shown as a
        # failed task (Flower); the store's outcome hashes stay untouched.
        logger.error("refused job %s: %s", task.request.id, exc)
    errors = [*result.refused, *result.failed]
    if len(jobs) == 1 and errors:
        raise errors[0]
    if errors:
        raise ClipFailedError(
            f"{len(errors)} of {len(jobs)} clips failed: " + "; ".join(map(str, errors))
        )
    return _summary(result.outcomes, jobs)


def extract_clip_task(task: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Body of ``esc.extract_clip``: one clip (extracted with its chunk-mates)."""
    settings, job = _decode(task, ExtractJob.from_dict, payload, "job")
    return _extract_message(task, settings, (job,))


def extract_clips_task(task: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Body of ``esc.extract_clips``: the clips of one store chunk (see ExtractBatch)."""
    settings, batch = _decode(task, ExtractBatch.from_dict, payload, "batch")
    return _extract_message(task, settings, batch.jobs)


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
                from workers.device_training import use_compilation_cache
                from workers.trial_runner import run_trial

                use_compilation_cache(settings.home / "jax-cache")
                store = ctx.store(job.store_url)

                def progress(info: dict[str, Any]) -> None:
                    meta = {
                        "run_id": job.run_id,
                        "trial": job.trial_index,
                        "worker": task.request.hostname,
                        **info,
                    }
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
    """Register the project's tasks on ``app`` (only there: ``shared=False``, so that an
    app built later in the same process, with other settings, registers its own)."""
    settings: Settings = app.esc_settings  # type: ignore[attr-defined]

    @app.task(
        name=EXTRACT_TASK,
        bind=True,
        shared=False,
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
        shared=False,
        ignore_result=True,
        max_retries=settings.task_max_retries,
        throws=(ClipError, ClipFailedError),
    )
    def extract_clips(self: Task, batch: dict[str, Any]) -> dict[str, Any]:
        """Extract the clips of one store chunk (``batch``: an ExtractBatch record)."""
        return extract_clips_task(self, batch)

    @app.task(name=TRAIN_TASK, bind=True, shared=False, max_retries=None)
    def train_trial(self: Task, job: dict[str, Any]) -> dict[str, Any]:
        """Train and evaluate one cross-validation trial (``job``: a TrialJob record)."""
        return train_trial_task(self, job)
