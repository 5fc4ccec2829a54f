"""A run's report as one self-contained HTML page (inline CSS and SVG, no network).

The page shows the run's config, the per-trial and aggregate table, the confusion
matrix summed over trials, per-class precision/recall/F1 of the pooled test clips,
per-fold clip accuracy, every trial's learning curves, and the misclassified test
clips with a player for each when the dataset is reachable.

Audio: by default each player's ``src`` is the clip's path **relative to the page**
(``../../data/UrbanSound8K/audio/fold1/x.wav``), so the page stays small (a full
UrbanSound8K run has ~2000 misclassified clips, about 1.5 GB of audio) and keeps
working when the page and the dataset are moved together. ``embed_audio=True``
puts every clip in the page as a ``data:`` URI instead (a page that can be mailed,
as big as its clips). When the dataset root is not reachable from where the page
is written (another host, an ``s3://`` store) the page shows the clip's path only.

It lives with the workers because the worker that completes a run writes
``runs/<run_id>/report.html`` (``workers.run_report.finalize_run``).
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contract.settings import redact_url
from storage.runs import RunStore

_METRICS = (
    ("window_accuracy", "window acc"),
    ("clip_accuracy", "clip acc"),
    ("roc_auc_macro", "ROC AUC"),
    ("f1_macro", "macro F1"),
    ("f1_micro", "micro F1"),
)
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


@dataclass
class ReportData:
    """Everything the page shows, read from a run's records.

    Attributes:
        report: ``workers.run_report.build_report`` (or the stored ``report.json``).
        config: The run's ``config.json``.
        histories: Trial index -> full per-epoch history (loss, accuracy, val_*,
            learning_rate) from the trial's ``result.json``.
        misclassified: One dict per wrongly classified test clip: ``trial,
            test_fold, clip_index, path`` (relative to the dataset root, or ``None``),
            ``true, predicted, confidence`` (probability of the predicted class),
            ``true_probability``.
        dataset_root: Where the run's feature store says the dataset is.
    """

    report: dict[str, Any]
    config: dict[str, Any]
    histories: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    misclassified: list[dict[str, Any]] = field(default_factory=list)
    dataset_root: str | None = None


def collect(runs: RunStore, run_id: str, report: dict[str, Any] | None = None) -> ReportData:
    """Read what :func:`render_html` needs from the run's records (and its feature store)."""
    from workers.run_report import build_report

    config = runs.get_config(run_id)
    report = report or build_report(runs, run_id)
    class_names = list(config["class_names"])
    rel_paths: np.ndarray | None = None
    dataset_root = None
    try:
        from storage.feature_store import FeatureStore

        store = FeatureStore.open(runs.store_url, storage_options=runs.storage_options)
        rel_paths, dataset_root = store.rel_paths(), store.dataset_root
    except Exception:  # a report without file names is still a report
        rel_paths = None
    histories: dict[int, dict[str, list[float]]] = {}
    wrong: list[dict[str, Any]] = []
    results = runs.trial_results(run_id)
    for t in report.get("trials", []):
        k = int(t["trial"])
        histories[k] = dict((results.get(k) or {}).get("history") or t.get("history") or {})
        p = runs.load_predictions(run_id, k)
        probs = np.asarray(p["clip_probs"], dtype=np.float64)
        if not len(probs):
            continue
        pred = probs.argmax(axis=1)
        labels = np.asarray(p["clip_labels"], dtype=np.int64)
        for i in np.flatnonzero(pred != labels):
            clip = int(p["clip_index"][i])
            wrong.append(
                {
                    "trial": k,
                    "test_fold": t.get("test_fold"),
                    "clip_index": clip,
                    "path": str(rel_paths[clip])
                    if rel_paths is not None and clip < len(rel_paths)
                    else None,
                    "true": class_names[int(labels[i])],
                    "predicted": class_names[int(pred[i])],
                    "confidence": float(probs[i, pred[i]]),
                    "true_probability": float(probs[i, labels[i]]),
                }
            )
    wrong.sort(key=lambda w: (-w["confidence"], w["trial"], w["clip_index"]))
    return ReportData(report, config, histories, wrong, dataset_root)


