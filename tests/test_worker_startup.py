"""What a worker's main process loads before it forks its pool (``workers.tasks``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from contract.wire import EXTRACT_QUEUE, TRAIN_QUEUE

# A real WorkController (Celery's worker, not started: building it sends worker_init),
# in a fresh interpreter so that the modules it loaded can be listed.
_BUILD = """
import json, sys
from contract.settings import Settings
from workers.celery_app import create_app
app = create_app(Settings.from_env())
before = "workers.extraction" in sys.modules
app.WorkController(queues=sys.argv[1:] or None, pool_cls="solo")
print(json.dumps([before, "workers.extraction" in sys.modules, "scipy.fft" in sys.modules]))
"""


@pytest.mark.parametrize(
    ("queues", "preloaded"),
    [([TRAIN_QUEUE], False), ([EXTRACT_QUEUE], True), ([], True)],
    ids=["train-only", "extract", "all-queues"],
)
def test_only_extraction_workers_preload_the_extraction_code(tmp_path, queues, preloaded):
    env = {**os.environ, "REDIS_URL": "redis://:unused@127.0.0.1:1/0", "ESC_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", _BUILD, *queues],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, extraction, fft = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not before  # loaded by worker_init, not by the app
    assert (extraction, fft) == (preloaded, preloaded)
