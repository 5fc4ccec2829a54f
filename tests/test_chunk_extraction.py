"""Whole-chunk extraction (workers.extraction) and the store format versions.

Several clips share one store chunk (format 2). These tests check the argument of
docs/store-layout.md with real audio files and real processes: a redelivered batch, a
clip of a batch sent again on its own, and writers racing on the same chunk (what a
visibility-timeout redelivery produces) never lose or corrupt a clip; format 1 stores
(one chunk per clip) are still read and are refused for writing with a message that
says what to do. No broker here (test_queue_e2e races real workers).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zarr

from contract.wire import ExtractJob
from orchestrator.datasets import scan_dataset
from storage.feature_store import FeatureStore, StoreError
from storage.store_layout import create_or_extend
from tests.reliability_helpers import (
    check_store_chunks,
    direct_extraction,
    tiny_dataset,
    write_rows,
)
from workers.extraction import extract_jobs
from workers.features import FeatureConfig

CONFIG = FeatureConfig()
SHAPE = (CONFIG.max_windows, *CONFIG.window_shape)


def make_store(tmp_path: Path, n: int = 20, *, per: int = 8, name: str = "f.zarr"):
    root = tiny_dataset(tmp_path / "data", n, seconds=0.6, folds=2, seed=n)
    manifest = scan_dataset(root)
    store, _ = create_or_extend(
        str(tmp_path / name), manifest, CONFIG.to_dict(), SHAPE, clips_per_chunk=per
    )
    return root, store


def jobs_for(store: FeatureStore, indices) -> list[ExtractJob]:
    rel = store.rel_paths()
    return [
        ExtractJob("s-test", store.url, store.dataset_root, str(rel[i]), int(i), store.generation)
        for i in indices
    ]


def assert_store_matches(url: str, root: Path, *, indices) -> None:
    """Each of ``indices`` is done and equals a direct extraction; every chunk is whole."""
    store = FeatureStore.open(url)
    done = store.done_mask()
    config = FeatureConfig.from_dict(store.feature_config)
    for i in indices:
        assert done[i], f"clip {i} not done"
        expected = direct_extraction(root, str(store.rel_paths()[i]), config)
        np.testing.assert_array_equal(store.read_clip(i), expected)
    check_store_chunks(store)


def chunk_bytes(store: FeatureStore, chunk: int) -> tuple[bytes, bytes]:
    root = Path(store.url)
    return (
        (root / "windows" / f"c.{chunk}.0.0.0.0").read_bytes(),
        (root / "clip_info" / f"c.{chunk}.0").read_bytes(),
    )


def test_batch_writes_one_chunk_and_redelivery_rewrites_identical_bytes(tmp_path):
    root, store = make_store(tmp_path)
    result = extract_jobs(jobs_for(store, range(8)), store)
    assert sorted(o.clip_index for o in result.outcomes) == list(range(8))
    assert not result.failed and not result.refused
    # one windows file and one clip_info file for the 8 clips
    assert sorted(p.name for p in (Path(store.url) / "windows").glob("c.*")) == ["c.0.0.0.0.0"]
    before = chunk_bytes(store, 0)
    # a redelivered batch on a fresh handle (another worker): the chunk shows them done,
    # nothing is computed or written, the outcomes are reported again
    other = FeatureStore.open(store.url, mode="r+")
    again = extract_jobs(jobs_for(other, range(8)), other)
    assert sorted(o.clip_index for o in again.outcomes) == list(range(8))
    assert chunk_bytes(store, 0) == before
    # a crash between the windows and the clip_info write: the redelivery computes all
    (Path(store.url) / "clip_info" / "c.0.0").unlink()
    assert not other.done_mask()[:8].any()
    extract_jobs(jobs_for(other, range(8)), other)
    assert chunk_bytes(store, 0) == before
    assert_store_matches(store.url, root, indices=range(8))


def test_single_clip_alone_extracts_its_chunk_mates(tmp_path):
    root, store = make_store(tmp_path)
    # clip 3 sent again on its own (a retry, a re-enqueued lost clip, --batch-size 1)
    result = extract_jobs(jobs_for(store, [3]), store)
    # its chunk-mates are computed with it (reported done): the write holds all 8
    assert sorted(o.clip_index for o in result.outcomes) == list(range(8))
    assert store.done_mask()[:8].all() and not store.done_mask()[8:].any()
    before = chunk_bytes(store, 0)
    # then the batch of the chunk arrives (or arrives again): same bytes
    extract_jobs(jobs_for(store, range(8)), store)
    extract_jobs(jobs_for(store, [5]), store)
    assert chunk_bytes(store, 0) == before
    assert_store_matches(store.url, root, indices=range(8))


def test_clips_of_a_written_chunk_are_reported_without_reading_its_windows(tmp_path):
    _, store = make_store(tmp_path)
    first = extract_jobs(jobs_for(store, range(8)), store)
    by_index = {o.clip_index: o for o in first.outcomes}
    before = chunk_bytes(store, 0)
    reads: list[int] = []
    read_windows = store.read_chunk_windows
    store.read_chunk_windows = lambda chunk: reads.append(chunk) or read_windows(chunk)
    # clips of chunk 0 sent again (alone, out of order, or the whole batch): all done
    for indices in ([5], [7, 2], range(8)):
        again = extract_jobs(jobs_for(store, indices), store)
        assert [o.clip_index for o in again.outcomes] == sorted(indices)
        for o in again.outcomes:
            assert o.status == "done"
            assert (o.n_windows, o.n_real, o.path) == (
                by_index[o.clip_index].n_windows,
                by_index[o.clip_index].n_real,
                by_index[o.clip_index].path,
            )
    assert reads == [] and chunk_bytes(store, 0) == before
    # a chunk with work left is read back (its done clips are kept) and completed
    bad = Path(store.dataset_root) / str(store.rel_paths()[10])
    good = bad.read_bytes()
    bad.write_bytes(b"not audio at all" * 20)
    extract_jobs(jobs_for(store, [8]), store)  # chunk 1 was empty: nothing read
    assert reads == [] and store.done_mask().sum() == 15
    bad.write_bytes(good)  # the file is mended; its clip is sent again
    extract_jobs(jobs_for(store, [10]), store)
    assert reads == [1] and store.done_mask()[:16].all()
    assert_store_matches(store.url, Path(store.dataset_root), indices=range(16))


def test_bad_chunk_mate_stays_not_done_and_only_jobs_report_failures(tmp_path):
    root, store = make_store(tmp_path)
    bad = Path(root) / str(store.rel_paths()[2])
    bad.write_bytes(b"not audio at all" * 20)
    result = extract_jobs(jobs_for(store, [0]), store)
    assert [o.clip_index for o in result.outcomes if o.status == "failed"] == []
    assert not store.done_mask()[2] and store.done_mask()[[0, 1, 3, 4, 5, 6, 7]].all()
    result = extract_jobs(jobs_for(store, [2]), store)
    (failure,) = result.failed
    assert "not an audio file" in failure.reason
    assert [o.status for o in result.outcomes] == ["failed"]


def test_transient_store_error_writes_nothing(tmp_path, monkeypatch):
    _, store = make_store(tmp_path)

    def disk_full(self, chunk, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("storage.chunk_writer.LocalChunkWriter.write_chunk", disk_full)
    with pytest.raises(OSError, match="No space"):
        extract_jobs(jobs_for(store, range(8)), store)
    monkeypatch.undo()
    assert not store.done_mask().any()
    assert not [*Path(store.url).glob("windows/c.*"), *Path(store.url).glob("clip_info/c.*")]


def _race(url: str, indices: list[int], barrier) -> int:
    """Process body: wait for the others, then extract ``indices`` into the store."""
    store = FeatureStore.open(url, mode="r+")
    jobs = jobs_for(store, indices)
    barrier.wait(timeout=120)
    return len(extract_jobs(jobs, store).outcomes)


def test_writers_racing_on_the_same_chunks_lose_nothing(tmp_path):
    """Four processes start together on chunks 0 and 1 (clips 0..15) of fresh stores:
    the whole batch twice (a visibility-timeout redelivery), a single clip of it on its
    own, and a few clips of both chunks. Whatever the interleaving, every clip is done
    and equals direct extraction, and every chunk file is whole."""
    n = 20
    shares = [list(range(8)), list(range(8)), [5], [6, 7, 8, 9, 15]]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(len(shares), mp_context=ctx) as pool:
        for round_ in range(3):
            root, store = make_store(tmp_path / f"r{round_}", n)
            barrier = manager.Barrier(len(shares))
            futures = [pool.submit(_race, store.url, s, barrier) for s in shares]
            counts = [f.result(timeout=300) for f in futures]
            assert all(c >= len(s) for c, s in zip(counts, shares, strict=True))
            done = store.done_mask()
            assert done[:16].all() and not done[16:].any(), np.flatnonzero(~done[:16])
            assert_store_matches(store.url, root, indices=range(16))
            assert not list(Path(store.url).rglob("*.partial"))


def _row(wav: Path) -> list:
    """The metadata row of a file named like tiny_dataset's (``fsid-class-0-0.wav``)."""
    fsid, cls = (int(v) for v in wav.name.split("-")[:2])
    return [wav.name, fsid, 0.0, 0.6, 1, int(wav.parent.name[4:]), cls, f"class{cls}"]


