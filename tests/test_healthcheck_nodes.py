"""``orchestrator healthcheck`` is answered by its own worker only, whatever the networking.

Under Docker's host networking every container has the host's hostname, so a
check that pings ``*-<hostname>-*`` is answered by any container's worker. Here
two real ``orchestrator worker extract`` processes share one hostname (this
machine's), each with its own node file (as each container has its own
filesystem); each check must be answered by its own worker, and a check must
fail once its own worker is gone although the other one still answers.
"""

from __future__ import annotations

import subprocess
import sys
import time
from fnmatch import fnmatchcase
from pathlib import Path

from contract.settings import Settings
from orchestrator.health import node_file, node_pattern, read_node_file
from orchestrator.local_workers import start_worker, stop_worker
from workers.celery_app import create_app


def _start(cluster, node_path: Path, log: Path):
    env = {**cluster.env, "ESC_NODE_FILE": str(node_path)}
    cmd = [sys.executable, "-m", "orchestrator", "worker", "extract", "-c", "1"]
    proc = start_worker(cmd, env=env, log_path=str(log))
    cluster.workers.append(proc)
    return proc, env


def _wait_for_node(cluster, path: Path, proc, timeout: float = 90) -> str:
    app = create_app(Settings.from_env(cluster.env))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, cluster.worker_logs()
            names = read_node_file(path)
            if names and app.control.ping(destination=names, timeout=0.5):
                (name,) = names
                return name
            time.sleep(0.2)
    finally:
        app.close()
    raise TimeoutError(f"no worker recorded in {path} answered\n{cluster.worker_logs()}")


def _healthcheck(env: dict[str, str], timeout: str = "5") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "healthcheck", "--timeout", timeout],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_node_file_defaults_under_esc_home(tmp_path):
    assert node_file({"ESC_HOME": str(tmp_path)}) == tmp_path / "worker-nodes"
    assert node_file({"ESC_HOME": str(tmp_path), "ESC_NODE_FILE": "/x/n"}) == Path("/x/n")


def test_each_healthcheck_is_answered_by_its_own_worker(cluster, tmp_path):
    path_a, path_b = tmp_path / "a" / "worker-nodes", tmp_path / "b" / "worker-nodes"
    proc_a, env_a = _start(cluster, path_a, cluster.home / "worker-a.log")
    proc_b, env_b = _start(cluster, path_b, cluster.home / "worker-b.log")
    node_a = _wait_for_node(cluster, path_a, proc_a)
    node_b = _wait_for_node(cluster, path_b, proc_b)
    assert node_a != node_b
    # same hostname: the hostname glob cannot tell the two apart
    assert fnmatchcase(node_a, node_pattern()) and fnmatchcase(node_b, node_pattern())

    check_a, check_b = _healthcheck(env_a), _healthcheck(env_b)
    assert check_a.returncode == 0, check_a.stdout + check_a.stderr
    assert check_b.returncode == 0, check_b.stdout + check_b.stderr
    assert check_a.stdout.strip() == f"ok: {node_a}"
    assert check_b.stdout.strip() == f"ok: {node_b}"

    # A's worker stops: A's check fails although B's worker (same hostname) answers
    stop_worker(proc_a)
    failed = _healthcheck(env_a, timeout="3")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert node_a in failed.stdout + failed.stderr
    still = _healthcheck(env_b)
    assert still.returncode == 0 and still.stdout.strip() == f"ok: {node_b}", still.stderr
    # the glob fallback (no node file) would have called A healthy: B answers it
    glob = cluster.cli("healthcheck", "--pattern", node_pattern(), "--timeout", "5")
    assert glob.returncode == 0 and node_b in glob.stdout, glob.stderr
