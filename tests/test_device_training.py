"""Augmentation ops, device-side batching, throughput settings (augment, device_training)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from workers.augment import AugmentSettings, augment_batch, mask_axis, mixup, roll_time
from workers.device_training import (
    auto_batch_size,
    fit_on_device,
    padded_rows,
    resolve_settings,
    scaled_learning_rate,
    use_compilation_cache,
)
from workers.models import build_model
from workers.training import train_and_evaluate
from workers.trial_config import TrialConfig

SHAPE = (16, 11, 2)
REPO = Path(__file__).resolve().parents[1]


def _np(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def _windows(n: int, seed: int = 0) -> np.ndarray:
    # all values > 0, so a zeroed cell can only come from a mask
    return np.random.default_rng(seed).uniform(1.0, 2.0, size=(n, *SHAPE)).astype("float32")


def test_roll_time_is_np_roll_per_window() -> None:
    x = _windows(6)
    shifts = np.array([0, 1, -1, 5, -10, 11], dtype="int32")
    out = _np(roll_time(ops.convert_to_tensor(x), ops.convert_to_tensor(shifts)))
    assert out.shape == x.shape
    for i, s in enumerate(shifts):
        np.testing.assert_array_equal(out[i], np.roll(x[i], int(s), axis=1))


@pytest.mark.parametrize("axis", [1, 2])
def test_masks_zero_only_within_bounds(axis: int) -> None:
    x = _windows(4)
    starts = np.array([0, 3, 5, 2], dtype="int32")
    widths = np.array([2, 0, 6, 1], dtype="int32")
    out = _np(mask_axis(ops.convert_to_tensor(x), starts, widths, axis=axis))
    for i in range(4):
        zeroed = np.zeros(x.shape[axis], bool)
        zeroed[starts[i] : starts[i] + widths[i]] = True
        moved = np.moveaxis(out[i], axis - 1, 0)
        original = np.moveaxis(x[i], axis - 1, 0)
        assert (moved[zeroed] == 0).all()
        np.testing.assert_array_equal(moved[~zeroed], original[~zeroed])
    with pytest.raises(ValueError, match="axis"):
        mask_axis(ops.convert_to_tensor(x), starts, widths, axis=3)


def test_mixup_mixes_windows_and_labels_with_the_same_weights() -> None:
    x = _windows(4)
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    lam = np.array([1.0, 0.25, 0.5, 0.9], dtype="float32")
    perm = np.array([1, 2, 3, 0], dtype="int32")
    mx, my = (_np(t) for t in mixup(ops.convert_to_tensor(x), ops.convert_to_tensor(y), lam, perm))
    for i in range(4):
        np.testing.assert_allclose(mx[i], lam[i] * x[i] + (1 - lam[i]) * x[perm[i]], rtol=1e-6)
        np.testing.assert_allclose(my[i], lam[i] * y[i] + (1 - lam[i]) * y[perm[i]], rtol=1e-6)
    np.testing.assert_allclose(my.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(my[1], [0.0, 0.25, 0.75], rtol=1e-6)


def _augment(x: np.ndarray, y: np.ndarray, settings: AugmentSettings, seed: int, max_batch: int):
    gen = keras.random.SeedGenerator(seed)
    out = augment_batch(
        ops.convert_to_tensor(x), ops.convert_to_tensor(y), settings, gen, max_batch
    )
    return tuple(_np(t) for t in out)


def test_augment_batch_is_seeded_and_keeps_shapes() -> None:
    x = _windows(5)
    y = np.eye(5, dtype="float32")  # distinct classes: any partner changes a label
    settings = AugmentSettings(
        max_shift_frames=3, freq_mask_bands=4, time_mask_frames=3, mixup_alpha=0.4
    )
    a = _augment(x, y, settings, seed=7, max_batch=8)  # a last batch smaller than the batch size
    b = _augment(x, y, settings, seed=7, max_batch=8)
    c = _augment(x, y, settings, seed=8, max_batch=8)
    assert a[0].shape == x.shape and a[1].shape == y.shape
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    np.testing.assert_allclose(a[1].sum(axis=1), 1.0, rtol=1e-5)
    assert not np.array_equal(a[1], y), "mixup left every label one-hot"


def test_augment_batch_shift_only_rolls_within_the_limit() -> None:
    x = _windows(12)
    y = np.eye(3, dtype="float32")[np.arange(12) % 3]
    out, oy = _augment(x, y, AugmentSettings(max_shift_frames=2, mixup_alpha=0.0), 1, 12)
    np.testing.assert_array_equal(oy, y)
    seen = set()
    for i in range(12):
        match = [s for s in range(-2, 3) if np.array_equal(out[i], np.roll(x[i], s, axis=1))]
        assert match, f"window {i} is not a roll of at most 2 frames"
        seen.update(match)
    assert len(seen) > 1, "every window got the same shift"


@pytest.mark.parametrize(("field", "axis"), [("freq_mask_bands", 1), ("time_mask_frames", 2)])
def test_augment_batch_masks_one_span_of_at_most_the_maximum(field: str, axis: int) -> None:
    x = _windows(20)
    y = np.eye(3, dtype="float32")[np.arange(20) % 3]
    settings = AugmentSettings(max_shift_frames=0, mixup_alpha=0.0, **{field: 4})
    out, _ = _augment(x, y, settings, 3, 20)
    widths = []
    for i in range(20):
        cells_zero = np.moveaxis(out[i] == 0, axis - 1, 0).reshape(x.shape[axis], -1)
        rows = cells_zero.all(axis=1)
        assert (cells_zero.any(axis=1) == rows).all(), "a mask cut across a band/frame"
        idx = np.flatnonzero(rows)
        if len(idx):
            assert (np.diff(idx) == 1).all(), "the masked span is not contiguous"
        widths.append(len(idx))
        kept = np.moveaxis(out[i], axis - 1, 0)[~rows]
        np.testing.assert_array_equal(kept, np.moveaxis(x[i], axis - 1, 0)[~rows])
    assert max(widths) <= 4 and max(widths) > 0


def test_padded_rows_cover_every_row_once() -> None:
    rng = np.random.default_rng(0)
    rows = np.arange(10, dtype=np.int32)
    padded = padded_rows(rows, 4, rng)
    assert len(padded) == 12 and padded.dtype == np.int32
    np.testing.assert_array_equal(np.sort(padded[padded >= 0]), rows)
    assert set((-padded[padded < 0] - 1).tolist()) <= set(rows.tolist())
    assert len(padded_rows(rows, 5, rng)) == 10
    assert len(padded_rows(rows[:3], 8, rng)) == 8  # fewer rows than a batch


def test_every_training_window_is_visited_once_per_epoch() -> None:
    rng = np.random.default_rng(1)
    train_x = rng.normal(size=(50, *SHAPE)).astype("float32")
    train_y = np.arange(50) % 3
    valid_x = rng.normal(size=(7, *SHAPE)).astype("float32")
    test_x = rng.normal(size=(9, *SHAPE)).astype("float32")
    settings = resolve_settings(
        pipeline="device",
        batch_size=16,
        learning_rate=1e-3,
        lr_scaling="none",
        warmup_epochs=0,
        precision="float32",
        jit_compile=None,
        steps_per_execution=None,
        n_train=50,
        device=("cpu", None),
    )
    keras.utils.set_random_seed(0)
    model = build_model("default", input_shape=SHAPE, n_classes=3)
    result = fit_on_device(
        model,
        train_x=train_x,
        train_y=train_y,
        valid_x=valid_x,
        valid_y=np.arange(7) % 3,
        test_x=test_x,
        mean=np.zeros((16, 2), np.float32),
        std=np.ones((16, 2), np.float32),
        n_classes=3,
        settings=settings,
        augment=AugmentSettings(),
        epochs=3,
        seed=0,
        callbacks=[],
        count_visits=True,
    )
    visits = _np(result.trainer.visits)
    np.testing.assert_array_equal(visits[:50], 3.0)
    assert (visits[50:] == 0).all(), "validation/test rows or padding were trained on"
    assert result.window_probs.shape == (9, 3)
    np.testing.assert_allclose(result.window_probs.sum(axis=1), 1.0, rtol=1e-4)
    assert len(result.history["val_loss"]) == 3 and len(result.history["loss"]) == 3


def test_settings_are_chosen_by_device_and_overridable() -> None:
    common = {
        "pipeline": "device",
        "learning_rate": 1e-3,
        "lr_scaling": "sqrt",
        "warmup_epochs": None,
        "precision": "auto",
        "jit_compile": None,
        "steps_per_execution": None,
    }
    cpu = resolve_settings(batch_size=None, n_train=35000, device=("cpu", None), **common)
    assert (cpu.batch_size, cpu.learning_rate, cpu.warmup_epochs) == (64, 1e-3, 0)
    assert (cpu.precision, cpu.steps_per_execution, cpu.jit_compile) == ("float32", 1, "auto")
    gpu = resolve_settings(batch_size=None, n_train=35000, device=("gpu", 9.0), **common)
    assert gpu.batch_size == 512 and gpu.warmup_epochs == 2
    assert gpu.learning_rate == pytest.approx(1e-3 * np.sqrt(8))
    assert gpu.precision == "mixed_bfloat16" and gpu.steps_per_execution == 8
    assert gpu.predict_batch_size >= 1024
    small = resolve_settings(batch_size=None, n_train=2300, device=("gpu", 9.0), **common)
    assert small.batch_size == 64 and small.warmup_epochs == 0
    old_gpu = resolve_settings(batch_size=256, n_train=35000, device=("gpu", 7.0), **common)
    assert old_gpu.batch_size == 256 and old_gpu.precision == "float32"
    forced = resolve_settings(
        **{**common, "precision": "float32", "warmup_epochs": 0, "steps_per_execution": 2},
        batch_size=1024,
        n_train=35000,
        device=("gpu", 9.0),
    )
    assert (forced.precision, forced.warmup_epochs, forced.steps_per_execution) == (
        "float32",
        0,
        2,
    )
    assert auto_batch_size("gpu", 10**6) == 512
    assert scaled_learning_rate(1e-3, 256, "linear") == pytest.approx(4e-3)
    assert scaled_learning_rate(1e-3, 256, "none") == 1e-3
    with pytest.raises(ValueError, match="scaling"):
        scaled_learning_rate(1e-3, 256, "cubic")
    with pytest.raises(ValueError, match="pipeline"):
        resolve_settings(**{**common, "pipeline": "gpu"}, batch_size=None, n_train=1)
    with pytest.raises(ValueError, match="precision"):
        resolve_settings(**{**common, "precision": "fp8"}, batch_size=None, n_train=1)


def _synthetic(n_clips: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.arange(n_clips) % 3
    clip_of = np.repeat(np.arange(n_clips), 3)
    y = labels[clip_of]
    x = rng.normal(size=(len(y), *SHAPE)).astype("float32")
    for c in range(3):
        x[y == c, 5 * c : 5 * c + 5, :, 0] += 3.0
    return x, y, clip_of, labels


@pytest.mark.parametrize("pipeline", ["device", "host"])
def test_train_and_evaluate_both_pipelines_learn(pipeline: str) -> None:
    x, y, _, _ = _synthetic(60, 0)
    vx, vy, _, _ = _synthetic(15, 1)
    tx, ty, tclip, tlabels = _synthetic(30, 2)
    config = TrialConfig(
        epochs=3,
        batch_size=32,
        learning_rate=3e-3,
        pipeline=pipeline,
        freq_mask_bands=2,
        time_mask_frames=2,
        warmup_epochs=1,
    )
    outcome = train_and_evaluate(
        x,
        y,
        vx,
        vy,
        test_windows=tx,
        test_window_labels=ty,
        test_window_clips=tclip,
        test_clips=np.arange(30),
        test_clip_labels=tlabels,
        n_classes=3,
        config=config,
    )
    assert outcome.settings["pipeline"] == pipeline and outcome.settings["batch_size"] == 32
    assert outcome.settings["learning_rate"] == pytest.approx(3e-3 * np.sqrt(0.5))
    assert len(outcome.epoch_seconds) == outcome.epochs_run == 3
    assert outcome.total_seconds >= outcome.training_seconds > 0
    acc = (outcome.clip_probs.argmax(1) == tlabels).mean()
    assert acc > 0.6, f"clip accuracy {acc} not above chance (1/3)"
    assert 1 <= outcome.best_epoch <= 3
    # the model that is saved scores plain float32 windows like the pipeline did
    z = outcome.normalization.apply(tx)
    direct = np.asarray(outcome.model.predict(z, verbose=0))
    np.testing.assert_allclose(direct, outcome.window_probs, atol=1e-4)


def test_mixed_precision_trains_and_returns_a_float32_model() -> None:
    x, y, _, _ = _synthetic(30, 0)
    tx, ty, tclip, tlabels = _synthetic(6, 2)
    outcome = train_and_evaluate(
        x,
        y,
        x[:0],
        y[:0],
        test_windows=tx,
        test_window_labels=ty,
        test_window_clips=tclip,
        test_clips=np.arange(6),
        test_clip_labels=tlabels,
        n_classes=3,
        config=TrialConfig(epochs=1, batch_size=32, precision="mixed_bfloat16"),
    )
    assert outcome.settings["precision"] == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32", "the global policy was not restored"
    assert all(layer.dtype_policy.name == "float32" for layer in outcome.model.layers)
    assert np.isfinite(outcome.window_probs).all()


JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from workers.device_training import use_compilation_cache
    assert use_compilation_cache(Path(sys.argv[1])) == sys.argv[1]
    from workers.training import train_and_evaluate
    from workers.trial_config import TrialConfig
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = rng.normal(size=(90, 16, 11, 2)).astype("float32")
    for c in range(3):
        x[y == c, 5 * c : 5 * c + 5, :, 0] += 3.0
    o = train_and_evaluate(
        x[:60], y[:60], x[60:75], y[60:75], test_windows=x[75:], test_window_labels=y[75:],
        test_window_clips=np.arange(15), test_clips=np.arange(15), test_clip_labels=y[75:],
        n_classes=3, config=TrialConfig(epochs=2, batch_size=16, learning_rate=3e-3),
    )
    assert o.device.startswith("jax:"), o.device
    print("ACC", (o.clip_probs.argmax(1) == y[75:]).mean())
    """
)