def test_old_layout_handle_and_extension_share_no_chunk(tmp_path):
    root, store = make_store(tmp_path, n=9)
    old = FeatureStore.open(store.url, mode="r+")  # a worker that opened it before
    # the dataset grows by 5 clips: they start at row 16 (rows 9..15 stay empty)
    extra = tiny_dataset(tmp_path / "extra", 5, seconds=0.6, folds=2, seed=99)
    for wav in sorted((extra / "audio").rglob("*.wav")):
        target = Path(root) / "audio" / wav.parent.name / f"7{wav.name}"
        target.write_bytes(wav.read_bytes())
    write_rows(Path(root), [_row(p) for p in sorted((Path(root) / "audio").rglob("*.wav"))])
    grown, change = create_or_extend(store.url, scan_dataset(root), CONFIG.to_dict(), SHAPE)
    assert change.added == [16, 17, 18, 19, 20] and grown.n_clips == 21
    # the old handle writes chunk 1 (clip 8) as it knew it; the new clips are in chunk 2
    extract_jobs(jobs_for(old, [8]), old)
    extract_jobs(jobs_for(grown, change.added), grown)
    reader = FeatureStore.open(store.url)
    assert reader.done_mask().tolist() == [False] * 8 + [True] + [False] * 7 + [True] * 5
    assert_store_matches(store.url, root, indices=[8, *change.added])


