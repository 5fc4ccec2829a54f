"""The workers' reconciler (workers.reconciler): lost messages come back with no client waiting.

A real Redis server, real ``celery worker`` processes and the ``orchestrator`` CLI as
a subprocess, as in tests/test_faults.py. A message "lost" the way kombu's Redis
transport loses one (fetched by a worker killed before it was recorded as
unacknowledged) is simulated by taking it out of the queue list: it is then in
neither the queue nor ``unacked``, exactly the state such a loss leaves. The tests
that SIGKILL workers at random moments are in tests/test_chaos.py.
"""

from __future__ import annotations

import json
import time

import pytest
import redis

from contract.wire import OPEN_RUNS_KEY, OPEN_SUBMISSIONS_KEY, RECONCILER_STATS_KEY
from orchestrator.local_workers import WorkerKind
from storage.runs import RunStore
from tests.reliability_helpers import (
    assert_store_matches,
    submit_no_wait,
    succeeded_ids,
    tiny_dataset,
    wait_status,
)
from workers.reconciler import Lease

pytestmark = pytest.mark.timeout(600)


def stats(client: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(RECONCILER_STATS_KEY).items()}


def wait_until(what: str, check, *, timeout: float, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"{what}: not after {timeout} s")


def test_lease_has_one_holder_and_passes_on_when_it_expires(cluster):
    client = redis.Redis.from_url(cluster.url)
    first = Lease(client, "esc:test:lease", 1.0, "first")
    second = Lease(client, "esc:test:lease", 1.0, "second")
    assert first.hold()
    assert not second.hold(), "only one holder at a time"
    assert first.hold(), "the holder renews its own lease"
    # the holder stops renewing (its worker died): the lease expires, the other takes it
    wait_until("the second takes over", second.hold, timeout=30, poll=0.2)
    assert not first.hold()
    first.release()  # not the holder: nothing happens
    assert client.get("esc:test:lease") == b"second"
    second.release()
    assert not client.exists("esc:test:lease")


def test_lost_clip_messages_are_sent_again_with_no_client(cluster, tmp_path):
    n = 60
    root = tiny_dataset(tmp_path / "d", n, seconds=0.1, sr=8000, seed=21)
    store_url = str(tmp_path / "f.zarr")
    client = redis.Redis.from_url(cluster.url)
    sub = submit_no_wait(cluster, root, store_url)  # no worker yet: all 60 wait
    assert client.llen("extract") == n
    assert json.loads(client.hget(OPEN_SUBMISSIONS_KEY, sub["submission"])) == {
        "store_url": store_url
    }
    # three messages vanish as with a worker killed between BRPOP and its bookkeeping
    lost = [client.rpop("extract"), client.rpop("extract"), client.lpop("extract")]
    assert all(lost) and client.llen("extract") == n - 3
    # two workers: both run a reconciler thread, one holds the lease
    cluster.start_worker(WorkerKind.EXTRACT, concurrency=1, name="a@test", wait=False)
    cluster.start_worker(WorkerKind.EXTRACT, concurrency=1, name="b@test", wait=False)

    # nobody waits on the submission: it completes by itself
    final = wait_status(cluster, sub["submission"], timeout=180)
    assert (final["done"], final["failed"], final["remaining"]) == (n, 0, 0)
    assert_store_matches(store_url, root)
    ids = succeeded_ids(cluster.worker_logs())
    assert len(ids) == len(set(ids)) == n, "each clip ran exactly once"
    # counts are written at the end of the pass, maybe after the resent clips ran
    wait_until("requeues counted", lambda: "clips_requeued" in stats(client), timeout=60)
    assert stats(client)["clips_requeued"] == 3
    logs = cluster.worker_logs()
    assert logs.count("lost clip message(s) of store") >= 1
    # the submission is no longer watched once every clip is settled
    wait_until(
        "submission closed",
        lambda: not client.hexists(OPEN_SUBMISSIONS_KEY, sub["submission"]),
        timeout=60,
    )
    holders = {line.rsplit("(", 1)[-1] for line in logs.splitlines() if "holds the lease" in line}
    assert len(holders) == 1, f"one reconciler for the two workers: {holders}"


