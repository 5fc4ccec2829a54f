"""Tests for the dataset scanner (orchestrator.datasets)."""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from orchestrator.datasets import DatasetError, find_dataset_root, scan_dataset, summarize
from storage.manifest import Manifest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
US8K_SUBSET = SHARED_DATA / "us8k-subset"
HEADER = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
CLASSES = {0: "air_conditioner", 1: "car_horn", 3: "dog_bark"}


def _row(name: str, fold: object, class_id: object, class_name: str | None = None) -> list[str]:
    """A full 8-column metadata row; the class name defaults to CLASSES[class_id]."""
    if class_name is None:
        class_name = CLASSES[int(class_id)]  # type: ignore[call-overload]
    fsid = name.split("-")[0]
    return [name, fsid, "0.0", "4.0", "1", str(fold), str(class_id), class_name]


def _write_csv(path: Path, rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _touch(root: Path, rel_path: str) -> Path:
    """Create a small fake audio file (the scanner never decodes it)."""
    path = root / rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF\0\0\0\0WAVE")
    return path


def _make_dataset(
    base: Path, rows: Sequence[Sequence[str]], files: Sequence[str] | None = None
) -> Path:
    """An UrbanSound8K folder under ``base``; ``files`` default to every row's file."""
    root = base / "UrbanSound8K"
    _write_csv(root / "metadata" / "UrbanSound8K.csv", rows)
    if files is None:
        files = [f"audio/fold{r[5]}/{r[0]}" for r in rows]
    for rel in files:
        _touch(root, rel)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    return root


GOOD_ROWS = [
    _row("100032-3-0-0.wav", 1, 3),
    _row("100032-3-0-1.wav", 1, 3),
    _row("200000-0-0-0.wav", 2, 0),
    _row("300000-1-0-0.wav", 2, 1),
]
GOOD_ROWS_FOLD1 = ["audio/fold1/100032-3-0-0.wav", "audio/fold1/100032-3-0-1.wav"]


def _reasons(manifest_invalid: Sequence[object]) -> list[str]:
    return [item.reason for item in manifest_invalid]  # type: ignore[attr-defined]


# --- locating the dataset root ------------------------------------------------------------


@pytest.mark.parametrize("start", ["UrbanSound8K", ".", "raw/us8k", "raw"])
def test_accepts_root_and_parent_folders(tmp_path: Path, start: str) -> None:
    if start.startswith("raw"):
        root = _make_dataset(tmp_path / "raw" / "us8k", GOOD_ROWS)
    else:
        root = _make_dataset(tmp_path, GOOD_ROWS)
    manifest = scan_dataset(tmp_path / start)
    assert manifest.dataset_root == str(root.resolve())
    assert Path(manifest.dataset_root).is_absolute()
    assert len(manifest.clips) == 4
    assert manifest.source == "metadata"


def test_no_dataset_found(tmp_path: Path) -> None:
    (tmp_path / "a" / "b" / "c" / "UrbanSound8K" / "audio").mkdir(parents=True)
    with pytest.raises(DatasetError, match="audio/") as err:
        scan_dataset(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "nope")


def test_ambiguous_dataset(tmp_path: Path) -> None:
    _make_dataset(tmp_path / "one", GOOD_ROWS)
    _make_dataset(tmp_path / "two", GOOD_ROWS)
    with pytest.raises(DatasetError, match="ambiguous") as err:
        find_dataset_root(tmp_path)
    assert "one" in str(err.value) and "two" in str(err.value)


# --- metadata -----------------------------------------------------------------------------


def test_clips_fields_and_order(tmp_path: Path) -> None:
    rows = [GOOD_ROWS[3], GOOD_ROWS[1], GOOD_ROWS[2], GOOD_ROWS[0]]
    manifest = scan_dataset(_make_dataset(tmp_path, rows))
    assert [(c.fold, c.clip_id) for c in manifest.clips] == [
        (1, "100032-3-0-0"),
        (1, "100032-3-0-1"),
        (2, "200000-0-0-0"),
        (2, "300000-1-0-0"),
    ]
    first = manifest.clips[0]
    assert first.rel_path == "audio/fold1/100032-3-0-0.wav"
    assert (first.label, first.fsid, first.salience) == (3, 100032, 1)
    assert manifest.folds == [1, 2]
    assert manifest.invalid == [] and manifest.missing_files == []


def test_class_names_from_metadata_with_gap(tmp_path: Path) -> None:
    manifest = scan_dataset(_make_dataset(tmp_path, GOOD_ROWS))
    assert manifest.class_names == ["air_conditioner", "car_horn", "", "dog_bark"]
    summary = summarize(manifest)
    assert summary["classes"] == 3
    assert summary["per_class"] == {"air_conditioner": 1, "car_horn": 1, "dog_bark": 2}
    assert summary["per_fold"] == {1: 2, 2: 2}


def test_missing_required_columns_named(tmp_path: Path) -> None:
    root = tmp_path / "UrbanSound8K"
    header = ["slice_file_name", "fsID", "start", "end", "salience", "class"]
    _write_csv(root / "metadata" / "UrbanSound8K.csv", [], header=header)
    (root / "audio").mkdir()
    with pytest.raises(DatasetError) as err:
        scan_dataset(root)
    message = str(err.value)
    assert "UrbanSound8K.csv" in message
    assert "fold" in message and "classID" in message


def test_optional_columns_absent(tmp_path: Path) -> None:
    root = tmp_path / "UrbanSound8K"
    header = ["slice_file_name", "fold", "classID", "class"]
    rows = [["100032-3-0-0.wav", "1", "3", "dog_bark"], ["odd name.wav", "1", "3", "dog_bark"]]
    _write_csv(root / "metadata" / "UrbanSound8K.csv", rows, header=header)
    _touch(root, "audio/fold1/100032-3-0-0.wav")
    _touch(root, "audio/fold1/odd name.wav")
    clips = {c.clip_id: c for c in scan_dataset(root).clips}
    assert (clips["100032-3-0-0"].fsid, clips["100032-3-0-0"].salience) == (100032, -1)
    assert clips["odd name"].fsid == -1


def test_single_csv_with_other_name_is_used(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _write_csv(root / "metadata" / "labels.csv", GOOD_ROWS)
    for r in GOOD_ROWS:
        _touch(root, f"audio/fold{r[5]}/{r[0]}")
    manifest = scan_dataset(root)
    assert manifest.source == "metadata"
    assert len(manifest.clips) == 4


def test_several_csvs_without_standard_name_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _write_csv(root / "metadata" / "a.csv", GOOD_ROWS)
    _write_csv(root / "metadata" / "b.csv", GOOD_ROWS)
    (root / "audio").mkdir()
    with pytest.raises(DatasetError, match=r"a\.csv, b\.csv"):
        scan_dataset(root)


def test_missing_files_counted(tmp_path: Path) -> None:
    root = _make_dataset(tmp_path, GOOD_ROWS, files=["audio/fold1/100032-3-0-0.wav"])
    manifest = scan_dataset(root)
    assert [c.clip_id for c in manifest.clips] == ["100032-3-0-0"]
    assert manifest.missing_files == [
        "audio/fold1/100032-3-0-1.wav",
        "audio/fold2/200000-0-0-0.wav",
        "audio/fold2/300000-1-0-0.wav",
    ]
    assert manifest.class_names == ["air_conditioner", "car_horn", "", "dog_bark"]
    assert summarize(manifest)["missing_files"] == 3


def test_unlisted_files_reported(tmp_path: Path) -> None:
    root = _make_dataset(tmp_path, GOOD_ROWS)
    _touch(root, "audio/fold1/999-3-0-0.wav")
    _touch(root, "audio/extra.flac")
    _touch(root, "audio/fold1/notes.txt")
    _touch(root, "audio/fold1/.hidden.wav")
    manifest = scan_dataset(root)
    assert manifest.unlisted_files == ["audio/extra.flac", "audio/fold1/999-3-0-0.wav"]
    assert len(manifest.clips) == 4


def test_file_in_wrong_fold_folder_is_missing_and_unlisted(tmp_path: Path) -> None:
    root = _make_dataset(tmp_path, GOOD_ROWS[:1], files=["audio/fold2/100032-3-0-0.wav"])
    manifest = scan_dataset(root)
    assert manifest.clips == []
    assert manifest.missing_files == ["audio/fold1/100032-3-0-0.wav"]
    assert manifest.unlisted_files == ["audio/fold2/100032-3-0-0.wav"]


# --- invalid rows -------------------------------------------------------------------------

INVALID_CASES = [
    (_row("400000-3-0-0.wav", 1, "three", "dog_bark"), "is not an integer"),
    (_row("400000-3-0-1.wav", 1, "-3", "dog_bark"), "negative"),
    (_row("400000-3-0-2.wav", 1, 3, "cat_meow"), "named 'cat_meow' here but 'dog_bark'"),
    (_row("400000-3-0-3.wav", 1, 7, "dog_bark"), "also for 3"),
    (_row("400000-3-0-4.wav", 1, 3, ""), "class name for classID 3 is empty"),
    (_row("400000-3-0-5.wav", "x", 3), "fold 'x' is not an integer"),
    (_row("400000-3-0-6.wav", 11, 3), "fold 11 is outside the accepted folds 1..10"),
    (_row("400000-3-0-7.wav", 0, 3), "fold 0 is outside"),
    (_row("100032-3-0-0.wav", 1, 3), "duplicate of row 2"),
    (["", "1", "0", "4", "1", "1", "3", "dog_bark"], "empty file name"),
    (_row("../escape.wav", 1, 3), "path separator or '..'"),
    (_row("sub/400000-3-0-8.wav", 1, 3), "path separator"),
    (_row("400000-3-0-9.txt", 1, 3), "audio extension"),
]


@pytest.mark.parametrize(("row", "reason"), INVALID_CASES)
def test_invalid_rows_skipped(tmp_path: Path, row: list[str], reason: str) -> None:
    rows = [GOOD_ROWS[0], row]
    root = _make_dataset(tmp_path, rows, files=["audio/fold1/100032-3-0-0.wav"])
    manifest = scan_dataset(root)
    assert [c.clip_id for c in manifest.clips] == ["100032-3-0-0"]
    assert len(manifest.invalid) == 1
    skipped = manifest.invalid[0]
    assert reason in skipped.reason
    assert skipped.item.startswith("row 3: ")
    assert manifest.class_names[3] == "dog_bark"
    assert len(manifest.class_names) == 4


def test_duplicate_keeps_first_row(tmp_path: Path) -> None:
    rows = [_row("100032-3-0-0.wav", 1, 3), _row("100032-3-0-0.wav", 2, 3)]
    root = _make_dataset(tmp_path, rows)
    manifest = scan_dataset(root)
    assert [c.rel_path for c in manifest.clips] == ["audio/fold1/100032-3-0-0.wav"]
    assert manifest.invalid[0].item == "row 3: 100032-3-0-0.wav"
    assert manifest.unlisted_files == []


def test_folds_none_accepts_any_positive_fold(tmp_path: Path) -> None:
    rows = [_row("100032-3-0-0.wav", 12, 3), _row("100032-3-0-1.wav", 0, 3)]
    manifest = scan_dataset(_make_dataset(tmp_path, rows), folds=None)
    assert [c.fold for c in manifest.clips] == [12]
    assert "not a positive integer" in manifest.invalid[0].reason


def test_restricted_folds(tmp_path: Path) -> None:
    manifest = scan_dataset(_make_dataset(tmp_path, GOOD_ROWS), folds=range(1, 2))
    assert manifest.folds == [1]
    assert len(manifest.invalid) == 2
    assert all("outside the accepted folds 1..1" in r for r in _reasons(manifest.invalid))


# --- safety -------------------------------------------------------------------------------


def test_symlink_outside_root_refused(tmp_path: Path) -> None:
    outside = _touch(tmp_path, "elsewhere/secret.wav")
    root = _make_dataset(tmp_path / "data", GOOD_ROWS[:2], files=["audio/fold1/100032-3-0-0.wav"])
    (root / "audio" / "fold1" / "100032-3-0-1.wav").symlink_to(outside)
    manifest = scan_dataset(root)
    assert [c.clip_id for c in manifest.clips] == ["100032-3-0-0"]
    assert _reasons(manifest.invalid) == ["symlink points outside the dataset root"]


def test_fold_folder_symlinked_outside_refused(tmp_path: Path) -> None:
    _touch(tmp_path, "elsewhere/fold2/200000-0-0-0.wav")
    root = _make_dataset(tmp_path / "data", GOOD_ROWS[:3], files=GOOD_ROWS_FOLD1)
    (root / "audio" / "fold2").symlink_to(tmp_path / "elsewhere" / "fold2")
    manifest = scan_dataset(root)
    assert manifest.folds == [1]
    assert _reasons(manifest.invalid) == ["symlink points outside the dataset root"]
    assert manifest.unlisted_files == []


def test_symlink_inside_root_accepted(tmp_path: Path) -> None:
    root = _make_dataset(tmp_path, GOOD_ROWS[:2], files=["audio/fold1/100032-3-0-0.wav"])
    target = _touch(root, "originals/take2.wav")
    (root / "audio" / "fold1" / "100032-3-0-1.wav").symlink_to(target)
    manifest = scan_dataset(root)
    assert [c.clip_id for c in manifest.clips] == ["100032-3-0-0", "100032-3-0-1"]
    assert manifest.invalid == []


def test_dangling_symlink_counts_as_missing(tmp_path: Path) -> None:
    root = _make_dataset(tmp_path, GOOD_ROWS[:1], files=[])
    (root / "audio" / "fold1").mkdir(parents=True)
    (root / "audio" / "fold1" / "100032-3-0-0.wav").symlink_to(root / "gone.wav")
    manifest = scan_dataset(root)
    assert manifest.clips == [] and manifest.invalid == []
    assert manifest.missing_files == ["audio/fold1/100032-3-0-0.wav"]


def test_directory_named_like_clip_is_missing(tmp_path: Path) -> None:
    root = _make_dataset(tmp_path, GOOD_ROWS[:1], files=[])
    (root / "audio" / "fold1" / "100032-3-0-0.wav").mkdir(parents=True)
    manifest = scan_dataset(root)
    assert manifest.clips == []
    assert manifest.missing_files == ["audio/fold1/100032-3-0-0.wav"]


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: a chmod 000 file is still readable, so unreadability can't be made",
)
def test_unreadable_file_refused(tmp_path: Path) -> None:
    root = _make_dataset(tmp_path, GOOD_ROWS[:2])
    (root / "audio" / "fold1" / "100032-3-0-1.wav").chmod(0)
    manifest = scan_dataset(root)
    assert [c.clip_id for c in manifest.clips] == ["100032-3-0-0"]
    assert _reasons(manifest.invalid) == ["file is not readable (permission denied)"]


def test_access_denied_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _make_dataset(tmp_path, GOOD_ROWS[:2])
    denied = str((root / "audio" / "fold1" / "100032-3-0-1.wav").resolve())
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: str(p) != denied and real_access(p, mode))
    manifest = scan_dataset(root)
    assert [c.clip_id for c in manifest.clips] == ["100032-3-0-0"]
    assert manifest.invalid[0].item == "row 3: 100032-3-0-1.wav"
    assert _reasons(manifest.invalid) == ["file is not readable (permission denied)"]


