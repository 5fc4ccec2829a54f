"""Model builders: shapes, sizes, the seed architecture, one training step."""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
import pytest

from workers import models
from workers.models import MODEL_NAMES, build_model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shape_and_probabilities(name: str) -> None:
    model = build_model(name, n_classes=7, seed=1)
    x = np.random.default_rng(0).normal(size=(3, 60, 41, 2)).astype("float32")
    probs = np.asarray(model.predict(x, verbose=0))
    assert probs.shape == (3, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.loss == "sparse_categorical_crossentropy"


def test_param_counts() -> None:
    seed = build_model("seed", n_classes=10)
    # 48*(2+1) + 48*49 + 96*49 + 96*97 + (15*10*96 + 1)*256 + 257*10
    assert seed.count_params() == 3_705_738
    default = build_model("default", n_classes=10)
    assert 50_000 < default.count_params() < 500_000


def test_seed_layer_sequence() -> None:
    model = build_model("seed", n_classes=10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Conv2D", "Conv2D", "Activation", "MaxPooling2D", "Dropout",
        "Conv2D", "Conv2D", "Activation", "MaxPooling2D", "Dropout",
        "Flatten", "Dense", "Dropout", "Dense",
    ]  # fmt: skip
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size) for c in convs] == [
        (48, (1, 1)), (48, (1, 1)), (96, (1, 1)), (96, (1, 1)),
    ]  # fmt: skip
    assert all(isinstance(c.kernel_initializer, keras.initializers.RandomNormal) for c in convs)
    assert model.layers[11].units == 256
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)


def test_default_has_real_receptive_fields() -> None:
    model = build_model("default", n_classes=10)
    kernels = [ly.kernel_size for ly in model.layers if isinstance(ly, keras.layers.Conv2D)]
    assert kernels and all(k[0] > 1 and k[1] > 1 for k in kernels)
    assert any(isinstance(ly, keras.layers.BatchNormalization) for ly in model.layers)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_seeded_weights_are_reproducible(name: str) -> None:
    a = build_model(name, n_classes=3, seed=5).get_weights()
    b = build_model(name, n_classes=3, seed=5).get_weights()
    c = build_model(name, n_classes=3, seed=6).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_one_training_step_changes_weights(name: str) -> None:
    model = build_model(name, input_shape=(20, 11, 2), n_classes=3, seed=0)
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).normal(size=(8, 20, 11, 2)).astype("float32")
    loss = model.train_on_batch(x, np.arange(8) % 3)
    assert np.isfinite(np.asarray(loss)).all()
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_unknown_model_and_bad_classes() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet", n_classes=3)
    with pytest.raises(ValueError, match="n_classes"):
        build_model("seed", n_classes=1)


def test_models_module_is_backend_agnostic() -> None:
    source = Path(models.__file__).read_text()
    assert not re.search(r"^\s*(import|from)\s+(tensorflow|jax|torch)\b", source, re.M)
    assert "tf." not in source


def test_seed_is_an_alias_of_the_notebook_model() -> None:
    from workers.models import MODEL_ALIASES

    assert MODEL_ALIASES == {"seed": "notebook"} and "notebook" in MODEL_NAMES
    alias = build_model("seed", n_classes=10, seed=3)
    notebook = build_model("notebook", n_classes=10, seed=3)
    assert alias.count_params() == notebook.count_params() == 3_705_738
