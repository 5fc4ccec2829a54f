"""A whole job under chaos: workers SIGKILLed and Redis restarted, against the same job undisturbed.

The job: ``submit-dataset --no-wait`` of a synthetic dataset, then, once every clip is
done, ``submit-cv --no-wait`` of a short cross-validation. No client waits on either:
the script only reads progress. Workers run under a small supervisor (a worker whose
main process exited is started again, as systemd or Kubernetes would). During the
chaos run, at random moments (seeded), the script SIGKILLs a random worker's main
process alone, its whole process group, or one pool child (extraction and training
workers alike), and stops or SIGKILLs Redis and restarts it on the same port after a
3-second outage. The same job then runs undisturbed (same data, fresh Redis and store)
for the time ratio; both runs happen in this invocation.

Counted at the end of each run, from the store, Redis and the worker logs:

- clips lost: clips of the submission not done in the store when the run ends (or
  when its deadline passed);
- clips written twice: clips whose extraction task succeeded more than once (a
  message redelivered after its worker died although the clip had been stored;
  harmless, tasks are idempotent);
- trials without exactly one result: trials of the run with no ``result.json``;
- the reconciler's counters (``esc:reconciler:stats``).

Usage::

    python benchmarks/chaos.py --clips 300 --kills 6 --redis-restarts 2 --trials 2

Short visibility timeout and reconciler interval (20 s, 2 s) as in the tests, so that
a run takes minutes, not the production quarter of an hour per killed main process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import redis

from contract.wire import RECONCILER_STATS_KEY
from orchestrator.embedded_redis import EmbeddedRedis
from orchestrator.local_workers import WorkerKind, start_worker, worker_command
from orchestrator.synthetic import make_synthetic_dataset
from storage.feature_store import FeatureStore
from storage.runs import RunStore
from workers.redis_records import SubmissionRecords

SUCCEEDED = re.compile(r"Task esc\.extract_clip\[([^\]]+)\] succeeded")
ENV = {
    "ESC_VISIBILITY_TIMEOUT": "20",
    "ESC_RESTORE_INTERVAL": "2",
    "ESC_RECONCILE_INTERVAL": "2",
    "ESC_RECONCILE_LEASE_SECONDS": "8",
    "ESC_TRIAL_LEASE_SECONDS": "15",
    "ESC_EXTRACT_BATCH": "1",  # one message per clip: executions are counted per clip
    "PYTHONUNBUFFERED": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


class Fleet:
    """Worker processes in slots; a slot whose main process exited gets a new one."""

    def __init__(self, home: Path, env: dict[str, str], slots: list[tuple[WorkerKind, int]]):
        self.home, self.env = home, env
        self.slots = slots
        self.procs: list[subprocess.Popen[bytes]] = []
        self.every: list[subprocess.Popen[bytes]] = []
        self.restarts = 0
        self._stop = threading.Event()
        for i in range(len(slots)):
            self.procs.append(self._start(i))
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _start(self, slot: int) -> subprocess.Popen[bytes]:
        kind, conc = self.slots[slot]
        name = f"{kind.value}{slot}-{len(self.every)}@chaos"
        cmd = worker_command(kind, concurrency=conc, name=name, loglevel="INFO")
        log = str(self.home / f"worker-{len(self.every)}.log")
        proc = start_worker(cmd, env=self.env, log_path=log)
        self.every.append(proc)
        return proc

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    self.procs[i] = self._start(i)
                    self.restarts += 1

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.home.glob("worker-*.log"))
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for proc in self.every:  # groups: orphaned children of mains killed alone too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(3)
        for proc in self.every:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class Chaos:
    """Faults to inject: kills (how, worker kind) and Redis restarts, counted as done."""

    rng: random.Random
    kills_left: int
    restarts_left: int
    offset: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    restarts: Counter[str] = field(default_factory=Counter)

    def kill_one(self, fleet: Fleet, kind: WorkerKind) -> None:
        candidates = [
            p for i, p in enumerate(fleet.procs) if fleet.slots[i][0] is kind and p.poll() is None
        ]
        if not candidates or self.kills_left <= 0:
            return
        proc = self.rng.choice(candidates)
        # main alone, whole group, pool child in turn, from a random start: each kind
        # happens whatever the seed
        how = ("main", "group", "child")[(self.offset + sum(self.kills.values())) % 3]
        try:
            if how == "main":
                os.kill(proc.pid, signal.SIGKILL)
            elif how == "group":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                children = [
                    c
                    for c in psutil.Process(proc.pid).children()
                    if c.status() != psutil.STATUS_ZOMBIE
                ]
                if not children:
                    return
                child = self.rng.choice(children)
                spin_until = time.monotonic() + 1
                while child.status() != psutil.STATUS_RUNNING and time.monotonic() < spin_until:
                    time.sleep(0.001)
                child.send_signal(signal.SIGKILL)
        except (ProcessLookupError, psutil.NoSuchProcess):
            return
        self.kills_left -= 1
        self.kills[f"{kind.value} {how}"] += 1

    def restart_redis(self, server: EmbeddedRedis, url: str) -> None:
        if self.restarts_left <= 0:
            return
        how = self.rng.choice(["stop", "kill"])
        if how == "stop":
            server.stop()
        else:
            server.kill()
        time.sleep(3)
        server.ensure_running(port=urlsplit(url).port)
        self.restarts_left -= 1
        self.restarts[how] += 1


def _cli(env: dict[str, str], *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"orchestrator {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def _progress(url: str, store_url: str) -> int:
    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
        done = SubmissionRecords(client, ttl=3600).progress(store_url).done
        client.close()
        return done
    except redis.RedisError:
        return -1  # Redis is restarting


def run_job(
    data: Path, work: Path, args: argparse.Namespace, chaos: Chaos | None
) -> dict[str, Any]:
    home = work / ("chaos" if chaos else "calm")
    server = EmbeddedRedis.for_home(home)
    url = server.ensure_running()
    env = {**os.environ, **ENV, "ESC_HOME": str(home), "REDIS_URL": url}
    store_url = str(home / "features.zarr")
    fleet = Fleet(
        home, env, [(WorkerKind.EXTRACT, 2), (WorkerKind.EXTRACT, 2), (WorkerKind.TRAIN, 1)]
    )
    started = time.monotonic()
    deadline = started + args.deadline
    n = 0
    try:
        sub = _cli(env, "submit-dataset", str(data), "--store", store_url, "--no-wait")
        n = int(sub["clips"])
        # extraction: faults at random fractions of the clips done
        events: list[tuple[float, str]] = []
        if chaos:
            n_extract_kills = chaos.kills_left - chaos.kills_left // 3
            events += [(chaos.rng.uniform(0.05, 0.8), "kill") for _ in range(n_extract_kills)]
            restarts = chaos.restarts_left
            events += [
                (chaos.rng.uniform(0.1, 0.7), "redis") for _ in range(restarts - restarts // 2)
            ]
            events.sort()
        while time.monotonic() < deadline:
            done = _progress(url, store_url)
            while events and done >= events[0][0] * n:
                _, what = events.pop(0)
                assert chaos is not None
                time.sleep(chaos.rng.uniform(0, 0.03))  # a random instant, often mid-fetch
                if what == "kill":
                    chaos.kill_one(fleet, WorkerKind.EXTRACT)
                else:
                    chaos.restart_redis(server, url)
            if done >= n:
                break
            time.sleep(0.1)
        extracted_s = time.monotonic() - started
        # cross-validation, once every clip is done; the remaining faults while trials train
        cv = _cli(
            env,
            *("submit-cv", "--store", store_url, "--plan", "seed", "--trials", str(args.trials)),
            *("--epochs", str(args.epochs), "--patience", str(args.epochs), "--no-wait"),
        )
        run_id = cv["run_id"]
        runs = RunStore(store_url)
        cv_started = time.monotonic()
        while time.monotonic() < deadline and runs.get_report(run_id) is None:
            faults_left = chaos and (chaos.kills_left or chaos.restarts_left)
            if chaos and faults_left and chaos.rng.random() < 0.05:  # one every ~20 s
                if chaos.kills_left and (not chaos.restarts_left or chaos.rng.random() < 0.7):
                    chaos.kill_one(fleet, WorkerKind.TRAIN)
                else:
                    chaos.restart_redis(server, url)
            time.sleep(1)
        cv_s = time.monotonic() - cv_started
        total_s = time.monotonic() - started
        store = FeatureStore.open(store_url)
        done_mask = store.done_mask()
        executions = Counter(SUCCEEDED.findall(fleet.logs()))
        results = runs.trial_results(run_id)
        client = redis.Redis.from_url(url)
        stats = {k.decode(): int(v) for k, v in client.hgetall(RECONCILER_STATS_KEY).items()}
        client.close()
        return {
            "run": "chaos" if chaos else "undisturbed",
            "clips": n,
            "kills": dict(chaos.kills) if chaos else {},
            "redis_restarts": dict(chaos.restarts) if chaos else {},
            "workers_restarted": fleet.restarts,
            "clips_lost": int(n - done_mask.sum()),
            "clips_written_twice": sum(1 for c in executions.values() if c > 1),
            "trials_without_one_result": args.trials - len(results),
            "report_complete": bool((runs.get_report(run_id) or {}).get("complete")),
            "reconciler": stats,
            "extract_s": round(extracted_s, 1),
            "cv_s": round(cv_s, 1),
            "total_s": round(total_s, 1),
        }
    finally:
        fleet.close()
        server.stop()


def _table(rows: list[dict[str, Any]]) -> str:
    def fmt(d: object) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) if isinstance(d, dict) and d else "0"

    header = (
        "| run | kills | Redis restarts | workers restarted | clips lost | clips written twice "
        "| trials without exactly one result | reconciler sent again | extract s | CV s | total s |"
    )
    lines = [header, "|" + "---|" * 11]
    for r in rows:
        rec = r["reconciler"]
        sent = (
            f"{rec.get('clips_requeued', 0)} clips, {rec.get('trials_requeued', 0)} trials, "
            f"{rec.get('clips_marked_done', 0)} marked done from the store"
        )
        lines.append(
            f"| {r['run']} | {fmt(r['kills'])} | {fmt(r['redis_restarts'])} | "
            f"{r['workers_restarted']} | {r['clips_lost']} of {r['clips']} | "
            f"{r['clips_written_twice']} | {r['trials_without_one_result']} | {sent} | "
            f"{r['extract_s']} | {r['cv_s']} | {r['total_s']} |"
        )
    calm, chaos = rows
    lines.append(
        f"\ntime to finish, chaos / undisturbed: {chaos['total_s'] / calm['total_s']:.2f}x "
        f"(extraction {chaos['extract_s'] / calm['extract_s']:.2f}x, "
        f"CV {chaos['cv_s'] / calm['cv_s']:.2f}x)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=300, help="clips (3 classes x 4 folds)")
    parser.add_argument("--kills", type=int, default=6, help="worker SIGKILLs")
    parser.add_argument("--redis-restarts", type=int, default=2)
    parser.add_argument("--trials", type=int, default=2, help="CV trials (seed plan)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--deadline", type=float, default=900, help="seconds per run, at most")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    with tempfile.TemporaryDirectory(prefix="esc-chaos-") as tmp:
        work = Path(tmp)
        per = max(1, round(args.clips / 12))
        data = make_synthetic_dataset(
            work / "data", n_classes=3, folds=4, clips_per_class_per_fold=per, seconds=1.0, seed=3
        )
        rng = random.Random(seed)
        chaos = Chaos(rng, args.kills, args.redis_restarts, offset=rng.randrange(3))
        rows = [run_job(data, work, args, chaos), run_job(data, work, args, None)]
    rows = rows[::-1]  # undisturbed first in the table
    print(f"seed {seed}; " + " ".join(sys.argv[1:]))
    print(json.dumps(rows))
    print(_table(rows))
    if rows[1]["clips_lost"] or rows[1]["trials_without_one_result"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
