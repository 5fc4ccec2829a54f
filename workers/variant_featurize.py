"""One clip of a store to the windows of one of its variants (decode, transform, extract).

The extraction worker calls :func:`featurize_variant` for a variant handle
(``FeatureStore.variant_store``); everything else about a variant chunk (the write
rules, outcomes, retries) is the originals' (``workers.extraction``). The transform is
``workers.audio_variants.Variant.apply``, deterministic given the clip, so every write
of a variant chunk carries the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from contract.errors import ClipError
from storage.feature_store import FeatureStore
from workers.audio import AudioDecodeError, load_audio
from workers.audio_variants import Variant, background_order
from workers.features import ClipFeatures, FeatureConfig, extract_clip_features


@lru_cache(maxsize=256)
def _spec(url: str, store: FeatureStore) -> Variant:
    # a variant's spec never changes once its group exists (the setup step refuses it)
    return Variant.from_dict(store.variant_spec(store.variant))


def variant_of(store: FeatureStore) -> Variant:
    """The :class:`Variant` of a variant handle (read once per handle and process)."""
    return _spec(store.url, store)


# Background candidates tried per clip before giving up (each undecodable one is skipped).
MAX_BACKGROUND_TRIES = 8


def background_candidates(store: FeatureStore, index: int, variant: Variant) -> list[int]:
    """Store indices of the clips whose audio may be mixed into clip ``index``'s variant,
    in the order to try them (the first that decodes is used).

    Clips of the *same fold* only (never another: a variant must not carry audio of a
    test or validation fold into training), not the clip itself, ordered from the clip
    id and the variant's name (``workers.audio_variants.background_order``).
    """
    folds, ids = store.folds(), store.clip_ids()
    candidates = np.flatnonzero((folds == folds[index]) & (ids != ""))
    order = background_order(str(ids[index]), ids[candidates].tolist(), variant=variant.name)
    return [int(candidates[k]) for k in order]


def background_index(store: FeatureStore, index: int, variant: Variant) -> int | None:
    """The first of :func:`background_candidates` (``None``: the fold has no other clip)."""
    order = background_candidates(store, index, variant)
    return order[0] if order else None


def featurize_variant(
    store: FeatureStore,
    index: int,
    path: Path,
    config: FeatureConfig,
    *,
    resolve: Callable[[str], Path],
) -> ClipFeatures:
    """Windows of the variant (``store.variant``) of clip ``index``, whose file is ``path``.

    ``resolve(rel_path) -> Path`` resolves a background clip's path the way the clip's
    own was resolved (inside the dataset root). A background variant uses the first of
    :func:`background_candidates` (at most :data:`MAX_BACKGROUND_TRIES`) that decodes;
    with none, the clip's own audio is used unchanged.

    Raises:
        ClipError: the clip cannot be decoded.
    """
    variant = variant_of(store)
    rel_path = str(store.rel_paths()[index])
    try:
        signal, _ = load_audio(path, sr=config.sample_rate, max_seconds=config.max_seconds)
    except AudioDecodeError as exc:
        raise ClipError(rel_path, exc.reason) from None
    background = None
    if variant.needs_background:
        for other in background_candidates(store, index, variant)[:MAX_BACKGROUND_TRIES]:
            try:
                background, _ = load_audio(
                    resolve(str(store.rel_paths()[other])),
                    sr=config.sample_rate,
                    max_seconds=config.max_seconds,
                )
                break
            except (AudioDecodeError, ClipError):
                continue  # a bad file is bad for every worker: skip it the same way
    y = variant.apply(
        signal,
        sr=config.sample_rate,
        clip_id=str(store.clip_ids()[index]),
        background=background,
    )
    return extract_clip_features(y, config)
