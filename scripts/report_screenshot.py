"""Screenshot of a run's HTML report (docs/report.png).

    apt-get install -y chromium          # Debian's package: /usr/bin/chromium
    .venv/bin/python scripts/report_screenshot.py [--out docs/report.png] [--epochs 6]

Builds a small real run in a temporary folder (synthetic dataset of 4 classes and 2
folds, features extracted in-process, 2 official trials trained by the trial
runner), writes its page with ``orchestrator cv-report --html`` and lets headless
Chromium capture it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.run_helpers import build_tiny_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "report.png")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--height", type=int, default=2300)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="esc-report-") as tmp:
        work = Path(tmp)
        runs, run_id, _ = build_tiny_run(work, n_classes=4, clips=8, epochs=args.epochs)
        page = work / "report.html"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run(
            [sys.executable, "-m", "orchestrator", "cv-report", run_id, "--store",
             runs.store_url, "--html", str(page)],
            check=True, env=env,
        )  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                args.chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--allow-file-access-from-files",
                f"--user-data-dir={work / 'profile'}",
                f"--window-size=1300,{args.height}",
                "--virtual-time-budget=8000",
                f"--screenshot={args.out.resolve()}",
                page.as_uri(),
            ],
            check=True,
            timeout=180,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
