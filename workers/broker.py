"""kombu's Redis transport, read from the outside: the one module that knows its internals.

kombu keeps a queue as a Redis list named after it, and every message delivered but
not yet acknowledged (running, prefetched, or waiting for a retry countdown) in the
``unacked`` hash as ``[message, exchange, routing_key]``. A message is a JSON envelope
whose ``body`` may be base64-encoded; its task id is ``headers.id`` and its arguments
are the body's first element.

:class:`RedisTransport` is kombu's transport with one change (a shared redis-py client
per connection pool); ``create_app`` registers it for ``redis://`` URLs (``rediss://``
keeps kombu's own).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import kombu.transport
import redis
from kombu.transport import redis as kombu_redis

UNACKED_KEY = "unacked"


class _RedisChannel(kombu_redis.Channel):
    """kombu's Redis channel with one redis-py client per connection pool.

    kombu builds a new ``redis.Redis`` around the channel's pool for every group of
    commands (each publish, ack and restore: ``Channel.conn_or_acquire``), and with
    redis-py 8 a build costs 0.1-0.2 ms of CPU (its table of response callbacks): about
    five per one-clip message in a worker's main process, two or three per publish.
    A client holds no connection of its own (each command borrows one from the pool),
    so one client is shared; a new pool (kombu replaces it after a lost connection)
    gets a new client.
    """

    _shared_client: redis.Redis | None = None

    def _create_client(self, asynchronous: bool = False) -> redis.Redis:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        client = self._shared_client
        if client is None or client.connection_pool is not pool:
            client = self._shared_client = super()._create_client()
        return client


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`_RedisChannel` (same URLs and options)."""

    Channel = _RedisChannel


def use_shared_client_transport() -> None:
    """Make ``redis://`` broker URLs use :class:`RedisTransport` in this process.

    kombu picks a transport class by the URL's scheme in ``TRANSPORT_ALIASES``; the
    scheme stays ``redis`` (so the worker's banner and Flower show ``redis://``).
    Idempotent; called by ``workers.celery_app.create_app``.
    """
    name = f"{__name__}:{RedisTransport.__name__}"
    if kombu.transport.TRANSPORT_ALIASES.get("redis") != name:
        kombu.transport.TRANSPORT_ALIASES["redis"] = name
        kombu.transport._transport_cache.pop("redis", None)  # a class resolved before


def message_clip_indices(message: dict[str, Any]) -> list[int]:
    """Clip indices named by a kombu message of an extraction task (one job or a batch)."""
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = json.loads(body)[0]
    payload = args[0]
    jobs = payload.get("jobs", [payload])
    return [int(j["clip_index"]) for j in jobs]


def _task_messages(client: redis.Redis, queue: str, prefix: str) -> list[dict[str, Any]]:
    """kombu messages of tasks whose id starts with ``prefix``: waiting in ``queue`` or held.

    Reads the queue list (in pages) and the whole ``unacked`` hash. Not one atomic
    snapshot: a message moving between the two while they are read can be missed,
    so a caller that acts on an absence looks twice.
    """
    found: list[dict[str, Any]] = []

    def collect(raw: bytes | str) -> None:
        try:
            message = json.loads(raw)
            if isinstance(message, list):  # unacked entries: [message, exchange, routing_key]
                message = message[0]
            task_id = message["headers"]["id"]
            if isinstance(task_id, str) and task_id.startswith(prefix):
                found.append(message)
        except (ValueError, KeyError, TypeError, IndexError):
            return

    for start in range(0, int(client.llen(queue)), 5000):
        for raw in client.lrange(queue, start, start + 4999):
            collect(raw)
    for _, raw in client.hscan_iter(UNACKED_KEY, count=5000):
        collect(raw)
    return found


def queued_clip_indices(client: redis.Redis, queue: str, prefix: str) -> set[int]:
    """Clips whose extraction task (id starting with ``prefix``) waits or is held.

    Reads the queue list and the ``unacked`` hash, and decodes each matching
    message's job(s).
    """
    indices: set[int] = set()
    for message in _task_messages(client, queue, prefix):
        try:
            indices.update(message_clip_indices(message))
        except (ValueError, KeyError, TypeError, IndexError, binascii.Error):
            continue
    return indices


def queued_task_ids(client: redis.Redis, queue: str, prefix: str) -> set[str]:
    """Ids of the tasks starting with ``prefix`` that wait in ``queue`` or are held."""
    return {str(m["headers"]["id"]) for m in _task_messages(client, queue, prefix)}
