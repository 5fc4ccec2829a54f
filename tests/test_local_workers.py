"""``stop_workers``: every worker is told to stop before any is waited for; and the
worker command lines (trials per training child)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.local_workers import start_worker, stop_workers

# A stand-in worker. On SIGTERM it leaves `<name>.term` in its folder and, as a warm
# shutdown that lasts, waits until `expect` such files exist (every stand-in told to
# stop) or 10 s have passed, then records which and exits. With `expect` 0 it ignores
# SIGTERM (a worker stuck in a task).
STAND_IN = """
import pathlib, signal, sys, time
folder, name, expect = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def on_term(*_):
    if expect == 0:
        return
    (folder / f"{name}.term").touch()
    deadline = time.monotonic() + 10
    while len(list(folder.glob("*.term"))) < expect and time.monotonic() < deadline:
        time.sleep(0.01)
    together = len(list(folder.glob("*.term"))) >= expect
    (folder / f"{name}.exit").write_text("together" if together else "alone")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
(folder / f"{name}.ready").touch()
while True:
    time.sleep(0.05)
"""


def _start(folder: Path, name: str, expect: int) -> subprocess.Popen[bytes]:
    folder.mkdir(exist_ok=True)
    proc = start_worker([sys.executable, "-c", STAND_IN, str(folder), name, str(expect)])
    deadline = time.monotonic() + 30
    while not (folder / f"{name}.ready").exists():
        assert time.monotonic() < deadline, f"{name} did not start"
        time.sleep(0.02)
    return proc


def test_every_worker_gets_sigterm_before_any_is_waited_for(tmp_path):
    procs = [_start(tmp_path, f"w{i}", expect=3) for i in range(3)]
    stop_workers(procs, timeout=20)
    assert all(p.returncode == 0 for p in procs)  # warm: each exited by itself
    # each saw all three told to stop while it was still shutting down (one at a time,
    # the first would have waited alone until its 10 s ran out)
    assert [(tmp_path / f"w{i}.exit").read_text() for i in range(3)] == ["together"] * 3


def test_a_worker_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path, monkeypatch):
    stuck = _start(tmp_path / "stuck", "stuck", expect=0)
    polite = _start(tmp_path / "polite", "polite", expect=1)
    sent: list[tuple[int, int]] = []
    killpg = os.killpg

    def recording_killpg(pgid: int, sig: int) -> None:
        sent.append((pgid, sig))
        killpg(pgid, sig)

    monkeypatch.setattr(os, "killpg", recording_killpg)
    stop_workers([stuck, polite, polite], timeout=1)  # a process listed twice is fine
    assert polite.returncode == 0
    assert (tmp_path / "polite" / "polite.exit").read_text() == "together"
    assert stuck.returncode == -9  # SIGKILL
    # signalled once each: a second SIGTERM that reached the polite one after its Python
    # reset its handlers on the way out killed it (exit -15) on a loaded machine
    term, kill = signal.SIGTERM, signal.SIGKILL
    assert sorted(sent) == sorted([(stuck.pid, term), (polite.pid, term), (stuck.pid, kill)])


def _flag(cmd: list[str], flag: str) -> str | None:
    return cmd[cmd.index(flag) + 1] if flag in cmd else None


def test_trials_per_child_reaches_the_training_worker_only():
    from orchestrator.local_workers import WorkerKind, worker_command, worker_commands

    assert _flag(worker_command(WorkerKind.TRAIN), "--max-tasks-per-child") == "1"
    extract, train = worker_commands(WorkerKind.ALL, trials_per_child=5)
    assert _flag(train, "--max-tasks-per-child") == "5"
    assert _flag(extract, "--max-tasks-per-child") is None
    (alone,) = worker_commands(WorkerKind.TRAIN, trials_per_child=3)
    assert _flag(alone, "--max-tasks-per-child") == "3"
    (extract_only,) = worker_commands(WorkerKind.EXTRACT, trials_per_child=3)
    assert "--max-tasks-per-child" not in extract_only


def test_trials_per_child_setting_and_its_refusals(tmp_path):
    from contract.errors import EscError
    from contract.settings import Settings

    assert Settings.from_env({}).trials_per_child == 1
    assert Settings.from_env({"ESC_TRIALS_PER_CHILD": "10"}).trials_per_child == 10
    for bad in ("0", "-2", "many"):
        with pytest.raises(EscError, match="ESC_TRIALS_PER_CHILD"):
            Settings.from_env({"ESC_TRIALS_PER_CHILD": bad})

    # the command a user types: the setting, the option over it, a clear refusal
    env = {**os.environ, "ESC_HOME": str(tmp_path)}

    def worker(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", "worker", *args, "--dry-run"],
            env={**env, **extra},
            capture_output=True,
            text=True,
            check=False,
        )

    # one line per command, unwrapped (to copy into a shell or a unit file)
    shown = worker("train", ESC_TRIALS_PER_CHILD="4")
    assert len(shown.stdout.splitlines()) == 1
    assert shown.returncode == 0 and "--max-tasks-per-child 4" in shown.stdout
    assert "4 trials per child process" in " ".join(shown.stderr.split())
    shown = worker("train", "--trials-per-child", "2", ESC_TRIALS_PER_CHILD="4")
    assert shown.returncode == 0 and "--max-tasks-per-child 2" in shown.stdout
    assert "trials per child" not in worker("train").stderr  # the default says nothing
    refused = worker("train", ESC_TRIALS_PER_CHILD="0")
    assert refused.returncode == 2
    assert "ESC_TRIALS_PER_CHILD must be at least 1, got 0" in refused.stderr
    assert "Traceback" not in refused.stderr
