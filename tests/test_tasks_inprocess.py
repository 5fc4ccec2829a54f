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

import numpy as np
import pytest
import redis

from contract.errors import ClipError
from contract.wire import EXTRACT_TASK, ExtractJob
from storage.feature_store import FeatureStore
from tests.reliability_helpers import (
    assert_store_matches,
    tiny_dataset,
    wait_status,
    write_rows,
)
from tests.test_bad_input import _noise, _wav_bytes
from workers.extraction import resolve_clip_path

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
