"""Cross-validation through real Redis and real training worker processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

from contract.wire import TRAIN_QUEUE
from orchestrator.cv_submission import trial_states
from orchestrator.local_workers import WorkerKind
from storage.feature_store import FeatureStore
from storage.runs import RunStore

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def _extracted_once(redis_server, tmp_path_factory):
    """The module's 4-fold synthetic dataset, extracted once (``submit-dataset`` queues
    its clips, the middle tier's in-process task bodies run them: the same store a worker
    process writes; tests/test_queue_e2e.py runs real workers end to end)."""
    from orchestrator.synthetic import make_synthetic_dataset
    from tests.inprocess import BurstWorker

    base = tmp_path_factory.mktemp("cv-e2e")
    root = make_synthetic_dataset(
        base / "data", n_classes=3, folds=4, clips_per_class_per_fold=4, seed=5
    )
    store_url = str(base / "features.zarr")
    _, url = redis_server.lend()
    env = {**os.environ, "REDIS_URL": url, "ESC_HOME": str(base / "home")}
    env["ESC_EXTRACT_BATCH"] = "1"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "submit-dataset",
            str(root),
            "--store",
            store_url,
            "--no-wait",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["enqueued"] == 48
    with BurstWorker.for_url(url, str(base / "home")) as burst:
        deliveries = burst.burst()
        burst.client.flushdb()
    assert len(deliveries) == 48 and not any(d.error for d in deliveries)
    assert FeatureStore.open(store_url).done_mask().sum() == 48
    return root, store_url


@pytest.fixture
def extracted(cluster, _extracted_once, tmp_path):
    """A copy of the module's extracted store (each test writes its own runs into it)."""
    root, template = _extracted_once
    store_url = str(tmp_path / "features.zarr")
    shutil.copytree(template, store_url)
    return root, store_url


def _run_in_process(cluster, args: tuple[str, ...]) -> dict:
    """``submit-cv ARGS --no-wait``, its trials run by the middle tier's in-process task
    bodies (``workers.tasks.train_trial_task``); the stored report as ``cv-report`` shows
    it."""
    code, queued = cluster.cli_json(*args, "--no-wait")
    assert code == 0, queued
    deliveries = cluster.burst_worker().burst(TRAIN_QUEUE)
    assert len(deliveries) == len(queued["trials"]), deliveries
    assert not any(d.error for d in deliveries), [str(d.error) for d in deliveries]
    assert deliveries[-1].result["run_complete"]
    code, report = cluster.cli_json("cv-report", queued["run_id"], "--store", args[2])
    assert code == 0, report
    assert report.pop("pending_trials") == {}
    return report


# Middle tier: the trials run in this process (the report's logic); the real training
# worker runs the trials of the two tests below and of test_run_command.py.
def test_cv_run_report_matches_sklearn_and_runs_are_independent(cluster, extracted):
    _, store_url = extracted
    args = ("submit-cv", "--store", store_url, "--plan", "seed", "--trials", "2")
    args += ("--epochs", "2", "--batch-size", "32")
    report = _run_in_process(cluster, args)
    assert report["complete"] and len(report["trials"]) == 2
    assert report["plan"]["kind"] == "seed"
    assert [t["test_fold"] for t in report["trials"]] == [4, 1]

    runs = RunStore(store_url)
    run_id = report["run_id"]
    assert runs.get_report(run_id) == report
    class_names = report["class_names"]
    accs = []
    for row in report["trials"]:
        p = runs.load_predictions(run_id, row["trial"])
        y, probs = p["clip_labels"], p["clip_probs"]
        pred = probs.argmax(axis=1)
        # every clip of the test fold is scored
        assert len(y) == 12
        assert row["clip_accuracy"] == pytest.approx(accuracy_score(y, pred))
        assert row["window_accuracy"] == pytest.approx(
            accuracy_score(p["window_labels"], p["window_probs"].argmax(axis=1))
        )
        assert row["f1_macro"] == pytest.approx(
            f1_score(y, pred, average="macro", labels=range(3), zero_division=0)
        )
        assert row["roc_auc_macro"] == pytest.approx(
            roc_auc_score(y, probs, multi_class="ovr", average="macro")
        )
        assert row["confusion_matrix"] == confusion_matrix(y, pred, labels=range(3)).tolist()
        accs.append(accuracy_score(y, pred))
    assert report["aggregate"]["mean"]["clip_accuracy"] == pytest.approx(np.mean(accs))
    assert report["aggregate"]["std"]["clip_accuracy"] == pytest.approx(np.std(accs))
    assert len(class_names) == 3

    # a second run of the same config is independent: its own id and its own artifacts
    second = _run_in_process(cluster, args)
    assert second["run_id"] != run_id
    assert sorted(runs.list_runs()) == sorted([run_id, second["run_id"]])
    assert runs.get_report(run_id)["run_id"] == run_id
    code, listed = cluster.cli_json("runs", "--store", store_url)
    assert [r["run_id"] for r in listed] == sorted([run_id, second["run_id"]])

    # cv-report reads the stored report; --plot writes a PNG
    plot = cluster.home / "report.png"
    code, shown = cluster.cli_json("cv-report", run_id, "--store", store_url, "--plot", str(plot))
    assert code == 0 and shown["aggregate"] == report["aggregate"]
    assert plot.stat().st_size > 10_000


