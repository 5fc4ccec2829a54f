"""How long ``submit-dataset``'s scan takes at full-dataset size, and its per-file check.

On the real clips of ../shared/data/us8k-subset repeated ``--copies`` times under new
fsIDs (hard links; 11 copies: 8,635 clips, the full dataset's size), in one run:

1. ``orchestrator.datasets.scan_dataset`` (the metadata CSV, the listing, every file
   checked);
2. the per-file check alone, ``_check_file`` (one ``lstat`` per path part below the
   dataset root, ``contract.paths``), over every file;
3. the same check done the former way, as the baseline: ``os.path.realpath`` of each
   file (one ``lstat`` per part of the whole path), then ``isfile``, ``access`` and
   opening the file.

Best of ``--repeat`` rounds, in seconds.

    .venv/bin/python benchmarks/bench_scan.py [--copies K] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import SUBSET, subset_dataset

from contract.paths import is_inside
from contract.settings import Settings
from orchestrator.datasets import _check_file, scan_dataset


def _realpath_check(root: Path, rel_path: str) -> str | None:
    real = os.path.realpath(root / rel_path)
    if not is_inside(real, str(root)):
        return "outside"
    if not os.path.isfile(real) or not os.access(real, os.R_OK):
        return "unusable"
    with open(real, "rb"):
        pass
    return None


def _best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SUBSET)
    parser.add_argument("--copies", type=int, default=11)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    parent = Settings.from_env().home
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-scan-", dir=parent) as tmp:
        root = subset_dataset(args.data, Path(tmp), limit=10**6, copies=args.copies).resolve()
        rels = sorted(str(p.relative_to(root)) for p in root.glob("audio/fold*/*.wav"))
        assert all(_check_file(root, r) is None for r in rels)
        rows = [
            ("scan_dataset (whole scan)", _best(lambda: scan_dataset(root), args.repeat)),
            (
                "file check: lstat per part (ours)",
                _best(lambda: [_check_file(root, r) for r in rels], args.repeat),
            ),
            (
                "file check: realpath per file (before)",
                _best(lambda: [_realpath_check(root, r) for r in rels], args.repeat),
            ),
        ]
    print(f"\n{'step':40} {'files':>6} {'best s':>7} {'us per file':>12}")
    for label, secs in rows:
        print(f"{label:40} {len(rels):>6} {secs:>7.3f} {secs / len(rels) * 1e6:>12.1f}")
    print(f"\nbest of {args.repeat} rounds; dataset under {parent}")


if __name__ == "__main__":
    main()
