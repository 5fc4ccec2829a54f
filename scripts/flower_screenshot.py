"""Screenshot of Flower's task list after a small synthetic extraction (docs/flower.png).

    apt-get install -y chromium          # Debian's package: /usr/bin/chromium
    .venv/bin/python scripts/flower_screenshot.py [--out docs/flower.png]

Starts everything in a temporary ESC_HOME: the embedded Redis, one extraction
worker, ``orchestrator flower`` on 127.0.0.1 (without credentials: Chromium
does not send ``user:pass@`` URL credentials for the page's own requests, and the
server is only reachable from this machine), submits a synthetic dataset with
one bad file, then lets headless Chromium capture the tasks page.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from orchestrator.embedded_redis import EmbeddedRedis, free_port
from orchestrator.local_workers import (
    WorkerKind,
    start_worker,
    stop_worker,
    worker_command,
)
from orchestrator.synthetic import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]


def add_bad_clip(root: Path) -> None:
    name = "999-0-0-0.wav"
    (root / "audio" / "fold1" / name).write_bytes(b"not a wav file" * 20)
    meta = root / "metadata" / "UrbanSound8K.csv"
    rows = list(csv.DictReader(meta.open()))
    class_name = next(r["class"] for r in rows if r["classID"] == "0")
    with meta.open("a", newline="") as fh:
        csv.writer(fh).writerow([name, 999, 0.0, 1.0, 1, 1, 0, class_name])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "flower.png")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--page", default="tasks", help="Flower page: tasks, workers, ...")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="esc-flower-") as tmp:
        work = Path(tmp)
        home = work / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "REDIS_"))}
        env.update({"ESC_HOME": str(home), "PYTHONUNBUFFERED": "1"})
        server = EmbeddedRedis.for_home(home)
        server.ensure_running()
        root = make_synthetic_dataset(
            work / "data", n_classes=4, folds=2, clips_per_class_per_fold=3, seed=3
        )
        add_bad_clip(root)
        worker = start_worker(
            worker_command(WorkerKind.EXTRACT, concurrency=2, loglevel="WARNING"),
            env=env,
            log_path=str(work / "worker.log"),
        )
        port = free_port()
        flower = start_worker(
            [sys.executable, "-m", "orchestrator", "flower", "--port", str(port)],
            env=env,
            log_path=str(work / "flower.log"),
        )
        base = f"http://127.0.0.1:{port}"
        cli = [sys.executable, "-m", "orchestrator"]
        try:
            wait_http(f"{base}/healthcheck")
            time.sleep(3)  # let the worker come online
            subprocess.run(
                [*cli, "submit-dataset", str(root), "--store", str(work / "f.zarr"), "--wait"],
                env=env,
                check=False,
            )
            time.sleep(3)  # Flower receives the last events
            profile = work / "chromium-profile"
            args.out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    args.chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    f"--user-data-dir={profile}",
                    "--window-size=1400,900",
                    "--virtual-time-budget=8000",
                    f"--screenshot={args.out.resolve()}",
                    f"{base}/{args.page}",
                ],
                check=True,
                timeout=120,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            print(f"wrote {args.out}")
        finally:
            stop_worker(flower, timeout=10)
            stop_worker(worker, timeout=10)
            server.stop()


if __name__ == "__main__":
    main()
