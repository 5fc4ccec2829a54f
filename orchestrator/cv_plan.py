"""Cross-validation plans: which folds each trial trains, validates and tests on.

Three kinds (see ``docs/training.md``):

- ``official``: every fold is the test fold once (the UrbanSound8K protocol).
- ``notebook`` (alias ``seed``): the notebook's scheme, trial ``f`` trains on folds
  ``f, f+1``, validates on ``f+2`` and tests on ``f+3`` (cyclically).
- ``custom``: explicit ``(train, valid, test)`` tuples.

A trial whose ``valid_folds`` is empty carves its validation part out of its
training folds by fsID (``valid_from_train_fraction``).
"""

from __future__ import annotations

from collections.abc import Sequence

from contract.errors import EscError
from storage.run_records import Trial

__all__ = ["PLAN_ALIASES", "PLAN_KINDS", "PlanError", "Trial", "build_plan"]

PLAN_KINDS = ("official", "notebook", "custom")
# Older names still accepted; a run records the name it was given.
PLAN_ALIASES = {"seed": "notebook"}


class PlanError(EscError, ValueError):
    """A plan that cannot be built from the folds present (message says why)."""


def _notebook_plan(folds: list[int], n_trials: int | None, name: str) -> tuple[list[Trial], str]:
    if len(folds) < 4:
        raise PlanError(
            f"the {name} plan needs at least 4 folds; the store has folds {folds}; "
            "use --plan official"
        )
    n = 5 if n_trials is None else n_trials
    n = min(n, len(folds))
    if n < 1:
        raise PlanError(f"n_trials must be >= 1, got {n_trials}")
    m = len(folds)
    trials = [
        Trial(
            index=i,
            train_folds=(folds[i], folds[(i + 1) % m]),
            valid_folds=(folds[(i + 2) % m],),
            test_fold=folds[(i + 3) % m],
        )
        for i in range(n)
    ]
    return trials, (
        f"{name} plan over folds {folds}: {n} trials; trial i trains on the i-th and next "
        "fold, validates on the one after and tests on the one after that (cyclically)"
    )


def _official_plan(
    folds: list[int], n_trials: int | None, valid_fraction: float
) -> tuple[list[Trial], str]:
    if len(folds) < 2:
        raise PlanError(f"the official plan needs at least 2 folds; the store has folds {folds}")
    m = len(folds)
    trials = []
    for i, test in enumerate(folds):
        if m == 2:
            trials.append(
                Trial(i, (folds[(i + 1) % m],), (), test, valid_from_train_fraction=valid_fraction)
            )
        else:
            valid = folds[(i + 1) % m]
            train = tuple(f for f in folds if f not in (test, valid))
            trials.append(Trial(i, train, (valid,), test))
    if n_trials is not None:
        trials = trials[: max(1, n_trials)]
    text = (
        f"official plan over folds {folds}: {len(trials)} trials; each fold is the test fold once"
    )
    if m == 2:
        text += (
            f"; with fewer than 3 folds, validation is a {valid_fraction:.0%} split of the "
            "training fold by fsID"
        )
    else:
        text += ", validation on the next fold (cyclically), training on the rest"
    return trials, text


def _custom_plan(
    folds: list[int],
    custom: Sequence[tuple[Sequence[int], Sequence[int], int]],
    valid_fraction: float,
) -> tuple[list[Trial], str]:
    if not custom:
        raise PlanError("a custom plan needs at least one (train, valid, test) tuple")
    present = set(folds)
    trials = []
    for i, (train, valid, test) in enumerate(custom):
        train_t, valid_t, test_i = (
            tuple(int(f) for f in train),
            tuple(int(f) for f in valid),
            int(test),
        )
        where = f"custom trial {i} (train {list(train_t)}, valid {list(valid_t)}, test {test_i})"
        if not train_t:
            raise PlanError(f"{where}: no training fold")
        missing = sorted({*train_t, *valid_t, test_i} - present)
        if missing:
            raise PlanError(f"{where}: folds {missing} are not in the store (folds {folds})")
        if test_i in train_t or test_i in valid_t:
            raise PlanError(f"{where}: the test fold is also a training or validation fold")
        if set(valid_t) & set(train_t):
            raise PlanError(f"{where}: a validation fold is also a training fold")
        if len(set(train_t)) != len(train_t) or len(set(valid_t)) != len(valid_t):
            raise PlanError(f"{where}: a fold is listed twice")
        frac = 0.0 if valid_t else valid_fraction
        trials.append(Trial(i, train_t, valid_t, test_i, valid_from_train_fraction=frac))
    n_split = sum(1 for t in trials if not t.valid_folds)
    text = f"custom plan over folds {folds}: {len(trials)} trials"
    if n_split:
        text += (
            f"; {n_split} without a validation fold validate on a {valid_fraction:.0%} "
            "fsID split of their training folds"
        )
    return trials, text


def build_plan(
    kind: str,
    folds: Sequence[int],
    *,
    n_trials: int | None = None,
    custom: Sequence[tuple[Sequence[int], Sequence[int], int]] | None = None,
    valid_fraction: float = 0.15,
) -> tuple[list[Trial], str]:
    """The trials of a plan over the folds present, and a sentence explaining it.

    Args:
        kind: ``"official"``, ``"notebook"`` (alias ``"seed"``) or ``"custom"``.
        folds: Folds present in the store (any order, duplicates ignored).
        n_trials: Keep only the first ``n_trials`` trials (notebook: default 5, at most
            ``len(folds)``; official: default all folds).
        custom: For ``kind="custom"``: ``(train_folds, valid_folds, test_fold)`` tuples;
            empty ``valid_folds`` means an fsID split of the training folds.
        valid_fraction: Fraction of training clips held out (by fsID) where no
            validation fold is available.

    Raises:
        PlanError: unknown kind, too few folds, or an inconsistent custom plan.
    """
    fold_list = sorted({int(f) for f in folds})
    if not 0.0 < valid_fraction < 1.0:
        raise PlanError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    if PLAN_ALIASES.get(kind, kind) == "notebook":
        return _notebook_plan(fold_list, n_trials, kind)
    if kind == "official":
        return _official_plan(fold_list, n_trials, valid_fraction)
    if kind == "custom":
        return _custom_plan(fold_list, custom or [], valid_fraction)
    raise PlanError(f"unknown plan kind {kind!r}; choose one of {', '.join(PLAN_KINDS)}")
