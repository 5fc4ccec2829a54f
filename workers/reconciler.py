"""The fleet's reconciler: lost extraction and trial messages are found and sent again.

kombu's Redis transport takes a message with ``BRPOP`` and only then records it in its
``unacked`` hash; a worker main process killed in between loses the message for good,
and a Redis crash can lose the last second of writes (``appendfsync everysec``). No
visibility timeout brings such a message back. The workers themselves repair it, so
that a submission or a training run completes whether or not a client is waiting:

- Every worker main process runs a :class:`ReconcilerThread`. One of them at a time,
  across all hosts, holds the lease ``esc:reconciler:lease`` (``SET NX PX``, renewed
  each pass); if its worker dies, the lease expires and another worker takes over.
- The holder makes a pass every ``reconcile_interval`` seconds. A clip of an open
  submission is *lost* when it is neither done, failed, queued nor unacknowledged
  (held by a worker: running, prefetched or waiting for a retry); a trial of an open
  run when it has no result, no live lease, no message and did not fail. Only what
  was seen lost on two passes in a row is enqueued again: that rules out the instant
  between a worker's fetch and its bookkeeping, when a message is in neither place.
- Before sending a clip again, the store is read: a clip whose features are complete
  there (its outcome write was lost with Redis) is recorded as done instead.

Effects stay exactly-once: tasks are idempotent (the same chunks rewritten with the
same bytes; a trial with a stored result is not retrained), task ids are
deterministic, and a redelivered trial waits on the running one's lease.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery, bootsteps

from contract.settings import Settings
from contract.wire import (
    EXTRACT_QUEUE,
    EXTRACT_TASK,
    RECONCILER_LEASE_KEY,
    RECONCILER_STATS_KEY,
    TRAIN_QUEUE,
    TRAIN_TASK,
    ClipOutcome,
    ClipStatus,
    ExtractJob,
    TrialJob,
    extract_task_prefix,
    store_outcomes_key,
    trial_lease_key,
    trial_task_id,
    trial_task_prefix,
)
from workers.broker import queued_clip_indices, queued_task_ids
from workers.context import redis_client
from workers.fork_guard import fork_guard
from workers.redis_records import SubmissionRecords

logger = logging.getLogger(__name__)

# Above this many waiting extraction messages a pass skips extraction: a lost clip sent
# again now would only wait behind them, and scanning a long queue costs Redis and the
# worker's main process time for nothing.
SCAN_BELOW = 1000
# A clip sent again this many times that still vanishes (a message every worker refuses
# without a record, say) is recorded as failed, so that its submission can finish; a
# trial is no longer sent (and logged as an error).
MAX_RESENDS = 3

# KEYS: lease key; ARGV: token, milliseconds. Renews only the holder's own lease.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    """A Redis lease held by one process at a time; it expires if the holder stops renewing."""

    def __init__(self, client: redis.Redis, key: str, seconds: float, token: str) -> None:
        self.client, self.key, self.token = client, key, token
        self.ms = max(1, int(seconds * 1000))

    def hold(self) -> bool:
        """Renew the lease if this process holds it, else try to take it; whether it holds."""
        if self.client.eval(_RENEW, 1, self.key, self.token, self.ms):
            return True
        return bool(self.client.set(self.key, self.token, nx=True, px=self.ms))

    def release(self) -> None:
        self.client.eval(_RELEASE, 1, self.key, self.token)


def reconciler_alive(client: redis.Redis) -> bool:
    """Whether some worker holds the reconciler's lease (clients then leave the repairs to it)."""
    return bool(client.exists(RECONCILER_LEASE_KEY))


@dataclass
class PassReport:
    """What one pass did."""

    clips_requeued: dict[str, list[int]] = field(default_factory=dict)  # submission -> clips
    clips_marked_done: list[int] = field(default_factory=list)
    trials_requeued: list[str] = field(default_factory=list)  # task ids
    closed_submissions: list[str] = field(default_factory=list)
    closed_runs: list[str] = field(default_factory=list)
    suspects: int = 0


