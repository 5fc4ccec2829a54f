"""The worker processes' allocator setting: fewer page faults, wired to the settings."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from contract.settings import Settings
from workers import allocator

glibc_only = pytest.mark.skipif(allocator._libc() is None, reason="needs glibc's mallopt (Linux)")

# Allocates three arrays (6, 3 and 5 MiB) and frees them, 100 times, as extraction
# does with each clip's frames and spectra, and counts the loop's minor page faults.
FAULTS = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    from workers.allocator import keep_freed_memory
    tuned = keep_freed_memory() if sys.argv[1] == "keep" else None
    def one_round():
        arrays = [np.ones(n * 2**17) for n in (6, 3, 5)]  # MiB of float64
        del arrays
    one_round()  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        one_round()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(json.dumps({"tuned": tuned, "faults": after - before}))
    """
)


def _faults(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@glibc_only
def test_keeping_freed_memory_spares_the_page_faults():
    default = _faults("default")
    kept = _faults("keep")
    assert kept["tuned"] is True
    # glibc's defaults hand the 14 MiB back each round and fault them in again
    # (~3,600 faults per round); kept, the pages stay mapped
    assert default["faults"] > 100 * 1000
    assert kept["faults"] < default["faults"] / 20


def test_setting_is_read_from_the_environment():
    assert Settings.from_env({}).keep_freed_memory is True
    assert Settings.from_env({"ESC_KEEP_FREED_MEMORY": "0"}).keep_freed_memory is False
    assert Settings.from_env({"ESC_KEEP_FREED_MEMORY": "off"}).keep_freed_memory is False
    assert Settings.from_env({"ESC_KEEP_FREED_MEMORY": "yes"}).keep_freed_memory is True
    with pytest.raises(ValueError, match="ESC_KEEP_FREED_MEMORY"):
        Settings.from_env({"ESC_KEEP_FREED_MEMORY": "maybe"})


@pytest.mark.parametrize("enabled", [True, False])
def test_worker_start_applies_the_setting(monkeypatch, enabled):
    from workers import tasks

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda **kw: calls.append(kw) or True)
    worker = SimpleNamespace(app=SimpleNamespace(esc_settings=Settings(keep_freed_memory=enabled)))
    tasks._tune_allocator(worker)
    assert len(calls) == (1 if enabled else 0)