# ---------------------------------------------------------------- format versions


def as_format_1(tmp_path: Path) -> tuple[Path, FeatureStore, list[int]]:
    """A store as format 1 wrote it: one chunk per clip, format_version 1, no chunk size."""
    root, store = make_store(tmp_path, n=12, per=1)
    written = [0, 3, 4, 11]
    extract_jobs(jobs_for(store, written), store)
    group = zarr.open_group(store.url, mode="r+")
    attrs = group.attrs.asdict()
    del attrs["clips_per_chunk"]
    group.attrs.put({**attrs, "format_version": 1})
    return root, store, written


def test_format_1_store_is_read(tmp_path):
    root, store, written = as_format_1(tmp_path)
    reader = FeatureStore.open(store.url)
    assert (reader.format_version, reader.clips_per_chunk) == (1, 1)
    assert np.flatnonzero(reader.done_mask()).tolist() == written
    config = FeatureConfig.from_dict(reader.feature_config)
    for i in written:
        expected = direct_extraction(root, str(reader.rel_paths()[i]), config)
        np.testing.assert_array_equal(reader.read_clip(i), expected)
    data = reader.read_folds([1, 2])
    assert sorted(set(data.clip_index.tolist())) == written


def test_format_1_store_is_refused_for_writing_with_what_to_do(tmp_path):
    root, store, _ = as_format_1(tmp_path)
    for attempt in (
        lambda: FeatureStore.open(store.url, mode="r+"),
        lambda: create_or_extend(store.url, scan_dataset(root), CONFIG.to_dict(), SHAPE),
    ):
        with pytest.raises(StoreError) as err:
            attempt()
        message = str(err.value)
        assert "format version 1" in message and "writes only version 2" in message
        assert "new store (--store NEW_PATH)" in message and "reading it" in message


def test_unknown_format_version_is_refused(tmp_path):
    _, store = make_store(tmp_path, n=4)
    group = zarr.open_group(store.url, mode="r+")
    group.attrs.put({**group.attrs.asdict(), "format_version": 3})
    with pytest.raises(StoreError, match="version 3; this code reads versions 1, 2: update"):
        FeatureStore.open(store.url)


@pytest.mark.parametrize("damage", ["past_end", "non_finite"])
def test_check_store_chunks_catches_a_broken_row(tmp_path: Path, damage: str) -> None:
    _, store = make_store(tmp_path, 20, per=8)
    extract_jobs(jobs_for(store, range(20)), store)
    store = FeatureStore.open(store.url, mode="r+")
    check_store_chunks(store)
    i = 13
    n = store.clip_info(i)[0]
    row = np.asarray(store._windows[i])
    if damage == "past_end":
        row[n:] = 0.0
    else:
        row[0, 0, 0, 0] = np.inf
    store._windows[i] = row
    with pytest.raises(AssertionError, match=f"clip {i}"):
        check_store_chunks(store)