def test_clip_stored_but_its_outcome_lost_is_marked_done_not_redone(cluster, tmp_path):
    """After a Redis crash a clip can be in the store without its outcome record (and
    without its message): the reconciler reads the store and records it as done."""
    n = 20
    root = tiny_dataset(tmp_path / "d", n, seconds=0.1, sr=8000, seed=22)
    store_url = str(tmp_path / "f.zarr")
    client = redis.Redis.from_url(cluster.url)
    # extracted by the middle tier's in-process task bodies (no reconciler runs there)
    code, first = cluster.cli_json("submit-dataset", str(root), "--store", store_url, "--no-wait")
    assert code == 0 and first["enqueued"] == n
    extracted = cluster.burst_worker().burst()
    assert len(extracted) == n and not any(d.error for d in extracted)
    assert wait_status(cluster, first["submission"], timeout=60)["done"] == n
    # a second, open submission over the same store whose clips' outcome records vanish
    from workers.redis_records import SubmissionRecords

    records = SubmissionRecords(client, ttl=3600)
    records.open_submission(first["submission"], store_url, list(range(n)))
    key = next(k for k in client.scan_iter("esc:store:*:done"))
    client.hdel(key, "3", "7")
    assert client.hlen(key) == n - 2
    cluster.start_worker(WorkerKind.EXTRACT, concurrency=1, name="reconciling@test")
    # the pass writes the outcomes first and its counts after both of its halves
    # (extraction, trials): wait for the counts, not only for the outcomes
    wait_until(
        "outcomes restored and counted",
        lambda: client.hlen(key) == n and "clips_marked_done" in stats(client),
        timeout=120,
    )
    assert stats(client)["clips_marked_done"] == 2
    assert stats(client).get("clips_requeued", 0) == 0, "nothing extracted again"
    assert succeeded_ids(cluster.worker_logs()) == [], "the reconciling worker ran no task"
    assert client.llen("extract") == 0


def test_lost_trial_message_is_sent_again_with_no_client(cluster, make_dataset, tmp_path):
    root = make_dataset(n_classes=3, folds=4, clips_per_class_per_fold=4, seed=5)
    store_url = str(tmp_path / "features.zarr")
    # extracted by the middle tier's in-process task bodies (the trials are the subject)
    code, summary = cluster.cli_json("submit-dataset", str(root), "--store", store_url, "--no-wait")
    assert code == 0 and summary["enqueued"] == 48
    extracted = cluster.burst_worker().burst()
    assert len(extracted) == 48 and not any(d.error for d in extracted)
    client = redis.Redis.from_url(cluster.url)
    args = ("submit-cv", "--store", store_url, "--plan", "seed", "--trials", "2")
    code, queued = cluster.cli_json(*args, "--epochs", "2", "--no-wait")  # no training worker
    assert code == 0
    run_id = queued["run_id"]
    assert client.hexists(OPEN_RUNS_KEY, run_id)
    assert client.llen("gpu") == 2
    assert client.rpop("gpu") is not None  # one trial message vanishes
    cluster.start_worker(WorkerKind.TRAIN, wait=False)

    runs = RunStore(store_url)
    report = wait_until("run report", lambda: runs.get_report(run_id), timeout=400, poll=1.0)
    assert report["complete"] and sorted(t["trial"] for t in report["trials"]) == [0, 1]
    assert sorted(runs.trial_results(run_id)) == [0, 1], "one result per trial"
    assert stats(client)["trials_requeued"] == 1
    wait_until("run closed", lambda: not client.hexists(OPEN_RUNS_KEY, run_id), timeout=60)


def test_passes_send_only_what_was_lost_twice_and_give_up_on_a_clip_that_keeps_vanishing(
    cluster, tmp_path
):
    """The reconciler's passes run here, in the test process, with no worker at all."""
    from contract.settings import Settings
    from workers.celery_app import create_app
    from workers.reconciler import MAX_RESENDS, Reconciler

    root = tiny_dataset(tmp_path / "d", 5, seconds=0.1, sr=8000, seed=23)
    store_url = str(tmp_path / "f.zarr")
    client = redis.Redis.from_url(cluster.url)
    sub = submit_no_wait(cluster, root, store_url)
    app = create_app(Settings.from_env(cluster.env))
    reconciler = Reconciler(app, client, app.esc_settings)
    try:
        assert reconciler.run_pass().clips_requeued == {}, "all 5 are queued: nothing lost"
        client.delete("extract")  # every message vanishes, again and again
        for resend in range(MAX_RESENDS):
            first = reconciler.run_pass()
            assert first.clips_requeued == {} and first.suspects == 5, "seen once: not yet"
            second = reconciler.run_pass()
            assert second.clips_requeued == {sub["submission"]: [0, 1, 2, 3, 4]}, resend
            assert client.llen("extract") == 5
            client.delete("extract")
        reconciler.run_pass()
        final = reconciler.run_pass()
        assert final.clips_requeued == {} and client.llen("extract") == 0
        status = wait_status(cluster, sub["submission"], timeout=60)
        assert (status["done"], status["failed"]) == (0, 5)
        assert all("vanished" in f["reason"] for f in status["failures"])
        reconciler.run_pass()
        assert not client.hexists(OPEN_SUBMISSIONS_KEY, sub["submission"])
    finally:
        app.close()
