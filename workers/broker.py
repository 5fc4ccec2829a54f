"""kombu's Redis transport, read from the outside: the one module that knows its internals.

kombu keeps a queue as a Redis list named after it, and every message delivered but
not yet acknowledged (running, prefetched, or waiting for a retry countdown) in the
``unacked`` hash as ``[message, exchange, routing_key]``. A message is a JSON envelope
whose ``body`` may be base64-encoded; its task id is ``headers.id`` and its arguments
are the body's first element.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import redis

UNACKED_KEY = "unacked"


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
