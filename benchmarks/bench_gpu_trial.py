"""One trial of the default model on synthetic windows of the real shape: windows/s.

Meant for the GPU check (an H100/H200 host with JAX, no TensorFlow):

    KERAS_BACKEND=jax python benchmarks/bench_gpu_trial.py --windows 60000 --epochs 3

and for the CPU number beside it (this project's 2-core machine, TensorFlow):

    .venv/bin/python benchmarks/bench_gpu_trial.py --windows 6000 --epochs 2

Windows are random (60, 41, 2) float32 arrays with 10 classes whose mean differs
slightly per class, so the loss falls; a trial is the same call a training
worker makes (``workers.training.train_and_evaluate``): normalisation, mixup and
time-shift augmentation, no early stopping (no validation set), scoring of a
test set of 1,000 clips. Prints the device, the training windows/s of the
epochs after the first (compilation excluded) and of the whole trial.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=6000, help="training windows")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import keras
    import numpy as np

    from workers.training import TrialConfig, train_and_evaluate

    rng = np.random.default_rng(0)
    n_classes = 10
    y = rng.integers(0, n_classes, size=args.windows)
    x = rng.normal(size=(args.windows, 60, 41, 2)).astype(np.float32)
    x += (y[:, None, None, None] / n_classes).astype(np.float32)
    test_clips = np.arange(1000)
    test_y = rng.integers(0, n_classes, size=1000)
    test_windows = rng.normal(size=(7000, 60, 41, 2)).astype(np.float32)
    window_clips = np.repeat(test_clips, 7)

    epoch_ends: list[float] = []

    def progress(_: dict) -> None:
        epoch_ends.append(time.perf_counter())

    started = time.perf_counter()
    outcome = train_and_evaluate(
        x,
        y,
        x[:0],
        y[:0],
        test_windows=test_windows,
        test_window_labels=test_y[window_clips],
        test_window_clips=window_clips,
        test_clips=test_clips,
        test_clip_labels=test_y,
        n_classes=n_classes,
        config=TrialConfig(model="default", epochs=args.epochs, batch_size=args.batch_size),
        progress=progress,
    )
    total = time.perf_counter() - started
    print(f"backend {keras.backend.backend()}, device {outcome.device}")
    print(f"training windows {args.windows}, epochs {outcome.epochs_run}, batch {args.batch_size}")
    if len(epoch_ends) >= 2:
        steady = (len(epoch_ends) - 1) * args.windows / (epoch_ends[-1] - epoch_ends[0])
        print(f"windows/s after the first epoch: {steady:,.0f}")
    whole = args.epochs * args.windows / total
    print(f"windows/s over the whole trial (compile and test included): {whole:,.0f}")
    print(f"trial seconds: {total:.1f} (fit {outcome.training_seconds:.1f})")


if __name__ == "__main__":
    main()
