"""Security: JSON-only messages, Redis credentials, validated task arguments.

Flower's credentials are tested by the engineer who owns Flower.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from kombu import Connection, Exchange, Producer

from contract.wire import EXTRACT_QUEUE, EXTRACT_TASK
from orchestrator.local_workers import WorkerKind
from tests.reliability_helpers import (
    tiny_dataset,
    wait_for_log,
)

pytestmark = pytest.mark.timeout(300)


def _password(url: str) -> str:
    password = urlsplit(url).password
    assert password, "the embedded Redis always requires a password"
    return password


def _with_password(url: str, password: str | None) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.hostname}:{parts.port}"
    if password is not None:
        netloc = f":{password}@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


class _Evil:
    """Unpickling this runs a shell command (what an attacker with broker access would send)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_pickled_message_is_refused_not_executed(cluster, tmp_path):
    worker = cluster.start_worker(WorkerKind.EXTRACT, concurrency=1, name="json@test")
    marker = tmp_path / "pwned"
    body = (
        (_Evil(marker),),
        {},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    )
    headers = {
        "lang": "py",
        "task": EXTRACT_TASK,
        "id": "evil-pickle",
        "root_id": "evil-pickle",
        "parent_id": None,
        "group": None,
        "argsrepr": "(<evil>,)",
        "kwargsrepr": "{}",
        "origin": "attacker",
        "retries": 0,
        "eta": None,
        "expires": None,
    }
    with Connection(cluster.url) as conn:
        producer = Producer(
            conn.channel(), exchange=Exchange(EXTRACT_QUEUE, type="direct"), routing_key="extract"
        )
        producer.publish(body, serializer="pickle", headers=headers, declare=[])

    wait_for_log(
        cluster, r"(?i)refusing to deserialize untrusted content of type pickle", timeout=60
    )
    # the message is consumed (not left to be retried forever) and nothing ran
    client = redis.Redis.from_url(cluster.url)
    deadline = time.monotonic() + 20
    while client.llen("extract") or client.hlen("unacked"):
        assert time.monotonic() < deadline, "the refused message is still queued"
        time.sleep(0.2)
    time.sleep(1)
    assert not marker.exists(), "a pickled message was executed"

    # the worker still serves JSON tasks
    root = tiny_dataset(tmp_path / "d", 5)
    store_url = str(tmp_path / "s.zarr")
    code, summary = cluster.cli_json("submit-dataset", str(root), "--store", store_url, timeout=120)
    assert code == 0 and summary["done"] == 5
    assert worker.poll() is None
    assert not marker.exists()


def _cli_with_url(cluster, url: str, *args: str, timeout: float):
    saved, cluster.env = cluster.env, {**cluster.env, "REDIS_URL": url}
    try:
        return cluster.cli(*args, timeout=timeout)
    finally:
        cluster.env = saved


def _assert_clear_auth_failure(cluster, proc, wrong: str | None) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in output
    message = " ".join(proc.stderr.split())
    assert "error: cannot reach Redis at redis://" in message, output
    assert "auth" in message.lower() or "password" in message.lower(), output
    assert _password(cluster.url) not in output
    if wrong:
        assert wrong not in output, "even a wrong password is not echoed"
    return message


def test_redis_with_a_wrong_password_fails_clearly(cluster, tmp_path):
    url = _with_password(cluster.url, "wrong-secret")
    root = tiny_dataset(tmp_path / "d", 3)
    for args in (
        ["status", "--json"],
        ["submit-dataset", str(root), "--store", str(tmp_path / "s")],
    ):
        started = time.monotonic()
        proc = _cli_with_url(cluster, url, *args, timeout=120)
        message = _assert_clear_auth_failure(cluster, proc, "wrong-secret")
        elapsed = time.monotonic() - started
        print(f"SECURITY wrong password: {args[0]} failed in {elapsed:.1f} s: {message}")
    client = redis.Redis.from_url(cluster.url)
    assert client.llen("extract") == 0, "nothing was enqueued"
    assert not list(client.scan_iter("esc:*"))


def test_redis_without_a_password_fails_clearly(cluster):
    proc = _cli_with_url(cluster, _with_password(cluster.url, None), "status", "--json", timeout=30)
    _assert_clear_auth_failure(cluster, proc, None)


def _dump_redis(client: redis.Redis) -> bytes:
    """Every key and value in Redis, as bytes (strings, hashes, lists, sets, sorted sets)."""
    out = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        out.append(key)
        if kind == "string":
            out.append(client.get(key) or b"")
        elif kind == "hash":
            for k, v in client.hgetall(key).items():
                out += [k, v]
        elif kind == "list":
            out += client.lrange(key, 0, -1)
        elif kind == "set":
            out += list(client.smembers(key))
        elif kind == "zset":
            out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
    return b"\n".join(out)


def test_credentials_never_leak(cluster, tmp_path):
    password = _password(cluster.url)
    client = redis.Redis.from_url(cluster.url)
    root = tiny_dataset(tmp_path / "d", 20)
    store_url = str(tmp_path / "s.zarr")

    # enqueue with no worker: inspect the messages as they sit in the queue (the
    # headers carry argsrepr, what Flower shows)
    queued = cluster.cli("submit-dataset", str(root), "--store", store_url, "--no-wait")
    assert queued.returncode == 0, queued.stderr
    messages = client.lrange("extract", 0, -1)
    assert len(messages) == 20
    assert all(b"argsrepr" in m for m in messages)
    assert not any(password.encode() in m for m in messages)
    assert password.encode() not in _dump_redis(client)

    cluster.start_worker(WorkerKind.EXTRACT, concurrency=2)
    waited = cluster.cli("submit-dataset", str(root), "--store", store_url)  # progress output
    code, summary = cluster.cli_json("status")
    assert code == 0 and summary["done"] == 20
    outputs = [queued.stdout, queued.stderr, waited.stdout, waited.stderr]
    outputs.append(cluster.cli("status").stdout)
    for text in outputs:
        assert password not in text
    assert password not in cluster.worker_logs()
    assert "transport:   redis://:**@" in cluster.worker_logs(), "the banner masks the password"
    assert password.encode() not in _dump_redis(client)
    for summary_file in (Path(store_url) / "submissions").glob("*.json"):
        assert password not in summary_file.read_text()


# test_task_arguments_are_validated: in tests/test_tasks_inprocess.py (middle tier: the
# same crafted messages through the real broker, run by in-process task bodies)
