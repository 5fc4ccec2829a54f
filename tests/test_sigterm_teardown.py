"""A pytest run ended by SIGTERM tears its fixtures down (tests/sigterm_teardown.py).

Each case runs a small pytest session in a subprocess whose fixture starts a child
process (standing in for a Redis server or a Celery worker), sends the session SIGTERM
while its test runs, and looks at what is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

INNER_TEST = """
import subprocess, sys, time
from pathlib import Path
import pytest

@pytest.fixture
def child():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path({pid_file!r}).write_text(str(proc.pid))
    yield proc
    proc.kill()
    proc.wait()
    Path({done_file!r}).write_text("torn down")

def test_waits(child):
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _run_and_terminate(tmp_path: Path, plugin_args: list[str]) -> tuple[int, int, Path]:
    """Start the inner session, SIGTERM it once its fixture is up; (rc, child pid, done)."""
    pid_file, done_file = tmp_path / "child.pid", tmp_path / "done"
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(INNER_TEST.format(pid_file=str(pid_file), done_file=str(done_file)))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin_args,
         "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(test_file)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    # the fixture is up once the child's pid is written (pytest's start-up: seconds)
    deadline = time.monotonic() + 120
    while not pid_file.exists() or not pid_file.read_text():
        assert proc.poll() is None, proc.communicate()[0].decode()
        assert time.monotonic() < deadline, "the inner session never reached its test"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    return proc.returncode, int(pid_file.read_text()), done_file


def test_sigterm_tears_fixtures_down(tmp_path: Path) -> None:
    rc, child, done = _run_and_terminate(tmp_path, ["-p", "tests.sigterm_teardown"])
    assert rc == pytest.ExitCode.INTERRUPTED
    assert done.read_text() == "torn down"
    assert not _alive(child)


def test_without_the_plugin_sigterm_leaves_the_child_behind(tmp_path: Path) -> None:
    """The control: what the plugin fixes (so the test above can fail)."""
    rc, child, done = _run_and_terminate(tmp_path, [])
    try:
        assert rc == -signal.SIGTERM
        assert not done.exists()
        assert _alive(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
