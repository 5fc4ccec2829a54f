"""Shared fixtures: a real Redis server per test, real Celery worker processes.

Nothing here mocks the broker: the Redis server is the embedded ``redis-server``
binary on a free port in a temporary directory, and workers are ``celery worker``
subprocesses that can be SIGKILLed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from orchestrator.embedded_redis import EmbeddedRedis
from orchestrator.local_workers import WorkerKind, start_worker, stop_worker, worker_command

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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
    redis: EmbeddedRedis
    url: str
    env: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(
        self,
        kind: WorkerKind = WorkerKind.EXTRACT,
        *,
        concurrency: int = 1,
        name: str | None = None,
        extra_env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Start a real ``celery worker`` process and wait until it answers a ping."""
        node = name or f"{kind.value}-{len(self.workers)}@test"
        cmd = worker_command(kind, concurrency=concurrency, name=node, loglevel="INFO")
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

    def worker_logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.home.glob("worker-*.log"))
        )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A fresh Redis server on a free port and an environment pointing at it."""
    home = tmp_path / "home"
    server = EmbeddedRedis(home / "redis")
    url = server.ensure_running()
    env = {
        **os.environ,
        "ESC_HOME": str(home),
        "REDIS_URL": url,
        "ESC_VISIBILITY_TIMEOUT": "20",
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
    c = Cluster(home=home, redis=server, url=url, env=env)
    try:
        yield c
    finally:
        for proc in c.workers:
            stop_worker(proc, timeout=10)
        server.stop()


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Generate a small synthetic dataset; returns its UrbanSound8K root."""
    from orchestrator.synthetic import make_synthetic_dataset

    def make(**kwargs: object) -> Path:
        out = tmp_path / f"data{len(list(tmp_path.glob('data*')))}"
        return make_synthetic_dataset(out, **kwargs)  # type: ignore[arg-type]

    return make