class Reconciler:
    """One pass over the open submissions and runs (see the module docstring).

    Keeps the suspects of the previous pass; :meth:`forget` drops them (a reconciler
    that lost its lease starts afresh when it gets it back).
    """

    def __init__(
        self, app: Celery, client: redis.Redis, settings: Settings, *, scan_below: int = SCAN_BELOW
    ) -> None:
        self.app, self.client, self.settings = app, client, settings
        self.records = SubmissionRecords(client, ttl=settings.record_ttl)
        self.scan_below = scan_below
        self._clip_suspects: dict[str, set[int]] = {}
        self._trial_suspects: set[tuple[str, int]] = set()
        self._resent: Counter[tuple[str, int]] = Counter()

    def forget(self) -> None:
        self._clip_suspects.clear()
        self._trial_suspects.clear()

    def run_pass(self, still_leader: Callable[[], bool] = lambda: True) -> PassReport:
        """Look once; send again what was lost on this pass and the previous one."""
        report = PassReport()
        self._extraction(report, still_leader)
        self._trials(report, still_leader)
        if report.clips_requeued or report.trials_requeued or report.clips_marked_done:
            pipe = self.client.pipeline()
            n_clips = sum(len(v) for v in report.clips_requeued.values())
            pipe.hincrby(RECONCILER_STATS_KEY, "clips_requeued", n_clips)
            pipe.hincrby(RECONCILER_STATS_KEY, "clips_marked_done", len(report.clips_marked_done))
            pipe.hincrby(RECONCILER_STATS_KEY, "trials_requeued", len(report.trials_requeued))
            pipe.execute()
        return report

    # extraction
    def _extraction(self, report: PassReport, still_leader: Callable[[], bool]) -> None:
        open_subs = self.records.open_submissions()
        if not open_subs or self.client.llen(EXTRACT_QUEUE) > self.scan_below:
            self._clip_suspects.clear()
            return
        by_store: dict[str, dict[str, set[int]]] = {}
        for sid, url in sorted(open_subs.items()):
            clips = self.records.submission_clips(sid)
            if clips is None or self.records.get_submission(sid) is None:  # expired
                self.records.close_submission(sid)
                continue
            by_store.setdefault(url, {})[sid] = clips
        suspects: dict[str, set[int]] = {}
        for url, subs in by_store.items():
            try:
                suspects[url] = self._extraction_of_store(url, subs, report, still_leader)
            except Exception as exc:  # one unreachable store must not stop the others
                logger.warning("reconciler: store %s skipped: %r", extract_task_prefix(url), exc)
        self._clip_suspects = suspects
        report.suspects += sum(len(s) for s in suspects.values())

    def _extraction_of_store(
        self,
        url: str,
        subs: dict[str, set[int]],
        report: PassReport,
        still_leader: Callable[[], bool],
    ) -> set[int]:
        """One store's pass; returns the clips seen lost for the first time."""
        # messages first, outcomes second: a clip that finishes in between is seen as
        # done, never as missing
        held = queued_clip_indices(self.client, EXTRACT_QUEUE, extract_task_prefix(url))
        settled = self.records.done_indices(url) | self._failed_indices(url)
        owner: dict[int, str] = {}
        for sid, clips in subs.items():  # oldest first: the newest submission owns a clip
            pending = clips - settled
            if not pending:
                self.records.close_submission(sid)
                report.closed_submissions.append(sid)
            owner.update(dict.fromkeys(pending, sid))
        lost = set(owner) - held
        confirmed = lost & self._clip_suspects.get(url, set())
        if confirmed and still_leader():
            self._requeue_clips(url, confirmed, owner, report)
        return lost - confirmed

    def _failed_indices(self, url: str) -> set[int]:
        return {int(k) for k in self.client.hkeys(store_outcomes_key(url, "failed"))}

    def _requeue_clips(
        self, url: str, indices: set[int], owner: dict[int, str], report: PassReport
    ) -> None:
        from storage.feature_store import FeatureStore

        store = FeatureStore.open(url, storage_options=self.settings.storage_options(url))
        done_mask = store.done_mask()
        complete = sorted(i for i in indices if done_mask[i])
        if complete:  # stored, but the outcome write was lost (Redis crash)
            self.records.mark_done_from_store(url, complete)
            report.clips_marked_done.extend(complete)
        todo = sorted(i for i in indices if not done_mask[i])
        rel_paths = store.rel_paths()
        given_up = [i for i in todo if self._resent[(url, i)] >= MAX_RESENDS]
        for i in given_up:
            reason = f"its message vanished {MAX_RESENDS + 1} times (refused by every worker?)"
            logger.error("reconciler: clip %d of %s: %s", i, extract_task_prefix(url), reason)
            self.records.record_outcome(
                url,
                ClipOutcome(
                    clip_index=i, status=ClipStatus.FAILED, path=str(rel_paths[i]), reason=reason
                ),
            )
        todo = [i for i in todo if i not in given_up]
        if not todo:
            return
        roots: dict[str, str] = {}
        jobs = []
        for i in todo:
            sid = owner[i]
            if sid not in roots:
                record = self.records.get_submission(sid)
                if record is None:
                    continue
                roots[sid] = record.dataset_root
            jobs.append(
                ExtractJob(
                    submission_id=sid,
                    store_url=url,
                    dataset_root=roots[sid],
                    rel_path=str(rel_paths[i]),
                    clip_index=i,
                    generation=store.generation,
                )
            )
        with self.app.producer_or_acquire() as producer:
            for job in jobs:
                self.app.send_task(
                    EXTRACT_TASK, args=[job.to_dict()], task_id=job.task_id(), producer=producer
                )
                self._resent[(url, job.clip_index)] += 1
                report.clips_requeued.setdefault(job.submission_id, []).append(job.clip_index)
        logger.warning(
            "reconciler: %d lost clip message(s) of store %s sent again: %s",
            len(jobs),
            extract_task_prefix(url).rstrip("-"),
            [j.clip_index for j in jobs][:50],
        )

    # training
    def _trials(self, report: PassReport, still_leader: Callable[[], bool]) -> None:
        suspects: set[tuple[str, int]] = set()
        for run_id, (url, trials) in sorted(self.records.open_runs().items()):
            try:
                suspects |= self._trials_of_run(run_id, url, trials, report, still_leader)
            except Exception as exc:  # one unreachable store must not stop the others
                logger.warning("reconciler: run %s skipped: %r", run_id, exc)
        self._trial_suspects = suspects
        report.suspects += len(suspects)

    def _trials_of_run(
        self,
        run_id: str,
        url: str,
        trials: list[int],
        report: PassReport,
        still_leader: Callable[[], bool],
    ) -> set[tuple[str, int]]:
        """One run's pass; returns the trials seen lost for the first time."""
        from celery.result import AsyncResult

        from storage.runs import RunStore

        held = queued_task_ids(self.client, TRAIN_QUEUE, trial_task_prefix(run_id))
        runs = RunStore(url, storage_options=self.settings.storage_options(url))
        try:
            results = set(runs.trial_results(run_id))
        except FileNotFoundError:
            results = set()
        missing = [k for k in trials if k not in results]
        if not missing:
            if runs.get_report(run_id) is None:
                # imported here: it loads scikit-learn, which a pass needs only now
                from workers.run_report import finalize_run

                finalize_run(runs, run_id)  # the last trial's worker died before it
            self.records.close_run(run_id)
            report.closed_runs.append(run_id)
            return set()
        pipe = self.client.pipeline()
        for k in missing:
            pipe.exists(trial_lease_key(run_id, k))
        leased = {k for k, alive in zip(missing, pipe.execute(), strict=True) if alive}
        failed = {
            k
            for k in missing
            if AsyncResult(trial_task_id(run_id, k), app=self.app).state == "FAILURE"
        }
        given_up = {k for k in missing if self._resent[(run_id, k)] >= MAX_RESENDS}
        if set(missing) <= failed | given_up:  # nothing left to run: a person looks at it
            self.records.close_run(run_id)
            report.closed_runs.append(run_id)
            if given_up - failed:
                logger.error(
                    "reconciler: run %s: trial message(s) %s vanished %d times; given up",
                    run_id,
                    sorted(given_up - failed),
                    MAX_RESENDS + 1,
                )
            return set()
        lost = {
            (run_id, k)
            for k in missing
            if k not in leased
            and k not in failed
            and k not in given_up
            and trial_task_id(run_id, k) not in held
        }
        confirmed = lost & self._trial_suspects
        if confirmed and still_leader():
            with self.app.producer_or_acquire() as producer:
                for _, k in sorted(confirmed):
                    job = TrialJob(store_url=url, run_id=run_id, trial_index=k)
                    self.app.send_task(
                        TRAIN_TASK, args=[job.to_dict()], task_id=job.task_id(), producer=producer
                    )
                    self._resent[(run_id, k)] += 1
                    report.trials_requeued.append(job.task_id())
            logger.warning(
                "reconciler: lost trial message(s) of run %s sent again: %s",
                run_id,
                sorted(k for _, k in confirmed),
            )
        return lost - confirmed


