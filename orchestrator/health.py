"""``orchestrator healthcheck``: does the worker of *this* host/container answer a ping?

A worker process can be alive and still not consume (reported after Redis
reconnects), so container health checks ping the worker node through the
broker instead of looking at the process. Worker node names are
``celery@extract-<hostname>-<tag>`` / ``celery@train-<hostname>-<tag>``
(``orchestrator.local_workers``); the ping is a broadcast that only the nodes
matching ``*-<hostname>-*`` answer, so its cost does not grow with the cluster.
"""

from __future__ import annotations

import socket
from typing import Any

from contract.settings import Settings


def node_pattern(hostname: str | None = None) -> str:
    """Glob matching the node names of workers started on ``hostname``."""
    return f"*-{hostname or socket.gethostname()}-*"


def ping_workers(
    settings: Settings, *, pattern: str, timeout: float = 5.0, limit: int | None = None
) -> list[str]:
    """Names of the worker nodes matching ``pattern`` that answered a ping.

    Returns as soon as ``limit`` nodes answered, else after ``timeout`` seconds.
    """
    from workers.celery_app import create_app

    app = create_app(settings)
    try:
        replies: list[dict[str, Any]] = (
            app.control.ping(timeout=timeout, pattern=pattern, matcher="glob", limit=limit) or []
        )
    finally:
        app.close()
    return sorted(node for reply in replies for node in reply)


def wait_for_workers(
    settings: Settings,
    *,
    nodes: list[str] | None = None,
    count: int | None = None,
    timeout: float = 120.0,
) -> list[str]:
    """Wait until the worker ``nodes`` (or any ``count`` workers) answer a ping; their names.

    Raises:
        TimeoutError: they did not all answer within ``timeout`` seconds.
    """
    import time

    from workers.celery_app import create_app

    app = create_app(settings)
    answered: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            destination = sorted(set(nodes) - answered) if nodes else None
            for reply in app.control.ping(destination=destination, timeout=1.0) or []:
                answered.update(reply)
            if (nodes and answered >= set(nodes)) or (count and len(answered) >= count):
                return sorted(answered)
    finally:
        app.close()
    wanted = sorted(set(nodes) - answered) if nodes else f"{count} workers"
    raise TimeoutError(f"workers did not answer a ping within {timeout:g} s: {wanted}")