def test_killed_training_worker_trial_is_redelivered(cluster, extracted):
    _, store_url = extracted
    worker = cluster.start_worker(WorkerKind.TRAIN, name="train-victim@test")
    args = ("submit-cv", "--store", store_url, "--plan", "seed", "--trials", "1")
    # the kill lands within half a second of the first epoch's progress report: 11
    # epochs are left to train then (40 made the rescue worker retrain for a minute)
    code, queued = cluster.cli_json(*args, "--epochs", "12", "--patience", "12", "--no-wait")
    assert code == 0
    run_id = queued["run_id"]
    runs = RunStore(store_url)
    # wait until the trial is training (its task reports progress), then SIGKILL the worker
    from contract.settings import Settings
    from workers.celery_app import create_app

    app = create_app(Settings.from_env(cluster.env))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if app.AsyncResult(f"trial-{run_id}-0").state == "PROGRESS":
            # what cv-report and the --wait display show for a trial in training
            (state,) = trial_states(app, runs, run_id)
            assert state.state == "progress" and state.detail.startswith("epoch ")
            assert state.detail.endswith(" on train-victim@test"), state.detail
            break
        time.sleep(0.5)
    else:
        pytest.fail("the trial never reported progress")
    assert runs.trial_result(run_id, 0) is None
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)

    # a new worker picks the trial up again (after the visibility timeout) and finishes it
    cluster.start_worker(WorkerKind.TRAIN, name="train-rescue@test")
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and runs.get_report(run_id) is None:
        time.sleep(1)
    report = runs.get_report(run_id)
    assert report is not None, cluster.worker_logs()[-3000:]
    assert report["complete"] and [t["trial"] for t in report["trials"]] == [0]
    assert list(runs.trial_results(run_id)) == [0]
    app.close()


@pytest.mark.visibility_timeout(300)  # trials may train longer than 20 s; nothing is killed
def test_one_training_child_runs_several_trials(cluster, extracted):
    """A training worker started with ``--max-tasks-per-child 2`` (what
    ``ESC_TRIALS_PER_CHILD=2`` gives it): the second trial runs in the pool child that
    ran the first, and the run completes as with fresh ones."""
    _, store_url = extracted
    cluster.start_worker(WorkerKind.TRAIN, name="train-reuse@test", trials_per_child=2)
    args = ("submit-cv", "--store", store_url, "--plan", "seed", "--trials", "2")
    code, report = cluster.cli_json(*args, "--epochs", "2", "--patience", "2", "--wait")
    assert code == 0, report
    assert report["complete"] and sorted(t["trial"] for t in report["trials"]) == [0, 1]
    # Celery logs a task's success from the pool process that ran it
    children = re.findall(
        r"/(ForkPoolWorker-\d+)\] Task esc\.train_trial\[trial-[^\]]+\] succeeded",
        cluster.worker_logs(),
    )
    assert len(children) == 2 and len(set(children)) == 1, children


@pytest.mark.visibility_timeout(300)  # trials may train longer than 20 s; nothing is killed
def test_predict_returns_the_classes_of_generated_files(cluster, extracted):
    root, store_url = extracted
    cluster.start_worker(WorkerKind.TRAIN)
    args = ("submit-cv", "--store", store_url, "--plan", "official", "--trials", "1")
    # the default recipe trains every epoch (no early stopping): 15 fit the training files
    code, report = cluster.cli_json(*args, "--epochs", "15", "--wait")
    assert code == 0
    trial = report["trials"][0]
    names = report["class_names"]

    train_files = sorted(
        f for fold in trial["train_folds"] for f in (root / "audio" / f"fold{fold}").glob("*.wav")
    )
    runs = RunStore(store_url)
    stored = runs.load_predictions(report["run_id"], trial["trial"])
    store = FeatureStore.open(store_url)
    rel_paths = store.rel_paths()
    test_files = [root / rel_paths[i] for i in stored["clip_index"]]
    # one predict process for both sets (each process pays for loading TensorFlow)
    files = [*train_files, *test_files]
    code, predictions = cluster.cli_json("predict", *map(str, files), "--store", store_url)
    assert code == 0
    assert [p["path"] for p in predictions] == [str(f) for f in files]
    on_train, on_test = predictions[: len(train_files)], predictions[len(train_files) :]

    # on files the model learned from, predict must give their classes back
    truth = [names[int(f.name.split("-")[1])] for f in train_files]
    guessed = [p["top"][0]["class"] for p in on_train]
    correct = sum(t == g for t, g in zip(truth, guessed, strict=True))
    assert correct / len(train_files) >= 0.9, list(zip(truth, guessed, strict=True))

    # on the test fold, the one-model ensemble equals the trial's stored clip predictions
    probs = np.array([[p["probabilities"][n] for n in names] for p in on_test])
    np.testing.assert_allclose(probs, stored["clip_probs"], atol=1e-4)
