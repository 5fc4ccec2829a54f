"""``submit-cv``: record a run, enqueue one fold-trial task per trial, follow it.

The run's record (config, trial results, report) lives in the store under
``runs/<run_id>/`` (``storage.runs``); Redis only carries the trial tasks and
their live progress. A trial task is idempotent and the last one to finish
writes the report, so nothing here has to stay alive for a run to complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from celery import Celery
from celery.result import AsyncResult

from contract.settings import Settings
from contract.wire import TRAIN_TASK, TrialJob, trial_task_id
from orchestrator.cv_plan import build_plan
from storage.feature_store import FeatureStore
from storage.run_records import RunConfig
from storage.runs import RunStore, run_status
from workers.redis_records import SubmissionRecords
from workers.trial_config import TrialConfig


def parse_custom_plan(spec: str) -> list[tuple[list[int], list[int], int]]:
    """Parse ``"1,2:3:4;2,3:4:5"`` (train folds : valid folds : test fold, per trial).

    An empty valid part (``"1,2::3"``) carves validation out of the training
    folds by recording id (fsID).
    """
    trials = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        try:
            train, valid, test = part.split(":")
            trials.append(
                (
                    [int(f) for f in train.split(",") if f],
                    [int(f) for f in valid.split(",") if f],
                    int(test),
                )
            )
        except ValueError:
            raise ValueError(
                f"bad trial {part!r} in --custom: expected TRAIN:VALID:TEST such as 1,2:3:4"
            ) from None
    return trials


def resolve_training(
    recipe: str | None = None,
    model: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrialConfig:
    """The ``TrialConfig`` of a recipe, a model name and explicit field overrides.

    ``recipe`` names a preset of ``workers.recipes`` (``None``: ``default``). Without a
    recipe, a ``model`` that is also a recipe name (``default``, ``notebook``,
    ``seed``) selects that recipe, so ``--model notebook`` trains as it always did;
    with one, ``model`` only replaces the network. ``overrides`` (``None`` values
    ignored) replace single fields; an unknown field is a ValueError.
    """
    from dataclasses import fields, replace

    from workers.recipes import RECIPE_ALIASES, RECIPES, recipe_config

    if recipe is None and model is not None and (model in RECIPES or model in RECIPE_ALIASES):
        recipe = model
    config = recipe_config(recipe or "default")
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    if model is not None:
        changes["model"] = model
    known = {f.name for f in fields(TrialConfig)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown training parameters: {unknown}")
    if "variants" in changes and isinstance(changes["variants"], str):
        changes["variants"] = tuple(v for v in changes["variants"].split(",") if v)
    return replace(config, **changes)


def parse_settings(items: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict; values are JSON (``8``, ``0.5``, ``true``) else strings."""
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"bad --set {item!r}: expected KEY=VALUE such as freq_mask_bands=8")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def create_training_run(
    store: FeatureStore,
    runs: RunStore,
    *,
    plan: str = "official",
    training: TrialConfig | None = None,
    n_trials: int | None = None,
    custom: Sequence[tuple[Sequence[int], Sequence[int], int]] | None = None,
    valid_fraction: float = 0.15,
    only_real: bool = False,
) -> str:
    """Build the plan over the store's folds and record a new run; its id.

    Raises ``orchestrator.cv_plan.PlanError`` when the plan does not fit the folds.
    The training workers read this config back (``workers.trial_runner.run_trial``).
    """
    training = training or TrialConfig()
    # fold -1: the empty rows a layout extension leaves before a chunk boundary
    folds = sorted({int(f) for f in np.asarray(store.folds()).tolist() if f >= 0})
    trials, explanation = build_plan(
        plan, folds, n_trials=n_trials, custom=custom, valid_fraction=valid_fraction
    )
    config = RunConfig(
        plan={"kind": plan, "explanation": explanation, "folds": folds},
        trials=tuple(trials),
        model=training.model,
        training=training.to_dict(),
        only_real=only_real,
        feature_config=store.feature_config,
        class_names=tuple(store.class_names),
        n_clips=int(store.n_clips),
        dataset={
            "name": store.dataset_name,
            "root": store.dataset_root,
            "class_ids": store.class_ids,
            "fold_source": store.fold_source,
        },
    )
    return runs.create_run(config.to_dict())


