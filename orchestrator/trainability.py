"""Refuse, before anything is extracted, a dataset too small for the cross-validation plan.

Every dataset that passes this check trains: each trial has at least one training
clip, and a validation split of the training folds falls back to unstratified
groups or to no validation (``workers.training.split_by_fsid``) instead of failing.
"""

from __future__ import annotations

from collections import Counter

from contract.errors import EscError
from contract.settings import Settings
from orchestrator.cv_plan import PlanError, build_plan
from orchestrator.dataset_setup import scan_for_store
from orchestrator.layout_common import DatasetOptions
from storage.manifest import Manifest
from workers.features import FeatureConfig


class TrainabilityError(EscError, ValueError):
    """The dataset cannot be cross-validated with the plan; the message says what to do."""


def check_manifest(manifest: Manifest, plan: str, *, n_trials: int | None = None) -> None:
    """Raise :class:`TrainabilityError` when ``manifest`` cannot train under ``plan``.

    Refused: no clip; fewer than 2 classes with clips; fewer folds than the plan
    needs (official: 2, seed: 4).
    """
    where = f"{manifest.dataset or 'the dataset'} at {manifest.dataset_root!r}"
    if not manifest.clips:
        raise TrainabilityError(
            f"{where} has no usable clip ({len(manifest.missing_files)} listed files missing, "
            f"{len(manifest.invalid)} invalid, {len(manifest.unlisted_files)} unlisted); "
            "check the layout with docs/datasets.md"
        )
    per_class = Counter(c.label for c in manifest.clips)
    if len(per_class) < 2:
        raise TrainabilityError(
            f"{where} has clips of {len(per_class)} class only; a classifier needs at least "
            "2 classes with clips: add another class"
        )
    folds = manifest.folds
    try:
        build_plan(plan, folds, n_trials=n_trials)
    except PlanError as exc:
        hint = (
            "add clips so that at least 2 folds hold some"
            if plan == "official"
            else "use --plan official, or a dataset with at least 4 folds"
        )
        if manifest.fold_source == "assigned":
            hint += " (folds are assigned per source recording: one recording fills one fold)"
        raise TrainabilityError(
            f"{where} is too small for the {plan} plan: {len(manifest.clips)} clips in folds "
            f"{folds}. {exc}; {hint}"
        ) from None


def check_trainable(
    dataset: str,
    options: DatasetOptions,
    plan: str,
    *,
    store_url: str,
    settings: Settings,
    n_trials: int | None = None,
) -> Manifest:
    """Scan ``dataset`` as the setup step will and check it (:func:`check_manifest`)."""
    manifest, _ = scan_for_store(
        dataset,
        options,
        FeatureConfig(),
        store_url=store_url,
        storage_options=settings.storage_options(store_url),
    )
    if plan != "custom":
        check_manifest(manifest, plan, n_trials=n_trials)
    return manifest
