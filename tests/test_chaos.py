"""No one waiting: workers SIGKILLed again and again, and the work still completes once.

A submission sent with ``--no-wait`` and a cross-validation run sent with ``--no-wait``;
no client follows them. Worker main processes (alone, or with their pool) and pool
children are SIGKILLed at random moments (the seed is printed); a killed main process
is replaced, as a supervisor would. Messages the dead held come back after the
visibility timeout; a message lost in the fetch window (kombu takes it with BRPOP
before it records it as unacknowledged: with tiny tasks a main process fetches almost
all the time, so random kills land there) is found and sent again by the workers'
reconciler (workers.reconciler). Waits scale with the work and the number of kills.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time

import psutil
import pytest
import redis

from contract.wire import OPEN_RUNS_KEY, RECONCILER_LEASE_KEY, RECONCILER_STATS_KEY
from orchestrator.local_workers import WorkerKind
from storage.feature_store import FeatureStore
from storage.runs import RunStore
from tests.reliability_helpers import (
    KILL_VISIBILITY_S,
    assert_store_matches,
    submit_no_wait,
    succeeded_ids,
    tiny_dataset,
    wait_progress,
    wait_status,
)

pytestmark = pytest.mark.timeout(900)

TRAIN_VISIBILITY_S = 20  # tests/conftest.py's default: a trial trains for seconds


def report(name: str, **numbers: object) -> None:
    print(f"RELIABILITY {name} {json.dumps(numbers)}")


def live_children(pid: int) -> list[psutil.Process]:
    try:
        return [c for c in psutil.Process(pid).children() if c.status() != psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def lease_holder_pid(client: redis.Redis) -> int | None:
    token = client.get(RECONCILER_LEASE_KEY)  # host:pid:tag (workers.reconciler)
    return int(token.decode().split(":")[1]) if token else None


def kill(rng: random.Random, how: str, proc, *, running_child: bool = True) -> bool:
    """SIGKILL ``proc``'s main process (``main``), its whole group (``group``) or one
    pool child (``child``, caught computing when possible). Whether something died."""
    try:
        if how == "main":  # the parent alone: its children finish what they run, then exit
            os.kill(proc.pid, signal.SIGKILL)
        elif how == "group":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            children = live_children(proc.pid)
            if not children:
                return False
            child = rng.choice(children)
            spin_until = time.monotonic() + (2 if running_child else 0)
            while child.status() != psutil.STATUS_RUNNING and time.monotonic() < spin_until:
                time.sleep(0.001)
            child.send_signal(signal.SIGKILL)
    except (ProcessLookupError, psutil.NoSuchProcess):
        return False
    return True


def trains_on(result, worker: str) -> bool:
    """Whether a trial task's last progress report came from ``worker``."""
    info = result.info
    return result.state == "PROGRESS" and isinstance(info, dict) and info.get("worker") == worker