def submit_cv(
    *,
    settings: Settings,
    app: Celery,
    store_url: str,
    plan: str,
    training: TrialConfig,
    n_trials: int | None = None,
    custom: list[tuple[list[int], list[int], int]] | None = None,
    valid_fraction: float = 0.15,
    records: SubmissionRecords | None = None,
) -> tuple[str, dict[str, Any]]:
    """Create the run and enqueue its trials on the training queue; ``(run_id, config)``.

    With ``records``, the run is then handed to the workers' reconciler, which sends
    a trial message again if it is lost (``workers.reconciler``).
    """
    options = settings.storage_options(store_url)
    store = FeatureStore.open(store_url, storage_options=options)
    runs = RunStore(store_url, storage_options=options)
    run_id = create_training_run(
        store,
        runs,
        plan=plan,
        training=training,
        n_trials=n_trials,
        custom=custom,
        valid_fraction=valid_fraction,
    )
    config = runs.get_config(run_id)
    with app.producer_or_acquire() as producer:
        for trial in config["trials"]:
            job = TrialJob(store_url=store_url, run_id=run_id, trial_index=int(trial["index"]))
            app.send_task(
                TRAIN_TASK, args=[job.to_dict()], task_id=job.task_id(), producer=producer
            )
    if records is not None:
        records.open_run(run_id, store_url, [int(t["index"]) for t in config["trials"]])
    return run_id, config


@dataclass
class TrialState:
    """Live state of one trial: from the run record, else from its task."""

    index: int
    state: str
    detail: str = ""


def trial_states(app: Celery | None, runs: RunStore, run_id: str) -> list[TrialState]:
    """Each trial's state: ``done`` (result stored), else its task's state and progress."""
    status = run_status(runs, run_id)
    states = [TrialState(k, "done") for k in status["done"]]
    for k in status["missing"]:
        if app is None:
            states.append(TrialState(k, "unknown"))
            continue
        result = AsyncResult(trial_task_id(run_id, k), app=app)
        state, info = result.state, result.info
        detail = ""
        if state == "PROGRESS" and isinstance(info, dict):
            detail = (
                f"epoch {info.get('epoch')}/{info.get('epochs')} "
                f"loss {info.get('loss', 0):.3f} val_loss {info.get('val_loss', 0) or 0:.3f} "
                f"val_acc {info.get('val_accuracy', 0) or 0:.3f}"
            )
            if info.get("worker"):
                detail += f" on {info['worker']}"
        elif state == "FAILURE":
            detail = str(info)
        states.append(TrialState(k, {"PENDING": "queued"}.get(state, state.lower()), detail))
    return sorted(states, key=lambda s: s.index)


def wait_for_run(
    app: Celery,
    runs: RunStore,
    run_id: str,
    *,
    poll: float = 2.0,
    on_update: Callable[[list[TrialState]], None] | None = None,
) -> tuple[dict[str, Any], list[TrialState]]:
    """Poll until every trial has a result or failed; the report and the final states."""
    while True:
        states = trial_states(app, runs, run_id)
        if on_update:
            on_update(states)
        if all(s.state in ("done", "failure") for s in states):
            from workers.run_report import build_report  # scikit-learn: about 1 s to import

            report = runs.get_report(run_id) or build_report(runs, run_id)
            return report, states
        time.sleep(poll)


def run_rows(runs: RunStore) -> list[dict[str, Any]]:
    """One row per run of the store, oldest first (the ``runs`` command's JSON shape)."""
    rows = []
    for rid in runs.list_runs():
        config = RunConfig.from_dict(runs.get_config(rid))
        status = run_status(runs, rid)
        report = runs.get_report(rid)
        mean = report["aggregate"]["mean"].get("clip_accuracy") if report else None
        rows.append(
            {
                "run_id": rid,
                "model": config.model,
                "plan": config.plan["kind"],
                "trials": status["n_trials"],
                "trials_done": len(status["done"]),
                "complete": status["complete"],
                "clip_accuracy_mean": mean,
            }
        )
    return rows
