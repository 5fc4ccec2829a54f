"""Training procedure: normalisation, fsID split, a tiny end-to-end trial, clip scoring."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from workers import normalization
from workers.normalization import Normalization, compute_normalization
from workers.training import clip_probabilities, split_by_fsid, train_and_evaluate
from workers.trial_config import TrialConfig

SHAPE = (16, 11, 2)


def _synthetic(n_clips: int, seed: int, windows_per_clip: int = 3):
    """Clips of 3 classes; class c has extra energy in bands [5c, 5c + 5)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_clips) % 3
    x = rng.normal(size=(n_clips * windows_per_clip, *SHAPE)).astype("float32")
    clip_of = np.repeat(np.arange(n_clips), windows_per_clip)
    y = labels[clip_of]
    for c in range(3):
        x[y == c, 5 * c : 5 * c + 5, :, 0] += 3.0
    return x, y, clip_of, labels


def test_normalization_uses_given_windows_only() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(loc=5.0, scale=2.0, size=(200, 4, 6, 2)).astype("float32")
    norm = compute_normalization(train)
    assert norm.mean.shape == (4, 2) and norm.std.shape == (4, 2)
    np.testing.assert_allclose(norm.mean, train.mean(axis=(0, 2)), rtol=1e-5)
    z = norm.apply(train)
    np.testing.assert_allclose(z.mean(axis=(0, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(0, 2)), 1.0, atol=1e-3)
    again = Normalization.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.apply(train), z)


def test_blockwise_statistics_equal_the_whole_array_float64_ones(monkeypatch) -> None:
    monkeypatch.setattr(normalization, "STATISTICS_BLOCK", 7)
    rng = np.random.default_rng(1)
    train = (rng.normal(size=(7 * 5 + 3, 6, 9, 2)) * 15 - 45).astype("float32")
    train[:, 2, :, 1] = -80.0  # a constant band: std floored at 1e-6
    norm = compute_normalization(train)
    whole = train.astype(np.float64)
    np.testing.assert_allclose(norm.mean, whole.mean(axis=(0, 2)).astype("float32"), rtol=1e-6)
    expected = np.maximum(whole.std(axis=(0, 2)), 1e-6).astype("float32")
    np.testing.assert_allclose(norm.std, expected, rtol=1e-6)
    assert norm.std[2, 1] == np.float32(1e-6)


def test_fsid_split_keeps_recordings_together() -> None:
    rng = np.random.default_rng(0)
    fsids = rng.integers(0, 40, 300)
    fsids[:5] = -1
    labels = rng.integers(0, 5, 300)
    train, valid = split_by_fsid(np.arange(300), fsids, labels, 0.15, seed=3)
    assert (train ^ valid).all()
    known = fsids >= 0
    assert not set(fsids[train & known]) & set(fsids[valid & known])
    assert 0.05 < valid.mean() < 0.3
    again = split_by_fsid(np.arange(300), fsids, labels, 0.15, seed=3)
    np.testing.assert_array_equal(again[1], valid)


def test_fsid_split_with_few_recordings() -> None:
    fsids = np.array([1, 1, 2, 2, 3, 3])
    train, valid = split_by_fsid(np.arange(6), fsids, np.zeros(6, int), 0.3, seed=0)
    assert train.any() and valid.any()
    assert not set(fsids[train]) & set(fsids[valid])


def test_clip_probabilities_mean_and_prior() -> None:
    window_probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8], [0.5, 0.5]])
    window_clips = np.array([10, 10, 11, 99])
    prior = np.array([0.25, 0.75])
    probs, n_empty = clip_probabilities(window_probs, window_clips, np.array([10, 11, 12]), prior)
    np.testing.assert_allclose(probs, [[0.5, 0.5], [0.2, 0.8], [0.25, 0.75]])
    assert n_empty == 1


def test_trial_config_round_trip() -> None:
    config = TrialConfig(model="seed", epochs=3, mixup_alpha=0.0)
    assert TrialConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        TrialConfig.from_dict({"epochs": 3, "colour": "red"})


