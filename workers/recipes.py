"""Named training recipes: complete ``TrialConfig`` presets, chosen by name.

A recipe fixes every training choice (network, schedule, augmentation, variants,
test-time aggregation); explicit options (CLI flags, ``--set``) override single
fields. The chosen name is recorded in the run's config (``TrialConfig.recipe``)
beside all the field values, so a run says exactly how it was trained.

* ``v3`` (alias ``default``): ``v2`` trained for a fixed 30 epochs on a cosine
  schedule, keeping the last epoch's weights (no early stopping). The validation
  loss of a small split rises long before accuracy on held-out clips stops
  improving, so stopping on it kept models from the first epochs; chosen on
  held-out clips of fold 1 only (docs/training.md "How ``v3`` was chosen").
* ``v2``: the default of issue 12's first round: ``v1`` plus training windows
  drawn from the clips' audio variants with probability 0.5, where the store has
  variants (``submit-dataset --variants``).
* ``v1``: the default before issue 12 (plateau schedule, time shift and mixup,
  mean of window probabilities, no variants), with the patience ``submit-cv`` used (8).
* ``notebook`` (alias ``seed``): the notebook's network with the ``v1`` settings.
"""

from __future__ import annotations

from dataclasses import replace

from workers.trial_config import LEGACY_FIELDS, TrialConfig

RECIPES: dict[str, TrialConfig] = {
    "v3": replace(TrialConfig(), recipe="v3", epochs=30, schedule="cosine", early_stopping=False),
    "v2": TrialConfig(),
    "v1": replace(TrialConfig(), **{**LEGACY_FIELDS, "recipe": "v1", "patience": 8}),
    "notebook": replace(
        TrialConfig(),
        **{**LEGACY_FIELDS, "recipe": "notebook", "model": "notebook", "patience": 8},
    ),
}
RECIPE_ALIASES: dict[str, str] = {"default": "v3", "seed": "notebook"}
RECIPE_NAMES: tuple[str, ...] = tuple(RECIPES)


def recipe_config(name: str) -> TrialConfig:
    """The ``TrialConfig`` of recipe ``name`` (or an alias); ValueError if unknown."""
    key = RECIPE_ALIASES.get(name, name)
    if key not in RECIPES:
        known = ", ".join([*RECIPE_NAMES, *RECIPE_ALIASES])
        raise ValueError(f"unknown recipe {name!r}; choose one of {known}")
    return RECIPES[key]