class ReconcilerThread(threading.Thread):
    """Runs in a worker's main process: competes for the lease, makes passes while it holds it."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        super().__init__(name="esc-reconciler", daemon=True)
        self.app, self.settings = app, settings
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop_event = threading.Event()

    def run(self) -> None:
        client = redis_client(self.settings.broker_url())
        lease = Lease(
            client, RECONCILER_LEASE_KEY, self.settings.reconcile_lease_seconds, self.token
        )
        reconciler = Reconciler(self.app, client, self.settings)
        leading = False
        while not self._stop_event.wait(self.settings.reconcile_interval):
            # The pool forks children while this thread works (a new one after every
            # trial); a pass's lazy imports must not be cut in half by a fork
            # (workers.fork_guard).
            with fork_guard.held():
                leading = self._step(lease, reconciler, leading)
        with contextlib.suppress(redis.RedisError):
            lease.release()

    def _step(self, lease: Lease, reconciler: Reconciler, leading: bool) -> bool:
        """Compete for the lease and, holding it, make one pass; whether this worker leads."""
        try:
            if not lease.hold():
                if leading:
                    logger.info("reconciler: lease lost to another worker")
                reconciler.forget()
                return False
            if not leading:
                logger.info("reconciler: this worker holds the lease (%s)", self.token)
            leading = True
            reconciler.run_pass(still_leader=lease.hold)
        except Exception as exc:  # Redis down, a store unreachable: try again next pass
            logger.warning("reconciler: pass failed: %r", exc)
            reconciler.forget()
        return leading

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        self.join(timeout=timeout)


class ReconcilerStep(bootsteps.StartStopStep):
    """Celery worker bootstep: the reconciler thread lives as long as the worker's main process."""

    label = "esc reconciler"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: ReconcilerThread | None = None

    def start(self, worker: Any) -> None:
        settings: Settings | None = getattr(worker.app, "esc_settings", None)
        if settings is None or settings.reconcile_interval <= 0:
            return
        self.thread = ReconcilerThread(worker.app, settings)
        self.thread.start()

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None
