"""Starting real Celery worker processes with the project's queues and settings.

``orchestrator worker`` execs the command that :func:`worker_command` builds; the
same command works by hand (``celery -A workers.celery_app worker -Q extract ...``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from enum import StrEnum

from contract.wire import EXTRACT_QUEUE, TRAIN_QUEUE


class WorkerKind(StrEnum):
    """Which queues a worker consumes."""

    EXTRACT = "extract"
    TRAIN = "train"
    ALL = "all"


def worker_command(
    kind: WorkerKind,
    *,
    concurrency: int | None = None,
    name: str | None = None,
    loglevel: str = "INFO",
    prefetch: int | None = None,
    max_tasks_per_child: int | None = None,
    pool: str = "prefork",
) -> list[str]:
    """The ``celery worker`` command line for one worker of ``kind``.

    Training workers consume ``gpu`` with concurrency 1 and prefetch 1 (one trial
    at a time per GPU); their pool child (where Keras and its backend are only ever
    initialised) is replaced after ``max_tasks_per_child`` trials, by default after
    every one (``Settings.trials_per_child``), which frees all it held on the GPU.
    """
    if kind is WorkerKind.ALL:
        raise ValueError("'all' runs two workers; use worker_commands()")
    if kind is WorkerKind.EXTRACT:
        queue, conc = EXTRACT_QUEUE, concurrency or os.cpu_count() or 1
        node = name or "extract-%h-%i"
    else:
        queue, conc, prefetch = TRAIN_QUEUE, 1, 1
        node = name or "train-%h-%i"
        max_tasks_per_child = max_tasks_per_child or 1
    # %i: a random tag that keeps node names unique when several workers share a host.
    node = node.replace("%i", uuid.uuid4().hex[:6])
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "worker",
        "-Q",
        queue,
        "-c",
        str(conc),
        "-P",
        pool,
        "-E",
        "-n",
        node,
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    if prefetch is not None:
        cmd += ["--prefetch-multiplier", str(prefetch)]
    if max_tasks_per_child is not None:
        cmd += ["--max-tasks-per-child", str(max_tasks_per_child)]
    return cmd


def worker_commands(
    kind: WorkerKind,
    *,
    concurrency: int | None = None,
    loglevel: str = "INFO",
    trials_per_child: int = 1,
) -> list[list[str]]:
    """One command per worker process that ``kind`` needs (``trials_per_child``: the
    training worker's ``--max-tasks-per-child``)."""
    if kind is WorkerKind.ALL:
        return [
            worker_command(WorkerKind.EXTRACT, concurrency=concurrency, loglevel=loglevel),
            worker_command(
                WorkerKind.TRAIN, loglevel=loglevel, max_tasks_per_child=trials_per_child
            ),
        ]
    per_child = trials_per_child if kind is WorkerKind.TRAIN else None
    return [
        worker_command(
            kind, concurrency=concurrency, loglevel=loglevel, max_tasks_per_child=per_child
        )
    ]


def start_worker(
    cmd: Sequence[str], *, env: dict[str, str] | None = None, log_path: str | None = None
) -> subprocess.Popen[bytes]:
    """Start a worker process in its own process group (so it can be stopped as a whole)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_worker(proc: subprocess.Popen[bytes], *, timeout: float = 20.0) -> None:
    """Warm shutdown (SIGTERM: finish running tasks), then SIGKILL after ``timeout``."""
    stop_workers([proc], timeout=timeout)


def stop_workers(procs: Sequence[subprocess.Popen[bytes]], *, timeout: float = 20.0) -> None:
    """:func:`stop_worker` for several workers at once: every one is sent SIGTERM
    before any is waited for, so their warm shutdowns overlap (each takes about a
    second with nothing running), and whatever is left after ``timeout`` is SIGKILLed.
    A process listed more than once is signalled once: a second SIGTERM that lands after
    its Python has reset its signal handlers on the way out would kill it (exit -15).
    """
    stopping = []
    for proc in dict.fromkeys(procs):
        if proc.poll() is not None:
            continue
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        stopping.append(proc)
    deadline = time.monotonic() + timeout
    while stopping and time.monotonic() < deadline:
        stopping = [p for p in stopping if p.poll() is None]
        if stopping:
            time.sleep(0.05)
    for proc in stopping:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in stopping:
        proc.wait(timeout=10)


class WorkerSupervisor:
    """Keeps local worker processes running: one that exits is started again.

    A worker can exit on its own, e.g. after a lost Redis connection (see
    docs/reliability.md); what it held comes back to the queue, and the
    replacement picks it up. Used by ``orchestrator run``.
    """

    def __init__(
        self,
        commands: Sequence[Sequence[str]],
        *,
        env: dict[str, str] | None = None,
        log_paths: Sequence[str | None] | None = None,
        poll: float = 2.0,
    ) -> None:
        self.commands = [list(c) for c in commands]
        self.env = env
        self.log_paths = list(log_paths) if log_paths else [None] * len(self.commands)
        self.poll = poll
        self.procs: list[subprocess.Popen[bytes]] = []
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> WorkerSupervisor:
        self.procs = [
            start_worker(c, env=self.env, log_path=p)
            for c, p in zip(self.commands, self.log_paths, strict=True)
        ]
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None and not self._stop.is_set():
                    self.procs[i] = start_worker(
                        self.commands[i], env=self.env, log_path=self.log_paths[i]
                    )
                    # counted once the replacement is in ``procs``: a reader that sees
                    # the count sees the new process
                    self.restarts += 1

    def stop(self) -> None:
        """Stop watching, then stop every worker (warm shutdown first)."""
        self._stop.set()
        self._thread.join(timeout=self.poll + 1)
        stop_workers(self.procs)

    def __enter__(self) -> WorkerSupervisor:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
