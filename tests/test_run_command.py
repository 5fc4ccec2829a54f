"""``orchestrator run`` (the one-command job) and the worker supervisor it uses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from orchestrator.local_workers import WorkerKind, WorkerSupervisor, worker_command
from orchestrator.quiet import is_noise
from storage.feature_store import FeatureStore
from storage.runs import RunStore

pytestmark = pytest.mark.timeout(600)


@pytest.mark.visibility_timeout(300)  # trials may train longer than 20 s; nothing is killed
def test_run_does_the_whole_job(cluster, make_dataset, tmp_path):
    root = make_dataset(n_classes=3, folds=2, clips_per_class_per_fold=3, seed=7)
    store_url = str(tmp_path / "run.zarr")
    args = ("run", str(root), "--store", store_url, "--workers", "1", "--epochs", "2")
    # as a user starts it: TensorFlow's log level not set (the fixture sets it)
    env = {k: v for k, v in cluster.env.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ESC_VERBOSE")}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=550,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # a quiet console: none of TensorFlow's start-up notices (absl, oneDNN, CPU, CUDA)...
    noise = [line for line in (proc.stdout + proc.stderr).splitlines() if is_noise(line)]
    assert noise == [], noise
    # ...while the training worker's log keeps everything TensorFlow said
    worker_log = (cluster.home / "logs" / "train-worker.log").read_text(errors="replace")
    assert any(is_noise(line) for line in worker_log.splitlines())
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
        first.wait(timeout=30)
        # the event, not a time window: the supervisor's count and its new process (it
        # counts a restart only once the replacement is in ``procs``; under heavy load a
        # test that read ``procs`` right after the count once saw the dead process)
        deadline = time.monotonic() + 60
        while supervisor.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert supervisor.restarts == 1
        replacement = supervisor.procs[0]
        assert replacement is not first and replacement.pid != first.pid
        cluster.wait_for_worker("supervised@test", replacement)
    finally:
        supervisor.stop()
    assert all(p.poll() is not None for p in supervisor.procs)