@pytest.mark.slow
def test_device_pipeline_runs_under_jax(tmp_path: Path) -> None:
    probe = subprocess.run([sys.executable, "-c", "import jax"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("jax is not installed (pip install -e '.[jax]')")
    # JAX logs every persistent-cache miss with this setting
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO)}
    env["JAX_EXPLAIN_CACHE_MISSES"] = "1"
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    cache = tmp_path / "jax-cache"
    missed: list[bool] = []
    for _ in range(2):  # two fresh processes, as a training worker runs two trials
        done = subprocess.run(
            [sys.executable, "-c", JAX_SCRIPT, str(cache)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        acc = float(done.stdout.split("ACC")[-1])
        assert acc > 0.6, f"clip accuracy {acc} under JAX not above chance"
        missed.append("CACHE MISS for 'jit_train_step'" in done.stderr)
    assert any(p.name.startswith("jit_train_step") for p in cache.iterdir())
    assert missed == [True, False], f"training step missed the cache (first, second): {missed}"


def test_compilation_cache_is_left_alone_outside_jax(tmp_path: Path) -> None:
    if keras.backend.backend() == "jax":
        pytest.skip("this process runs Keras on JAX")
    assert use_compilation_cache(tmp_path / "jax-cache") is None
    assert not (tmp_path / "jax-cache").exists()
