"""CV plans: fold assignments, explanations and refusals."""

from __future__ import annotations

import pytest

from orchestrator.cv_plan import PlanError, Trial, build_plan


def _check_disjoint(trials: list[Trial]) -> None:
    for t in trials:
        assert t.test_fold not in t.train_folds
        assert t.test_fold not in t.valid_folds
        assert not set(t.valid_folds) & set(t.train_folds)


@pytest.mark.parametrize("n_folds", range(2, 11))
def test_official_every_fold_tested_once(n_folds: int) -> None:
    folds = list(range(1, n_folds + 1))
    trials, text = build_plan("official", folds)
    assert [t.test_fold for t in trials] == folds
    assert [t.index for t in trials] == list(range(n_folds))
    _check_disjoint(trials)
    for t in trials:
        used = {*t.train_folds, *t.valid_folds, t.test_fold}
        assert used == set(folds)
    assert f"{n_folds} trials" in text


def test_official_ten_folds_trains_on_eight() -> None:
    trials, _ = build_plan("official", range(1, 11))
    assert len(trials) == 10
    assert all(len(t.train_folds) == 8 and len(t.valid_folds) == 1 for t in trials)
    assert trials[9].valid_folds == (1,)
    assert trials[0].valid_folds == (2,)


def test_official_two_folds_uses_fsid_split() -> None:
    trials, text = build_plan("official", [2, 1], valid_fraction=0.2)
    assert trials == [
        Trial(0, (2,), (), 1, valid_from_train_fraction=0.2),
        Trial(1, (1,), (), 2, valid_from_train_fraction=0.2),
    ]
    assert "20% split" in text and "fsID" in text


def test_official_three_folds() -> None:
    trials, _ = build_plan("official", [1, 2, 3])
    assert trials[0] == Trial(0, (3,), (2,), 1)
    assert trials[2] == Trial(2, (2,), (1,), 3)


def test_official_refuses_one_fold() -> None:
    with pytest.raises(PlanError, match="at least 2 folds"):
        build_plan("official", [4])


def test_seed_plan_matches_notebook() -> None:
    trials, text = build_plan("seed", range(1, 11))
    assert len(trials) == 5
    assert trials[0] == Trial(0, (1, 2), (3,), 4)
    assert trials[4] == Trial(4, (5, 6), (7,), 8)
    assert "5 trials" in text


def test_seed_plan_is_cyclic_and_capped() -> None:
    trials, _ = build_plan("seed", [1, 2, 3, 4], n_trials=9)
    assert len(trials) == 4
    assert trials[3] == Trial(3, (4, 1), (2,), 3)
    _check_disjoint(trials)


@pytest.mark.parametrize("n_folds", [2, 3])
def test_seed_plan_refuses_few_folds(n_folds: int) -> None:
    folds = list(range(1, n_folds + 1))
    with pytest.raises(PlanError, match=r"at least 4 folds.*use --plan official") as err:
        build_plan("seed", folds)
    assert str(folds) in str(err.value)


def test_custom_plan_and_empty_valid() -> None:
    trials, text = build_plan("custom", [1, 2, 3], custom=[([1, 2], [], 3), ([1], [3], 2)])
    assert trials[0] == Trial(0, (1, 2), (), 3, valid_from_train_fraction=0.15)
    assert trials[1] == Trial(1, (1,), (3,), 2)
    assert "1 without a validation fold" in text


@pytest.mark.parametrize(
    ("custom", "message"),
    [
        ([([1, 3], [2], 3)], "test fold is also"),
        ([([1], [3], 3)], "test fold is also"),
        ([([1, 2], [2], 3)], "validation fold is also a training"),
        ([([1, 7], [2], 3)], r"folds \[7\] are not in the store"),
        ([([], [2], 3)], "no training fold"),
        ([], "at least one"),
    ],
)
def test_custom_plan_refusals(custom: list, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        build_plan("custom", [1, 2, 3], custom=custom)


def test_unknown_kind() -> None:
    with pytest.raises(PlanError, match="unknown plan kind"):
        build_plan("random", [1, 2, 3])


def test_trial_round_trip() -> None:
    t = Trial(3, (1, 2), (), 4, valid_from_train_fraction=0.15)
    assert Trial.from_dict(t.to_dict()) == t


def test_seed_is_an_alias_of_the_notebook_plan() -> None:
    folds = [1, 2, 3, 4, 5]
    notebook, text = build_plan("notebook", folds)
    seed, seed_text = build_plan("seed", folds)
    assert notebook == seed and len(notebook) == 5
    assert text.startswith("notebook plan") and seed_text.startswith("seed plan")
