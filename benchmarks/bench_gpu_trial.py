"""Trials of the default model on synthetic windows: host-fed versus device pipeline, side by side.

For every batch size (default 64, 256, 1024) and both input pipelines of
``workers.training.train_and_evaluate`` (``host``: numpy batches augmented in a
``PyDataset``, the previous pipeline; ``device``: fold data on the device, batches
gathered and augmented inside the compiled step), one trial runs in this process
and the table gives:

- steady windows/s: training windows / median seconds of the epochs after the
  first (the first one includes compilation);
- whole-trial windows/s: epochs x training windows / wall time of the whole call
  (normalisation, model build, compilation, epochs, scoring of the test windows);
- outside s: wall time not explained by steady epochs (whole - epochs x steady
  epoch seconds): build, compilation, scoring, setup;
- projected CV: ``--cv-trials`` x (``--cv-epochs`` x ``--cv-train-windows`` /
  steady windows/s + outside s), the wall time of a full official 10-fold CV at
  these rates, with this run's per-trial fixed cost (measured with
  ``--test-clips`` x 7 test windows and ``--valid-windows`` validation windows);
- new/old: device over host at the same batch size.

``--variants K`` adds one row: the device pipeline at the automatic batch size with
``K`` audio variants per training window held on the device beside the originals
(``variant_probability`` 0.5, as recipe ``v2`` trains where a store has variants).

``--cv-run`` then runs the projected CV for real instead of projecting it:
``--cv-trials`` trials one after the other, each in a fresh process as a training
worker runs them (``--max-tasks-per-child 1``: Keras import, backend start-up,
reading the fold's windows from ``.npy`` files, compilation, ``--cv-epochs`` epochs
without early stopping, scoring ``--cv-test-windows`` test windows), with recipe
``v2``'s configuration and the automatic settings; under JAX each trial keeps its
compiled programs for the next as a training worker does
(``workers.device_training.use_compilation_cache``). It prints each trial's wall time
and the whole CV's wall time from the first spawn to the last exit. The synthetic
windows are written once before the clock starts. ``--cv-trials-per-process K`` runs
K trials in each process instead, as a worker with ``ESC_TRIALS_PER_CHILD=K`` does
(the import and the backend's start-up then count for the first of them); each trial
also reports the process's resident memory and, on a GPU, the bytes its backend holds
there, to show whether a reused process grows.

With ``--repeats N`` each pipeline runs N times per batch size, alternating which
goes first, and each column keeps its best value (this shared machine is noisy).

Windows are random (60, 41, 2) float32 arrays, 10 classes whose mean differs
slightly per class. Augmentation is the default (time shift, mixup). Learning
rates follow the configured scaling rule; precision, XLA and steps per execution
are the automatic choices for the device (``--precision`` etc. override them).

CPU (this project's 2-core machine, TensorFlow)::

    .venv/bin/python benchmarks/bench_gpu_trial.py --windows 6000 --epochs 2

GPU (see ``scripts/gpu_check.sh``)::

    KERAS_BACKEND=jax python benchmarks/bench_gpu_trial.py --windows 35000 --epochs 3 \\
        --test-clips 4000 --valid-windows 4000 --json $OUT/bench-jax.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KEEP_BEST = (
    ("steady_windows_per_s", max),
    ("whole_windows_per_s", max),
    ("outside_seconds", min),
    ("projected_cv_seconds", min),
)


def synthetic(n: int, seed: int, n_classes: int = 10) -> tuple[Any, Any]:
    """``(n, 60, 41, 2)`` float32 windows and ``(n,)`` labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    x = rng.normal(size=(n, 60, 41, 2)).astype(np.float32)
    x += (y[:, None, None, None] / n_classes).astype(np.float32)
    return x, y