def test_metadata_csv_symlinked_outside_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.csv"
    _write_csv(outside, GOOD_ROWS)
    root = tmp_path / "ds"
    (root / "metadata").mkdir(parents=True)
    (root / "audio").mkdir()
    (root / "metadata" / "UrbanSound8K.csv").symlink_to(outside)
    with pytest.raises(DatasetError, match="outside the dataset root"):
        scan_dataset(root)


# --- file-name fallback -------------------------------------------------------------------


def test_filename_fallback(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for rel in [
        "audio/fold1/100032-3-0-0.wav",
        "audio/fold2/200000-0-0-0.flac",
        "audio/fold2/100032-3-0-0.wav",
        "audio/fold1/no_label.wav",
        "audio/misc/300000-1-0-0.wav",
        "audio/fold11/300000-1-0-1.wav",
        "audio/fold1/readme.txt",
    ]:
        _touch(root, rel)
    manifest = scan_dataset(root)
    assert manifest.source == "filenames"
    assert [(c.fold, c.clip_id, c.label, c.fsid) for c in manifest.clips] == [
        (1, "100032-3-0-0", 3, 100032),
        (2, "200000-0-0-0", 0, 200000),
    ]
    assert manifest.class_names == ["class_0", "", "", "class_3"]
    reasons = {s.item: s.reason for s in manifest.invalid}
    assert "duplicate clip id" in reasons["audio/fold2/100032-3-0-0.wav"]
    assert "no label" in reasons["audio/fold1/no_label.wav"]
    assert "no fold" in reasons["audio/misc/300000-1-0-0.wav"]
    assert "outside the accepted folds" in reasons["audio/fold11/300000-1-0-1.wav"]
    assert len(reasons) == 4


def test_empty_metadata_folder_falls_back(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "metadata").mkdir(parents=True)
    _touch(root, "audio/fold3/100032-3-0-0.wav")
    manifest = scan_dataset(root)
    assert manifest.source == "filenames"
    assert manifest.folds == [3]


def test_manifest_roundtrip(tmp_path: Path) -> None:
    manifest = scan_dataset(_make_dataset(tmp_path, [*GOOD_ROWS, _row("bad/x.wav", 1, 3)]))
    assert len(manifest.invalid) == 1
    assert Manifest.from_dict(manifest.to_dict()) == manifest


# --- the real subset ----------------------------------------------------------------------


@pytest.mark.real_data
def test_real_us8k_subset() -> None:
    csv_path = US8K_SUBSET / "UrbanSound8K" / "metadata" / "UrbanSound8K.csv"
    if not csv_path.is_file():
        pytest.skip(f"real data absent: {csv_path} not found (only on developer machines / CI)")
    on_disk = sum(
        1 for f in (US8K_SUBSET / "UrbanSound8K" / "audio").glob("fold*/*.wav") if f.is_file()
    )
    started = time.perf_counter()
    manifest = scan_dataset(US8K_SUBSET)
    elapsed = time.perf_counter() - started
    assert 780 <= len(manifest.clips) <= 786  # README: 786; the stored copy has 785
    assert len(manifest.clips) == on_disk
    assert len(manifest.missing_files) == 8732 - len(manifest.clips)
    assert manifest.folds == [1, 2]
    assert manifest.invalid == [] and manifest.unlisted_files == []
    assert len(manifest.class_names) == 10
    assert manifest.class_names[0] == "air_conditioner"
    assert manifest.class_names[3] == "dog_bark"
    assert manifest.class_names[9] == "street_music"
    assert elapsed < 2.0