def cleanup_groups(procs) -> None:
    """Orphaned pool children of main processes killed alone (their group lives on)."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.visibility_timeout(KILL_VISIBILITY_S)
def test_no_client_submission_survives_repeated_kills(cluster, tmp_path):
    seed = int(os.environ.get("ESC_CHAOS_SEED") or random.randrange(1 << 30))  # to replay
    rng = random.Random(seed)
    print(f"chaos seed {seed}")
    n = 800
    root = tiny_dataset(tmp_path / "d", n, seconds=0.5, sr=22050, seed=31)
    store_url = str(tmp_path / "f.zarr")
    client = redis.Redis.from_url(cluster.url)
    sub = submit_no_wait(cluster, root, store_url)  # nobody follows it
    assert sub["enqueued"] == n
    live = [
        cluster.start_worker(WorkerKind.EXTRACT, concurrency=2, name=f"w{i}@test", wait=False)
        for i in range(2)
    ]
    every = list(live)
    answered: set[int] = set()  # main pids that have answered a ping
    kinds = ["main", "group", "child", "child", "leader"]
    rng.shuffle(kinds)
    thresholds = sorted(rng.uniform(0.05, 0.7) for _ in kinds)
    kills: list[str] = []
    try:
        for kind, fraction in zip(kinds, thresholds, strict=True):
            if kind == "child":
                # A pool child killed before its main process enters the event loop ends
                # that worker (docs/reliability.md), a fault left to a supervisor; a ping
                # is answered from inside the loop, so wait for one first.
                for proc in live:
                    if proc.pid not in answered:
                        cluster.wait_for_worker(f"w{every.index(proc)}@test", proc)
                        answered.add(proc.pid)
            wait_progress(
                client,
                store_url,
                lambda d, f, x=fraction: d >= x * n,
                timeout=120 + 30 * len(kills),
            )
            time.sleep(rng.uniform(0, 0.03))  # a random instant, often mid-fetch
            if kind == "leader":  # the reconciler's holder: another must take over
                pid = lease_holder_pid(client)
                victims = [p for p in live if p.pid == pid] or live
                how = "group"
            else:
                victims, how = live, kind
            victim = rng.choice(victims)
            if not kill(rng, how, victim):
                continue
            kills.append(f"{kind}:{victim.pid}")
            if how != "child":
                live.remove(victim)
                name = f"w{len(every)}@test"
                replacement = cluster.start_worker(
                    WorkerKind.EXTRACT, concurrency=2, name=name, wait=False
                )
                live.append(replacement)
                every.append(replacement)
        main_kills = sum(not k.startswith("child") for k in kills)
        # nobody waits: each main kill costs at most the visibility timeout plus a sweep,
        # a lost message two reconciler passes
        final = wait_status(
            cluster,
            sub["submission"],
            timeout=120 + 2 * KILL_VISIBILITY_S * (main_kills + 1),
        )
        assert (final["done"], final["failed"], final["remaining"]) == (n, 0, 0), final
        # messages of the dead come back and are run again: harmless, and they drain
        deadline = time.monotonic() + 4 * KILL_VISIBILITY_S
        while client.llen("extract") or client.hlen("unacked"):
            assert time.monotonic() < deadline, "queue or unacked never drained"
            time.sleep(1)
    finally:
        cleanup_groups(every)
    store = assert_store_matches(store_url, root, indices=range(0, n, 25))
    assert store.n_clips == n, "each clip has exactly one row"
    assert len(set(store.clip_ids().tolist())) == n
    records = [k for k in client.scan_iter("esc:store:*:done")]
    assert len(records) == 1 and client.hlen(records[0]) == n
    ids = succeeded_ids(cluster.worker_logs())
    assert len(set(ids)) == n, "every clip's task succeeded at least once"
    stats = {k.decode(): int(v) for k, v in client.hgetall(RECONCILER_STATS_KEY).items()}
    report(
        "chaos_extract",
        seed=seed,
        clips=n,
        kills=kills,
        reconciler=stats,
        clips_run_more_than_once=len(ids) - len(set(ids)),
    )


def test_no_client_cv_run_survives_repeated_kills(cluster, make_dataset, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"chaos seed {seed}")
    root = make_dataset(n_classes=3, folds=4, clips_per_class_per_fold=4, seed=5)
    store_url = str(tmp_path / "features.zarr")
    extractor = cluster.start_worker(WorkerKind.EXTRACT, concurrency=1)
    code, summary = cluster.cli_json("submit-dataset", str(root), "--store", store_url)
    assert code == 0 and summary["done"] == 48
    n_trials = 2
    args = ("submit-cv", "--store", store_url, "--plan", "seed", "--trials", str(n_trials))
    code, queued = cluster.cli_json(*args, "--epochs", "4", "--patience", "4", "--no-wait")
    assert code == 0
    run_id = queued["run_id"]
    runs = RunStore(store_url)
    from contract.settings import Settings
    from workers.celery_app import create_app

    app = create_app(Settings.from_env(cluster.env))
    trainer_name = "t0@test"
    trainer = cluster.start_worker(WorkerKind.TRAIN, name=trainer_name, wait=False)
    every = [extractor, trainer]
    kinds = ["child", "group", "main"]
    rng.shuffle(kinds)
    kills: list[str] = []
    started = time.monotonic()
    try:
        for kind in kinds:
            # wait until the live trainer trains a trial (reports progress), then kill at a
            # random instant. The progress of a killed trainer stays in the backend, and a
            # pool child killed before its main process enters its event loop takes the main
            # process down ("Could not start worker processes", left to a supervisor): so
            # only progress from the live trainer counts.
            deadline = time.monotonic() + 300
            while not any(
                trains_on(app.AsyncResult(f"trial-{run_id}-{k}"), trainer_name)
                for k in range(n_trials)
                if runs.trial_result(run_id, k) is None
            ):
                assert time.monotonic() < deadline, "no trial trained"
                if len(runs.trial_results(run_id)) == n_trials:
                    break
                time.sleep(0.3)
            time.sleep(rng.uniform(0, 2))
            if not kill(rng, kind, trainer):
                continue
            kills.append(f"{kind}:{trainer.pid}")
            if kind != "child":
                trainer_name = f"t{len(every)}@test"
                trainer = cluster.start_worker(WorkerKind.TRAIN, name=trainer_name, wait=False)
                every.append(trainer)
        main_kills = sum(k != "child" for k in kills)
        deadline = time.monotonic() + 300 + 3 * TRAIN_VISIBILITY_S * main_kills
        while runs.get_report(run_id) is None:
            assert time.monotonic() < deadline, cluster.worker_logs()[-4000:]
            time.sleep(1)
    finally:
        cleanup_groups(every[1:])
        app.close()
    report_ = runs.get_report(run_id)
    assert report_["complete"]
    assert sorted(t["trial"] for t in report_["trials"]) == list(range(n_trials))
    assert sorted(runs.trial_results(run_id)) == list(range(n_trials)), "one result per trial"
    store = FeatureStore.open(store_url)
    for k in range(n_trials):  # each result scores its whole test fold once
        test_fold = report_["trials"][k]["test_fold"]
        n_test = int((store.folds() == test_fold).sum())
        assert len(runs.load_predictions(run_id, k)["clip_labels"]) == n_test
    client = redis.Redis.from_url(cluster.url)
    deadline = time.monotonic() + 60
    while client.hexists(OPEN_RUNS_KEY, run_id):  # the reconciler closes the finished run
        assert time.monotonic() < deadline
        time.sleep(0.5)
    stats = {k.decode(): int(v) for k, v in client.hgetall(RECONCILER_STATS_KEY).items()}
    report(
        "chaos_cv",
        seed=seed,
        trials=n_trials,
        kills=kills,
        reconciler=stats,
        seconds=round(time.monotonic() - started, 1),
    )
