"""Resident memory of one process that trains trial after trial (a training worker's
child with ``ESC_TRIALS_PER_CHILD`` > 1 does this).

For each ``--windows`` size, a fresh process runs ``--trials`` trials of the default
model (``workers.training.train_and_evaluate``, ``--epochs`` epochs, random windows of
the real shape, 5 classes) one after the other; after each trial it runs a garbage
collection and, with ``--trim``, asks glibc to return free heap memory (``malloc_trim``).
The table: resident set after each trial, its growth over the previous trial, and how
many TensorFlow ``FuncGraph`` objects (traced steps) are alive then.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trial_memory.py \\
        [--windows 1500 3000] [--trials 4] [--epochs 2] [--trim]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def child(windows: int, trials: int, epochs: int, trim: bool) -> None:
    """The trials in this process; one JSON line per trial."""
    import keras
    import numpy as np

    from workers.training import train_and_evaluate
    from workers.trial_config import TrialConfig

    rng = np.random.default_rng(0)
    x = rng.normal(size=(windows, 60, 41, 2)).astype(np.float32)
    y = rng.integers(0, 5, windows)
    clips = np.arange(40)
    libc = ctypes.CDLL("libc.so.6") if trim else None
    for k in range(trials):
        outcome = train_and_evaluate(
            x,
            y,
            x[:200],
            y[:200],
            test_windows=x[:280],
            test_window_labels=y[:280],
            test_window_clips=np.repeat(clips, 7),
            test_clips=clips,
            test_clip_labels=y[:40],
            n_classes=5,
            config=TrialConfig(epochs=epochs, patience=epochs),
        )
        del outcome
        gc.collect()
        if libc is not None:
            libc.malloc_trim(0)
        graphs = None
        if keras.backend.backend() == "tensorflow":
            from tensorflow.python.framework.func_graph import FuncGraph

            graphs = sum(isinstance(o, FuncGraph) for o in gc.get_objects())
        rss = int(Path("/proc/self/statm").read_text().split()[1]) * PAGE / 2**20
        print(json.dumps({"trial": k, "rss_mb": rss, "func_graphs": graphs}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[1500, 3000])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) after each trial")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.trials, args.epochs, args.trim)
        return
    print("| training windows | trial | RSS MB | growth MB | live FuncGraphs |")
    print("|---:|---:|---:|---:|---:|")
    for windows in args.windows:
        cmd = [sys.executable, __file__, "--child", str(windows), "--trials", str(args.trials)]
        cmd += ["--epochs", str(args.epochs), *(["--trim"] if args.trim else [])]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        previous = None
        for line in done.stdout.splitlines():
            row = json.loads(line)
            growth = "" if previous is None else f"{row['rss_mb'] - previous:.0f}"
            previous = row["rss_mb"]
            print(
                f"| {windows} | {row['trial']} | {row['rss_mb']:.0f} | {growth} | "
                f"{'' if row['func_graphs'] is None else row['func_graphs']} |"
            )


if __name__ == "__main__":
    main()
