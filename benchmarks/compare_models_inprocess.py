"""Compare the ``seed`` and ``default`` models on real UrbanSound8K folds, in-process.

Features are extracted here with librosa directly (no queue, no store) and cached
in a local ``.npz``; both models are then trained with ``workers.training`` on the
official plan of the folds present (two folds: two trials, each trains on one fold
with a 15% fsID-split validation part and tests on the other).

Usage::

    .venv/bin/python benchmarks/compare_models_inprocess.py \
        --data /work/shared/data/us8k-subset/UrbanSound8K --epochs 50
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SR = 22050
N_FFT = 2048
HOP = 512
N_MELS = 60
WINDOW = 20480
STEP = 10240
MAX_SAMPLES = 4 * SR


def clip_windows(path: str) -> np.ndarray:
    """``(n_windows, 60, 41, 2)`` float32 log-mel (dB) + delta windows of one file.

    A clip shorter than one window is zero-padded to one window.
    """
    import librosa

    y, _ = librosa.load(path, sr=SR, mono=True, duration=MAX_SAMPLES / SR)
    if len(y) < WINDOW:
        y = np.pad(y, (0, WINDOW - len(y)))
    out = []
    for start in range(0, len(y) - WINDOW + 1, STEP):
        seg = y[start : start + WINDOW]
        mel = librosa.feature.melspectrogram(
            y=seg, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS
        )
        logmel = librosa.power_to_db(mel, ref=1.0)
        delta = librosa.feature.delta(logmel)
        out.append(np.stack([logmel, delta], axis=-1))
    return np.asarray(out, dtype=np.float32)


def load_features(data_root: Path, cache: Path) -> dict[str, np.ndarray]:
    """Features of every clip of ``data_root`` whose audio file is present, cached.

    Returns arrays ``windows, window_clip`` (per window) and ``labels, folds, fsids``
    (per clip) plus ``class_names``.
    """
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    rows = []
    with open(data_root / "metadata" / "UrbanSound8K.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            path = data_root / "audio" / f"fold{row['fold']}" / row["slice_file_name"]
            if path.exists():
                rows.append((str(path), int(row["classID"]), int(row["fold"]), int(row["fsID"])))
    class_names = [""] * 10
    with open(data_root / "metadata" / "UrbanSound8K.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            class_names[int(row["classID"])] = row["class"]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        per_clip = list(pool.map(clip_windows, [r[0] for r in rows], chunksize=16))
    print(f"extracted {len(rows)} clips in {time.perf_counter() - t0:.0f} s")
    data = {
        "windows": np.concatenate(per_clip),
        "window_clip": np.repeat(np.arange(len(rows)), [len(w) for w in per_clip]),
        "labels": np.array([r[1] for r in rows], dtype=np.int64),
        "folds": np.array([r[2] for r in rows], dtype=np.int64),
        "fsids": np.array([r[3] for r in rows], dtype=np.int64),
        "class_names": np.array(class_names),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(cache)
    return data


def run_comparison(
    data: dict[str, np.ndarray], models: list[str], epochs: int, overrides: dict[str, object]
) -> None:
    """Train every model on every trial of the official plan and print a table.

    ``overrides`` replace ``TrialConfig`` defaults (for both models).
    """
    from orchestrator.cv_plan import build_plan
    from workers.metrics import trial_metrics
    from workers.training import TrialConfig, split_by_fsid, train_and_evaluate

    folds = sorted(set(data["folds"].tolist()))
    trials, explanation = build_plan("official", folds)
    print(explanation)
    n_classes = len(data["class_names"])
    class_names = [str(c) for c in data["class_names"]]
    window_clip = data["window_clip"]
    results: dict[str, list[dict]] = {m: [] for m in models}
    for model in models:
        for trial in trials:
            config = TrialConfig(model=model, epochs=epochs, seed=trial.index, **overrides)
            clips = np.arange(len(data["labels"]))
            train_clips = clips[np.isin(data["folds"], trial.train_folds)]
            if trial.valid_folds:
                valid_clips = clips[np.isin(data["folds"], trial.valid_folds)]
            else:
                tr, va = split_by_fsid(
                    train_clips,
                    data["fsids"][train_clips],
                    data["labels"][train_clips],
                    trial.valid_from_train_fraction,
                    seed=trial.index,
                )
                train_clips, valid_clips = train_clips[tr], train_clips[va]
            test_clips = clips[data["folds"] == trial.test_fold]
            tw = np.isin(window_clip, train_clips)
            vw = np.isin(window_clip, valid_clips)
            sw = np.isin(window_clip, test_clips)
            outcome = train_and_evaluate(
                data["windows"][tw],
                data["labels"][window_clip[tw]],
                data["windows"][vw],
                data["labels"][window_clip[vw]],
                test_windows=data["windows"][sw],
                test_window_labels=data["labels"][window_clip[sw]],
                test_window_clips=window_clip[sw],
                test_clips=test_clips,
                test_clip_labels=data["labels"][test_clips],
                n_classes=n_classes,
                config=config,
            )
            m = trial_metrics(
                outcome.clip_labels,
                outcome.clip_probs,
                outcome.window_labels,
                outcome.window_probs,
                class_names,
            )
            m.update(epochs=outcome.epochs_run, seconds=outcome.training_seconds)
            best = outcome.best_epoch - 1
            m["val_loss"] = outcome.history["val_loss"][best]
            m["val_accuracy"] = outcome.history["val_accuracy"][best]
            results[model].append(m)
            print(
                f"{model:8s} test fold {trial.test_fold}: clip acc {m['clip_accuracy']:.3f} "
                f"window acc {m['window_accuracy']:.3f} AUC {m['roc_auc_macro']:.3f} "
                f"macro F1 {m['f1_macro']:.3f} epochs {m['epochs']} {m['seconds']:.0f} s "
                f"(best val loss {m['val_loss']:.3f}, val window acc {m['val_accuracy']:.3f})",
                flush=True,
            )
    print("\n| model | test fold | clip acc | window acc | ROC AUC | macro F1 | epochs | s |")
    print("|---|---|---|---|---|---|---|---|")
    for model in models:
        for trial, m in zip(trials, results[model], strict=True):
            print(
                f"| {model} | {trial.test_fold} | {m['clip_accuracy']:.3f} | "
                f"{m['window_accuracy']:.3f} | {m['roc_auc_macro']:.3f} | {m['f1_macro']:.3f} | "
                f"{m['epochs']} | {m['seconds']:.0f} |"
            )
        acc = [m["clip_accuracy"] for m in results[model]]
        print(f"| {model} | mean | {np.mean(acc):.3f} ± {np.std(acc):.3f} | | | | | |")
    if {"seed", "default"} <= set(models):
        means = {x: np.mean([m["clip_accuracy"] for m in results[x]]) for x in models}
        gain = 100 * (means["default"] - means["seed"])
        print(f"\ndefault - seed: {gain:+.1f} points of mean clip accuracy")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data", type=Path, default=Path("/work/shared/data/us8k-subset/UrbanSound8K")
    )
    parser.add_argument(
        "--cache", type=Path, default=Path("/tmp/esc-bench/us8k-subset-features.npz")
    )
    parser.add_argument("--models", nargs="+", default=["seed", "default"])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--extract-only", action="store_true")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="TrialConfig overrides for both models, e.g. patience=10 freq_mask_bands=8",
    )
    args = parser.parse_args()
    data = load_features(args.data, args.cache)
    print(f"{len(data['labels'])} clips, {len(data['windows'])} windows")
    if not args.extract_only:
        overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
        run_comparison(data, args.models, args.epochs, overrides)


if __name__ == "__main__":
    main()
