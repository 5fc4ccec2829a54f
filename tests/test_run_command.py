"""``orchestrator run`` (the one-command job) and the worker supervisor it uses."""

from __future__ import annotations

import os
import signal
import time

import pytest

from orchestrator.local_workers import WorkerKind, WorkerSupervisor, worker_command
from storage.feature_store import FeatureStore
from storage.runs import RunStore

pytestmark = pytest.mark.timeout(600)


def test_run_does_the_whole_job(cluster, make_dataset, tmp_path):
    root = make_dataset(n_classes=3, folds=2, clips_per_class_per_fold=3, seed=7)
    store_url = str(tmp_path / "run.zarr")
    args = ("run", str(root), "--store", store_url, "--workers", "1", "--epochs", "2")
    proc = cluster.cli(*args, timeout=550)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert FeatureStore.open(store_url).done_mask().all()
    runs = RunStore(store_url)
    report = runs.get_report(runs.latest_run())
    assert report is not None and report["complete"]
    assert report["plan"]["kind"] == "official" and len(report["trials"]) == 2
    # the report was printed at the end
    assert report["run_id"] in proc.stdout


def test_supervisor_restarts_a_worker_that_exits(cluster):
    cmd = worker_command(WorkerKind.EXTRACT, concurrency=1, name="supervised@test")
    supervisor = WorkerSupervisor([cmd], env=cluster.env, poll=0.5).start()
    try:
        first = supervisor.procs[0]
        cluster.wait_for_worker("supervised@test", first)
        os.killpg(first.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while supervisor.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert supervisor.restarts == 1
        replacement = supervisor.procs[0]
        assert replacement.pid != first.pid
        cluster.wait_for_worker("supervised@test", replacement)
    finally:
        supervisor.stop()
    assert all(p.poll() is not None for p in supervisor.procs)
