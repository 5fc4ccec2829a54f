"""Report rendering (rich) and the summary plot (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console

from orchestrator.report import plot_report, render_report
from workers.metrics import aggregate, trial_metrics

CLASSES = ["hum", "bark", "siren"]


def _report(n_trials: int = 2, complete: bool = True) -> dict:
    rng = np.random.default_rng(0)
    trials = []
    for k in range(n_trials):
        labels = np.arange(30) % 3
        probs = rng.random((30, 3))
        probs[np.arange(30), labels] += 0.5 + 0.2 * k
        probs /= probs.sum(1, keepdims=True)
        m = trial_metrics(labels, probs, labels, probs, CLASSES)
        m.update(
            trial=k,
            train_folds=[2 - k],
            valid_folds=[],
            valid_from_train_fraction=0.15,
            test_fold=k + 1,
            epochs=7 + k,
            seconds=12.0,
            device="tensorflow:CPU",
            history={"loss": [1.0, 0.8, 0.6], "val_loss": [1.1, 0.9, 0.95]},
        )
        trials.append(m)
    return {
        "run_id": "20261126-183000-ab12",
        "model": "default",
        "class_names": CLASSES,
        "n_trials": 3 if not complete else n_trials,
        "complete": complete,
        "trials": trials,
        "aggregate": aggregate(trials),
    }


def test_render_report_shows_numbers() -> None:
    report = _report()
    console = Console(record=True, width=200)
    render_report(report, console)
    text = console.export_text()
    for t in report["trials"]:
        assert f"{t['clip_accuracy']:.3f}" in text
        assert f"{t['roc_auc_macro']:.3f}" in text
    mean = report["aggregate"]["mean"]["clip_accuracy"]
    std = report["aggregate"]["std"]["clip_accuracy"]
    assert f"{mean:.3f} ± {std:.3f}" in text
    assert "15% of train (fsID)" in text and "tensorflow:CPU" in text


def test_render_partial_report_with_status_rows() -> None:
    report = _report(n_trials=1, complete=False)
    console = Console(record=True, width=200)
    render_report(report, console, status={1: "running", 2: "failed: OOM"})
    text = console.export_text()
    assert "1/3 trials done" in text
    assert "running" in text and "failed: OOM" in text


def test_render_empty_report() -> None:
    console = Console(record=True, width=200)
    render_report({"run_id": "r", "trials": [], "n_trials": 2, "complete": False}, console)
    assert "0/2 trials done" in console.export_text()


def test_plot_report_writes_png(tmp_path: Path) -> None:
    path = plot_report(_report(), tmp_path / "plots" / "report.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    assert [p.name for p in path.parent.iterdir()] == ["report.png"]
