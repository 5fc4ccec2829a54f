"""The store's own whole-chunk writer for local stores equals zarr's write, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from storage.chunk_writer import LocalChunkWriter
from storage.feature_store import FeatureStore
from storage.manifest import ClipRecord, Manifest
from storage.store_layout import create_or_extend


def small_store(tmp_path, n: int = 6) -> FeatureStore:
    clips = [ClipRecord(f"{i}-0-0-0", f"audio/fold1/{i}-0-0-0.wav", 1, i % 2) for i in range(n)]
    manifest = Manifest(str(tmp_path), clips, ["a", "b"])
    store, _ = create_or_extend(str(tmp_path / "s.zarr"), manifest, {"x": 1}, (3, 4, 5, 2))
    return store


def test_fast_path_is_used_and_bytes_equal_zarr(tmp_path):
    store = small_store(tmp_path)
    assert store._windows_writer is not None and store._clip_info_writer is not None
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(2, 4, 5, 2)).astype(np.float32)
    store.write_clip(1, windows, n_real=1, n_samples=123)
    # the same row written by zarr itself
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")
    padded = np.full((3, 4, 5, 2), np.nan, np.float32)
    padded[:2] = windows
    group["windows"][4] = padded
    group["clip_info"][4] = np.array([2, 1, 123], np.int32)
    root = tmp_path / "s.zarr"
    assert (root / "windows" / "c.1.0.0.0.0").read_bytes() == (
        root / "windows" / "c.4.0.0.0.0"
    ).read_bytes()
    assert (root / "clip_info" / "c.1.0").read_bytes() == (
        root / "clip_info" / "c.4.0"
    ).read_bytes()
    # and plain zarr reads what the fast path wrote
    np.testing.assert_array_equal(group["windows"][1, :2], windows)
    assert group["clip_info"][1].tolist() == [2, 1, 123]
    assert not list(root.rglob("*.partial"))


def test_compressed_arrays_fall_back_to_zarr(tmp_path):
    array = zarr.create_array(
        str(tmp_path / "z.zarr"), shape=(4, 3), chunks=(1, 3), dtype="float32", fill_value=0
    )
    assert LocalChunkWriter.for_array(array) is None  # default Zstd compressor


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_chunk(tmp_path, monkeypatch):
    store = small_store(tmp_path)
    first = np.ones((1, 4, 5, 2), np.float32)
    store.write_clip(0, first, n_real=1, n_samples=10)
    root = tmp_path / "s.zarr"
    before = (root / "windows" / "c.0.0.0.0.0").read_bytes()

    def disk_full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("storage.chunk_writer.os.write", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.write_clip(0, 2 * first, n_real=1, n_samples=10)
    monkeypatch.undo()
    assert not list(root.rglob("*.partial"))
    assert (root / "windows" / "c.0.0.0.0.0").read_bytes() == before
