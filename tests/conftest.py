"""Shared fixtures: real Redis servers, real Celery worker processes.

Nothing here mocks the broker: Redis is the embedded ``redis-server`` binary on a free
port in a temporary directory (one server shared by the session, a flushed database
per test; a server of its own for tests marked ``own_redis``), and workers are
``celery worker`` subprocesses that can be SIGKILLed. The middle tier (task bodies run
in this process against the same real Redis) is in ``tests/inprocess.py``; the tiers
are described in docs/testing.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestrator.embedded_redis import EmbeddedRedis
from orchestrator.local_workers import WorkerKind, start_worker, stop_workers, worker_command

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# SIGTERM tears fixtures down (Redis servers, worker processes) instead of leaving them.
pytest_plugins = ["tests.sigterm_teardown"]


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (real UrbanSound8K data is only on developer/CI machines)")
    return path


@dataclass
class Cluster:
    """A Redis server plus the environment that points processes at it."""

    home: Path
    redis: Any  # EmbeddedRedis (own_redis tests), or a guard on the shared server
    url: str
    env: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    burst_workers: list[Any] = field(default_factory=list)

    def start_worker(
        self,
        kind: WorkerKind = WorkerKind.EXTRACT,
        *,
        concurrency: int = 1,
        name: str | None = None,
        extra_env: dict[str, str] | None = None,
        wait: bool = True,
        trials_per_child: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a real ``celery worker`` process and wait until it answers a ping."""
        node = name or f"{kind.value}-{len(self.workers)}@test"
        cmd = worker_command(
            kind,
            concurrency=concurrency,
            name=node,
            loglevel="INFO",
            max_tasks_per_child=trials_per_child,
        )
        log = self.home / f"worker-{len(self.workers)}.log"
        proc = start_worker(cmd, env={**self.env, **(extra_env or {})}, log_path=str(log))
        self.workers.append(proc)
        if wait:
            self.wait_for_worker(node, proc)
        return proc

    def wait_for_worker(
        self, node: str, proc: subprocess.Popen[bytes], timeout: float = 60
    ) -> None:
        from contract.settings import Settings
        from workers.celery_app import create_app

        app = create_app(Settings.from_env(self.env))
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker {node} exited with {proc.returncode}")
                try:
                    replies = app.control.ping(destination=[node], timeout=0.5) or []
                except (redis.RedisError, OSError):
                    # e.g. just after a Redis restart (fault tests): try again
                    time.sleep(0.2)
                    continue
                if any(node in r for r in replies):
                    return
            raise TimeoutError(f"worker {node} did not answer a ping in {timeout} s")
        finally:
            app.close()

    def cli(
        self, *args: str, check: bool = False, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run ``orchestrator ARGS`` as a subprocess against this cluster."""
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def cli_json(self, *args: str, timeout: float = 300) -> tuple[int, dict]:
        """Run a command with ``--json``; return its exit code and document."""
        proc = self.cli(*args, "--json", timeout=timeout)
        try:
            return proc.returncode, json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise AssertionError(
                f"not JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            ) from None

    def burst_worker(self) -> Any:
        """The middle tier on this cluster's Redis: task bodies run in this process
        (``tests/inprocess.py:BurstWorker``), closed with the cluster."""
        from contract.settings import Settings
        from tests.inprocess import BurstWorker

        worker = BurstWorker(Settings.from_env(self.env))
        self.burst_workers.append(worker)
        return worker

    def worker_logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.home.glob("worker-*.log"))
        )


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A Redis database of its own and an environment pointing at it.

    By default the database is a fresh one of the session's shared server
    (:func:`redis_server`); a test marked ``@pytest.mark.own_redis`` (it stops, kills or
    restarts Redis) gets a server of its own on a free port, as every test did before.
    """
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    own = request.node.get_closest_marker("own_redis") is not None
    server: EmbeddedRedis | None = None
    if own:
        server = EmbeddedRedis(home / "redis")
        url = server.ensure_running()
        handle: Any = server
    else:
        shared: SharedRedisServer = request.getfixturevalue("redis_server")
        _, url = shared.lend()
        handle = _SharedServerGuard(shared.server, url)
    # 20 s: the tests that kill workers wait for held messages to come back. A test
    # whose trials train longer than that (on a busy machine) and that kills nothing
    # asks for more with @pytest.mark.visibility_timeout(seconds), so that its running
    # trials are not delivered a second time while they train.
    visibility = request.node.get_closest_marker("visibility_timeout")
    env = {
        **os.environ,
        "ESC_HOME": str(home),
        "REDIS_URL": url,
        "ESC_VISIBILITY_TIMEOUT": str(visibility.args[0] if visibility else 20),
        "ESC_RESTORE_INTERVAL": "2",
        "ESC_RETRY_BACKOFF_MAX": "2",
        "ESC_TASK_MAX_RETRIES": "2",
        "ESC_TRIAL_LEASE_SECONDS": "15",
        # the workers' reconciler (lost messages): a pass every 2 s, lease of 8 s
        "ESC_RECONCILE_INTERVAL": "2",
        "ESC_RECONCILE_LEASE_SECONDS": "8",
        # one message per clip unless a test asks for batches (--batch-size): several
        # tests follow individual clip tasks in worker logs and in Flower
        "ESC_EXTRACT_BATCH": "1",
        "PYTHONUNBUFFERED": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    c = Cluster(home=home, redis=handle, url=url, env=env)
    try:
        yield c
    finally:
        stop_workers(c.workers, timeout=10)
        for burst in c.burst_workers:
            burst.close()
        if server is not None:
            server.stop()
        else:
            with contextlib.suppress(redis.RedisError):
                redis.Redis.from_url(url).flushdb()


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Generate a small synthetic dataset; returns its UrbanSound8K root."""
    from orchestrator.synthetic import make_synthetic_dataset

    def make(**kwargs: object) -> Path:
        out = tmp_path / f"data{len(list(tmp_path.glob('data*')))}"
        return make_synthetic_dataset(out, **kwargs)  # type: ignore[arg-type]

    return make


# --- shared Redis servers -------------------------------------------------------------
# One embedded server for the whole session; each test that asks for it gets a database
# number of its own, flushed before and after (Celery and kombu take the database from
# the URL's ``/N``; kombu prefixes its fanout channels, i.e. pidbox pings and events,
# with the database, so workers of two databases never hear each other). A test that
# stops, kills or restarts Redis is marked ``own_redis`` and gets its own server.

SHARED_DATABASES = range(1, 16)  # redis-server's default "databases 16"; 0 is left alone


class SharedRedisServer:
    """The session's Redis server, lent one database at a time."""

    def __init__(self, server: EmbeddedRedis, url: str) -> None:
        self.server = server
        self.base_url = url
        self._next = 0

    def url_for(self, db: int) -> str:
        return self.base_url.rsplit("/", 1)[0] + f"/{db}"

    def lend(self) -> tuple[int, str]:
        """A flushed database number and its URL."""
        db = SHARED_DATABASES[self._next % len(SHARED_DATABASES)]
        self._next += 1
        url = self.url_for(db)
        redis.Redis.from_url(url).flushdb()
        return db, url


class _SharedServerGuard:
    """``Cluster.redis`` of a cluster on the shared server: stopping it is refused."""

    def __init__(self, server: EmbeddedRedis, url: str) -> None:
        self._server = server
        self.url = url
        self.directory = server.directory

    def is_running(self) -> bool:
        return self._server.is_running()

    def _refuse(self, *_: object, **__: object) -> None:
        raise RuntimeError(
            "this cluster shares the session's Redis server: mark the test "
            "@pytest.mark.own_redis to stop, kill or restart its own server"
        )

    stop = kill = ensure_running = _refuse

    def pid(self) -> int | None:
        return self._server.pid()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedRedisServer]:
    """One real embedded Redis server for the session (see :class:`SharedRedisServer`)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("shared-redis") / "redis")
    url = server.ensure_running()
    try:
        yield SharedRedisServer(server, url)
    finally:
        server.stop()


@dataclass
class RedisDb:
    """A flushed database of the shared server: its URL and a client."""

    db: int
    url: str
    client: redis.Redis


@pytest.fixture
def redis_db(redis_server: SharedRedisServer) -> Iterator[RedisDb]:
    """A fresh (flushed) database of the session's Redis server."""
    db, url = redis_server.lend()
    client = redis.Redis.from_url(url)
    try:
        yield RedisDb(db=db, url=url, client=client)
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def burst_worker(redis_db: RedisDb, tmp_path: Path) -> Iterator[Any]:
    """The middle tier: task bodies run in this process on a fresh database of the
    session's Redis server (``tests/inprocess.py``)."""
    from tests.inprocess import BurstWorker

    with BurstWorker.for_url(redis_db.url, str(tmp_path / "home")) as worker:
        yield worker
