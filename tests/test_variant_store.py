"""Variant groups of a feature store: layout, extension, reader API (storage only)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import zarr

from contract.wire import store_key, variant_url
from storage.feature_store import FeatureStore, StoreConfigError, StoreError, UnknownVariantError
from storage.store_layout import create_or_extend, ensure_variants
from tests.test_feature_store import SMALL, SMALL_SHAPE, make_manifest, payload

SPECS = {
    "ts_081": {"name": "ts_081", "kind": "time_stretch", "params": {"rate": 0.81}},
    "ps_m2": {"name": "ps_m2", "kind": "pitch_shift", "params": {"semitones": -2.0}},
}


def _create(path: Path, n: int = 12, variants: dict | None = None) -> FeatureStore:
    store, _ = create_or_extend(
        str(path),
        make_manifest(n),
        SMALL.to_dict(),
        SMALL_SHAPE,
        clips_per_chunk=8,
        variants=variants,
    )
    return store


def _fill(store: FeatureStore, seed: int) -> None:
    for i in range(store.n_clips):
        windows, n_real, n_samples = payload(i, SMALL_SHAPE, seed=seed)
        store.write_clip(i, windows, n_real=n_real, n_samples=n_samples)


def _tree_digest(root: Path, top: str) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted((root / top).rglob("*"))
        if p.is_file()
    }


def test_variant_arrays_mirror_the_top_level(tmp_path: Path) -> None:
    store = _create(tmp_path / "s.zarr", variants=SPECS)
    assert store.variant_names() == ["ps_m2", "ts_081"]
    assert store.variant_spec("ts_081") == SPECS["ts_081"]
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    for name in SPECS:
        for arr in ("windows", "clip_info"):
            top, var = g[arr], g[f"variants/{name}/{arr}"]
            assert var.shape == top.shape
            assert var.chunks == top.chunks
            assert var.dtype == top.dtype
            assert var.metadata.dimension_names == top.metadata.dimension_names
            assert var.metadata.chunk_key_encoding == top.metadata.chunk_key_encoding
            assert str(var.fill_value) == str(top.fill_value)
        assert g[f"variants/{name}"].attrs["variant"] == SPECS[name]
    assert g.attrs["variants"] == ["ps_m2", "ts_081"]
    assert g.attrs["format_version"] == 2


def test_store_without_variants_opens_with_none(tmp_path: Path) -> None:
    store = _create(tmp_path / "s.zarr")
    assert "variants" not in zarr.open_group(str(tmp_path / "s.zarr")).attrs
    assert store.variant_names() == []
    with pytest.raises(UnknownVariantError) as info:
        store.read_variant("ts_081", np.array([0]))
    assert isinstance(info.value, StoreError)
    assert "ts_081" in str(info.value) and str(tmp_path / "s.zarr") in str(info.value)
    with pytest.raises(UnknownVariantError):
        store.variant_spec("nope")
    with pytest.raises(StoreError, match="no variant 'nope'"):
        FeatureStore.open(variant_url(str(tmp_path / "s.zarr"), "nope"))


def test_read_variant_follows_the_given_order(tmp_path: Path) -> None:
    store = _create(tmp_path / "s.zarr", n=20, variants=SPECS)
    variant = store.variant_store("ts_081")
    assert variant.url == variant_url(store.url, "ts_081")
    expected = {}
    for i in (11, 3, 2, 17, 0):  # 0 has no windows (n cycles through 0..max)
        windows, n_real, n_samples = payload(i, SMALL_SHAPE, seed=7)
        variant.write_clip(i, windows, n_real=n_real, n_samples=n_samples)
        expected[i] = (windows, n_real)
    assert not store.done_mask().any()  # the originals are untouched
    assert np.flatnonzero(variant.done_mask()).tolist() == [0, 2, 3, 11, 17]
    clips = np.array([17, 5, 3, 11, 2, 0, 3], dtype=np.int64)
    data = store.read_variant("ts_081", clips)
    assert data.clips.tolist() == clips.tolist()
    assert data.clip_done.tolist() == [True, False, True, True, True, True, True]
    want = [i for i in clips.tolist() if i in expected]
    ref = np.concatenate([expected[i][0] for i in want])
    np.testing.assert_array_equal(data.windows, ref)
    assert data.clip_index.tolist() == [i for i in want for _ in range(len(expected[i][0]))]
    labels = store.labels()
    assert data.labels.tolist() == [int(labels[i]) for i in data.clip_index]
    assert data.clip_folds.tolist() == store.folds()[clips].tolist()
    assert data.clip_fsids.tolist() == store.fsids()[clips].tolist()
    real = store.read_variant("ts_081", clips, only_real=True)
    assert real.real.all()
    assert len(real.windows) == sum(expected[i][1] for i in want)
    # the other variant is still empty
    other = store.read_variant("ps_m2", clips)
    assert not other.clip_done.any() and other.windows.shape == (0, *SMALL_SHAPE[1:])


def test_extension_keeps_variant_arrays_the_same_length(tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    store = _create(tmp_path / "s.zarr", n=12, variants=SPECS)
    _fill(store.variant_store("ps_m2"), seed=3)
    before = store.read_variant("ps_m2", np.arange(12))
    grown, change = create_or_extend(url, make_manifest(20), SMALL.to_dict(), SMALL_SHAPE)
    assert change.added and change.variants_added == []
    g = zarr.open_group(url, mode="r")
    for name in SPECS:
        assert g[f"variants/{name}/windows"].shape == g["windows"].shape
        assert g[f"variants/{name}/clip_info"].shape == g["clip_info"].shape
    after = grown.read_variant("ps_m2", np.arange(12))
    np.testing.assert_array_equal(after.windows, before.windows)
    assert not grown.read_variant("ps_m2", np.array(change.added)).clip_done.any()
    assert grown.variant_store("ps_m2").done_mask().sum() == 12


def test_ensure_variants_adds_only_missing_and_refuses_changed_specs(tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    _create(tmp_path / "s.zarr", variants={"ts_081": SPECS["ts_081"]})
    store, added = ensure_variants(url, SPECS)
    assert added == ["ps_m2"] and store.variant_names() == ["ps_m2", "ts_081"]
    assert ensure_variants(url, SPECS)[1] == []
    changed = {"ts_081": {**SPECS["ts_081"], "params": {"rate": 0.8}}}
    with pytest.raises(StoreConfigError, match="ts_081"):
        ensure_variants(url, changed)
    with pytest.raises(StoreConfigError, match="invalid variant name"):
        ensure_variants(url, {"Bad/Name": {}})


def test_variants_leave_the_original_arrays_byte_identical(tmp_path: Path) -> None:
    root = tmp_path / "s.zarr"
    store = _create(root, n=20)
    _fill(store, seed=1)
    windows, info = _tree_digest(root, "windows"), _tree_digest(root, "clip_info")
    ensure_variants(str(root), SPECS)
    _fill(FeatureStore.open(variant_url(str(root), "ts_081"), mode="r+"), seed=2)
    assert _tree_digest(root, "windows") == windows
    assert _tree_digest(root, "clip_info") == info
    ref = store.read_folds([1, 2, 3])
    again = FeatureStore.open(str(root)).read_folds([1, 2, 3])
    np.testing.assert_array_equal(again.windows, ref.windows)


def test_plain_zarr_reading_as_documented(tmp_path: Path) -> None:
    root = tmp_path / "s.zarr"
    store = _create(root, n=12, variants=SPECS)
    _fill(store.variant_store("ts_081"), seed=5)
    g = zarr.open_group(str(root), mode="r")
    n = g.attrs["n_clips"]
    v = g["variants/ts_081"]
    info = v["clip_info"][:n]
    rows = np.flatnonzero((g["fold"][:n] == 2) & (info[:, 0] >= 0))
    block = v["windows"].oindex[rows]
    keep = np.arange(block.shape[1])[None, :] < info[rows, 0][:, None]
    ref = store.read_variant("ts_081", rows.astype(np.int64))
    np.testing.assert_array_equal(block[keep], ref.windows)


def test_variant_wire_keys_never_prefix_each_other() -> None:
    url = "s3://bucket/us8k.zarr"
    base, var = store_key(url), store_key(variant_url(url, "ts_081"))
    assert var == f"{base}.ts_081"
    assert not f"extract-{var}-".startswith(f"extract-{base}-")
