"""``stop_workers``: every worker is told to stop before any is waited for."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from orchestrator.local_workers import start_worker, stop_workers

# A stand-in worker: on SIGTERM it records the instant, takes `linger` seconds to
# finish (a warm shutdown), records its exit and exits; with `linger` < 0 it ignores
# SIGTERM (a worker stuck in a task).
STAND_IN = """
import signal, sys, time
log, linger = sys.argv[1], float(sys.argv[2])
def on_term(*_):
    if linger < 0:
        return
    with open(log, "a") as f:
        f.write(f"term {time.time()!r}\\n")
    time.sleep(linger)
    with open(log, "a") as f:
        f.write(f"exit {time.time()!r}\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open(log, "a").write("ready\\n")
while True:
    time.sleep(0.05)
"""


def _start(tmp_path: Path, name: str, linger: float) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"{name}.log"
    proc = start_worker([sys.executable, "-c", STAND_IN, str(log), str(linger)])
    deadline = time.monotonic() + 30
    while not (log.exists() and "ready" in log.read_text()):
        assert time.monotonic() < deadline, f"{name} did not start"
        time.sleep(0.02)
    return proc, log


def _times(log: Path, what: str) -> list[float]:
    lines = log.read_text().splitlines()
    return [float(line.split()[1]) for line in lines if line.startswith(what)]


def test_every_worker_gets_sigterm_before_any_has_exited(tmp_path):
    started = [_start(tmp_path, f"w{i}", linger=0.5) for i in range(3)]
    stop_workers([p for p, _ in started], timeout=20)
    assert all(p.returncode == 0 for p, _ in started)  # warm: each exited by itself
    terms = [t for _, log in started for t in _times(log, "term")]
    exits = [t for _, log in started for t in _times(log, "exit")]
    assert len(terms) == len(exits) == 3
    # overlapping shutdowns: the last SIGTERM arrived before the first worker finished
    assert max(terms) < min(exits)


def test_a_worker_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path):
    stuck, _ = _start(tmp_path, "stuck", linger=-1)
    polite, log = _start(tmp_path, "polite", linger=0.1)
    stop_workers([stuck, polite, polite], timeout=1)  # a process listed twice is fine
    assert polite.returncode == 0 and _times(log, "exit")
    assert stuck.returncode == -9  # SIGKILL
