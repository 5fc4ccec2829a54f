"""End to end through a real Redis and real ``celery worker`` processes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from orchestrator.local_workers import WorkerKind
from storage.feature_store import FeatureStore
from workers.audio import load_audio
from workers.features import FeatureConfig, extract_clip_features

pytestmark = pytest.mark.timeout(600)


def add_bad_clip(root: Path, name: str = "999-0-0-0.wav", fold: int = 1) -> str:
    """A metadata row whose file is not audio; returns its relative path."""
    (root / "audio" / f"fold{fold}" / name).write_bytes(b"this is not a wav file at all" * 10)
    meta = root / "metadata" / "UrbanSound8K.csv"
    with meta.open() as fh:
        rows = list(csv.DictReader(fh))
    class_name = next(r["class"] for r in rows if r["classID"] == "0")
    with meta.open("a", newline="") as fh:
        csv.writer(fh).writerow([name, 999, 0.0, 1.0, 1, fold, 0, class_name])
    return f"audio/fold{fold}/{name}"


def direct_extraction(root: Path, rel_path: str, config: FeatureConfig) -> np.ndarray:
    signal, _ = load_audio(root / rel_path, sr=config.sample_rate, max_seconds=config.max_seconds)
    return extract_clip_features(signal, config).windows


def test_submit_dataset_end_to_end(cluster, make_dataset, tmp_path):
    root = make_dataset(n_classes=4, folds=2, clips_per_class_per_fold=3, seed=1)
    bad = add_bad_clip(root)
    store_url = str(tmp_path / "features.zarr")
    cluster.start_worker(WorkerKind.EXTRACT, concurrency=1)
    cluster.start_worker(WorkerKind.EXTRACT, concurrency=1)

    # four clips per message: the bad file fails alone, its batch's other clips complete
    args = ("submit-dataset", str(root), "--store", store_url, "--batch-size", "4")
    code, summary = cluster.cli_json(*args, "--wait")

    assert code == 1, "a failed file must make the exit code non-zero"
    assert summary["clips"] == 25
    assert summary["enqueued"] == 25
    assert summary["done"] == 24
    assert summary["failed"] == 1
    assert summary["remaining"] == 0
    (failure,) = summary["failures"]
    assert failure["path"] == bad
    assert "not an audio file" in failure["reason"] or "format" in failure["reason"].lower()

    # the store equals a direct in-process extraction of the same files
    store = FeatureStore.open(store_url)
    config = FeatureConfig.from_dict(store.feature_config)
    done = store.done_mask()
    rel_paths = store.rel_paths()
    assert done.sum() == 24
    for i, rel in enumerate(rel_paths):
        if rel == bad:
            assert not done[i]
            continue
        np.testing.assert_array_equal(store.read_clip(i), direct_extraction(root, rel, config))

    # status from "another terminal" agrees
    code, status = cluster.cli_json("status", summary["submission"])
    assert code == 0
    assert (status["done"], status["failed"], status["remaining"]) == (24, 1, 0)

    # a resubmission enqueues nothing: done clips are skipped, the failure is not retried
    code, again = cluster.cli_json(*args, "--wait")
    assert again["enqueued"] == 0
    assert again["skipped_already_done"] == 24
    assert again["already_failed"] == 1
    assert code == 1


# test_grown_dataset_extracts_only_new_files and test_queued_clips_are_not_enqueued_twice:
# in tests/test_tasks_inprocess.py (middle tier: the same submissions, the messages run
# by in-process task bodies on a real Redis)


def test_waiting_submission_requeues_a_lost_message(cluster, make_dataset, tmp_path):
    """A message that vanished (fetched by a worker that died before recording it) is
    found by the waiting command and enqueued again when no worker runs the fleet's
    reconciler (tests/test_reconciler.py covers the reconciler)."""
    import json
    import subprocess
    import sys
    import time

    import redis

    root = make_dataset(n_classes=2, folds=1, clips_per_class_per_fold=4, seed=9)
    store_url = str(tmp_path / "features.zarr")
    waiting = subprocess.Popen(
        [
            *(sys.executable, "-m", "orchestrator", "submit-dataset", str(root)),
            *("--store", store_url, "--batch-size", "1", "--wait", "--json"),
        ],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = redis.Redis.from_url(cluster.url)
    deadline = time.monotonic() + 60
    while client.llen("extract") < 8 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.llen("extract") == 8
    lost = client.rpop("extract")  # the next message a worker would have taken
    assert lost is not None
    cluster.start_worker(
        WorkerKind.EXTRACT, concurrency=1, extra_env={"ESC_RECONCILE_INTERVAL": "0"}
    )
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    summary = json.loads(out)
    assert (summary["done"], summary["failed"], summary["requeued_lost"]) == (8, 0, 1)
    assert FeatureStore.open(store_url).done_mask().all()


def test_redelivered_batches_and_clips_alone_race_on_shared_chunks(cluster, make_dataset, tmp_path):
    """Every batch twice (what a visibility-timeout redelivery leaves: two deliveries of
    one message in flight) and every clip of it alone as well (a retry, a re-enqueued
    lost clip), all queued before two workers of concurrency 2 start: they race on the
    same chunks, and no clip may be lost or differ from direct extraction."""
    import time

    import redis

    from contract.settings import Settings
    from contract.wire import EXTRACT_BATCH_TASK, EXTRACT_TASK, ExtractBatch, ExtractJob
    from tests.reliability_helpers import assert_store_matches, progress
    from workers.celery_app import create_app

    root = make_dataset(n_classes=2, folds=2, clips_per_class_per_fold=5, seed=12)
    store_url = str(tmp_path / "features.zarr")
    args = ("submit-dataset", str(root), "--store", store_url, "--batch-size", "8")
    code, first = cluster.cli_json(*args, "--no-wait")  # no worker yet: all stays queued
    assert code == 0 and first["enqueued"] == 20
    store = FeatureStore.open(store_url)
    assert store.clips_per_chunk == 8
    rel = store.rel_paths()
    jobs = [
        ExtractJob("s-race", store_url, store.dataset_root, str(rel[i]), i, store.generation)
        for i in range(store.n_clips)
    ]
    app = create_app(Settings.from_env(cluster.env))
    try:
        for chunk in range(3):
            batch = ExtractBatch(tuple(jobs[chunk * 8 : chunk * 8 + 8]))
            app.send_task(EXTRACT_BATCH_TASK, args=[batch.to_dict()], task_id=batch.task_id())
            for job in batch.jobs:
                app.send_task(EXTRACT_TASK, args=[job.to_dict()], task_id=job.task_id())
    finally:
        app.close()
    client = redis.Redis.from_url(cluster.url)
    assert client.llen("extract") == 3 + 3 + 20
    cluster.start_worker(WorkerKind.EXTRACT, concurrency=2)
    cluster.start_worker(WorkerKind.EXTRACT, concurrency=2)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (client.llen("extract") or client.hlen("unacked")):
        time.sleep(0.2)
    assert client.llen("extract") == 0 and client.hlen("unacked") == 0
    assert progress(client, store_url) == (20, 0)
    assert_store_matches(store_url, root)
    assert not list(Path(store_url).rglob("*.partial"))
