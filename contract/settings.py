"""One settings object, resolved once from the environment and handed down.

Every knob of the system is here; ``docs/configuration.md`` is the reference.
Nothing else in the code base reads ``os.environ`` for configuration.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from contract.errors import ConfigurationError, SettingError
from contract.wire import embedded_connection_file

DEFAULT_HOME = "~/.esc-pipeline"

__all__ = ["DEFAULT_HOME", "ConfigurationError", "Settings", "redact_url"]


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingError(f"{name} must be an integer, got {raw!r}") from None


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 1:
        raise SettingError(f"{name} must be at least 1, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingError(f"{name} must be 1/0 (true/false, yes/no, on/off), got {raw!r}")


def _opt(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    return raw if raw else None


def redact_url(url: str | None) -> str:
    """``url`` with any password replaced by ``***`` (for logs and progress output)."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    netloc = f"{user}:***@{host}" if (user or parts.password) else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one process (orchestrator, worker or test).

    Attributes:
        redis_url: Broker and result backend URL (``redis://:password@host:port/db``).
            ``None`` means: use the embedded Redis server under ``home``.
        home: Local state directory (embedded Redis data and logs, default store).
        store_url: Default feature store URL (local path or ``s3://bucket/path.zarr``).
        s3_endpoint_url: Endpoint of an S3-compatible server (MinIO, moto...);
            ``None`` for AWS. Keys come from ``AWS_ACCESS_KEY_ID`` /
            ``AWS_SECRET_ACCESS_KEY`` as usual for s3fs.
        visibility_timeout: Seconds after which a message fetched by a worker
            that vanished without acknowledging it is delivered again.
        restore_interval: Seconds between the sweeps that restore such messages.
        result_expires: Seconds a task result stays in Redis.
        record_ttl: Seconds submission records (counts, failures) stay in Redis.
        extract_prefetch: Messages each extraction process reserves ahead.
        extract_batch: Clips per store chunk of a new store, and so per extraction
            message (1: one message per clip).
        task_max_retries: Retries (with exponential backoff) of a task that
            failed for a transient reason (store not writable, Redis hiccup).
        retry_backoff_max: Upper bound of that backoff in seconds.
        trial_lease_seconds: A training trial's lease in Redis; a running trial
            renews it, a redelivered copy waits while it is alive.
        reconcile_interval: Seconds between the passes of the fleet's reconciler
            (``workers.reconciler``), which re-enqueues lost extraction and trial
            messages; 0 turns it off in this worker.
        reconcile_lease_seconds: The reconciler's lease in Redis: one worker holds
            it and renews it every pass; if that worker dies, another takes over
            once the lease expires.
        trials_per_child: Trials a training worker's pool child runs before the worker
            replaces it with a fresh one (Celery's ``--max-tasks-per-child``). 1: every
            trial imports Keras and starts its backend in a new process, whose exit
            frees all it held; more: the trials after a child's first skip that
            start-up (docs/training.md, "Trials per process").
        keep_freed_memory: Worker processes keep freed memory in their C heap
            (glibc ``mallopt``) instead of returning it to the kernel at once,
            which spares extraction most of its page faults (see workers.allocator).
        flower_basic_auth: ``user:password`` for Flower, or ``None``.
        flower_port: Port Flower listens on.
        flower_address: Address Flower binds to.
    """

    redis_url: str | None = None
    home: Path = field(default_factory=lambda: Path(DEFAULT_HOME).expanduser())
    store_url: str | None = None
    s3_endpoint_url: str | None = None
    visibility_timeout: int = 900
    restore_interval: int = 10
    result_expires: int = 7 * 24 * 3600
    record_ttl: int = 30 * 24 * 3600
    extract_prefetch: int = 2
    extract_batch: int = 32
    task_max_retries: int = 5
    retry_backoff_max: int = 120
    trial_lease_seconds: int = 120
    reconcile_interval: int = 15
    reconcile_lease_seconds: int = 60
    trials_per_child: int = 1
    keep_freed_memory: bool = True
    flower_basic_auth: str | None = None
    flower_port: int = 5555
    flower_address: str = "127.0.0.1"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from environment variables (see docs/configuration.md)."""
        env = os.environ if env is None else env
        home = Path(env.get("ESC_HOME") or DEFAULT_HOME).expanduser()
        user, password = env.get("FLOWER_USER"), env.get("FLOWER_PASSWORD")
        basic_auth = _opt(env, "FLOWER_BASIC_AUTH")
        if basic_auth is None and user and password:
            basic_auth = f"{user}:{password}"
        return cls(
            redis_url=_opt(env, "REDIS_URL"),
            home=home,
            store_url=_opt(env, "ESC_STORE"),
            s3_endpoint_url=_opt(env, "ESC_S3_ENDPOINT_URL"),
            visibility_timeout=_int(env, "ESC_VISIBILITY_TIMEOUT", cls.visibility_timeout),
            restore_interval=_int(env, "ESC_RESTORE_INTERVAL", cls.restore_interval),
            result_expires=_int(env, "ESC_RESULT_EXPIRES", cls.result_expires),
            record_ttl=_int(env, "ESC_RECORD_TTL", cls.record_ttl),
            extract_prefetch=_int(env, "ESC_EXTRACT_PREFETCH", cls.extract_prefetch),
            extract_batch=_int(env, "ESC_EXTRACT_BATCH", cls.extract_batch),
            task_max_retries=_int(env, "ESC_TASK_MAX_RETRIES", cls.task_max_retries),
            retry_backoff_max=_int(env, "ESC_RETRY_BACKOFF_MAX", cls.retry_backoff_max),
            trial_lease_seconds=_int(env, "ESC_TRIAL_LEASE_SECONDS", cls.trial_lease_seconds),
            reconcile_interval=_int(env, "ESC_RECONCILE_INTERVAL", cls.reconcile_interval),
            reconcile_lease_seconds=_int(
                env, "ESC_RECONCILE_LEASE_SECONDS", cls.reconcile_lease_seconds
            ),
            trials_per_child=_positive(env, "ESC_TRIALS_PER_CHILD", cls.trials_per_child),
            keep_freed_memory=_bool(env, "ESC_KEEP_FREED_MEMORY", cls.keep_freed_memory),
            flower_basic_auth=basic_auth,
            flower_port=_int(env, "FLOWER_PORT", cls.flower_port),
            flower_address=env.get("FLOWER_ADDRESS") or cls.flower_address,
        )

    @property
    def embedded_connection_file(self) -> Path:
        """Where the embedded Redis server records its URL (see orchestrator.embedded_redis)."""
        return embedded_connection_file(self.home)

    def broker_url(self) -> str:
        """The Redis URL to use: ``REDIS_URL``, else the embedded server's recorded URL.

        Raises:
            ConfigurationError: neither is available.
        """
        if self.redis_url:
            return self.redis_url
        try:
            return str(json.loads(self.embedded_connection_file.read_text())["url"])
        except (FileNotFoundError, KeyError, json.JSONDecodeError):
            raise ConfigurationError(
                "REDIS_URL is not set and no embedded Redis has been started under "
                f"{self.home}; run `orchestrator up` (or any orchestrator command), "
                "or set REDIS_URL=redis://:password@host:6379/0"
            ) from None

    @property
    def default_store_url(self) -> str:
        """``store_url`` or, when unset, ``<home>/features.zarr``."""
        return self.store_url or str(self.home / "features.zarr")

    def storage_options(self, url: str) -> dict[str, Any]:
        """fsspec ``storage_options`` for ``url`` (endpoint for ``s3://``; nothing locally)."""
        if url.startswith("s3://") and self.s3_endpoint_url:
            return {"endpoint_url": self.s3_endpoint_url}
        return {}
