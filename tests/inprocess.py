"""The middle test tier: task bodies run in this process against a real Redis server.

As rq's burst worker does, :class:`BurstWorker` takes the messages that really sit in
the real queue (a Redis list, filled by ``submit-dataset`` or ``send_task``), decodes
them as a worker would, and runs the registered task bodies (``workers.tasks``) in this
process until the queue is empty. Records go to the real Redis, features to a real
store. A retry (``task.retry``) publishes its message to the real queue, as in a
worker; the burst runs it next, without waiting for its countdown.

What this tier cannot show (a SIGKILLed process, prefetch, the visibility timeout, a
Redis restart, the pool, the supervisor) stays with the subprocess tests that start
``celery worker`` processes (``tests/conftest.py:cluster``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from celery.exceptions import Retry

from contract.settings import Settings
from contract.wire import EXTRACT_QUEUE
from workers.celery_app import create_app
from workers.context import reset_context

# what the subprocess tier's cluster sets (tests/conftest.py), less what only workers use
TEST_ENV = {
    "ESC_RETRY_BACKOFF_MAX": "2",
    "ESC_TASK_MAX_RETRIES": "2",
    "ESC_TRIAL_LEASE_SECONDS": "15",
    "ESC_EXTRACT_BATCH": "1",
}


@dataclass
class Delivery:
    """One message run by the burst worker, and what its task body did."""

    task_id: str
    task: str
    retries: int
    result: Any = None
    error: BaseException | None = None

    @property
    def retried(self) -> bool:
        return isinstance(self.error, Retry)


def decode_message(raw: bytes) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
    """``(headers, args, kwargs)`` of a kombu message as it sits in a Redis list.

    Only JSON is decoded (the workers' ``accept_content``); anything else raises
    ``ValueError``, as the worker refuses it.
    """
    message = json.loads(raw)
    if message.get("content-type") != "application/json":
        raise ValueError(f"refusing content of type {message.get('content-type')!r}")
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, kwargs, _embed = json.loads(body)
    return message["headers"], list(args), dict(kwargs)


class BurstWorker:
    """Runs this project's task bodies in-process, on a real Redis (see the module doc)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: Celery = create_app(settings)
        self.client = redis.Redis.from_url(settings.broker_url())
        reset_context()  # the worker context of this process: fresh, on these settings

    @classmethod
    def for_url(cls, url: str, home: str, env: Mapping[str, str] | None = None) -> BurstWorker:
        """A burst worker on Redis ``url`` with the test settings (``env`` overrides)."""
        return cls(
            Settings.from_env({**TEST_ENV, "REDIS_URL": url, "ESC_HOME": home, **(env or {})})
        )

    def close(self) -> None:
        reset_context()
        self.app.close()
        self.client.close()

    def __enter__(self) -> BurstWorker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def run(
        self,
        task_name: str,
        *args: Any,
        task_id: str = "inprocess",
        retries: int = 0,
        **kwargs: Any,
    ) -> Any:
        """Run one task body as a worker would for a message (raises what it raises)."""
        task = self.app.tasks[task_name]
        task.push_request(
            id=task_id,
            retries=retries,
            args=list(args),
            kwargs=kwargs,
            called_directly=False,
            is_eager=False,
            delivery_info={"routing_key": EXTRACT_QUEUE, "exchange": EXTRACT_QUEUE},
            hostname="burst@inprocess",
        )
        try:
            return task.run(*args, **kwargs)
        finally:
            task.pop_request()

    def burst(self, queue: str = EXTRACT_QUEUE, *, limit: int = 100_000) -> list[Delivery]:
        """Run every message of ``queue`` (oldest first) until it is empty; what each did.

        Messages published while it runs (retries) are run too; ``limit`` bounds the
        number of deliveries (a task that retries for ever fails the test).
        """
        deliveries: list[Delivery] = []
        while True:
            raw = self.client.rpop(queue)  # kombu LPUSHes: the oldest is on the right
            if raw is None:
                return deliveries
            assert len(deliveries) < limit, f"more than {limit} deliveries from {queue!r}"
            headers, args, kwargs = decode_message(raw)
            delivery = Delivery(
                task_id=str(headers["id"]),
                task=str(headers["task"]),
                retries=int(headers["retries"]),
            )
            try:
                delivery.result = self.run(
                    delivery.task,
                    *args,
                    task_id=delivery.task_id,
                    retries=delivery.retries,
                    **kwargs,
                )
            except Exception as exc:  # recorded, as the worker logs it
                delivery.error = exc
            deliveries.append(delivery)