def test_train_and_evaluate_learns_and_reports_progress() -> None:
    x, y, _, _ = _synthetic(60, seed=0)
    vx, vy, _, _ = _synthetic(15, seed=1)
    tx, ty, tclip, tlabels = _synthetic(30, seed=2)
    # Clip 30 has no window: it must still be scored, with the training prior.
    test_clips = np.arange(31)
    test_labels = np.append(tlabels, 0)
    events: list[dict] = []
    outcome = train_and_evaluate(
        x,
        y,
        vx,
        vy,
        test_windows=tx,
        test_window_labels=ty,
        test_window_clips=tclip,
        test_clips=test_clips,
        test_clip_labels=test_labels,
        n_classes=3,
        config=TrialConfig(epochs=2, batch_size=16, learning_rate=3e-3, mixup_alpha=0.2),
        progress=events.append,
    )
    assert [e["epoch"] for e in events] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "epochs"} <= set(events[0])
    assert outcome.epochs_run == 2 and len(outcome.history["val_loss"]) == 2
    assert outcome.clip_probs.shape == (31, 3)
    assert outcome.window_probs.shape == (len(tx), 3)
    assert outcome.n_clips_without_windows == 1
    np.testing.assert_allclose(outcome.clip_probs[30], [1 / 3, 1 / 3, 1 / 3], rtol=1e-5)
    acc = (outcome.clip_probs[:30].argmax(1) == tlabels).mean()
    assert acc > 0.6, f"clip accuracy {acc} not above chance (1/3)"
    assert outcome.device.startswith("tensorflow:") or ":" in outcome.device
    np.testing.assert_allclose(outcome.normalization.mean, x.mean(axis=(0, 2)), rtol=1e-4)


def test_augmented_batches_keep_shapes_and_soft_labels() -> None:
    from workers.training import _AugmentedBatches

    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, *SHAPE)).astype("float32") + 5.0
    y = np.eye(3, dtype="float32")[np.arange(10) % 3]
    config = TrialConfig(batch_size=4, mixup_alpha=0.4, max_shift_frames=3, freq_mask_bands=16)
    batches = _AugmentedBatches(x, y, config)
    assert len(batches) == 3
    seen = 0
    for i in range(len(batches)):
        bx, by = batches[i]
        assert bx.shape[1:] == SHAPE and bx.dtype == np.float32
        np.testing.assert_allclose(by.sum(axis=1), 1.0, rtol=1e-5)
        seen += len(bx)
    assert seen == 10
    plain = _AugmentedBatches(x, y, TrialConfig(batch_size=10, augment=False))
    bx, by = plain[0]
    np.testing.assert_array_equal(np.sort(bx.ravel()), np.sort(x.ravel()))
    assert set(by.max(axis=1).tolist()) == {1.0}


def test_learning_rates_are_logged_per_epoch_and_replayed() -> None:
    import keras

    from workers.device_training import LearningRateLog, ReplayLearningRates

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="sparse_categorical_crossentropy")
    x, y = np.zeros((8, 3), "float32"), np.zeros(8, "int64")
    rates = [0.1, 0.05, 0.01]
    fit = model.fit(
        x, y, epochs=4, verbose=0, callbacks=[ReplayLearningRates(rates), LearningRateLog()]
    )
    # each epoch at its replayed rate, the last rate kept once the list ends
    np.testing.assert_allclose(fit.history["learning_rate"], [0.1, 0.05, 0.01, 0.01], rtol=1e-6)
    with pytest.raises(ValueError, match="no learning rates"):
        ReplayLearningRates([])