def train(data: dict[str, Any], config: Any) -> Any:
    """``train_and_evaluate`` on the arrays of ``data`` (``synthetic`` windows, 7 per test clip)."""
    from workers.training import train_and_evaluate

    return train_and_evaluate(
        data["x"],
        data["y"],
        data["vx"],
        data["vy"],
        test_windows=data["tx"],
        test_window_labels=data["ty"][data["tclip"]],
        test_window_clips=data["tclip"],
        test_clips=data["tclips"],
        test_clip_labels=data["ty"],
        n_classes=10,
        config=config,
        variant_windows=data.get("variant_windows"),
        variant_rows=data.get("variant_rows"),
    )


def one_trial(
    data: dict[str, Any], pipeline: str, batch: int | None, args: argparse.Namespace
) -> dict:
    """Run one trial (``batch`` ``None``: automatic); its measurements."""
    from workers.trial_config import TrialConfig

    overrides: dict[str, Any] = {}
    if args.precision:
        overrides["precision"] = args.precision
    if args.jit_compile is not None:
        overrides["jit_compile"] = args.jit_compile == "on"
    if args.steps_per_execution:
        overrides["steps_per_execution"] = args.steps_per_execution
    config = TrialConfig(
        model="default",
        epochs=args.epochs,
        batch_size=batch,
        pipeline=pipeline,
        patience=args.epochs + 1,
        **overrides,
    )
    started = time.perf_counter()
    outcome = train(data, config)
    total = time.perf_counter() - started
    n = len(data["x"])
    epochs = outcome.epoch_seconds
    steady_epoch = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
    outside = total - len(epochs) * steady_epoch
    n_variants = 0 if data.get("variant_rows") is None else data["variant_rows"].shape[1]
    return {
        "pipeline": pipeline if not n_variants else f"{pipeline}+{n_variants} variants",
        "batch_size": outcome.settings["batch_size"],
        "device": outcome.device,
        "settings": outcome.settings,
        "epoch_seconds": epochs,
        "total_seconds": total,
        "steady_windows_per_s": n / steady_epoch,
        "whole_windows_per_s": len(epochs) * n / total,
        "outside_seconds": outside,
        "projected_cv_seconds": args.cv_trials
        * (args.cv_epochs * args.cv_train_windows * steady_epoch / n + outside),
    }


