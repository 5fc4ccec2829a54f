"""Per-process resources of a worker: one Redis client and one handle per store.

They are created lazily in the process that uses them, never inherited through
fork: a prefork child builds its own on its first task (object-store clients
and Redis connections are not fork-safe), and keeps them for every later task.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from contract.settings import Settings
from workers.redis_records import SubmissionRecords

if TYPE_CHECKING:  # imported where a store is opened: a Redis-only caller needs no zarr
    from storage.feature_store import FeatureStore


class _Retry(Retry):
    """Retries connection trouble, never a refused password (that will not get better)."""

    def call_with_retry(  # type: ignore[override]
        self,
        do: Callable[[], Any],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> Any:
        def retryable(exc: Exception) -> bool:
            if isinstance(exc, redis.AuthenticationError):
                return False
            return is_retryable is None or is_retryable(exc)

        return super().call_with_retry(do, fail, retryable, with_failure_count)


def redis_client(url: str) -> redis.Redis:
    """A Redis client that rides out short outages (a restart) by retrying with backoff.

    A refused or missing password fails at once (``redis.AuthenticationError``).
    """
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=5,
        socket_timeout=30,
        health_check_interval=25,
        retry=_Retry(ExponentialBackoff(cap=5.0, base=0.1), retries=8),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError],
    )


class WorkerContext:
    """Resources shared by the tasks that run in one worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._redis: redis.Redis | None = None
        self._stores: dict[str, FeatureStore] = {}

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis_client(self.settings.broker_url())
        return self._redis

    @property
    def records(self) -> SubmissionRecords:
        return SubmissionRecords(self.redis, ttl=self.settings.record_ttl)

    def store(self, url: str, *, generation: int = 0) -> FeatureStore:
        """The process's handle on the store at ``url``, reopened if its layout is older."""
        with self._lock:
            store = self._stores.get(url)
            if store is None or store.generation < generation:
                from storage.feature_store import FeatureStore

                store = FeatureStore.open(
                    url, mode="r+", storage_options=self.settings.storage_options(url)
                )
                self._stores[url] = store
            return store


_context: WorkerContext | None = None


def get_context(settings: Settings) -> WorkerContext:
    """This process's context (a new one after a fork)."""
    global _context
    if _context is None or _context.pid != os.getpid() or _context.settings != settings:
        _context = WorkerContext(settings)
    return _context


def reset_context() -> None:
    """Forget the context (called in each new worker child process)."""
    global _context
    _context = None
