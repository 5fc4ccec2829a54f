"""Keeping ``os.fork()`` out of the middle of a background thread's work.

A prefork worker's main process forks a new pool child whenever one exits (training
workers replace theirs after every trial by default, ``--max-tasks-per-child 1``) or
dies. Only the forking thread survives in the child; every lock another thread held at that
instant stays locked there for good. Python resets the global import lock and
``logging``'s locks at fork, but not the per-module import locks: a child forked while
the reconciler thread was importing a module (its first pass over a run imports
scikit-learn, seconds of work) blocks forever on its own first import of that module.
That hung ``tests/test_cv_e2e.py::test_killed_training_worker_trial_is_redelivered``
(see docs/reliability.md).

:data:`fork_guard` closes that window: a thread does its work inside
``with fork_guard.held():``, and a fork in the same process waits (in an
``os.register_at_fork`` hook) until no such block is running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)

# A fork waits at most this long for a guarded block (a pass stuck on an unreachable
# Redis, say), then goes ahead with a warning: a child that may hang is better than a
# main process that stops serving its pool.
FORK_WAIT_S = 30.0


class ForkGuard:
    """A lock that guarded blocks hold and that ``os.fork()`` takes before it forks.

    Guarded blocks exclude each other too (one lock): a process runs at most a few of
    them (one reconciler thread), and each is short.
    """

    def __init__(self, wait_s: float = FORK_WAIT_S) -> None:
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._taken_for_fork = False
        # hooks can't be unregistered: one guard per process (the module's own) is meant
        os.register_at_fork(
            before=self._before_fork,
            after_in_parent=self._after_in_parent,
            after_in_child=self._after_in_child,
        )

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """A block during which this process does not fork."""
        with self._lock:
            yield

    def _before_fork(self) -> None:
        self._taken_for_fork = self._lock.acquire(timeout=self.wait_s)
        if not self._taken_for_fork:
            logger.warning(
                "forking after waiting %.0f s for a background thread's work to end", self.wait_s
            )

    def _after_in_parent(self) -> None:
        if self._taken_for_fork:
            self._taken_for_fork = False
            self._lock.release()

    def _after_in_child(self) -> None:
        # the parent's lock was taken by the forking thread (or by a thread that does
        # not exist here): the child starts with a free one
        self._lock = threading.Lock()
        self._taken_for_fork = False


fork_guard = ForkGuard()
