"""The store's own whole-chunk writer for local stores equals zarr's write, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from storage.chunk_writer import LocalChunkWriter
from storage.feature_store import FeatureStore
from storage.manifest import ClipRecord, Manifest
from storage.store_layout import create_or_extend


def small_store(tmp_path, n: int = 6, name: str = "s.zarr", per: int = 4) -> FeatureStore:
    clips = [ClipRecord(f"{i}-0-0-0", f"audio/fold1/{i}-0-0-0.wav", 1, i % 2) for i in range(n)]
    manifest = Manifest(str(tmp_path), clips, ["a", "b"])
    store, _ = create_or_extend(
        str(tmp_path / name), manifest, {"x": 1}, (3, 4, 5, 2), clips_per_chunk=per
    )
    return store


@pytest.mark.parametrize("chunk", [0, 1], ids=["full", "edge"])
def test_fast_path_is_used_and_bytes_equal_zarr(tmp_path, chunk):
    # 6 clips, 4 per chunk: chunk 0 holds clips 0..3, chunk 1 (the edge) clips 4 and 5
    store = small_store(tmp_path)
    assert store._windows_writer is not None and store._clip_info_writer is not None
    rows = store.chunk_rows(chunk)
    rng = np.random.default_rng(chunk)
    block = np.full((4, 3, 4, 5, 2), np.nan, np.float32)
    info = np.full((4, 3), -1, np.int32)
    for r in range(len(rows) - 1):  # the chunk's last clip stays "not done"
        block[r, : r + 1] = rng.normal(size=(r + 1, 4, 5, 2))
        info[r] = [r + 1, r, 100 + r]
    store.write_chunk(chunk, block, info)
    # the same rows written by zarr itself, into a twin store
    twin = small_store(tmp_path, name="t.zarr")
    group = zarr.open_group(twin.url, mode="r+")
    group["windows"][rows.start : rows.stop] = block[: len(rows)]
    group["clip_info"][rows.start : rows.stop] = info[: len(rows)]
    for key in (f"windows/c.{chunk}.0.0.0.0", f"clip_info/c.{chunk}.0"):
        assert (tmp_path / "s.zarr" / key).read_bytes() == (tmp_path / "t.zarr" / key).read_bytes()
    # plain zarr reads what the fast path wrote, and the fast path reads it back
    ours = zarr.open_group(store.url, mode="r")
    np.testing.assert_array_equal(ours["windows"][rows.start : rows.stop], block[: len(rows)])
    assert ours["clip_info"][rows.start : rows.stop].tolist() == info[: len(rows)].tolist()
    assert store.read_chunk_info(chunk).tolist() == info.tolist()
    np.testing.assert_array_equal(store.read_chunk_windows(chunk), block)
    assert store.done_mask().tolist() == [r in rows[:-1] for r in range(6)]
    assert not list(tmp_path.rglob("*.partial"))


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
