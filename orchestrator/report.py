"""Show a run's report: rich tables in the terminal, a matplotlib summary figure on disk.

Both take the dict of ``workers.run_report.build_report`` (complete or partial).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

_METRIC_COLUMNS = (
    ("window_accuracy", "window acc"),
    ("clip_accuracy", "clip acc"),
    ("roc_auc_macro", "ROC AUC"),
    ("f1_macro", "macro F1"),
)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _folds(folds: list[int] | None, fraction: float = 0.0) -> str:
    if folds:
        return ",".join(str(f) for f in folds)
    return f"{fraction:.0%} of train (fsID)" if fraction else "-"


def describe_dataset(report: dict[str, Any]) -> str:
    """``dataset ESC-10 (/data/ESC-50-master): 10 classes: dog (0), rooster (1), ...``.

    The number in brackets is the dataset's own class id, shown when it differs from the
    training id. Empty for a report without class names.
    """
    names = list(report.get("class_names") or [])
    if not names:
        return ""
    dataset = report.get("dataset") or {}
    ids = list(dataset.get("class_ids") or range(len(names)))
    remapped = ids != list(range(len(names)))
    classes = ", ".join(
        f"{n} ({i})" if remapped else n for n, i in zip(names, ids, strict=False) if n
    )
    where = f" ({dataset['root']})" if dataset.get("root") else ""
    return f"dataset {dataset.get('name') or 'unknown'}{where}: {len(names)} classes: {classes}"


def render_report(
    report: dict[str, Any], console: Console, status: dict[int, str] | None = None
) -> None:
    """Print the per-trial table and the aggregate (mean ± std) of ``report``.

    Args:
        report: A complete or partial report (``trials``, ``aggregate``, ``n_trials``...).
        console: Where to print.
        status: Trial index -> state (``"running"``, ``"failed: ..."``) of trials that
            have no result yet; they get a row of their own.
    """
    title = f"run {report.get('run_id', '?')} - model {report.get('model', '?')}"
    if not report.get("complete", True):
        done = len(report.get("trials", []))
        title += f" ({done}/{report.get('n_trials', '?')} trials done)"
    table = Table(title=title)
    for header in ("trial", "train", "valid", "test"):
        table.add_column(header, justify="right")
    for _, header in _METRIC_COLUMNS:
        table.add_column(header, justify="right")
    for header in ("epochs", "time (s)", "device"):
        table.add_column(header, justify="right")
    done_indices = set()
    for t in report.get("trials", []):
        done_indices.add(t["trial"])
        table.add_row(
            str(t["trial"]),
            _folds(t.get("train_folds")),
            _folds(t.get("valid_folds"), t.get("valid_from_train_fraction", 0.0)),
            str(t.get("test_fold", "-")),
            *(_num(t.get(key)) for key, _ in _METRIC_COLUMNS),
            str(t.get("epochs", "-")),
            _num(t.get("seconds"), 0),
            str(t.get("device", "-")),
        )
    for k, state in sorted((status or {}).items()):
        if k not in done_indices:
            table.add_row(str(k), "", "", "", state, *([""] * (len(_METRIC_COLUMNS) + 2)))
    agg = report.get("aggregate") or {}
    mean, std = agg.get("mean") or {}, agg.get("std") or {}
    if report.get("trials"):
        table.add_section()
        table.add_row(
            "mean ± std",
            "",
            "",
            "",
            *(
                f"{_num(mean.get(key))} ± {_num(std.get(key))}"
                if mean.get(key) is not None
                else "-"
                for key, _ in _METRIC_COLUMNS
            ),
            "",
            "",
            "",
        )
    console.print(table)
    dataset_line = describe_dataset(report)
    if dataset_line:
        console.print(dataset_line)
    notes = {t.get("roc_auc_note") for t in report.get("trials", [])} - {None, "over all classes"}
    for note in sorted(notes):
        console.print(f"ROC AUC {note}")
    n_empty = sum(t.get("n_clips_without_windows", 0) for t in report.get("trials", []))
    if n_empty:
        console.print(f"{n_empty} test clips had no window and were scored with the class prior")


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """Save a PNG with the summed confusion matrix, per-fold clip accuracy and loss curves.

    The file is written to a temporary name and renamed, so ``path`` is never partial.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    trials = report.get("trials", [])
    class_names = report.get("class_names") or []
    cm = np.asarray((report.get("aggregate") or {}).get("confusion_matrix") or [[0]])
    fig, axes = plt.subplots(1, 3, figsize=(18, 6))

    ax = axes[0]
    ax.imshow(cm, cmap="Blues")
    ax.set_title("confusion matrix (clips, summed over trials)")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(class_names) == cm.shape[0]:
        ticks = np.arange(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=90, fontsize=7)
        ax.set_yticks(ticks, class_names, fontsize=7)
    for (i, j), v in np.ndenumerate(cm):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=6)

    ax = axes[1]
    labels = [str(t.get("test_fold", t["trial"])) for t in trials]
    accs = [t.get("clip_accuracy") or 0.0 for t in trials]
    ax.bar(labels, accs, color="tab:blue")
    mean = ((report.get("aggregate") or {}).get("mean") or {}).get("clip_accuracy")
    if mean is not None:
        ax.axhline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.3f}")
        ax.legend()
    ax.set_ylim(0, 1)
    ax.set_xlabel("test fold")
    ax.set_ylabel("clip accuracy")
    ax.set_title("clip accuracy per test fold")

    ax = axes[2]
    for t in trials:
        history = t.get("history") or {}
        (line,) = ax.plot(history.get("loss", []), label=f"trial {t['trial']} loss")
        if history.get("val_loss"):
            ax.plot(
                history["val_loss"], "--", color=line.get_color(), label=f"trial {t['trial']} val"
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("training curves")
    if trials:
        ax.legend(fontsize=7)

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path
