"""A run's report, computed from the trials' stored predictions.

The worker that stores a run's last trial result writes ``report.json``
(:func:`finalize_run`); ``cv-report`` recomputes the same report from the stored
artifacts at any time (:func:`build_report`), for complete and partial runs. It lives
with the workers because the last trial's task writes it.
"""

from __future__ import annotations

import logging
from typing import Any

from storage.run_records import Report, RunConfig, TrialResult
from storage.runs import RunStore, run_status
from workers.metrics import aggregate, trial_metrics

logger = logging.getLogger(__name__)


def build_report(runs: RunStore, run_id: str) -> dict[str, Any]:
    """Report over the trials that have results so far, metrics recomputed from predictions.

    Returns ``Report.to_dict()`` (the document that ``report.json`` holds).

    ``complete`` says whether every trial of the plan is in it. The content depends
    only on the stored artifacts, so two builders produce the same report.
    """
    config = RunConfig.from_dict(runs.get_config(run_id))
    class_names = list(config.class_names)
    results = runs.trial_results(run_id)
    trials = []
    for trial in config.trials:
        if trial.index not in results:
            continue
        stored = TrialResult.from_dict(results[trial.index])
        p = runs.load_predictions(run_id, trial.index)
        metrics = trial_metrics(
            p["clip_labels"], p["clip_probs"], p["window_labels"], p["window_probs"], class_names
        )
        trials.append(
            {
                **trial.result_fields(),
                **metrics,
                "epochs": stored.epochs,
                "best_epoch": stored.best_epoch,
                "seconds": stored.seconds,
                "device": stored.device,
                "n_clips_without_windows": stored.n_clips_without_windows,
                "history": {k: v for k, v in stored.history.items() if k in ("loss", "val_loss")},
            }
        )
    return Report(
        run_id=run_id,
        model=config.model,
        plan=config.plan,
        training=config.training,
        class_names=class_names,
        n_trials=len(config.trials),
        complete=len(trials) == len(config.trials),
        trials=trials,
        aggregate=aggregate(trials),
        dataset=config.dataset
        or {"name": "", "root": "", "class_ids": list(range(len(class_names)))},
    ).to_dict()


def finalize_run(runs: RunStore, run_id: str) -> dict[str, Any] | None:
    """Aggregate and save ``report.json`` once every trial has a result; else ``None``."""
    if not run_status(runs, run_id)["complete"]:
        return None
    report = build_report(runs, run_id)
    runs.save_report(run_id, report)
    try:
        from workers.html_report import save_run_html

        save_run_html(runs, run_id, report)
    except Exception:  # the JSON report is the record; the page is a view of it
        logger.exception("run %s: report.html could not be written", run_id)
    return report
