"""A worker's pool forks children while the reconciler thread works (workers.fork_guard).

Each check runs in a fresh interpreter: it forks, and forking the test process (with
pytest-xdist's threads) would be a hazard of its own. A child that deadlocks is ended
by an alarm, so a regression shows as exit code -14 (SIGALRM), never as a hung suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

# The real ReconcilerThread, against a real Redis, whose pass imports a module (its first
# pass over a run imported scikit-learn). The module's import blocks until a file
# exists; the main thread forks while it blocks, as the pool does when it replaces a
# child, and a timer thread lets the import finish a second later. The child then
# imports the same module, as the training task does.
_FORK_DURING_PASS = """
import os, signal, sys, threading, time
from contract.settings import Settings
from workers.celery_app import create_app
from workers import reconciler as rec

def slow_pass(self, still_leader=lambda: True):
    import slow_module  # noqa: F401
    return rec.PassReport()
rec.Reconciler.run_pass = slow_pass

settings = Settings.from_env()
thread = rec.ReconcilerThread(create_app(settings), settings)
thread.start()
deadline = time.monotonic() + 30
while "slow_module" not in sys.modules:  # the pass is inside the import from here on
    assert time.monotonic() < deadline, "the reconciler made no pass"
    time.sleep(0.01)
assert not hasattr(sys.modules["slow_module"], "VALUE")
threading.Timer(1.0, lambda: open(os.environ["SLOW_MODULE_GO"], "w").close()).start()
pid = os.fork()
if pid == 0:
    signal.alarm(20)
    import slow_module
    os._exit(0 if slow_module.VALUE == 1 else 3)
imported_before_fork = hasattr(sys.modules["slow_module"], "VALUE")
_, status = os.waitpid(pid, 0)
thread.stop()
print(os.waitstatus_to_exitcode(status), imported_before_fork)
"""

_SLOW_MODULE = """
import os, time
while not os.path.exists(os.environ["SLOW_MODULE_GO"]):
    time.sleep(0.01)
VALUE = 1
"""


def _run(script: str, tmp_path: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def test_a_fork_during_a_reconciler_pass_waits_for_it(redis_server, tmp_path):
    (tmp_path / "slow_module.py").write_text(_SLOW_MODULE)
    _, url = redis_server.lend()
    env = {
        "REDIS_URL": url,
        "ESC_HOME": str(tmp_path / "home"),
        "ESC_RECONCILE_INTERVAL": "1",
        "SLOW_MODULE_GO": str(tmp_path / "go"),
    }
    code, imported_before_fork = _run(_FORK_DURING_PASS, tmp_path, env).split()
    # without the guard the child blocks on the import lock the parent's thread held
    assert int(code) == 0
    # the fork waited until the pass had finished its import
    assert imported_before_fork == "True"


def test_a_child_starts_with_a_free_guard(tmp_path):
    script = """
    import os, signal, threading
    from workers.fork_guard import fork_guard
    held = threading.Event(); release = threading.Event()
    def work():
        with fork_guard.held():
            held.set()
            release.wait()
    t = threading.Thread(target=work); t.start(); held.wait()
    threading.Timer(0.5, release.set).start()
    pid = os.fork()  # waits until work() leaves its block
    if pid == 0:
        signal.alarm(10)
        with fork_guard.held():  # the child's guard is not the one taken for the fork
            os._exit(0)
    assert release.is_set()
    _, status = os.waitpid(pid, 0)
    with fork_guard.held():  # released in the parent after the fork
        print(os.waitstatus_to_exitcode(status))
    """
    assert _run(script, tmp_path, {}) == "0"
