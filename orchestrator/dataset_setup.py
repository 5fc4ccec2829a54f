"""The dataset side of the setup step: scan with the store's folds, fix the clip length.

Before the store is laid out, the scan must know the folds that an earlier run
assigned (so that no clip moves fold), and the feature configuration must get the
clip length that fixes the windows per clip (``FeatureConfig.max_seconds``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from orchestrator.layout_common import DatasetOptions, probe_clip_seconds
from orchestrator.layouts import scan_any
from storage.feature_store import FeatureStore, StoreError
from storage.manifest import Manifest
from workers.features import FeatureConfig

DEFAULT_CLIP_SECONDS = 4.0


def stored_layout(
    store_url: str, storage_options: dict[str, Any] | None
) -> tuple[dict[str, int], dict[str, Any] | None]:
    """``(rel path -> fold, feature config)`` of an existing store; ``({}, None)`` if none."""
    try:
        store = FeatureStore.open(store_url, mode="r", storage_options=storage_options)
    except (StoreError, FileNotFoundError, OSError):
        return {}, None
    folds = {str(p): int(f) for p, f in zip(store.rel_paths(), store.folds(), strict=True)}
    return folds, store.feature_config


def resolve_clip_seconds(
    manifest: Manifest, options: DatasetOptions, stored_config: dict[str, Any] | None
) -> float:
    """Clip length in seconds: ``--clip-seconds``, else the existing store's, else the
    layout's (UrbanSound8K 4, ESC 5), else the longest file's header, else 4."""
    if options.clip_seconds is not None:
        return float(options.clip_seconds)
    if stored_config is not None and stored_config.get("max_seconds"):
        return float(stored_config["max_seconds"])
    if manifest.clip_seconds is not None:
        return float(manifest.clip_seconds)
    probed = probe_clip_seconds(manifest.dataset_root, [c.rel_path for c in manifest.clips])
    return probed if probed is not None else DEFAULT_CLIP_SECONDS


def scan_for_store(
    dataset: str,
    options: DatasetOptions,
    config: FeatureConfig,
    *,
    store_url: str,
    storage_options: dict[str, Any] | None = None,
) -> tuple[Manifest, FeatureConfig]:
    """Scan ``dataset`` keeping the store's assigned folds; the config with its clip length."""
    previous, stored_config = stored_layout(store_url, storage_options)
    manifest = scan_any(dataset, options, previous_folds=previous)
    seconds = resolve_clip_seconds(manifest, options, stored_config)
    manifest.clip_seconds = seconds
    return manifest, replace(config, max_seconds=seconds)
