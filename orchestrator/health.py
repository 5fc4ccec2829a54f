"""``orchestrator healthcheck``: does the worker of *this* host/container answer a ping?

A worker process can be alive and still not consume (reported after Redis
reconnects), so container health checks ping the worker node through the
broker instead of looking at the process. Worker node names are
``celery@extract-<hostname>-<tag>`` / ``celery@train-<hostname>-<tag>``
(``orchestrator.local_workers``), with a random tag per worker start.

``orchestrator worker`` writes the node names it starts to the *node file*
(``$ESC_NODE_FILE``, default ``<ESC_HOME>/worker-nodes``) just before it execs
Celery. In a container that file lies in the container's own filesystem, so the
healthcheck pings exactly its own container's nodes (``destination=``: only
they answer), whatever the networking: under host networking every container
has the host's hostname and a hostname glob would be answered by any of them.
Without a node file the check falls back to the glob ``*-<hostname>-*``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from contract.settings import Settings

NODE_FILE_ENV = "ESC_NODE_FILE"


def node_pattern(hostname: str | None = None) -> str:
    """Glob matching the node names of workers started on ``hostname``."""
    return f"*-{hostname or socket.gethostname()}-*"


def node_file(env: Mapping[str, str] | None = None) -> Path:
    """Where ``orchestrator worker`` records the node names it started."""
    env = os.environ if env is None else env
    explicit = env.get(NODE_FILE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return Settings.from_env(env).home / "worker-nodes"


def expanded_node_name(name: str) -> str:
    """The node name Celery gives a worker started with ``-n name`` on this host."""
    from celery.utils.nodenames import default_nodename, host_format

    return host_format(default_nodename(name))


def command_node_names(commands: Sequence[Sequence[str]]) -> list[str]:
    """The expanded ``-n`` node names of ``celery worker`` command lines."""
    names = []
    for cmd in commands:
        args = list(cmd)
        if "-n" in args:
            names.append(expanded_node_name(args[args.index("-n") + 1]))
    return names


def write_node_file(names: Sequence[str], path: Path) -> None:
    """Replace ``path`` with ``names``, one per line (atomic: a check never reads half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text("".join(f"{n}\n" for n in names))
    tmp.replace(path)


def read_node_file(path: Path) -> list[str]:
    """Node names recorded in ``path``; empty when it does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def ping_workers(
    settings: Settings,
    *,
    pattern: str | None = None,
    destination: Sequence[str] | None = None,
    timeout: float = 5.0,
    limit: int | None = None,
) -> list[str]:
    """Names of the worker nodes that answered a ping.

    ``destination``: exactly these nodes are asked (others ignore the ping);
    otherwise the nodes matching the glob ``pattern``. Returns as soon as
    ``limit`` nodes answered, else after ``timeout`` seconds.
    """
    from workers.celery_app import create_app

    if destination is None and pattern is None:
        raise ValueError("give a pattern or a destination")
    kwargs: dict[str, Any] = (
        {"destination": list(destination)}
        if destination is not None
        else {"pattern": pattern, "matcher": "glob"}
    )
    app = create_app(settings)
    try:
        replies: list[dict[str, Any]] = (
            app.control.ping(timeout=timeout, limit=limit, **kwargs) or []
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