# ---------------------------------------------------------------- audio


def audio_source(
    dataset_root: str | None, rel_path: str | None, page_dir: Path | None, embed: bool
) -> str | None:
    """``src`` for a clip's ``<audio>``: a ``data:`` URI, a path relative to the page, or
    ``None`` when the clip is not reachable from here."""
    if not dataset_root or not rel_path or "://" in dataset_root:
        return None
    clip = Path(dataset_root) / rel_path
    if not clip.is_file():
        return None
    if embed:
        mime = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac"}.get(
            clip.suffix.lower(), "application/octet-stream"
        )
        return f"data:{mime};base64,{base64.b64encode(clip.read_bytes()).decode('ascii')}"
    if page_dir is None:
        return clip.resolve().as_uri()
    rel = os.path.relpath(clip.resolve(), Path(page_dir).resolve())
    return "/".join(rel.split(os.sep))


# ------------------------------------------------------------------ SVG


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _svg_lines(series: dict[str, list[float]], title: str, width: int = 360) -> str:
    """A line chart of ``series`` (name -> one value per epoch) as inline SVG."""
    height, pad_l, pad_b, pad_t = 200, 46, 28, 22
    values = [v for s in series.values() for v in s if v is not None and np.isfinite(v)]
    parts = [
        f'<svg class="chart" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{width / 2}" y="14" text-anchor="middle" class="t">{html.escape(title)}</text>',
    ]
    if not values:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text>')
        return "".join(parts) + "</svg>"
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:  # a constant series (e.g. the learning rate): centre it
        pad = abs(lo) * 0.5 or 0.5
        lo, hi = lo - pad, hi + pad
    n = max(len(s) for s in series.values())
    plot_w, plot_h = width - pad_l - 10, height - pad_t - pad_b

    def xy(i: int, v: float) -> tuple[float, float]:
        x = pad_l + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)
        return x, pad_t + plot_h * (1 - (v - lo) / (hi - lo))

    parts.append(
        f'<rect x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" class="frame"/>'
        f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end">{hi:.3g}</text>'
        f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" text-anchor="end">{lo:.3g}</text>'
        f'<text x="{pad_l}" y="{height - 10}">1</text>'
        f'<text x="{pad_l + plot_w}" y="{height - 10}" text-anchor="end">{n}</text>'
        f'<text x="{pad_l + plot_w / 2}" y="{height - 10}" text-anchor="middle">epoch</text>'
    )
    for j, (name, s) in enumerate(series.items()):
        colour = _COLOURS[j % len(_COLOURS)]
        points = " ".join(
            f"{x:.1f},{y:.1f}"
            for x, y in (xy(i, v) for i, v in enumerate(s) if v is not None and np.isfinite(v))
        )
        dash = ' stroke-dasharray="5,3"' if name.startswith("val") else ""
        parts.append(
            f'<polyline class="series" data-series="{html.escape(name)}" points="{points}" '
            f'fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        if len(s) == 1:
            x, y = xy(0, s[0])
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        parts.append(
            f'<text x="{pad_l + 6}" y="{pad_t + 14 + 13 * j}" fill="{colour}">'
            f"{html.escape(name)}</text>"
        )
    return "".join(parts) + "</svg>"


def _svg_bars(labels: list[str], values: list[float], mean: float | None, title: str) -> str:
    width, height, pad_l, pad_b, pad_t = max(240, 60 + 50 * len(labels)), 220, 40, 36, 22
    plot_w, plot_h = width - pad_l - 10, height - pad_t - pad_b
    parts = [
        f'<svg class="chart" id="fold-accuracy" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{width / 2}" y="14" text-anchor="middle" class="t">{html.escape(title)}</text>',
        f'<rect x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" class="frame"/>',
        f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end">1</text>',
        f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" text-anchor="end">0</text>',
    ]
    slot = plot_w / max(1, len(labels))
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * max(0.0, min(1.0, v))
        x = pad_l + slot * i + slot * 0.15
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{pad_t + plot_h - h:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{h:.1f}" fill="#1f77b4"><title>fold {html.escape(label)}: {v:.3f}</title>'
            f"</rect>"
            f'<text x="{x + slot * 0.35:.1f}" y="{pad_t + plot_h - h - 3:.1f}" '
            f'text-anchor="middle">{v:.3f}</text>'
            f'<text x="{x + slot * 0.35:.1f}" y="{height - 20}" text-anchor="middle">'
            f"{html.escape(label)}</text>"
        )
    if mean is not None:
        y = pad_t + plot_h * (1 - mean)
        parts.append(
            f'<line x1="{pad_l}" x2="{pad_l + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#d62728" stroke-dasharray="6,3"/>'
            f'<text x="{pad_l + plot_w - 2}" y="{y - 3:.1f}" text-anchor="end" fill="#d62728">'
            f"mean {mean:.3f}</text>"
        )
    parts.append(
        f'<text x="{pad_l + plot_w / 2}" y="{height - 4}" text-anchor="middle">test fold</text>'
    )
    return "".join(parts) + "</svg>"


# ----------------------------------------------------------------- page

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 7px}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.agg td{font-weight:bold;background:#fafafa}
table.cm td{text-align:center;min-width:30px}table.cm th.r{text-align:right}
.chart{margin:4px 12px 4px 0;font-size:11px}.chart .t{font-size:13px;font-weight:bold}
.chart .frame{fill:none;stroke:#999}.curves{display:flex;flex-wrap:wrap}
.trial{margin:8px 0}dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}
dt{font-weight:bold}code{font-size:12px}audio{height:28px;vertical-align:middle}
.muted{color:#777}
"""

# Shows each player's clip length once the browser has read its header.
_SCRIPT = """
document.querySelectorAll('audio').forEach(function(a){
  a.addEventListener('loadedmetadata', function(){
    var s = a.parentNode.querySelector('.duration');
    if (s) { s.textContent = a.duration.toFixed(2) + ' s'; }
  });
});
"""


def _kv(d: dict[str, Any]) -> str:
    rows = "".join(
        f"<dt>{html.escape(str(k))}</dt><dd><code>"
        f"{html.escape(v if isinstance(v, str) else json.dumps(v, sort_keys=True))}</code></dd>"
        for k, v in d.items()
    )
    return f"<dl>{rows}</dl>"


def _folds(folds: list[int] | None, fraction: float = 0.0) -> str:
    if folds:
        return ",".join(str(f) for f in folds)
    return f"{fraction:.0%} of train (fsID)" if fraction else "-"


def _trial_table(report: dict[str, Any]) -> str:
    head = ["trial", "train", "valid", "test", *(h for _, h in _METRICS)]
    head += ["epochs", "best epoch", "time (s)", "device"]
    rows = []
    for t in report.get("trials", []):
        cells = [
            str(t["trial"]),
            _folds(t.get("train_folds")),
            _folds(t.get("valid_folds"), t.get("valid_from_train_fraction", 0.0)),
            str(t.get("test_fold", "-")),
            *(_fmt(t.get(key)) for key, _ in _METRICS),
            _fmt(t.get("epochs")),
            _fmt(t.get("best_epoch")),
            _fmt(t.get("seconds"), 1),
            str(t.get("device", "-")),
        ]
        rows.append(
            '<tr class="trial-row">'
            + "".join(f'<td class="n">{html.escape(c)}</td>' for c in cells)
            + "</tr>"
        )
    agg = report.get("aggregate") or {}
    mean, std = agg.get("mean") or {}, agg.get("std") or {}
    if report.get("trials"):
        cells = ["mean ± std", "", "", ""] + [
            f"{_fmt(mean.get(k))} ± {_fmt(std.get(k))}" if mean.get(k) is not None else "-"
            for k, _ in _METRICS
        ]
        cells += ["", "", "", ""]
        rows.append(
            '<tr class="agg">'
            + "".join(f'<td class="n">{html.escape(c)}</td>' for c in cells)
            + "</tr>"
        )
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f'<table id="trials"><tr>{header}</tr>{"".join(rows)}</table>'


def _confusion(cm: np.ndarray, class_names: list[str]) -> str:
    rows_sum = cm.sum(axis=1, keepdims=True)
    share = cm / np.maximum(rows_sum, 1)
    header = "".join(f"<th>{html.escape(c)}</th>" for c in class_names)
    body = []
    for i, name in enumerate(class_names):
        cells = []
        for j in range(len(class_names)):
            a = share[i, j]
            colour = f"rgba(31,119,180,{0.08 + 0.9 * a:.2f})" if cm[i, j] else "transparent"
            fg = "#fff" if a > 0.5 else "#222"
            cells.append(
                f'<td style="background:{colour};color:{fg}" title="{a:.0%} of {name}">'
                f"{int(cm[i, j])}</td>"
            )
        body.append(f'<tr><th class="r">{html.escape(name)}</th>{"".join(cells)}</tr>')
    return (
        '<table class="cm" id="confusion"><tr><th>true \\ predicted</th>'
        f"{header}</tr>{''.join(body)}</table>"
    )


def _per_class(cm: np.ndarray, class_names: list[str]) -> str:
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    rows = "".join(
        f'<tr class="class-row"><td>{html.escape(name)}</td><td class="n">{precision[i]:.3f}</td>'
        f'<td class="n">{recall[i]:.3f}</td><td class="n">{f1[i]:.3f}</td>'
        f'<td class="n">{int(actual[i])}</td></tr>'
        for i, name in enumerate(class_names)
    )
    return (
        '<table id="per-class"><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>'
        f"<th>support</th></tr>{rows}</table>"
    )


def _curves(report: dict[str, Any], histories: dict[int, dict[str, list[float]]]) -> str:
    out = []
    for t in report.get("trials", []):
        k = int(t["trial"])
        h = histories.get(k) or {}
        charts = [
            _svg_lines({n: h[n] for n in ("loss", "val_loss") if h.get(n)}, "loss"),
            _svg_lines({n: h[n] for n in ("accuracy", "val_accuracy") if h.get(n)}, "accuracy"),
        ]
        if h.get("learning_rate"):
            charts.append(_svg_lines({"learning_rate": h["learning_rate"]}, "learning rate"))
        out.append(
            f'<div class="trial" id="curves-{k}"><b>trial {k}</b> (test fold '
            f"{html.escape(str(t.get('test_fold', '-')))}, best epoch "
            f"{html.escape(_fmt(t.get('best_epoch')))})"
            f'<div class="curves">{"".join(charts)}</div></div>'
        )
    return "".join(out)


def _misclassified(data: ReportData, page_dir: Path | None, embed_audio: bool) -> str:
    if not data.misclassified:
        return "<p>No test clip was misclassified.</p>"
    preload = "metadata" if len(data.misclassified) <= 200 else "none"
    rows = []
    n_players = 0
    for w in data.misclassified:
        src = audio_source(data.dataset_root, w["path"], page_dir, embed_audio)
        if src is not None:
            n_players += 1
            player = (
                f'<audio controls preload="{preload}" src="{html.escape(src)}"></audio> '
                '<span class="duration muted"></span>'
            )
        else:
            player = '<span class="muted">not reachable</span>'
        name = w["path"] or f"clip {w['clip_index']}"
        rows.append(
            '<tr class="wrong">'
            f"<td><code>{html.escape(name)}</code></td>"
            f'<td class="n">{w["trial"]}</td><td class="n">{html.escape(str(w["test_fold"]))}</td>'
            f"<td>{html.escape(w['true'])}</td><td>{html.escape(w['predicted'])}</td>"
            f'<td class="n">{w["confidence"]:.3f}</td>'
            f'<td class="n">{w["true_probability"]:.3f}</td>'
            f"<td>{player}</td></tr>"
        )
    root = html.escape(str(data.dataset_root))
    where = (
        f"players load the clips from the dataset at <code>{root}</code>"
        if n_players
        else f"the dataset (<code>{root}</code>) is not reachable from here: paths only"
    )
    return (
        f"<p>{len(data.misclassified)} clips, most confident mistakes first; {where}.</p>"
        '<table id="misclassified"><tr><th>file</th><th>trial</th><th>test fold</th>'
        "<th>true</th><th>predicted</th><th>confidence</th><th>p(true)</th><th>listen</th></tr>"
        f"{''.join(rows)}</table>"
    )


def render_html(
    data: ReportData, *, page_dir: Path | None = None, embed_audio: bool = False
) -> str:
    """The page for ``data``.

    Args:
        data: From :func:`collect`.
        page_dir: The folder the page will be written to (audio paths are relative to
            it); ``None``: absolute ``file://`` URIs.
        embed_audio: Put each misclassified clip in the page as a ``data:`` URI.
    """
    report, config = data.report, data.config
    class_names = list(report.get("class_names") or config.get("class_names") or [])
    agg = report.get("aggregate") or {}
    cm = np.asarray(agg.get("confusion_matrix") or np.zeros((len(class_names),) * 2), np.int64)
    trials = report.get("trials", [])
    mean_acc = (agg.get("mean") or {}).get("clip_accuracy")
    run_id = html.escape(str(report.get("run_id", "?")))
    done = f"{len(trials)}/{report.get('n_trials', '?')} trials"
    state = "complete" if report.get("complete") else f"incomplete: {done} done"
    summary = {
        "run": report.get("run_id"),
        "created": config.get("created"),
        "store": redact_url(str(config.get("store_url") or "")),
        "model": config.get("model"),
        "plan": (config.get("plan") or {}).get("kind"),
        "plan explanation": (config.get("plan") or {}).get("explanation"),
        "classes": class_names,
        "clips": config.get("n_clips"),
    }
    details = {
        "training": config.get("training"),
        "feature config": config.get("feature_config"),
        "trials": config.get("trials"),
        "package versions": config.get("package_versions"),
        "project": config.get("project"),
    }
    folds = [str(t.get("test_fold", t["trial"])) for t in trials]
    accs = [float(t.get("clip_accuracy") or 0.0) for t in trials]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>run {run_id}</title><style>{_CSS}</style></head>
<body>
<h1>Run {run_id} - model {html.escape(str(report.get("model", "?")))} ({html.escape(state)})</h1>
<h2 id="config">Config</h2>{_kv(summary)}
<details><summary>full config</summary>{_kv(details)}</details>
<h2>Trials</h2>{_trial_table(report)}
<h2>Per-fold clip accuracy</h2>{_svg_bars(folds, accs, mean_acc, "clip accuracy per test fold")}
<h2>Confusion matrix (test clips, summed over trials)</h2>{_confusion(cm, class_names)}
<h2>Per class (pooled test clips of all trials)</h2>{_per_class(cm, class_names)}
<h2>Learning curves</h2>{_curves(report, data.histories)}
<h2>Misclassified clips</h2>{_misclassified(data, page_dir, embed_audio)}
<script>{_SCRIPT}</script>
</body></html>
"""


def write_html_report(
    runs: RunStore,
    run_id: str,
    path: str | Path,
    *,
    report: dict[str, Any] | None = None,
    embed_audio: bool = False,
) -> Path:
    """Write the run's page to the local file ``path`` (atomically); that path."""
    path = Path(path)
    page = render_html(collect(runs, run_id, report), page_dir=path.parent, embed_audio=embed_audio)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


REPORT_HTML = "report.html"


def save_run_html(runs: RunStore, run_id: str, report: dict[str, Any]) -> str:
    """Write ``runs/<run_id>/report.html`` into the run's records; its key.

    Audio paths are relative to that file when the store is local, else paths only.
    """
    key = f"runs/{run_id}/{REPORT_HTML}"
    local = "://" not in runs.store_url or runs.store_url.startswith("file://")
    page_dir = Path(runs.store_url.removeprefix("file://")) / "runs" / run_id if local else None
    data = collect(runs, run_id, report)
    if not local:
        data.dataset_root = None
    runs.blobs.put_bytes(key, render_html(data, page_dir=page_dir).encode("utf-8"))
    return key
