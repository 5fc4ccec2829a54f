"""Training throughput with windows read from the store versus already in memory.

In one run, on the real clips of ../shared/data/us8k-subset (extracted into a
temporary store first, or an existing store given with ``--store``):

- store: ``FeatureStore.read_folds`` of the training fold, then training the
  default model for ``--epochs`` epochs (what a training worker does);
- memory: the same training on the same arrays, already in memory.

Both train with no early stopping (no validation set), so they run the same
number of steps; the test fold is scored in both. After a warm-up on the full
arrays, the two alternate ``--repeats`` times and each keeps its best run.
Prints training windows/s (training windows x epochs / wall time) and the ratio.

    .venv/bin/python benchmarks/bench_training_io.py [--epochs 3] [--store URL]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import SUBSET, build_store

DEFAULT_DATA = SUBSET.parent


def train(arrays: dict, epochs: int, n_classes: int) -> float:
    """Train the default model on ``arrays``; wall seconds."""
    import numpy as np

    from workers.training import train_and_evaluate
    from workers.trial_config import TrialConfig

    started = time.perf_counter()
    train_and_evaluate(
        arrays["train_x"],
        arrays["train_y"],
        arrays["train_x"][:0],
        np.zeros(0, dtype=np.int64),
        test_windows=arrays["test"].windows,
        test_window_labels=arrays["test"].labels,
        test_window_clips=arrays["test"].clip_index,
        test_clips=arrays["test"].clips,
        test_clip_labels=arrays["test"].clip_labels,
        n_classes=n_classes,
        config=TrialConfig(model="default", epochs=epochs),
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--store", help="an existing store (default: extract --data first)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-fold", type=int, default=1)
    parser.add_argument("--test-fold", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, best kept")
    args = parser.parse_args()
    from storage.feature_store import FeatureStore

    with tempfile.TemporaryDirectory() as tmp:
        url = args.store
        if url is None:
            if not args.data.exists():
                print(f"no dataset at {args.data}", file=sys.stderr)
                raise SystemExit(2)
            url = str(Path(tmp) / "features.zarr")
            print(f"extracting {args.data} into {url} ...", file=sys.stderr)
            build_store(args.data, url)
        store = FeatureStore.open(url)
        n_classes = len(store.class_names)

        # warm-up on the full arrays: builds the model and traces the training and
        # prediction functions for these shapes, so neither timed run pays for it
        fold = store.read_folds([args.train_fold])
        test = store.read_folds([args.test_fold])
        arrays = {"train_x": fold.windows, "train_y": fold.labels, "test": test}
        train(arrays, 1, n_classes)

        # alternate the two, twice each, and keep each one's best run
        store_runs, memory_runs, reads = [], [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            fold = store.read_folds([args.train_fold])
            test = store.read_folds([args.test_fold])
            reads.append(time.perf_counter() - started)
            arrays = {"train_x": fold.windows, "train_y": fold.labels, "test": test}
            store_runs.append(reads[-1] + train(arrays, args.epochs, n_classes))
            memory_runs.append(train(arrays, args.epochs, n_classes))
        read_seconds = min(reads)
        store_seconds, memory_seconds = min(store_runs), min(memory_runs)

    n = len(fold.windows) * args.epochs
    rows = [
        ("windows read from the store", store_seconds, n / store_seconds),
        ("windows already in memory", memory_seconds, n / memory_seconds),
    ]
    print(f"\ntraining windows: {len(fold.windows)} x {args.epochs} epochs; ", end="")
    print(f"store read {read_seconds:.2f} s")
    print(f"{'source':32} {'seconds':>8} {'windows/s':>10} {'ratio':>6}")
    for label, secs, rate in rows:
        print(f"{label:32} {secs:>8.2f} {rate:>10.1f} {rate / rows[1][2]:>5.2f}x")


if __name__ == "__main__":
    main()