def resident_mb() -> float:
    """This process's resident set in MB (Linux ``/proc``; stdlib only, as on the lent GPU
    machine, which may lack psutil)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def device_bytes_in_use() -> int | None:
    """Bytes the backend holds on its first GPU now (``None`` on a CPU or if unknown)."""
    import keras

    try:
        if keras.backend.backend() == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform == "cpu":
                return None
            return int((device.memory_stats() or {}).get("bytes_in_use", 0))
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            return None
        return int(tf.config.experimental.get_memory_info("GPU:0")["current"])
    except (RuntimeError, ValueError, KeyError, AttributeError):
        return None


def cv_child(folder: Path, seed: int, epochs: int, trials: int = 1) -> None:
    """``trials`` trials of ``--cv-run`` in this fresh process (seeds ``seed``,
    ``seed + 1``, ...), as a training worker's child runs them with
    ``ESC_TRIALS_PER_CHILD=trials``; prints one JSON line of timings per trial (the
    import and the backend's start-up are paid by the first)."""
    started = time.perf_counter()
    import keras  # timed: a training worker's child imports it once
    import numpy as np

    import workers.training  # noqa: F401  (timed here, not inside train())
    from workers.device_training import use_compilation_cache
    from workers.trial_config import TrialConfig

    imported = time.perf_counter()
    use_compilation_cache(folder / "jax-cache")  # as the training task does
    keras.ops.convert_to_numpy(keras.ops.ones((1,)) + 1)  # the backend's device start-up
    backend_ready = time.perf_counter()
    import_seconds, backend_seconds = imported - started, backend_ready - imported
    for k in range(trials):
        began = time.perf_counter()
        data = {n: np.load(folder / f"{n}.npy") for n in ("x", "y", "vx", "vy", "tx", "ty")}
        data["tclips"] = np.arange(len(data["ty"]))
        data["tclip"] = np.repeat(data["tclips"], 7)
        loaded = time.perf_counter()
        outcome = train(data, TrialConfig(epochs=epochs, patience=epochs + 1, seed=seed + k))
        del data
        done = time.perf_counter()
        row = {
            "trial_in_process": k,
            "import_seconds": import_seconds,
            "backend_start_seconds": backend_seconds,
            "load_seconds": loaded - began,
            "fit_seconds": outcome.training_seconds,
            "train_and_evaluate_seconds": done - loaded,
            "in_process_seconds": done - (started if k == 0 else began),
            "epoch_seconds": outcome.epoch_seconds,
            "epochs_run": outcome.epochs_run,
            "device": outcome.device,
            "settings": outcome.settings,
            "host_rss_mb": resident_mb(),
            "device_bytes_in_use": device_bytes_in_use(),
        }
        print(json.dumps(row), flush=True)
        import_seconds = backend_seconds = 0.0


def cv_run(args: argparse.Namespace) -> dict:
    """``--cv-trials`` trials, each in a fresh child process; whole and per-trial wall time."""
    import numpy as np

    n_test_clips = -(-args.cv_test_windows // 7)  # whole clips of 7 windows
    with tempfile.TemporaryDirectory(prefix="cv-run-") as tmp:
        folder = Path(tmp)
        x, y = synthetic(args.cv_train_windows, 10)
        vx, vy = synthetic(args.cv_valid_windows, 11)
        tx, twy = synthetic(n_test_clips * 7, 12)
        for name, array in {"x": x, "y": y, "vx": vx, "vy": vy, "tx": tx, "ty": twy[::7]}.items():
            np.save(folder / f"{name}.npy", array)
        del x, y, vx, vy, tx, twy
        trials = []
        started = time.perf_counter()
        per_process = max(1, args.cv_trials_per_process)
        for first in range(0, args.cv_trials, per_process):
            n = min(per_process, args.cv_trials - first)
            spawned = time.perf_counter()
            child = ["--cv-child", str(folder), "--cv-seed", str(first)]
            child += ["--cv-epochs", str(args.cv_epochs), "--cv-trials-per-process", str(n)]
            process = subprocess.Popen(
                [sys.executable, __file__, *child],
                stdout=subprocess.PIPE,
                env=os.environ,
                text=True,
            )
            assert process.stdout is not None
            # a trial's wall time runs from the previous trial's report (the first: from
            # the spawn) to its own; the last also gets the process's exit. Each row is
            # kept as it arrives, so a stage cut short by its time limit keeps its trials.
            mark, k = spawned, 0
            for line in process.stdout:
                if not line.startswith("{"):
                    continue
                row, now = json.loads(line), time.perf_counter()
                row["wall_seconds"], mark = now - mark, now
                if k == n - 1:
                    process.wait()
                    row["wall_seconds"] += time.perf_counter() - mark
                trial = first + k
                k += 1
                steady = statistics.median(row["epoch_seconds"][1:])
                row["steady_windows_per_s"] = args.cv_train_windows / steady
                row["outside_seconds"] = row["wall_seconds"] - len(row["epoch_seconds"]) * steady
                row["first_epoch_extra_seconds"] = row["epoch_seconds"][0] - steady
                row["outside_fit_seconds"] = row["train_and_evaluate_seconds"] - row["fit_seconds"]
                trials.append(row)
                if args.json:
                    args.json.write_text(json.dumps({"cv_so_far": trials}, indent=1))
                memory = f"host RSS {row['host_rss_mb']:,.0f} MB"
                if row["device_bytes_in_use"] is not None:
                    memory += f", device {row['device_bytes_in_use'] / 2**30:.2f} GiB in use"
                print(
                    f"cv trial {trial} ({k} of {n} in its process): "
                    f"{row['wall_seconds']:.1f} s wall (import "
                    f"{row['import_seconds']:.1f}, backend start "
                    f"{row['backend_start_seconds']:.1f}, load {row['load_seconds']:.1f}, first "
                    f"epoch's extra (compilation) {row['first_epoch_extra_seconds']:.1f}, outside "
                    f"fit {row['outside_fit_seconds']:.1f}, {row['epochs_run']} epochs, steady "
                    f"{row['steady_windows_per_s']:,.0f} w/s, outside the epochs "
                    f"{row['outside_seconds']:.1f} s), batch {row['settings']['batch_size']}, "
                    f"{row['settings']['precision']}; {memory}",
                    file=sys.stderr,
                    flush=True,
                )
            if process.wait() != 0 or k != n:
                raise SystemExit(f"the trial process exited {process.returncode} after {k} of {n}")
        whole = time.perf_counter() - started
    return {"whole_seconds": whole, "test_windows": n_test_clips * 7, "trials": trials}


def table(args: argparse.Namespace) -> list[dict]:
    """Both pipelines at every ``--batch-sizes`` (and the ``--variants`` row); prints the table."""
    import keras
    import numpy as np

    x, y = synthetic(args.windows, 0)
    vx, vy = synthetic(args.valid_windows, 1)
    tx, twy = synthetic(args.test_clips * 7, 2)
    tclips = np.arange(args.test_clips)
    data = {
        "x": x,
        "y": y,
        "vx": vx,
        "vy": vy,
        "tx": tx,
        "ty": twy[::7] if len(twy) else twy,
        "tclip": np.repeat(tclips, 7),
        "tclips": tclips,
    }
    # Process-wide start-up (backend initialisation) is paid here, outside the table.
    small = {**data, "x": x[:256], "y": y[:256], "vx": vx[:0], "vy": vy[:0]}
    small.update(tx=tx[:7], tclip=np.zeros(min(7, len(tx)), int), tclips=tclips[:1])
    small["ty"] = data["ty"][:1]
    warm = argparse.Namespace(**{**vars(args), "epochs": 1})
    for pipeline in args.pipelines:
        one_trial(small, pipeline, 64, warm)

    rows = []
    for batch in args.batch_sizes:
        best: dict[str, dict] = {}
        for repeat in range(args.repeats):
            order = args.pipelines if repeat % 2 == 0 else args.pipelines[::-1]
            for pipeline in order:
                run = one_trial(data, pipeline, batch, args)
                kept = best.setdefault(pipeline, run)
                for key, better in KEEP_BEST:
                    kept[key] = better(kept[key], run[key])
                print(
                    f"{pipeline:6} batch {batch:5}: steady {run['steady_windows_per_s']:9,.0f} "
                    f"w/s, whole {run['whole_windows_per_s']:9,.0f} w/s, outside "
                    f"{run['outside_seconds']:6.1f} s, epochs "
                    f"{[round(e, 2) for e in run['epoch_seconds']]}",
                    file=sys.stderr,
                    flush=True,
                )
        rows.extend(best[p] for p in args.pipelines)
    if args.variants and "device" in args.pipelines:
        k = args.variants
        rows.append(
            one_trial(
                {
                    **data,
                    "variant_windows": np.concatenate([x] * k),
                    "variant_rows": np.arange(len(x) * k).reshape(k, len(x)).T.copy(),
                },
                "device",
                None,
                args,
            )
        )
        print(f"device + {k} variants: {rows[-1]['epoch_seconds']}", file=sys.stderr)

    first = rows[0]
    print(f"\nbackend {keras.backend.backend()}, device {first['device']}")
    print(
        f"{args.windows} training windows x {args.epochs} epochs, {args.valid_windows} validation "
        f"windows, {args.test_clips * 7} test windows; projection: {args.cv_trials} trials x "
        f"{args.cv_epochs} epochs x {args.cv_train_windows} training windows"
    )
    for row in rows:
        s = row["settings"]
        print(
            f"  {row['pipeline']} batch {row['batch_size']}: lr {s['learning_rate']:.2e}, "
            f"warm-up {s['warmup_epochs']}, {s['precision']}, jit {s['jit_compile']}, "
            f"steps/execution {s['steps_per_execution']}"
        )
    print(
        "\n| batch | pipeline | steady windows/s | whole-trial windows/s | outside the epochs (s) "
        "| projected 10-fold CV | new/old steady | new/old whole |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    by = {(r["batch_size"], r["pipeline"]): r for r in rows}
    for row in rows:
        old = by.get((row["batch_size"], "host"))
        ratio_s = ratio_w = ""
        if old is not None and row["pipeline"] != "host":
            ratio_s = f"{row['steady_windows_per_s'] / old['steady_windows_per_s']:.2f}x"
            ratio_w = f"{row['whole_windows_per_s'] / old['whole_windows_per_s']:.2f}x"
        print(
            f"| {row['batch_size']} | {row['pipeline']} | {row['steady_windows_per_s']:,.0f} | "
            f"{row['whole_windows_per_s']:,.0f} | {row['outside_seconds']:.1f} | "
            f"{_duration(row['projected_cv_seconds'])} | {ratio_s} | {ratio_w} |"
        )
    return rows


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=6000, help="training windows")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[64, 256, 1024])
    parser.add_argument("--pipelines", nargs="+", default=["host", "device"])
    parser.add_argument("--test-clips", type=int, default=1000, help="7 windows each")
    parser.add_argument("--valid-windows", type=int, default=0)
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16"])
    parser.add_argument("--jit-compile", choices=["on", "off"])
    parser.add_argument("--steps-per-execution", type=int)
    parser.add_argument("--cv-trials", type=int, default=10)
    parser.add_argument("--cv-epochs", type=int, default=30)
    parser.add_argument("--cv-train-windows", type=int, default=35000)
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of each, alternating; best of each kept"
    )
    parser.add_argument(
        "--variants", type=int, default=0, help="add a device row with K variants per window"
    )
    parser.add_argument("--cv-run", action="store_true", help="run the projected CV for real")
    parser.add_argument("--cv-test-windows", type=int, default=4000)
    parser.add_argument("--cv-valid-windows", type=int, default=4000)
    parser.add_argument(
        "--cv-trials-per-process",
        type=int,
        default=1,
        help="--cv-run's trials per process (a training worker's ESC_TRIALS_PER_CHILD)",
    )
    parser.add_argument("--cv-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cv-seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.cv_child is not None:
        cv_child(args.cv_child, args.cv_seed, args.cv_epochs, args.cv_trials_per_process)
        return

    import keras

    rows = table(args) if args.batch_sizes else []
    meta = {"backend": keras.backend.backend(), "args": {k: str(v) for k, v in vars(args).items()}}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if args.cv_run:
        cv = cv_run(args)
        walls = [t["wall_seconds"] for t in cv["trials"]]
        print(
            f"\nCV run for real: {args.cv_trials} trials x {args.cv_epochs} epochs x "
            f"{args.cv_train_windows} training windows, {args.cv_valid_windows} validation and "
            f"{cv['test_windows']} test windows each, "
            + (
                "one fresh process per trial"
                if args.cv_trials_per_process <= 1
                else f"{args.cv_trials_per_process} trials per process"
            )
        )
        print(
            "| whole CV wall | per trial (min / median / max) | steady windows/s (median) "
            "| outside the epochs per trial (median) |"
        )
        print("|---:|---:|---:|---:|")
        print(
            f"| {_duration(cv['whole_seconds'])} | {min(walls):.1f} / "
            f"{statistics.median(walls):.1f} / {max(walls):.1f} s | "
            f"{statistics.median(t['steady_windows_per_s'] for t in cv['trials']):,.0f} | "
            f"{statistics.median(t['outside_seconds'] for t in cv['trials']):.1f} s |"
        )
        if args.json:
            args.json.write_text(json.dumps({"meta": meta, "rows": rows, "cv": cv}, indent=1))


if __name__ == "__main__":
    main()
