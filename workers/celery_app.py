"""The one Celery app, configured from :class:`contract.settings.Settings`.

``celery -A workers.celery_app worker -Q extract`` uses the module-level ``app``,
built from the environment on first access. Code that has its own
settings (tests, the orchestrator) calls :func:`create_app`.

Delivery is at-least-once and survives killed workers:

- ``task_acks_late``: a message is acknowledged after its task finished, so a
  worker that dies mid-task leaves it unacknowledged;
- ``task_reject_on_worker_lost``: a task whose child process died (SIGKILL, OOM)
  is requeued at once instead of being acknowledged;
- Redis ``visibility_timeout``: a message fetched by a worker whose main process
  vanished is delivered again after this many seconds; a sweep every
  ``restore_interval`` seconds restores such messages. Training trials may run
  longer than it: a redelivered trial finds the running one's lease in Redis and
  waits (see ``workers.tasks``).

A message lost outright (fetched by a worker killed before kombu recorded it, or
written just before a Redis crash) is found and sent again by the fleet's
reconciler, a bootstep of every worker (``workers.reconciler``).

Every task is idempotent, so a second delivery is harmless. Messages are JSON
only: a pickled message is refused by the worker before it is decoded.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from contract.settings import ConfigurationError, Settings
from contract.wire import EXTRACT_BATCH_TASK, EXTRACT_QUEUE, EXTRACT_TASK, TRAIN_QUEUE, TRAIN_TASK
from workers.broker import use_shared_client_transport


def celery_config(settings: Settings) -> dict[str, object]:
    """Celery configuration for ``settings`` (a plain dict, easy to inspect in tests)."""
    url = settings.broker_url()
    transport_options = {
        "visibility_timeout": settings.visibility_timeout,
        "unacked_restore_interval": settings.restore_interval,
        "unacked_restore_throttle": 1,
        # The restore sweep holds a Redis lock; a worker SIGKILLed while holding it
        # blocks every sweep for kombu's default 300 s (the likely cause of a stall seen
        # in tests/test_chaos.py, docs/reliability.md).
        # Restores are WATCH transactions, so overlapping sweeps cannot restore twice.
        "unacked_mutex_expire": max(30, 3 * settings.restore_interval),
        "socket_keepalive": True,
        "health_check_interval": 25,
    }
    return {
        "broker_url": url,
        "result_backend": url,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "health_check_interval": 25,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # JSON only: with pickle, anyone who can write to Redis runs code on workers.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # at-least-once delivery
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": settings.extract_prefetch,
        "result_expires": settings.result_expires,
        "result_extended": True,
        # routing lives here, never at call sites
        "task_queues": (
            Queue(EXTRACT_QUEUE, Exchange(EXTRACT_QUEUE), routing_key=EXTRACT_QUEUE),
            Queue(TRAIN_QUEUE, Exchange(TRAIN_QUEUE), routing_key=TRAIN_QUEUE),
        ),
        "task_default_queue": EXTRACT_QUEUE,
        "task_routes": {
            EXTRACT_TASK: {"queue": EXTRACT_QUEUE, "routing_key": EXTRACT_QUEUE},
            EXTRACT_BATCH_TASK: {"queue": EXTRACT_QUEUE, "routing_key": EXTRACT_QUEUE},
            TRAIN_TASK: {"queue": TRAIN_QUEUE, "routing_key": TRAIN_QUEUE},
        },
        # events for Flower
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "worker_hijack_root_logger": False,
        "worker_soft_shutdown_timeout": 10.0,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


def create_app(settings: Settings) -> Celery:
    """A Celery app for ``settings``, with the project's tasks registered."""
    use_shared_client_transport()
    app = Celery("esc")
    app.conf.update(celery_config(settings))
    app.esc_settings = settings  # type: ignore[attr-defined]
    from workers import tasks  # the tasks module never imports this one

    tasks.register(app)
    from workers.reconciler import ReconcilerStep

    app.steps["worker"].add(ReconcilerStep)
    return app


def __getattr__(name: str) -> Celery:
    """``workers.celery_app.app``, built from the environment on first access.

    Lazy so that importing this module does not need a reachable Redis; the
    ``celery -A workers.celery_app`` command looks ``app`` up and gets it here.
    """
    if name in ("app", "celery"):
        try:
            built = create_app(Settings.from_env())
        except ConfigurationError as exc:
            raise SystemExit(f"error: {exc}") from None
        globals()["app"] = globals()["celery"] = built
        return built
    raise AttributeError(name)
