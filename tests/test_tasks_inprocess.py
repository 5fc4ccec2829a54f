"""Middle tier: the task bodies' logic and refusals, run in this process on a real Redis.

Messages are really queued (``submit-dataset`` or ``send_task`` into the session's
Redis server, a fresh database per test) and run by ``tests/inprocess.py:BurstWorker``
with the registered task bodies of ``workers.tasks``; outcomes land in the real Redis
and features in a real store. No ``celery worker`` process is started: faults that need
one (SIGKILL, prefetch, visibility timeout, Redis restarts) are in test_faults.py,
test_chaos.py and test_reconciler.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import redis

from contract.errors import ClipError
from contract.wire import EXTRACT_BATCH_TASK, EXTRACT_TASK, ExtractBatch, ExtractJob
from storage.feature_store import FeatureStore
from tests.reliability_helpers import (
    assert_store_matches,
    check_store_chunks,
    progress,
    tiny_dataset,
    wait_status,
    write_rows,
)
from tests.test_bad_input import _noise, _wav_bytes
from workers.extraction import resolve_clip_path
from workers.tasks import ClipFailedError

pytestmark = pytest.mark.timeout(300)


def _expected(burst, task_name: str, error: BaseException | None) -> bool:
    """Whether a worker would log ``raised expected`` (the task's ``throws``)."""
    return error is not None and isinstance(error, burst.app.tasks[task_name].throws)


# moved from test_security.py (was: crafted messages through a real worker's log)
def test_task_arguments_are_validated(cluster, tmp_path):
    root = tiny_dataset(tmp_path / "d", 2)
    store_url = str(tmp_path / "s.zarr")
    burst = cluster.burst_worker()
    code, first = cluster.cli_json(
        "submit-dataset", str(root), "--store", store_url, "--no-wait", timeout=120
    )
    assert code == 0 and first["enqueued"] == 2
    assert [d.error for d in burst.burst()] == [None, None]
    store = FeatureStore.open(store_url)
    before = np.asarray(store._windows[:]).copy()
    outside = tmp_path / "outside.wav"
    outside.write_bytes((root / str(store.rel_paths()[0])).read_bytes())  # a readable WAV

    good = ExtractJob(
        submission_id="crafted",
        store_url=store_url,
        dataset_root=str(root),
        rel_path=str(store.rel_paths()[0]),
        clip_index=0,
        generation=store.generation,
    ).to_dict()
    cases = {
        "escape-dotdot": ({**good, "rel_path": "../outside.wav"}, "not this path; refused"),
        "escape-absolute": ({**good, "rel_path": str(outside)}, "not this path; refused"),
        "other-root": ({**good, "dataset_root": str(tmp_path)}, "dataset root differs"),
        "index-out-of-range": ({**good, "clip_index": 99}, "clip index 99 is out of range"),
        "index-negative": ({**good, "clip_index": -1}, "clip index -1 is out of range"),
        "missing-field": (
            {k: v for k, v in good.items() if k != "rel_path"},
            "missing fields ['rel_path']",
        ),
        "wrong-type": ({**good, "clip_index": "0"}, "clip_index: expected int"),
        "extra-field": ({**good, "shell": "rm -rf /"}, "unknown fields ['shell']"),
        "not-an-object": ("audio/fold1/x.wav", "expected an object, got str"),
    }
    # sent through the real broker, as an attacker with access to Redis would
    for task_id, (payload, _) in cases.items():
        burst.app.send_task(EXTRACT_TASK, args=[payload], task_id=task_id)
    burst.app.send_task(EXTRACT_TASK, args=[], task_id="no-arguments")
    deliveries = {d.task_id: d for d in burst.burst()}
    assert set(deliveries) == {*cases, "no-arguments"}
    for task_id, (_, words) in cases.items():
        error = deliveries[task_id].error
        assert _expected(burst, EXTRACT_TASK, error), (task_id, error)
        assert words in str(error), (task_id, str(error))
    unexpected = deliveries["no-arguments"].error
    assert isinstance(unexpected, TypeError)
    assert not _expected(burst, EXTRACT_TASK, unexpected)

    # nothing was read or written: the store and the records are as before
    client = redis.Redis.from_url(cluster.url)
    assert not any(client.hlen(k) for k in client.scan_iter("esc:store:*:failed"))
    done_key = next(iter(client.scan_iter("esc:store:*:done")))
    assert sorted(client.hkeys(done_key)) == [b"0", b"1"]
    store = FeatureStore.open(store_url)
    np.testing.assert_array_equal(np.asarray(store._windows[:]), before)
    assert_store_matches(store_url, root)
    final = wait_status(cluster, first["submission"], timeout=30)
    assert (final["done"], final["failed"]) == (2, 0)


# moved from test_bad_input.py (was: the same steps through a real worker)
def test_symlink_outside_root_refused_by_worker(cluster, tmp_path):
    root = tmp_path / "ds" / "UrbanSound8K"
    (root / "audio" / "fold1").mkdir(parents=True)
    (root / "audio" / "fold1" / "1-0-0-0.wav").write_bytes(_wav_bytes(_noise(1.0)))
    write_rows(root, [["1-0-0-0.wav", 1, 0, 1, 1, 1, 0, "class0"]])
    outside = tmp_path / "secret.wav"
    outside.write_bytes(_wav_bytes(_noise(1.0, seed=5)))
    link = root / "audio" / "fold1" / "2-0-0-0.wav"
    os.symlink(outside, link)

    # the worker-side check, directly
    with pytest.raises(ClipError, match="outside the dataset root"):
        resolve_clip_path(str(root), "audio/fold1/2-0-0-0.wav")
    with pytest.raises(ClipError, match="not inside the dataset root"):
        resolve_clip_path(str(root), "../../secret.wav")
    with pytest.raises(ClipError, match="not inside the dataset root"):
        resolve_clip_path(str(root), str(outside))
    assert resolve_clip_path(str(root), "audio/fold1/1-0-0-0.wav").is_file()

    # The scanner accepts the dataset and enqueues both clips (no worker yet); then one
    # file is swapped for a symlink pointing out (an attacker, or a careless sync):
    # the worker refuses it, records the failure against that clip, reads nothing.
    (root / "audio" / "fold1" / "3-0-0-0.wav").write_bytes(_wav_bytes(_noise(1.0, seed=6)))
    write_rows(
        root,
        [["1-0-0-0.wav", 1, 0, 1, 1, 1, 0, "class0"], ["3-0-0-0.wav", 3, 0, 1, 1, 1, 0, "class0"]],
    )
    store_url = str(tmp_path / "s.zarr")
    code, first = cluster.cli_json(
        "submit-dataset", str(root), "--store", store_url, "--no-wait", timeout=120
    )
    assert code == 0 and first["enqueued"] == 2
    swapped = root / "audio" / "fold1" / "3-0-0-0.wav"
    swapped.unlink()
    os.symlink(outside, swapped)
    burst = cluster.burst_worker()
    deliveries = burst.burst()
    assert len(deliveries) == 2
    final = wait_status(cluster, first["submission"], timeout=30)
    assert (final["done"], final["failed"]) == (1, 1)
    (failure,) = final["failures"]
    assert failure["path"] == "audio/fold1/3-0-0-0.wav"
    assert "resolves outside the dataset root" in failure["reason"]
    store = FeatureStore.open(store_url)
    assert store.done_mask().tolist() == [True, False]

    # crafted jobs sent straight to the queue: the symlinked clip again (refused and
    # recorded), and a path escaping the root at a done clip's index (refused; it names
    # no clip of the store, so no clip's record changes)
    base = {
        "submission_id": "crafted",
        "store_url": store_url,
        "dataset_root": str(root),
        "generation": store.generation,
    }
    crafted = {
        "crafted-symlink": ExtractJob(rel_path="audio/fold1/3-0-0-0.wav", clip_index=1, **base),
        "crafted-escape": ExtractJob(rel_path="audio/../../secret.wav", clip_index=0, **base),
    }
    for task_id, job in crafted.items():
        burst.app.send_task(EXTRACT_TASK, args=[job.to_dict()], task_id=task_id)
    deliveries = {d.task_id: d for d in burst.burst()}
    for task_id, words in (
        ("crafted-symlink", "resolves outside the dataset root"),
        ("crafted-escape", "is 'audio/fold1/1-0-0-0.wav', not this path"),
    ):
        error = deliveries[task_id].error
        assert _expected(burst, EXTRACT_TASK, error), (task_id, error)
        assert words in str(error), str(error)
    final = wait_status(cluster, first["submission"], timeout=30)
    assert (final["done"], final["failed"]) == (1, 1)
    assert store.done_mask().tolist() == [True, False]


# moved from test_queue_e2e.py (was: the same submissions with worker processes)
def test_grown_dataset_extracts_only_new_files(cluster, make_dataset, tmp_path):
    import csv

    root = make_dataset(n_classes=3, folds=2, clips_per_class_per_fold=2, seed=2)
    store_url = str(tmp_path / "features.zarr")
    burst = cluster.burst_worker()
    code, first = cluster.cli_json("submit-dataset", str(root), "--store", store_url, "--no-wait")
    assert code == 0 and first["enqueued"] == 12
    assert [d.error for d in burst.burst()] == [None] * 12
    assert progress(burst.client, store_url) == (12, 0)

    # the dataset grows by one fold's worth of files of another generated dataset
    extra = make_dataset(n_classes=3, folds=3, clips_per_class_per_fold=2, seed=3)
    meta_rows = list(csv.DictReader((extra / "metadata" / "UrbanSound8K.csv").open()))
    new_rows = [r for r in meta_rows if r["fold"] == "3"]
    (root / "audio" / "fold3").mkdir()
    for r in new_rows:
        src = extra / "audio" / "fold3" / r["slice_file_name"]
        # distinct recording ids, so that no new clip id equals an existing one
        r["slice_file_name"], r["fsID"] = f"9{r['slice_file_name']}", f"9{r['fsID']}"
        (root / "audio" / "fold3" / r["slice_file_name"]).write_bytes(src.read_bytes())
    with (root / "metadata" / "UrbanSound8K.csv").open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(new_rows[0]))
        writer.writerows(new_rows)

    code, second = cluster.cli_json("submit-dataset", str(root), "--store", store_url, "--no-wait")
    assert code == 0
    assert second["enqueued"] == len(new_rows) == 6
    assert second["skipped_already_done"] == 12
    # the burst worker still holds its handle of generation 1 (12 clips): the jobs'
    # generation 2 makes it reopen the store, else clips 12..17 would be out of range
    deliveries = burst.burst()
    assert [d.error for d in deliveries] == [None] * 6, [str(d.error) for d in deliveries]
    final = wait_status(cluster, second["submission"], timeout=30)
    assert (final["done"], final["failed"], final["remaining"]) == (18, 0, 0)
    store = FeatureStore.open(store_url)
    assert store.n_clips == 18 and store.done_mask().all()
    assert store.generation == 2
    assert_store_matches(store_url, root)


