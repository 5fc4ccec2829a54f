"""Keras model builders for ``(n_mels, frames, 2)`` log-mel + delta windows.

Only the models live here: no I/O, no training loop. Everything goes through
``keras`` itself (no backend-specific imports), so the builders also run with
``KERAS_BACKEND=jax``.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

InputShape = tuple[int, int, int]


def _notebook(
    input_shape: InputShape, n_classes: int, seed: int, learning_rate: float
) -> keras.Model:
    """The notebook's network: two pairs of 1x1 convolutions and a dense layer."""

    def init(offset: int) -> keras.initializers.Initializer:
        return keras.initializers.RandomNormal(mean=0.0, stddev=0.05, seed=seed + offset)

    model = keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(48, (1, 1), padding="same", kernel_initializer=init(0)),
            layers.Conv2D(48, (1, 1), padding="same", kernel_initializer=init(1)),
            layers.Activation("relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Dropout(0.5, seed=seed),
            layers.Conv2D(96, (1, 1), padding="same", kernel_initializer=init(2)),
            layers.Conv2D(96, (1, 1), padding="same", kernel_initializer=init(3)),
            layers.Activation("relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Dropout(0.5, seed=seed + 1),
            layers.Flatten(),
            layers.Dense(256, activation="relu", kernel_initializer=init(4)),
            layers.Dropout(0.5, seed=seed + 2),
            layers.Dense(
                n_classes, activation="softmax", kernel_initializer=init(5), dtype="float32"
            ),
        ],
        name="seed",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


# Batch-norm running statistics move 10% per step (Keras' default is 1%): on a small
# dataset (a few steps per epoch) the default leaves them far from the data after
# many epochs, so inference diverges from training; on a large one both converge.
BN_MOMENTUM = 0.9


def _default(
    input_shape: InputShape, n_classes: int, seed: int, learning_rate: float
) -> keras.Model:
    """A compact VGG-style CNN with real time-frequency receptive fields.

    Input batch normalisation, then three blocks of 3x3 convolutions with batch
    normalisation and ReLU, each followed by 2x2 max pooling, then an average over
    time that keeps the mel axis, dropout, a 128-unit dense layer and a softmax
    layer. About 0.23 M parameters.
    """
    return _vgg(input_shape, n_classes, seed, learning_rate, ((24, 1), (48, 1), (96, 2)), 128)


def _wide(input_shape: InputShape, n_classes: int, seed: int, learning_rate: float) -> keras.Model:
    """The ``default`` network wider and deeper: blocks of 1, 2, 2 convolutions with
    32, 64, 128 filters and a 256-unit dense layer (about 3.5x the compute)."""
    return _vgg(
        input_shape, n_classes, seed, learning_rate, ((32, 1), (64, 2), (128, 2)), 256, "wide"
    )


def _vgg(
    input_shape: InputShape,
    n_classes: int,
    seed: int,
    learning_rate: float,
    blocks: tuple[tuple[int, int], ...],
    dense: int,
    name: str = "default",
) -> keras.Model:
    """VGG-style CNN: ``blocks`` of ``(filters, convolutions)`` then the time-average head."""
    init_seed = iter(range(seed, seed + 100))

    def conv_bn_relu(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
        x = layers.Conv2D(
            filters,
            (3, 3),
            padding="same",
            use_bias=False,
            kernel_initializer=keras.initializers.HeNormal(seed=next(init_seed)),
        )(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        return layers.Activation("relu")(x)

    inputs = keras.Input(shape=input_shape)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(inputs)
    for filters, n_convs in blocks:
        for _ in range(n_convs):
            x = conv_bn_relu(x, filters)
        x = layers.MaxPooling2D((2, 2))(x)
    # Average over time only: where in frequency a pattern sits is what tells
    # e.g. a siren from an engine, so the head keeps the (pooled) mel axis.
    x = layers.AveragePooling2D(pool_size=(1, x.shape[2]))(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5, seed=seed)(x)
    x = layers.Dense(
        dense,
        activation="relu",
        kernel_initializer=keras.initializers.HeNormal(seed=next(init_seed)),
    )(x)
    x = layers.Dropout(0.5, seed=seed + 1)(x)
    outputs = layers.Dense(
        n_classes,
        activation="softmax",
        kernel_initializer=keras.initializers.GlorotUniform(seed=next(init_seed)),
        dtype="float32",  # softmax in float32 also under a mixed-precision policy
    )(x)
    model = keras.Model(inputs, outputs, name=name)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


_BUILDERS: dict[str, Callable[[InputShape, int, int, float], keras.Model]] = {
    "notebook": _notebook,
    "default": _default,
    "wide": _wide,
}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)
# Older names still accepted (runs recorded with them keep working): "seed" was the
# notebook's model when the notebook was the project's seed.
MODEL_ALIASES: dict[str, str] = {"seed": "notebook"}
DEFAULT_LEARNING_RATE = 1e-3


def build_model(
    name: str,
    *,
    input_shape: InputShape = (60, 41, 2),
    n_classes: int,
    seed: int = 0,
    learning_rate: float | None = None,
) -> keras.Model:
    """A compiled classifier of ``(batch, *input_shape)`` windows -> ``(batch, n_classes)``.

    Args:
        name: One of :data:`MODEL_NAMES` (or an alias of :data:`MODEL_ALIASES`).
        input_shape: ``(n_mels, frames, channels)`` of one window.
        n_classes: Output classes (softmax probabilities).
        seed: Seed of the weight initialisers and dropout layers.
        learning_rate: Optimiser learning rate (``None``: 1e-3).

    The model is compiled with sparse categorical cross-entropy and accuracy.
    """
    name = MODEL_ALIASES.get(name, name)
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    lr = DEFAULT_LEARNING_RATE if learning_rate is None else learning_rate
    return _BUILDERS[name](tuple(input_shape), n_classes, seed, lr)
