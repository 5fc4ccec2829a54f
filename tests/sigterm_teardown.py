"""A pytest plugin: SIGTERM ends the session the way Ctrl-C does, fixtures torn down.

pytest handles ``KeyboardInterrupt`` (it stops, then tears every active fixture down)
but installs nothing for SIGTERM, whose default action ends the process at once. A CI
job that times out, ``timeout(1)`` or ``kill`` therefore left the suite's Redis
servers and Celery worker processes running, holding ports and CPU for whatever runs
next on the machine. With this plugin the first SIGTERM raises ``KeyboardInterrupt``
in the main thread; a second one (say, during a teardown that hangs) has the default
action again. Loaded from ``tests/conftest.py``, so xdist's worker processes have it
too.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import pytest

_previous: signal.Handlers | None = None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt(f"signal {signum} (SIGTERM): tearing the test session down")


def pytest_configure(config: pytest.Config) -> None:
    global _previous
    if threading.current_thread() is threading.main_thread():
        _previous = signal.signal(signal.SIGTERM, _interrupt)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _previous)
