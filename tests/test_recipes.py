"""Training recipes (issue 12): named presets, legacy records, schedule, aggregation, variants."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.cv_submission import create_training_run, parse_settings, resolve_training
from orchestrator.datasets import scan_dataset
from orchestrator.synthetic import make_synthetic_dataset
from storage.feature_store import FeatureStore, FoldData
from storage.runs import RunStore
from storage.store_layout import create_or_extend
from workers.device_training import CosineDecay, alternative_rows
from workers.features import FeatureConfig
from workers.recipes import RECIPES, recipe_config
from workers.training import aggregate_windows, clip_probabilities
from workers.trial_config import LEGACY_FIELDS, TrialConfig
from workers.trial_runner import run_trial, variant_training_data

N_MELS, FRAMES, MAX_WINDOWS = 16, 11, 3


def test_recipes_by_name_and_legacy_records() -> None:
    v3 = recipe_config("default")
    assert v3 == RECIPES["v3"] and RECIPES["v2"] == TrialConfig()
    assert (v3.epochs, v3.schedule, v3.early_stopping, v3.refit) == (30, "cosine", False, False)
    # v3 is v2 trained for a fixed cosine schedule, nothing else changed
    as_v2 = {"recipe": "v2", "epochs": 50, "schedule": "plateau", "early_stopping": True}
    assert replace(v3, **as_v2) == RECIPES["v2"]
    v1 = recipe_config("v1")
    assert (v1.schedule, v1.variant_probability, v1.freq_mask_bands) == ("plateau", 0.0, 0)
    assert recipe_config("seed").model == "notebook" == recipe_config("notebook").model
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_config("v9")
    # a run recorded before the recipe fields existed is read back as it was trained
    old = {k: v for k, v in TrialConfig().to_dict().items() if k not in LEGACY_FIELDS}
    old |= {"freq_mask_bands": 0, "time_mask_frames": 0}
    legacy = TrialConfig.from_dict(old)
    assert (legacy.recipe, legacy.schedule, legacy.test_aggregation) == (
        "v1",
        "plateau",
        "mean_prob",
    )
    config = TrialConfig(variants=("pitch_up",), variant_probability=0.3)
    assert TrialConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="schedule"):
        TrialConfig(schedule="step")


def test_resolve_training_model_recipe_and_overrides() -> None:
    assert resolve_training(None, "notebook") == recipe_config("notebook")
    assert resolve_training(None, "seed").recipe == "notebook"
    wide = resolve_training("v1", "wide", {"epochs": 3, "patience": None})
    assert (wide.model, wide.epochs, wide.schedule, wide.patience) == ("wide", 3, "plateau", 8)
    sets = parse_settings(["freq_mask_bands=4", "schedule=cosine", "variants=a,b"])
    config = resolve_training(None, None, sets)
    assert (config.freq_mask_bands, config.schedule, config.variants) == (4, "cosine", ("a", "b"))
    with pytest.raises(ValueError, match="colour"):
        resolve_training(None, None, {"colour": 1})


def test_mean_log_prob_aggregation_and_cosine_rates() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    clips = np.array([0, 0, 1])
    prior = np.array([0.3, 0.7])
    out, n_empty = clip_probabilities(probs, clips, np.array([0, 1, 2]), prior, "mean_log_prob")
    g = np.sqrt([0.9 * 0.2, 0.1 * 0.8])
    np.testing.assert_allclose(out[0], g / g.sum(), rtol=1e-5)
    np.testing.assert_allclose(out[1:], [[0.5, 0.5], [0.3, 0.7]], rtol=1e-6)
    assert n_empty == 1
    np.testing.assert_allclose(aggregate_windows(probs[:2]), [0.55, 0.45])
    decay = CosineDecay(1.0, epochs=11, warmup=1)
    assert decay.rate(0) == 1.0 and decay.rate(1) == 1.0
    assert decay.rate(6) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert decay.rate(10) > 0.01 and decay.rate(11) == pytest.approx(0.01) == decay.rate(50)


def test_alternative_rows_keep_the_original_where_a_variant_is_missing() -> None:
    rows = np.array([[0, -1], [2, 3], [-1, -1]])
    np.testing.assert_array_equal(alternative_rows(rows, 100), [[100, 0], [102, 103], [2, 2]])


class RecordingStore:
    """A real feature store plus two audio variants, recording which clips they are read for.

    Variant windows are the clip's original windows plus 100 (``up``: one window more
    than the original, ``down``: only the first window), so they are recognisable.
    """

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.variant_reads: list[np.ndarray] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def variant_names(self) -> list[str]:
        return ["down", "up"]

    def read_variant(self, name: str, clips: np.ndarray, *, only_real: bool = False) -> FoldData:
        clips = np.asarray(clips, dtype=np.int64)
        self.variant_reads.append(clips)
        data = self.store.read_folds(sorted(set(self.store.folds()[clips].tolist())))
        keep = np.isin(data.clip_index, clips)
        parts, idx = [], []
        for c in clips:
            w = data.windows[keep & (data.clip_index == c)] + 100.0
            w = w[:1] if name == "down" else np.concatenate([w, w[-1:]])
            parts.append(w)
            idx += [c] * len(w)
        idx_arr = np.asarray(idx, dtype=np.int64)
        labels = self.store.labels().astype(np.int64)
        return FoldData(
            windows=np.concatenate(parts),
            labels=labels[idx_arr],
            clip_index=idx_arr,
            real=np.ones(len(idx_arr), bool),
            clips=clips,
            clip_labels=labels[clips],
            clip_folds=self.store.folds()[clips].astype(np.int64),
            clip_fsids=np.zeros(len(clips), np.int64),
            clip_done=np.ones(len(clips), bool),
        )


def _tiny_store(tmp_path: Path) -> FeatureStore:
    root = make_synthetic_dataset(
        tmp_path / "d", n_classes=3, folds=2, clips_per_class_per_fold=4, seconds=0.5
    )
    config = FeatureConfig(n_mels=N_MELS, frames=FRAMES).to_dict()
    store, _ = create_or_extend(
        str(tmp_path / "f.zarr"), scan_dataset(root), config, (MAX_WINDOWS, N_MELS, FRAMES, 2)
    )
    rng = np.random.default_rng(0)
    for i in range(store.n_clips):
        store.write_clip(
            i, rng.normal(size=(2, N_MELS, FRAMES, 2)).astype("float32"), n_real=2, n_samples=11025
        )
    return store


def test_variant_stand_ins_are_the_same_place_of_the_same_training_clip(tmp_path: Path) -> None:
    store = RecordingStore(_tiny_store(tmp_path))
    data = store.read_folds([1])
    train_clips = data.clips[:4]
    keep = np.isin(data.clip_index, train_clips)
    x, rows = variant_training_data(store, TrialConfig(), train_clips, data.clip_index[keep])
    assert rows.shape == (keep.sum(), 2)
    assert all(set(r.tolist()) <= set(train_clips.tolist()) for r in store.variant_reads)
    originals = data.windows[keep]
    # "down" has one window per clip: both originals stand in with it; "up" has 3
    # windows for 2: positions 0 -> 0 and 1 -> 2 (the same relative place)
    for i, w in enumerate(originals):
        np.testing.assert_allclose(x[rows[i, 0]], data.windows[keep][i - i % 2] + 100.0)
        np.testing.assert_allclose(x[rows[i, 1]], w + 100.0)
    assert variant_training_data(store, TrialConfig(variant_probability=0.0), train_clips,
                                 data.clip_index[keep]) == (None, None)  # fmt: skip


@pytest.mark.parametrize("pipeline", ["device", "host"])
def test_a_trial_reads_variants_of_its_training_clips_only(tmp_path: Path, pipeline: str) -> None:
    store = RecordingStore(_tiny_store(tmp_path))
    runs = RunStore(store.url)
    training = TrialConfig(epochs=2, batch_size=8, pipeline=pipeline, variant_probability=0.5)
    run_id = create_training_run(store.store, runs, plan="official", training=training)
    run_trial(store, runs, run_id, 0)  # type: ignore[arg-type]
    result = runs.trial_result(run_id, 0)
    config = runs.get_config(run_id)
    trial = config["trials"][0]
    folds = store.folds()
    test_clips = set(np.flatnonzero(folds == trial["test_fold"]).tolist())
    read = set(np.concatenate(store.variant_reads).tolist())
    # the training fold minus its fsID validation part: never a test or validation clip
    assert read and not read & test_clips
    train_fold = set(np.flatnonzero(np.isin(folds, trial["train_folds"])).tolist())
    assert read < train_fold
    assert result["training_settings"]["variant_windows"] == 4 * len(read)
    assert config["training"]["variant_probability"] == 0.5
    # windows counted: the validation part's clips are the training fold's other clips
    n_valid_clips = len(train_fold) - len(read)
    assert result["n_valid_windows"] == 2 * n_valid_clips > 0


def test_device_steps_draw_variant_rows_with_the_given_probability() -> None:
    import keras

    from workers.augment import AugmentSettings
    from workers.device_training import fit_on_device, resolve_settings
    from workers.models import build_model

    rng = np.random.default_rng(1)
    shape = (16, 11, 2)
    train_x = rng.normal(size=(48, *shape)).astype("float32")
    variant_x = rng.normal(size=(24, *shape)).astype("float32")
    # windows 0..23 have one variant each (variant row i), windows 24..47 none
    variant_rows = np.full((48, 1), -1)
    variant_rows[:24, 0] = np.arange(24)
    settings = resolve_settings(
        pipeline="device", batch_size=16, learning_rate=1e-3, lr_scaling="none",
        warmup_epochs=0, precision="float32", jit_compile=None, steps_per_execution=None,
        n_train=48, device=("cpu", None),
    )  # fmt: skip
    keras.utils.set_random_seed(0)
    result = fit_on_device(
        build_model("default", input_shape=shape, n_classes=3),
        train_x=train_x, train_y=np.arange(48) % 3, valid_x=train_x[:4],
        valid_y=np.arange(4) % 3, test_x=train_x[:5], mean=np.zeros((16, 2), np.float32),
        std=np.ones((16, 2), np.float32), n_classes=3, settings=settings,
        augment=AugmentSettings(), epochs=4, seed=0, callbacks=[], count_visits=True,
        variant_x=variant_x, variant_rows=variant_rows, variant_probability=0.5,
    )  # fmt: skip
    visits = np.asarray(keras.ops.convert_to_numpy(result.trainer.visits))
    n_rows = 48 + 4 + 5
    np.testing.assert_array_equal(visits[24:48], 4.0)  # no variant: always the original
    assert (visits[48:n_rows] == 0).all(), "validation/test rows were trained on"
    np.testing.assert_array_equal(visits[:24] + visits[n_rows : n_rows + 24], 4.0)
    swapped = visits[n_rows : n_rows + 24].sum() / 96
    assert 0.3 < swapped < 0.7, f"{swapped:.2f} of draws were variants, expected about 0.5"