def test_job_of_a_newer_generation_reopens_the_store_and_an_older_one_is_refused(
    cluster, make_dataset, tmp_path
):
    """The worker context reopens its store handle for a job of a newer layout; a job
    that names a clip its (current) store does not hold is refused, never recorded."""
    from storage.store_layout import create_or_extend
    from workers.features import FeatureConfig

    root = tiny_dataset(tmp_path / "d", 3)
    store_url = str(tmp_path / "s.zarr")
    burst = cluster.burst_worker()
    code, first = cluster.cli_json("submit-dataset", str(root), "--store", store_url, "--no-wait")
    assert code == 0 and first["enqueued"] == 3
    assert [d.error for d in burst.burst()] == [None] * 3
    store = FeatureStore.open(store_url)
    assert store.generation == 1
    # a stale message: generation 1, an index past the store's clips
    stale = ExtractJob("old", store_url, str(root), "audio/fold1/none.wav", 7, 1)
    with pytest.raises(ClipError, match="clip index 7 is out of range") as refused:
        burst.run(EXTRACT_TASK, stale.to_dict(), task_id="stale")
    assert refused.value.job_mismatch
    assert progress(burst.client, store_url) == (3, 0), "a refused job records nothing"

    # the layout grows (generation 2) behind the worker's back
    grown = tiny_dataset(tmp_path / "d2", 5)
    from orchestrator.datasets import scan_dataset

    for rel in ("audio/fold4/100003-3-0-0.wav", "audio/fold5/100004-4-0-0.wav"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((grown / rel).read_bytes())
    (root / "metadata" / "UrbanSound8K.csv").write_bytes(
        (grown / "metadata" / "UrbanSound8K.csv").read_bytes()
    )
    config = FeatureConfig.from_dict(store.feature_config)
    create_or_extend(store_url, scan_dataset(root), config.to_dict(), store.window_shape)
    after = FeatureStore.open(store_url)
    assert after.generation == 2 and after.n_clips == 5
    jobs = [
        ExtractJob("new", store_url, str(root), str(after.rel_paths()[i]), i, 2) for i in (3, 4)
    ]
    batch = ExtractBatch(tuple(jobs))
    summary = burst.run(EXTRACT_BATCH_TASK, batch.to_dict(), task_id=batch.task_id())
    assert summary["done"] == 2
    assert progress(burst.client, store_url) == (5, 0)
    assert_store_matches(store_url, root)


@pytest.mark.parametrize("batch_size", [1, 5])
def test_queued_clips_are_not_enqueued_twice(cluster, make_dataset, tmp_path, batch_size):
    root = make_dataset(n_classes=2, folds=2, clips_per_class_per_fold=4, seed=4)
    store_url = str(tmp_path / "features.zarr")
    args = ("submit-dataset", str(root), "--store", store_url, "--batch-size", str(batch_size))
    # nothing runs yet: the first submission's messages stay in the queue
    code, first = cluster.cli_json(*args, "--no-wait")
    assert code == 0 and first["enqueued"] == 16
    code, second = cluster.cli_json(*args, "--no-wait")
    assert code == 0
    assert (second["enqueued"], second["already_queued"]) == (0, 16)
    burst = cluster.burst_worker()
    deliveries = burst.burst()
    assert len(deliveries) == -(-16 // batch_size) and not any(d.error for d in deliveries)
    final = wait_status(cluster, second["submission"], timeout=30)
    assert (final["done"], final["remaining"]) == (16, 0)
    code, third = cluster.cli_json(*args, "--no-wait")
    assert code == 0 and third["done"] == 16 and third["enqueued"] == 0
    assert third["skipped_already_done"] == 16
    assert FeatureStore.open(store_url).done_mask().all()


def _install_full_disk(monkeypatch, flag: Path, keys: str) -> None:
    """tests/fault_shims' full disk, in this process (undone after the test)."""
    import importlib.util

    path = Path(__file__).parent / "fault_shims" / "sitecustomize.py"
    spec = importlib.util.spec_from_file_location("esc_fault_shim", path)
    assert spec is not None and spec.loader is not None
    shim = importlib.util.module_from_spec(spec)
    monkeypatch.delenv("ESC_FAULT_ENOSPC_FLAG", raising=False)
    spec.loader.exec_module(shim)
    shim.install(str(flag), keys.split(","), monkeypatch.setattr)


# the logic of test_faults.py::test_store_not_writable_then_retry_failed (which keeps
# the real worker's retries for batches of 4), for both message kinds
@pytest.mark.parametrize("batch_size", [1, 4])
def test_store_not_writable_is_retried_then_recorded(
    cluster, make_dataset, tmp_path, monkeypatch, batch_size
):
    root = make_dataset(n_classes=2, folds=1, clips_per_class_per_fold=3, seconds=1.0, seed=14)
    store_url = str(tmp_path / "f.zarr")
    flag = tmp_path / "disk-full"
    flag.touch()
    # the completion marker fails after the windows chunk was written: a half-written
    # clip that must not count as done
    _install_full_disk(monkeypatch, flag, "clip_info/")
    burst = cluster.burst_worker()
    args = ("submit-dataset", str(root), "--store", store_url, "--batch-size", str(batch_size))
    code, queued = cluster.cli_json(*args, "--no-wait")
    assert code == 0
    n = queued["clips"]
    deliveries = burst.burst()
    messages = -(-n // batch_size)  # one message per store chunk (batch_size clips)
    retries = [d for d in deliveries if d.retried]
    # each message retried whole twice (ESC_TASK_MAX_RETRIES), then given up
    assert len(retries) == 2 * messages
    assert {d.error.humanize() for d in retries} == {"in 2s"}  # backoff capped at 2 s
    assert sorted(d.retries for d in deliveries) == sorted([0, 1, 2] * messages)
    final = [d for d in deliveries if not d.retried]
    assert len(final) == messages
    assert all(
        isinstance(d.error, ClipError if batch_size == 1 else ClipFailedError) for d in final
    )
    status = wait_status(cluster, queued["submission"], timeout=30)
    assert (status["done"], status["failed"], status["remaining"]) == (0, n, 0)
    for failure in status["failures"]:
        assert failure["path"].startswith("audio/fold1/")
        assert "No space left on device" in failure["reason"]
        assert "gave up after 3 attempts" in failure["reason"]  # 1 + ESC_TASK_MAX_RETRIES
    # nothing half-written counts as finished
    store = FeatureStore.open(store_url)
    assert not store.done_mask().any()
    check_store_chunks(store)

    flag.unlink()  # the disk has space again
    code, again = cluster.cli_json(*args, "--retry-failed", "--no-wait")
    assert code == 0 and again["enqueued"] == n
    assert not any(d.error for d in burst.burst())
    status = wait_status(cluster, again["submission"], timeout=30)
    assert (status["done"], status["failed"]) == (n, 0)
    assert_store_matches(store_url, root)


def test_redelivered_message_rewrites_the_same_bytes_and_records_once(cluster, tmp_path):
    """A message delivered twice (visibility timeout, requeue after a lost child) and a
    clip of a batch sent alone again: same bytes, one outcome per clip."""
    root = tiny_dataset(tmp_path / "d", 6)
    store_url = str(tmp_path / "s.zarr")
    burst = cluster.burst_worker()
    args = ("submit-dataset", str(root), "--store", store_url, "--batch-size", "3")
    code, queued = cluster.cli_json(*args, "--no-wait")
    assert code == 0 and queued["enqueued"] == 6
    raw = burst.client.lrange("extract", 0, -1)
    assert len(raw) == 2
    for message in raw:  # every message twice in the queue
        burst.client.lpush("extract", message)
    deliveries = burst.burst()
    assert len(deliveries) == 4 and not any(d.error for d in deliveries)
    assert [d.result["done"] for d in deliveries] == [3, 3, 3, 3]
    store = FeatureStore.open(store_url)
    before = np.asarray(store._windows[:]).copy()
    job = ExtractJob("again", store_url, str(root), str(store.rel_paths()[4]), 4, 1)
    assert burst.run(EXTRACT_TASK, job.to_dict(), task_id=job.task_id())["done"] == 1
    np.testing.assert_array_equal(np.asarray(FeatureStore.open(store_url)._windows[:]), before)
    assert progress(burst.client, store_url) == (6, 0), "each clip recorded once"
    assert_store_matches(store_url, root)
