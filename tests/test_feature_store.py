"""Tests of storage.feature_store: layout, clip writes, concurrency, extension, fold reads."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from storage import feature_store
from storage.blobs import BlobStore
from storage.feature_store import (
    FORMAT,
    ClipIndexError,
    FeatureStore,
    StoreConfigError,
    StoreError,
)
from storage.manifest import ClipRecord, Manifest
from storage.store_layout import create_or_extend
from workers.features import FeatureConfig

SMALL = FeatureConfig(n_mels=8, frames=5, step_frames=2, max_seconds=4096 / 22050)
SMALL_SHAPE = (SMALL.max_windows, *SMALL.window_shape)
REAL = FeatureConfig()
REAL_SHAPE = (REAL.max_windows, *REAL.window_shape)
CLASSES = ["air", "bark", "car", "drill"]


def make_manifest(
    n: int,
    *,
    n_folds: int = 3,
    start: int = 0,
    class_names: list[str] | None = None,
    root: str = "/data/us8k",
) -> Manifest:
    """``n`` clips ``c00000``..., folds ``1..n_folds`` round robin, sorted like the scanner."""
    names = class_names or CLASSES
    clips = [
        ClipRecord(
            clip_id=f"c{i:05d}",
            rel_path=f"audio/fold{i % n_folds + 1}/c{i:05d}.wav",
            fold=i % n_folds + 1,
            label=i % len(CLASSES),
            fsid=1000 + i // 2,
            salience=1 + i % 2,
        )
        for i in range(start, start + n)
    ]
    clips.sort(key=lambda c: (c.fold, c.clip_id))
    return Manifest(dataset_root=root, clips=clips, class_names=list(names))


def payload(
    index: int, shape: tuple[int, int, int, int], seed: int = 0
) -> tuple[np.ndarray, int, int]:
    """Deterministic ``(windows, n_real, n_samples)`` of a clip; n cycles through 0..max."""
    max_windows, *window = shape
    n = index % (max_windows + 1)
    rng = np.random.default_rng([seed, index])
    windows = (rng.standard_normal((n, *window)) * 20 - 40).astype(np.float32)
    return windows, max(0, n - index % 2), 1000 + index


def create(
    path: Path, n: int = 12, shape: tuple[int, int, int, int] = SMALL_SHAPE, **kw: Any
) -> FeatureStore:
    config = SMALL if shape == SMALL_SHAPE else REAL
    store, change = create_or_extend(
        str(path), make_manifest(n, **kw), config.to_dict(), shape, clips_per_chunk=8
    )
    assert change.created
    return store


def write(store: FeatureStore, index: int, seed: int = 0) -> tuple[np.ndarray, int, int]:
    windows, n_real, n_samples = payload(index, store.window_shape, seed)
    store.write_clip(
        index,
        windows,
        n_real=n_real,
        n_samples=n_samples,
        expect_rel_path=str(store.rel_paths()[index]),
    )
    return windows, n_real, n_samples


def _write_indices(url: str, indices: list[int]) -> int:
    """Worker-process body: open once with r+, write the given clips."""
    store = FeatureStore.open(url, mode="r+")
    for i in indices:
        write(store, i)
    return len(indices)


# ---------------------------------------------------------------------- create / open


def test_create_layout(tmp_path: Path) -> None:
    path = tmp_path / "f.zarr"
    store = create(path, n=12)
    manifest = make_manifest(12)
    assert store.n_clips == 12
    assert store.generation == 1
    assert store.window_shape == SMALL_SHAPE
    assert store.feature_config == SMALL.to_dict()
    assert store.class_names == CLASSES
    assert store.dataset_root == "/data/us8k"
    assert store.clip_ids().tolist() == [c.clip_id for c in manifest.clips]
    assert store.manifest_records() == manifest.clips
    assert store.index_of(manifest.clips[5].clip_id) == 5
    assert not store.done_mask().any()
    assert store.clip_info(0) is None

    group = zarr.open_group(str(path), mode="r")
    assert group["windows"].shape == (12, *SMALL_SHAPE)
    assert group["windows"].chunks == (8, *SMALL_SHAPE)  # create() asks for 8 clips per chunk
    assert group["windows"].dtype == np.float32
    assert np.isnan(group["windows"].fill_value)
    assert group["clip_info"].chunks == (8, 3)
    assert group["clip_info"].fill_value == -1
    assert group["windows"].compressors == ()
    assert group.attrs["format"] == FORMAT
    assert group.attrs["window_shape"] == list(SMALL_SHAPE)
    assert group.attrs["format_version"] == 2 and group.attrs["clips_per_chunk"] == 8
    assert store.chunk_rows(1) == range(8, 12) and store.chunk_of(9) == 1
    assert "created" in group.attrs and "extended" in group.attrs


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no feature store"):
        FeatureStore.open(str(tmp_path / "missing.zarr"))
    zarr.create_group(str(tmp_path / "other.zarr"), attributes={"format": "something"})
    with pytest.raises(StoreError, match="not an esc-pipeline feature store"):
        FeatureStore.open(str(tmp_path / "other.zarr"))
    store = create(tmp_path / "f.zarr", n=2)
    ro = FeatureStore.open(store.url)
    with pytest.raises(StoreError, match="read-only"):
        write(ro, 0)


def test_unfinished_creation_is_refused_then_completed(tmp_path: Path) -> None:
    path = tmp_path / "f.zarr"
    zarr.create_group(str(path), attributes={"format": FORMAT, "incomplete": True})
    with pytest.raises(StoreError, match="did not finish"):
        FeatureStore.open(str(path))
    store, change = create_or_extend(str(path), make_manifest(4), SMALL.to_dict(), SMALL_SHAPE)
    assert change.created and change.added == [0, 1, 2, 3]
    assert FeatureStore.open(str(path)).n_clips == 4 == store.n_clips


# ------------------------------------------------------------------------- clip writes


def test_write_read_round_trip_and_padding(tmp_path: Path) -> None:
    path = tmp_path / "f.zarr"
    store = create(path, n=12)
    expected = {i: write(store, i) for i in (0, 1, 3, 6, 7)}
    mask = store.done_mask()
    assert mask.tolist() == [i in expected for i in range(12)]
    for i, (windows, n_real, n_samples) in expected.items():
        got = store.read_clip(i)
        assert got.dtype == np.float32
        assert got.shape == windows.shape
        assert got.tobytes() == windows.tobytes()
        assert not np.isnan(got).any()
        assert store.clip_info(i) == (windows.shape[0], n_real, n_samples)
    # Slots beyond n_windows are NaN in the stored chunk.
    raw = zarr.open_group(str(path), mode="r")["windows"][1]
    assert np.isnan(raw[1:]).all() and not np.isnan(raw[:1]).any()
    with pytest.raises(StoreError, match="not been extracted"):
        store.read_clip(2)
    # A fresh handle sees the same.
    again = FeatureStore.open(str(path))
    assert again.done_mask().tolist() == mask.tolist()
    assert again.read_clip(7).tobytes() == expected[7][0].tobytes()


def test_redelivery_rewrites_identical_bytes(tmp_path: Path) -> None:
    path = tmp_path / "f.zarr"
    store = create(path, n=4)
    write(store, 3)
    chunk = path / "windows" / "c.0.0.0.0.0"  # clips 0..7 share chunk 0
    marker = path / "clip_info" / "c.0.0"
    before = chunk.read_bytes(), marker.read_bytes()
    write(store, 3)
    assert (chunk.read_bytes(), marker.read_bytes()) == before
    assert store.read_clip(3).tobytes() == payload(3, SMALL_SHAPE)[0].tobytes()
    assert store.done_mask().tolist() == [False, False, False, True]


def test_crash_between_windows_and_marker_leaves_clip_not_done(tmp_path: Path) -> None:
    path = tmp_path / "f.zarr"
    store = create(path, n=6, n_folds=1)
    windows = payload(2, SMALL_SHAPE)[0]
    padded = np.full(SMALL_SHAPE, np.nan, dtype=np.float32)
    padded[: len(windows)] = windows
    zarr.open_group(str(path), mode="r+")["windows"][2] = padded  # the task dies here
    assert (path / "windows" / "c.0.0.0.0.0").exists()
    assert not store.done_mask()[2]
    assert store.clip_info(2) is None
    with pytest.raises(StoreError):
        store.read_clip(2)
    data = store.read_folds([1])
    assert 2 not in data.clip_index and not data.clip_done[2]
    write(store, 2)  # redelivery
    assert store.done_mask()[2]
    assert store.read_clip(2).tobytes() == windows.tobytes()


def test_write_validation(tmp_path: Path) -> None:
    store = create(tmp_path / "f.zarr", n=5)
    windows, n_real, n_samples = payload(2, SMALL_SHAPE)
    with pytest.raises(ClipIndexError, match="out of range"):
        store.write_clip(5, windows, n_real=n_real, n_samples=n_samples)
    with pytest.raises(ClipIndexError, match="out of range"):
        store.write_clip(-1, windows, n_real=n_real, n_samples=n_samples)
    with pytest.raises(ClipIndexError, match="does not match"):
        store.write_clip(
            2, windows, n_real=n_real, n_samples=n_samples, expect_rel_path="audio/x.wav"
        )
    bad = windows.copy()
    bad[0, 1, 1, 0] = np.inf
    with pytest.raises(ValueError, match="features are not finite"):
        store.write_clip(2, bad, n_real=n_real, n_samples=n_samples)
    bad[0, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="features are not finite"):
        store.write_clip(2, bad, n_real=n_real, n_samples=n_samples)
    too_many = np.zeros((SMALL_SHAPE[0] + 1, *SMALL_SHAPE[1:]), dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        store.write_clip(2, too_many, n_real=0, n_samples=1)
    with pytest.raises(ValueError, match="shape"):
        store.write_clip(2, np.zeros((1, 8, 6, 2), np.float32), n_real=0, n_samples=1)
    with pytest.raises(ValueError, match="n_real"):
        store.write_clip(2, windows, n_real=len(windows) + 1, n_samples=n_samples)
    with pytest.raises(ClipIndexError):
        store.index_of("nope")
    assert not store.done_mask().any()


def test_done_mask_ignores_partial_writes(tmp_path: Path) -> None:
    path = tmp_path / "f.zarr"
    store = create(path, n=5)
    write(store, 1)
    # What LocalStore leaves while writing the marker of clip 3 (temp file, then rename).
    (path / "clip_info" / f"c.3.{uuid.uuid4().hex}.partial").write_bytes(b"\0" * 12)
    assert store.done_mask().tolist() == [False, True, False, False, False]


def test_refuse_duplicate_clip_ids(tmp_path: Path) -> None:
    manifest = make_manifest(4)
    manifest.clips.append(manifest.clips[0])
    with pytest.raises(StoreConfigError, match="c00000"):
        create_or_extend(str(tmp_path / "f.zarr"), manifest, SMALL.to_dict(), SMALL_SHAPE)
    assert not (tmp_path / "f.zarr").exists()


def test_clip_with_no_windows_is_done(tmp_path: Path) -> None:
    store = create(tmp_path / "f.zarr", n=5)
    store.write_clip(4, np.zeros((0, *SMALL_SHAPE[1:]), np.float32), n_real=0, n_samples=10)
    assert store.done_mask()[4]
    assert store.clip_info(4) == (0, 0, 10)
    assert store.read_clip(4).shape == (0, *SMALL_SHAPE[1:])


def test_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "f.zarr"
    n = 200
    store = create(path, n=n)
    ctx = multiprocessing.get_context("spawn")
    # Interleaved chunks: neighbouring chunks are written by different processes
    # (write_clip rewrites its chunk: one writer per chunk; workers use whole chunks).
    parts = [[i for i in range(n) if (i // 8) % 4 == k] for k in range(4)]
    with ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        counts = [f.result() for f in [pool.submit(_write_indices, str(path), p) for p in parts]]
    assert sum(counts) == n
    assert store.done_mask().all()
    raw = zarr.open_group(str(path), mode="r")
    windows, info = raw["windows"][:], raw["clip_info"][:]
    for i in range(n):
        expected, n_real, n_samples = payload(i, SMALL_SHAPE)
        k = len(expected)
        assert info[i].tolist() == [k, n_real, n_samples]
        assert windows[i, :k].tobytes() == expected.tobytes()
        assert np.isnan(windows[i, k:]).all()
    assert not list(path.rglob("*.partial"))


# ------------------------------------------------------------------------------ layout


def test_refuse_mismatched_feature_config(tmp_path: Path) -> None:
    path = str(tmp_path / "f.zarr")
    create(tmp_path / "f.zarr", n=4)
    other = {**SMALL.to_dict(), "fmin": 50.0}
    with pytest.raises(StoreConfigError, match=r"fmin: 0\.0 -> 50\.0") as err:
        create_or_extend(path, make_manifest(4), other, SMALL_SHAPE)
    assert "--store" in str(err.value) and "re-extract" in str(err.value)
    shape = (4, *SMALL_SHAPE[1:])
    with pytest.raises(StoreConfigError, match="window shape"):
        create_or_extend(path, make_manifest(4), SMALL.to_dict(), shape)
    assert FeatureStore.open(path).generation == 1


def test_refuse_changed_label_or_class_name(tmp_path: Path) -> None:
    path = str(tmp_path / "f.zarr")
    create(tmp_path / "f.zarr", n=4)
    manifest = make_manifest(6)
    victim = manifest.clips[1]
    manifest.clips[1] = ClipRecord(**{**victim.__dict__, "label": (victim.label + 1) % 4})
    with pytest.raises(StoreConfigError, match=victim.clip_id):
        create_or_extend(path, manifest, SMALL.to_dict(), SMALL_SHAPE)
    renamed = make_manifest(6, class_names=["air", "dog", "car", "drill"])
    with pytest.raises(StoreConfigError, match="'bark' -> 'dog'"):
        create_or_extend(path, renamed, SMALL.to_dict(), SMALL_SHAPE)
    after = FeatureStore.open(path)
    assert (after.n_clips, after.generation) == (4, 1)


def test_extend_with_new_clips(tmp_path: Path) -> None:
    path = str(tmp_path / "f.zarr")
    store = create(tmp_path / "f.zarr", n=9)
    old_ids = store.clip_ids().tolist()
    written = {i: write(store, i) for i in range(9)}
    worker = FeatureStore.open(path, mode="r+")  # opened before the extension

    # The new manifest drops c00000 and adds c00009..c00013 and a class.
    grown = make_manifest(14, class_names=[*CLASSES, "siren"])
    grown.clips = [c for c in grown.clips if c.clip_id != "c00000"]
    extended, change = create_or_extend(path, grown, SMALL.to_dict(), SMALL_SHAPE)
    assert not change.created
    # New clips start at the next chunk boundary (8 clips per chunk): rows 9..15 stay
    # empty, so chunk 1's clips never change once it has any.
    assert change.added == [16, 17, 18, 19, 20]
    assert change.gone == ["c00000"]
    assert change.generation == 2 == extended.generation
    assert extended.n_clips == 21
    assert extended.class_names == [*CLASSES, "siren"]
    assert extended.clip_ids()[:9].tolist() == old_ids
    assert extended.clip_ids()[9:16].tolist() == [""] * 7
    assert extended.rel_paths()[9:16].tolist() == [""] * 7
    assert extended.folds()[9:16].tolist() == [-1] * 7
    new_ids = sorted(c.clip_id for c in grown.clips if c.clip_id not in old_ids)
    assert sorted(extended.clip_ids()[16:].tolist()) == new_ids
    assert extended.done_mask().tolist() == [True] * 9 + [False] * 12
    for i, (windows, n_real, n_samples) in written.items():
        assert extended.read_clip(i).tobytes() == windows.tobytes()
        assert extended.clip_info(i) == (len(windows), n_real, n_samples)

    # The old handle reopens the metadata when asked for an index beyond its n_clips.
    assert worker.n_clips == 9
    windows, n_real, n_samples = payload(18, SMALL_SHAPE)
    rel_path = str(extended.rel_paths()[18])
    worker.write_clip(18, windows, n_real=n_real, n_samples=n_samples, expect_rel_path=rel_path)
    assert worker.n_clips == 21 and worker.generation == 2
    assert worker.rel_paths()[18] == extended.rel_paths()[18]
    assert FeatureStore.open(path).read_clip(18).tobytes() == windows.tobytes()
    assert worker.index_of(str(extended.clip_ids()[20])) == 20

    # Nothing new: nothing changes.
    _, again = create_or_extend(path, grown, SMALL.to_dict(), SMALL_SHAPE)
    assert again.added == [] and again.generation == 2 and not again.created
    assert FeatureStore.open(path).generation == 2
    group = zarr.open_group(path, mode="r")
    assert group["windows"].shape[0] == group["clip_info"].shape[0] == 21
    assert group["label"][:].tolist() == extended.labels().tolist()


# -------------------------------------------------------------------------- fold reads


def expected_folds(store: FeatureStore, folds: list[int], done: set[int], only_real: bool):
    windows, labels, clip_index, real = [], [], [], []
    for i in np.flatnonzero(np.isin(store.folds(), folds)):
        if i not in done:
            continue
        w, n_real, _ = payload(int(i), store.window_shape)
        keep = n_real if only_real else len(w)
        windows.append(w[:keep])
        labels += [int(store.labels()[i])] * keep
        clip_index += [int(i)] * keep
        real += [slot < n_real for slot in range(keep)]
    shape = (0, *store.window_shape[1:])
    return np.concatenate(windows) if windows else np.empty(shape), labels, clip_index, real


@pytest.mark.parametrize("max_runs", [1, 100], ids=["oindex", "slices"])
@pytest.mark.parametrize("only_real", [False, True])
def test_read_folds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, only_real: bool, max_runs: int
) -> None:
    monkeypatch.setattr(feature_store, "_MAX_SLICE_RUNS", max_runs)
    store = create(tmp_path / "f.zarr", n=30, n_folds=3)
    done = {i for i in range(30) if i % 5 != 4}
    for i in sorted(done):
        write(store, i)
    data = store.read_folds([3, 1], only_real=only_real)
    windows, labels, clip_index, real = expected_folds(store, [1, 3], done, only_real)
    assert data.windows.dtype == np.float32
    assert data.windows.shape == windows.shape and len(labels) > 0
    assert data.windows.tobytes() == windows.astype(np.float32).tobytes()
    assert data.labels.dtype == np.int64 and data.labels.tolist() == labels
    assert data.clip_index.dtype == np.int64 and data.clip_index.tolist() == clip_index
    assert data.real.tolist() == real
    assert only_real == bool(data.real.all())
    selected = np.flatnonzero(np.isin(store.folds(), [1, 3]))
    assert data.clips.tolist() == selected.tolist()
    assert data.clip_done.tolist() == [i in done for i in selected]
    assert data.clip_folds.tolist() == store.folds()[selected].tolist()
    assert set(data.clip_folds.tolist()) == {1, 3}
    assert data.clip_labels.tolist() == store.labels()[selected].tolist()
    assert data.clip_fsids.tolist() == store.fsids()[selected].tolist()
    empty = store.read_folds([7])
    assert empty.windows.shape == (0, *SMALL_SHAPE[1:]) and empty.clips.size == 0


def test_real_shape_round_trip(tmp_path: Path) -> None:
    store = create(tmp_path / "f.zarr", n=50, shape=REAL_SHAPE, n_folds=2)
    assert store.window_shape == (7, 60, 41, 2)
    for i in range(50):
        write(store, i)
    assert store.done_mask().all()
    data = store.read_folds([1, 2])
    windows, labels, clip_index, real = expected_folds(store, [1, 2], set(range(50)), False)
    assert data.windows.shape == windows.shape
    assert data.windows.tobytes() == windows.tobytes()
    assert data.clip_index.tolist() == clip_index and data.labels.tolist() == labels
    assert data.real.tolist() == real
    chunk = tmp_path / "f.zarr" / "windows" / "c.5.0.0.0.0"  # clips 40..47
    assert chunk.stat().st_size == 8 * 7 * 60 * 41 * 2 * 4  # uncompressed


@pytest.mark.slow
def test_read_folds_timing_900_clips(tmp_path: Path) -> None:
    store = create(tmp_path / "f.zarr", n=900, shape=REAL_SHAPE, n_folds=1)
    block = payload(7, REAL_SHAPE)[0]  # 7 windows
    t0 = time.perf_counter()
    for i in range(900):
        store.write_clip(i, block, n_real=6, n_samples=88200)
    t_write = time.perf_counter() - t0
    reader = FeatureStore.open(store.url)
    t0 = time.perf_counter()
    mask = reader.done_mask()
    t_mask = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = reader.read_folds([1])
    t_read = time.perf_counter() - t0
    print(
        f"\n900 clips (7, 60, 41, 2): write_clip {t_write:.2f} s, done_mask {t_mask:.3f} s, "
        f"read_folds {t_read:.2f} s ({data.windows.nbytes / 1e6:.0f} MB)"
    )
    assert mask.all()
    assert data.windows.shape == (900 * 7, 60, 41, 2)
    assert int(data.real.sum()) == 900 * 6
    assert data.clip_index[::7].tolist() == list(range(900))
    assert np.array_equal(data.windows[7 * 899 : 7 * 900], block)
    assert np.array_equal(data.windows[3::7], np.broadcast_to(block[3], (900, *block.shape[1:])))


# ------------------------------------------------------------------ plain zarr, blobs


def test_plain_zarr_reads_match(tmp_path: Path) -> None:
    """Reading with zarr alone, following docs/store-layout.md, gives the same data."""
    path = tmp_path / "f.zarr"
    store = create(path, n=10)
    for i in (0, 2, 3, 5, 9):
        write(store, i)
    group = zarr.open_group(str(path), mode="r")
    assert group.attrs["format"] == "esc-pipeline.features"
    assert group.attrs["n_clips"] == 10
    clip_id = group["clip_id"][:]
    assert [str(c) for c in clip_id] == store.clip_ids().tolist()
    assert [str(p) for p in group["rel_path"][:]] == store.rel_paths().tolist()
    assert group["fold"][:].tolist() == store.folds().tolist()
    assert group["label"][:].tolist() == store.labels().tolist()
    assert group["fsid"][:].tolist() == store.fsids().tolist()
    assert group["salience"][:].tolist() == store.saliences().tolist()
    info = group["clip_info"][:]
    done = info[:, 0] >= 0
    assert done.tolist() == store.done_mask().tolist()
    windows = group["windows"]
    for i in np.flatnonzero(done):
        n_windows = int(info[i, 0])
        assert windows[i, :n_windows].tobytes() == store.read_clip(int(i)).tobytes()
    assert np.isnan(windows[1]).all()  # not done: all fill

    # The fold read of docs/store-layout.md.
    n = group.attrs["n_clips"]
    fold, label = group["fold"][:n], group["label"][:n]
    rows = np.flatnonzero((fold == 1) & done)
    block = group["windows"].oindex[rows]
    keep = np.arange(block.shape[1])[None, :] < info[rows, 0][:, None]
    real = (np.arange(block.shape[1])[None, :] < info[rows, 1][:, None])[keep]
    data = store.read_folds([1])
    assert len(rows) >= 2 and len(block[keep]) > 0
    assert block[keep].tobytes() == data.windows.tobytes()
    assert np.repeat(label[rows], info[rows, 0]).tolist() == data.labels.tolist()
    assert real.tolist() == data.real.tolist()


@pytest.mark.filterwarnings("ignore:Object at .* is not recognized:UserWarning")
def test_blob_folders_under_the_group(tmp_path: Path) -> None:
    path = tmp_path / "f.zarr"
    blobs = BlobStore(str(path))
    blobs.put_json("runs/early/config.json", {"before": "creation"})
    store = create(path, n=6)
    write(store, 1)
    blobs.put_json("runs/x/config.json", {"lr": 0.001})
    blobs.put_json("submissions/s1.json", {"acc": 0.7})
    blobs.put_bytes("runs/x/model.keras", b"\x00" * 10)

    reopened = FeatureStore.open(str(path))
    assert reopened.done_mask().tolist() == [False, True, False, False, False, False]
    assert reopened.read_folds([1, 2, 3]).clip_index.tolist() == [1]
    group = zarr.open_group(str(path), mode="r")
    assert sorted(group.array_keys()) == sorted(
        ["windows", "clip_info", "clip_id", "rel_path", "fold", "label", "fsid", "salience"]
    )
    assert group["clip_id"][:].shape == (6,)
    _, change = create_or_extend(str(path), make_manifest(8), SMALL.to_dict(), SMALL_SHAPE)
    assert change.added == [8, 9]  # from the next chunk boundary
    assert blobs.get_json("runs/early/config.json") == {"before": "creation"}
    assert blobs.get_json("runs/x/config.json") == {"lr": 0.001}
    assert blobs.list("submissions") == ["s1.json"]


def test_fsspec_url(tmp_path: Path) -> None:
    """A non-local URL goes through FsspecStore (memory:// stands in for s3://)."""
    url = f"memory://stores/{uuid.uuid4().hex}/f.zarr"
    store, change = create_or_extend(url, make_manifest(6), SMALL.to_dict(), SMALL_SHAPE)
    assert change.created and type(store._store).__name__ == "FsspecStore"
    expected = write(store, 4)[0]
    reader = FeatureStore.open(url)
    assert reader.done_mask().tolist() == [False] * 4 + [True, False]
    assert reader.read_clip(4).tobytes() == expected.tobytes()
    assert reader.clip_ids().tolist() == store.clip_ids().tolist()