def test_refit_trains_a_fresh_model_on_training_and_validation_windows() -> None:
    x, y, _, _ = _synthetic(45, seed=0)
    vx, vy, _, _ = _synthetic(15, seed=1)
    tx, ty, tclip, tlabels = _synthetic(30, seed=2)
    # one variant stand-in per training window: validation windows get none
    variant_x = x[::-1].copy()
    variant_rows = np.arange(len(x))[:, None]
    events: list[dict] = []
    config = TrialConfig(
        epochs=4, patience=2, batch_size=16, learning_rate=3e-3, refit=True, reduce_lr_patience=1
    )
    outcome = train_and_evaluate(
        x, y, vx, vy, test_windows=tx, test_window_labels=ty, test_window_clips=tclip,
        test_clips=np.arange(30), test_clip_labels=tlabels, n_classes=3, config=config,
        progress=events.append, variant_windows=variant_x, variant_rows=variant_rows,
    )  # fmt: skip
    search = [e for e in events if "phase" not in e]
    refit = [e for e in events if e.get("phase") == "refit"]
    assert events == [*search, *refit], "the search first, then the refit"
    assert 1 <= outcome.best_epoch <= len(search) and "val_loss" in search[0]
    # the refit trains as many epochs as the search's best, without validation
    assert [e["epoch"] for e in refit] == list(range(1, outcome.best_epoch + 1))
    assert not any("val_loss" in e for e in refit)
    assert outcome.settings["refit_epochs"] == outcome.best_epoch
    assert outcome.settings["refit_windows"] == len(x) + len(vx)
    assert outcome.epochs_run == len(search) + len(refit)
    assert len(outcome.epoch_seconds) == outcome.epochs_run
    # the search's curves are kept (they show how the epoch count was chosen)
    assert len(outcome.history["val_loss"]) == len(search)
    assert len(outcome.history["learning_rate"]) == len(search)
    # the model scored and returned is the refit's: statistics of all its windows
    both = np.concatenate([x, vx])
    np.testing.assert_allclose(outcome.normalization.mean, both.mean(axis=(0, 2)), rtol=1e-4)
    assert outcome.clip_probs.shape == (30, 3)
    assert (outcome.clip_probs.argmax(1) == tlabels).mean() > 0.6

    # without validation windows there is nothing to choose the epochs on: one run
    events.clear()
    once = train_and_evaluate(
        x, y, vx[:0], vy[:0], test_windows=tx, test_window_labels=ty, test_window_clips=tclip,
        test_clips=np.arange(30), test_clip_labels=tlabels, n_classes=3,
        config=replace(config, epochs=2), progress=events.append,
    )  # fmt: skip
    assert [e["epoch"] for e in events] == [1, 2] and not any("phase" in e for e in events)
    assert "refit_epochs" not in once.settings


def test_refit_is_recorded_and_old_configs_read_without_it() -> None:
    config = TrialConfig(refit=True)
    assert TrialConfig.from_dict(config.to_dict()) == config
    old = TrialConfig().to_dict()
    del old["refit"]
    assert TrialConfig.from_dict(old).refit is False


@pytest.mark.parametrize("pipeline", ["device", "host"])
def test_without_early_stopping_every_epoch_runs_and_the_last_weights_stay(pipeline) -> None:
    x, y, _, _ = _synthetic(45, seed=0)
    vx, vy, _, _ = _synthetic(15, seed=1)
    vy = np.roll(vy, 1)  # wrong labels: the validation loss rises as training goes on
    tx, ty, tclip, tlabels = _synthetic(9, seed=2)
    config = TrialConfig(
        epochs=4, patience=4, batch_size=16, learning_rate=3e-3, mixup_alpha=0.0,
        early_stopping=False, pipeline=pipeline,
    )  # fmt: skip
    args = dict(
        test_windows=tx, test_window_labels=ty, test_window_clips=tclip,
        test_clips=np.arange(9), test_clip_labels=tlabels, n_classes=3,
    )  # fmt: skip
    outcome = train_and_evaluate(x, y, vx, vy, config=config, **args)
    assert outcome.epochs_run == outcome.best_epoch == 4
    assert len(outcome.history["val_loss"]) == 4, "validation is still reported"
    # the same run keeping the lowest-loss epoch (patience 4: it cannot stop early)
    best = train_and_evaluate(x, y, vx, vy, config=replace(config, early_stopping=True), **args)
    assert best.history["val_loss"] == outcome.history["val_loss"], "the same training"
    assert best.best_epoch < 4, best.history["val_loss"]
    # ... scores with that epoch's weights; without early stopping the last ones stay
    assert not np.allclose(best.window_probs, outcome.window_probs, atol=1e-4)

    # refit without early stopping: one run of `epochs` on training + validation windows
    events: list[dict] = []
    both = train_and_evaluate(
        x, y, vx, vy, config=replace(config, refit=True), progress=events.append, **args
    )
    assert [e["epoch"] for e in events] == [1, 2, 3, 4] and "val_loss" not in events[0]
    np.testing.assert_allclose(
        both.normalization.mean, np.concatenate([x, vx]).mean(axis=(0, 2)), rtol=1e-4
    )
