"""Flower through ``orchestrator flower``: real Redis, a real worker, real HTTP with auth."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from contract.settings import Settings
from orchestrator.embedded_redis import free_port
from orchestrator.flower import build_launch, flower_env
from orchestrator.local_workers import WorkerKind, stop_worker
from tests.test_queue_e2e import add_bad_clip

pytestmark = pytest.mark.timeout(180)

USER, PASSWORD = "esc", "flower-test-pw"


def get(url: str, *, auth: bool = True, timeout: float = 5) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def poll(fn: Any, *, timeout: float = 30, interval: float = 0.5) -> Any:
    """``fn()`` once it returns something truthy; its last value at the deadline."""
    deadline = time.monotonic() + timeout
    value = fn()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = fn()
    return value


def test_flower_env_drops_our_variables_and_passes_credentials():
    env = {"FLOWER_USER": "a", "FLOWER_PASSWORD": "b", "FLOWER_PURGE_OFFLINE_WORKERS": "60"}
    child = flower_env(env, "a:b", known={"purge_offline_workers", "basic_auth"})
    assert child == {"FLOWER_PURGE_OFFLINE_WORKERS": "60", "FLOWER_BASIC_AUTH": "a:b"}


def test_healthcheck_pattern_matches_node_names_of_this_host():
    from fnmatch import fnmatchcase

    from orchestrator.health import node_pattern

    assert fnmatchcase("celery@extract-3f2a9c1b7d4e-80ae66", node_pattern("3f2a9c1b7d4e"))
    assert fnmatchcase("celery@train-3f2a9c1b7d4e-0b12cd", node_pattern("3f2a9c1b7d4e"))
    assert not fnmatchcase("celery@extract-otherhost-80ae66", node_pattern("3f2a9c1b7d4e"))


def test_launch_keeps_credentials_off_the_command_line_and_warns_when_open():
    settings = Settings(flower_basic_auth=f"{USER}:{PASSWORD}")
    launch = build_launch(settings, port=5599, address="0.0.0.0", env={})
    assert PASSWORD not in " ".join(launch.argv)
    assert launch.env["FLOWER_BASIC_AUTH"] == f"{USER}:{PASSWORD}"
    assert launch.warning is None
    open_launch = build_launch(Settings(), address="0.0.0.0", env={})
    assert open_launch.warning and "WITHOUT authentication" in open_launch.warning
    assert build_launch(Settings(), address="127.0.0.1", env={}).warning is None


def test_flower_shows_workers_and_named_tasks(cluster, make_dataset, tmp_path):
    root = make_dataset(n_classes=2, folds=2, clips_per_class_per_fold=2, seed=4)
    bad = add_bad_clip(root)
    store_url = str(tmp_path / "features.zarr")
    cluster.start_worker(WorkerKind.EXTRACT, concurrency=1, name="extract-flower@test")

    port = free_port()
    # FLOWER_USER/FLOWER_PASSWORD are ours, not Flower's: Flower would die on them if
    # they reached its environment. orchestrator flower translates them.
    env = {**cluster.env, "FLOWER_USER": USER, "FLOWER_PASSWORD": PASSWORD}
    log = (tmp_path / "flower.log").open("wb")
    flower = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "flower", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return get(f"{base}/healthcheck", auth=False, timeout=1)[0] == 200
            except OSError:
                return flower.poll() is not None

        started = poll(up, timeout=40) and flower.poll() is None
        assert started, (tmp_path / "flower.log").read_text()
        # the credentials are not on Flower's command line
        cmdline = Path(f"/proc/{flower.pid}/cmdline").read_bytes().decode(errors="replace")
        assert PASSWORD not in cmdline

        proc = cluster.cli("submit-dataset", str(root), "--store", store_url, "--wait", "--json")
        assert proc.returncode == 1, proc.stderr  # the bad clip fails
        summary = json.loads(proc.stdout)
        assert (summary["done"], summary["failed"]) == (8, 1)

        # without credentials: 401; /metrics and /healthcheck stay open
        assert get(f"{base}/api/workers", auth=False)[0] == 401
        assert get(f"{base}/api/tasks", auth=False)[0] == 401
        assert get(f"{base}/", auth=False)[0] == 401
        assert get(f"{base}/metrics", auth=False)[0] == 200

        def workers() -> dict[str, Any]:
            code, body = get(f"{base}/api/workers?refresh=1", timeout=10)
            return json.loads(body) if code == 200 else {}

        listed = poll(lambda: "extract-flower@test" in workers(), timeout=30)
        assert listed, workers()

        def finished_tasks() -> dict[str, Any]:
            code, body = get(f"{base}/api/tasks")
            tasks = json.loads(body) if code == 200 else {}
            done = {k: t for k, t in tasks.items() if t["state"] in ("SUCCESS", "FAILURE")}
            return done if len(done) >= 9 else {}

        tasks = poll(finished_tasks, timeout=30)
        assert tasks, get(f"{base}/api/tasks")[1][:2000]
        assert {t["name"] for t in tasks.values()} == {"esc.extract_clip"}
        states = sorted(t["state"] for t in tasks.values())
        assert states == ["FAILURE"] + ["SUCCESS"] * 8
        # the job record (rel_path, clip_index) is readable in Flower
        (failed,) = [t for t in tasks.values() if t["state"] == "FAILURE"]
        assert bad in failed["args"] and "clip_index" in failed["args"]
        assert all("rel_path" in t["args"] for t in tasks.values())
        assert all(t["worker"] == "extract-flower@test" for t in tasks.values())
        # the container health check pings this worker node through Redis
        ok = cluster.cli("healthcheck", "--pattern", "extract-flower@*", "--timeout", "5")
        assert ok.returncode == 0 and "extract-flower@test" in ok.stdout, ok.stderr
        nobody = cluster.cli("healthcheck", "--pattern", "train-*@nohost", "--timeout", "1")
        assert nobody.returncode == 1
        # and the Prometheus metrics count them
        metrics = get(f"{base}/metrics", auth=False)[1].decode()
        assert 'flower_events_total{task="esc.extract_clip"' in metrics
    finally:
        stop_worker(flower, timeout=10)  # type: ignore[arg-type]
        log.close()
