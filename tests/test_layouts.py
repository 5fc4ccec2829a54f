"""Dataset layouts beyond UrbanSound8K: ESC-50/ESC-10, class folders, an explicit CSV."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from orchestrator.cv_plan import build_plan
from orchestrator.dataset_setup import scan_for_store
from orchestrator.datasets import DatasetError, summarize
from orchestrator.fold_assignment import FoldItem, assign_folds, group_id
from orchestrator.layout_common import DatasetOptions
from orchestrator.layouts import detect_layout, scan_any
from orchestrator.synthetic_layouts import make_layout_dataset
from orchestrator.trainability import TrainabilityError, check_manifest
from storage.feature_store import FeatureStore
from storage.manifest import Manifest
from storage.store_layout import create_or_extend
from workers.features import FeatureConfig
from workers.training import split_by_fsid

ESC_HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
FOLD_PATTERN = r"^(\d+)-"
GROUP_PATTERN = r"^\d+-(\d+)-"


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF\0\0\0\0WAVE")


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _esc_row(fold: int, src: int, take: str, target: int, name: str, esc10: bool) -> list[object]:
    return [f"{fold}-{src}-{take}-{target}.wav", fold, target, name, esc10, src, take]


ESC_ROWS = [
    _esc_row(1, 100032, "A", 0, "dog", True),
    _esc_row(1, 100032, "B", 0, "dog", True),
    _esc_row(2, 100038, "A", 14, "chirping_birds", False),
    _esc_row(2, 100210, "A", 10, "rain", True),
    _esc_row(3, 101281, "A", 41, "chainsaw", True),
    _esc_row(3, 101296, "A", 14, "chirping_birds", False),
]


def _esc(base: Path, rows: Sequence[Sequence[object]] = ESC_ROWS, files: bool = True) -> Path:
    root = base / "ESC-50-master"
    _write_csv(root / "meta" / "esc50.csv", ESC_HEADER, rows)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    if files:
        for r in rows:
            _touch(root / "audio" / str(r[0]))
    return root


def _groups_disjoint_in_every_split(manifest: Manifest) -> None:
    """Every fsID is in one fold, and no trial shares one between train/valid and test."""
    folds_of: dict[int, set[int]] = {}
    for c in manifest.clips:
        if c.fsid >= 0:
            folds_of.setdefault(c.fsid, set()).add(c.fold)
    assert all(len(f) == 1 for f in folds_of.values()), folds_of
    trials, _ = build_plan("official", manifest.folds)
    for t in trials:
        test = {c.fsid for c in manifest.clips if c.fold == t.test_fold and c.fsid >= 0}
        train = [c for c in manifest.clips if c.fold in t.train_folds]
        others = {c.fsid for c in manifest.clips if c.fold in (*t.train_folds, *t.valid_folds)}
        assert not test & others
        if t.valid_from_train_fraction and train:
            tr, va = split_by_fsid(
                np.arange(len(train)),
                np.array([c.fsid for c in train]),
                np.array([c.label for c in train]),
                t.valid_from_train_fraction,
                seed=0,
            )
            fs = np.array([c.fsid for c in train])
            assert not set(fs[tr & (fs >= 0)]) & set(fs[va & (fs >= 0)])


# --------------------------------------------------------------------------- ESC-50


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_esc50_detected_at_or_above_its_root(tmp_path: Path, depth: int) -> None:
    root = _esc(tmp_path / "a" / "b")
    start = [root, root.parent, root.parent.parent][depth]
    assert detect_layout(start) == ("esc50", root.resolve())
    manifest = scan_any(start)
    assert manifest.dataset == "ESC-50" and manifest.clip_seconds == 5.0
    assert manifest.class_names == ["dog", "rain", "chirping_birds", "chainsaw"]
    assert manifest.class_ids == [0, 10, 14, 41]
    assert [c.label for c in manifest.clips] == [0, 0, 2, 1, 3, 2]
    assert manifest.clips[0].rel_path == "audio/1-100032-A-0.wav"
    assert manifest.clips[0].fsid == 100032 == manifest.clips[1].fsid
    assert manifest.folds == [1, 2, 3]
    _groups_disjoint_in_every_split(manifest)


def test_esc10_subset_keeps_esc10_rows_and_remaps_ids(tmp_path: Path) -> None:
    root = _esc(tmp_path)
    manifest = scan_any(root, DatasetOptions(subset="esc10"))
    assert manifest.dataset == "ESC-10"
    assert manifest.class_names == ["dog", "rain", "chainsaw"]
    assert manifest.class_ids == [0, 10, 41]
    assert sorted(c.label for c in manifest.clips) == [0, 0, 1, 2]
    # the other rows' files are neither clips nor "unlisted"
    assert manifest.unlisted_files == [] and manifest.invalid == []


def test_esc50_partial_download_unlisted_files_and_bad_rows(tmp_path: Path) -> None:
    rows = [
        *ESC_ROWS,
        _esc_row(4, 102000, "A", 0, "dog", True),  # file absent: partial download
        ["4-1-A-3.wav", "four", 3, "cow", "False", 1, "A"],  # fold not an integer
        ["4-2-A-3.wav", 4, "cow", "cow", "False", 2, "A"],  # target not an integer
        ["4-3-A-3.wav", 4, 3, "", "False", 3, "A"],  # unknown (empty) class
        ["4-4-A-0.wav", 4, 0, "cat", "False", 4, "A"],  # target 0 named differently
        ["4-5-A-7.wav", 4, 7, "fox", "maybe", 5, "A"],  # esc10 neither True nor False
        ["../evil.wav", 4, 7, "fox", "False", 6, "A"],
    ]
    root = _esc(tmp_path, rows, files=False)
    for r in rows:
        if r[0] not in ("4-102000-A-0.wav", "../evil.wav"):
            _touch(root / "audio" / str(r[0]))
    _touch(root / "audio" / "5-9-A-1.wav")  # on disk, not in the CSV
    manifest = scan_any(root)
    assert len(manifest.clips) == 6
    assert manifest.missing_files == ["audio/4-102000-A-0.wav"]
    assert manifest.unlisted_files == ["audio/5-9-A-1.wav"]
    reasons = [s.reason for s in manifest.invalid]
    assert len(reasons) == 6
    assert reasons[0] == "fold 'four' is not an integer"
    assert reasons[1] == "target 'cow' is not an integer"
    assert reasons[2] == "class name for target 3 is empty"
    assert reasons[3].startswith("target 0 is named 'cat' here but 'dog'")
    assert reasons[4] == "esc10 'maybe' is not True or False"
    assert "path separator or '..'" in reasons[5]
    assert manifest.invalid[0].item == "row 9: 4-1-A-3.wav"
    assert summarize(manifest)["missing_files"] == 1


def test_esc50_csv_missing_columns_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ESC-50-master"
    _write_csv(root / "meta" / "esc50.csv", ["filename", "fold"], [["1-1-A-0.wav", 1]])
    (root / "audio").mkdir()
    with pytest.raises(DatasetError, match=r"missing column.*target, category"):
        scan_any(root)
    _write_csv(root / "meta" / "esc50.csv", ESC_HEADER[:4], [["1-1-A-0.wav", 1, 0, "dog"]])
    with pytest.raises(DatasetError, match="esc10"):
        scan_any(root, DatasetOptions(subset="esc10"))


# ------------------------------------------------------------------------ ambiguity


def test_two_layouts_in_one_folder_is_an_error_naming_both(tmp_path: Path) -> None:
    esc = _esc(tmp_path)
    us8k = tmp_path / "UrbanSound8K"
    _write_csv(us8k / "metadata" / "UrbanSound8K.csv", ["slice_file_name"], [])
    (us8k / "audio" / "fold1").mkdir(parents=True)
    with pytest.raises(DatasetError, match="ambiguous") as err:
        scan_any(tmp_path)
    assert str(esc) in str(err.value) and str(us8k) in str(err.value)
    assert "ESC-50" in str(err.value) and "UrbanSound8K" in str(err.value)
    # one root with both metadata files
    (esc / "metadata").mkdir()
    with pytest.raises(DatasetError, match=r"ESC-50.*UrbanSound8K"):
        detect_layout(esc)
    # naming the layout resolves it
    assert detect_layout(esc, "esc50") == ("esc50", esc.resolve())


def test_class_folders_next_to_a_dataset_root_are_ambiguous(tmp_path: Path) -> None:
    _esc(tmp_path)
    _touch(tmp_path / "dog" / "a.wav")
    with pytest.raises(DatasetError, match="ambiguous") as err:
        detect_layout(tmp_path)
    assert "ESC-50" in str(err.value) and "class folders" in str(err.value)


def test_nothing_found_names_every_layout(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"ESC-50.*class folders.*--csv"):
        scan_any(tmp_path / "empty")
    with pytest.raises(DatasetError, match="ESC-50 layout"):
        scan_any(tmp_path / "empty", DatasetOptions(layout="folders", subset="esc10"))


# -------------------------------------------------------------------- class folders


def _folders(base: Path, per_class: dict[str, list[str]]) -> Path:
    for cls, names in per_class.items():
        for n in names:
            _touch(base / cls / n)
    return base


def test_class_folders_with_a_fold_pattern(tmp_path: Path) -> None:
    root = _folders(
        tmp_path / "ESC-10",
        {
            "001 - Dog bark": ["1-100032-A.ogg", "2-110389-A.ogg", "x.ogg", "notes.txt"],
            "002 - Rain": ["1-17367-A.ogg", "2-101676-A.flac"],
        },
    )
    _touch(root / "stray.wav")
    opts = DatasetOptions(fold_pattern=FOLD_PATTERN, group_pattern=GROUP_PATTERN)
    manifest = scan_any(root, opts)
    assert manifest.dataset == "class-folders" and manifest.fold_source == "file names"
    assert manifest.class_names == ["001 - Dog bark", "002 - Rain"]
    assert [(c.rel_path, c.fold, c.label) for c in manifest.clips] == [
        ("001 - Dog bark/1-100032-A.ogg", 1, 0),
        ("002 - Rain/1-17367-A.ogg", 1, 1),
        ("001 - Dog bark/2-110389-A.ogg", 2, 0),
        ("002 - Rain/2-101676-A.flac", 2, 1),
    ]
    assert manifest.clips[0].fsid == 100032
    assert [(s.item, s.reason) for s in manifest.invalid] == [
        ("001 - Dog bark/x.ogg", f"file name does not match the fold pattern {FOLD_PATTERN!r}")
    ]
    assert manifest.unlisted_files == ["stray.wav"]


def test_class_folder_fold_pattern_must_give_an_integer(tmp_path: Path) -> None:
    root = _folders(tmp_path / "d", {"dog": ["a-1.wav", "0-2.wav"], "cat": ["3-4.wav"]})
    manifest = scan_any(root, DatasetOptions(fold_pattern=r"^(\w+)-"))
    reasons = sorted(s.reason for s in manifest.invalid)
    assert reasons == [
        "fold 'a' (from the file name) is not an integer",
        "fold 0 (from the file name) is not a positive integer",
    ]
    with pytest.raises(DatasetError, match="fold-pattern"):
        DatasetOptions(fold_pattern="(")


def test_assigned_folds_are_stratified_grouped_and_stable(tmp_path: Path) -> None:
    root = make_layout_dataset(
        tmp_path, "folders", n_classes=4, folds=5, clips_per_class_per_fold=3
    )
    opts = DatasetOptions(group_pattern=GROUP_PATTERN, n_folds=5)
    manifest = scan_any(root, opts)
    assert manifest.fold_source == "assigned" and manifest.folds == [1, 2, 3, 4, 5]
    per = Counter((c.label, c.fold) for c in manifest.clips)
    for label in range(4):
        counts = [per[(label, f)] for f in range(1, 6)]
        assert max(counts) - min(counts) <= 3, counts  # a recording holds 1-3 clips
    _groups_disjoint_in_every_split(manifest)

    # the store keeps them: an added file (of a new and of a known recording) moves nothing
    store_url = str(tmp_path / "f.zarr")
    config = FeatureConfig()
    m1, cfg = scan_for_store(str(root), opts, config, store_url=store_url)
    assert cfg.max_seconds == 5.0  # the longest file's header
    create_or_extend(store_url, m1, cfg.to_dict(), (cfg.max_windows, 60, 41, 2))
    first = {c.rel_path: c.fold for c in m1.clips}
    known = m1.clips[0]
    src = known.rel_path.split("/")[1].split("-")[1]
    cls = known.rel_path.split("/")[0]
    (root / cls / f"9-{src}-Z.wav").write_bytes((root / known.rel_path).read_bytes())
    for i in range(6):
        (root / cls / f"9-{900 + i}-A.wav").write_bytes((root / known.rel_path).read_bytes())
    m2, _ = scan_for_store(str(root), opts, config, store_url=store_url)
    second = {c.rel_path: c.fold for c in m2.clips}
    assert {k: second[k] for k in first} == first
    assert second[f"{cls}/9-{src}-Z.wav"] == first[known.rel_path]
    store, change = create_or_extend(store_url, m2, cfg.to_dict(), (cfg.max_windows, 60, 41, 2))
    assert len(change.added) == 7 and store.fold_source == "assigned"


def test_assign_folds_without_groups_balances_classes() -> None:
    items = [FoldItem(f"{c}/{i}", c, f"{c}/{i}") for c in range(3) for i in range(10)]
    folds = assign_folds(items, 5)
    per = Counter((int(k.split("/")[0]), f) for k, f in folds.items())
    assert all(per[(c, f)] == 2 for c in range(3) for f in range(1, 6))
    assert assign_folds(list(reversed(items)), 5) == folds  # order of listing is irrelevant
    assert group_id("100032") == 100032 and group_id("abc") == group_id("abc") > 0


# ------------------------------------------------------------------------------ CSV


def test_csv_layout_with_default_columns(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    rows = [
        ["clips/a.wav", "dog", 1, "r1"],
        ["clips/b.wav", "dog", 2, "r2"],
        ["clips/c.wav", "cat", 1, "r3"],
        ["clips/sub/d.wav", "cat", 2, "r3"],
        ["clips/gone.wav", "cat", 2, "r4"],  # missing file
        ["clips/e.wav", "cat", "two", "r5"],  # fold not an integer
        ["clips/f.wav", "", 1, "r6"],  # unknown class
        ["../outside.wav", "dog", 1, "r7"],
        ["/etc/x.wav", "dog", 1, "r8"],
        ["clips/link.wav", "dog", 1, "r9"],  # symlink outside the root
    ]
    _write_csv(root / "labels.csv", ["Path", "label", "fold", "group"], rows)
    for r in rows[:4] + rows[5:7]:
        _touch(root / str(r[0]))
    _touch(tmp_path / "outside.wav")
    os.symlink(tmp_path / "outside.wav", root / "clips" / "link.wav")
    _touch(root / "clips" / "extra.wav")
    manifest = scan_any(root, DatasetOptions(csv_path="labels.csv"))
    assert manifest.dataset == "csv" and manifest.class_names == ["cat", "dog"]
    assert [(c.rel_path, c.label, c.fold) for c in manifest.clips] == [
        ("clips/a.wav", 1, 1),
        ("clips/c.wav", 0, 1),
        ("clips/b.wav", 1, 2),
        ("clips/sub/d.wav", 0, 2),
    ]
    assert manifest.missing_files == ["clips/gone.wav"]
    assert manifest.unlisted_files == ["clips/extra.wav"]
    reasons = [s.reason for s in manifest.invalid]
    assert reasons[0] == "fold 'two' is not an integer"
    assert reasons[1] == "empty label (unknown class)"
    assert "outside the dataset root" in reasons[2] and "outside the dataset root" in reasons[3]
    assert reasons[4] == "symlink points outside the dataset root"
    assert len(reasons) == 5


def test_csv_layout_with_named_columns_and_assigned_folds(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    rows = [[f"w/{i}.wav", str([3, 7][i % 2]), f"rec{i // 2}"] for i in range(12)]
    _write_csv(root / "meta.csv", ["wav", "cls", "source"], rows)
    for r in rows:
        _touch(root / r[0])
    with pytest.raises(DatasetError, match=r"no path or label column.*--path-column"):
        scan_any(root, DatasetOptions(csv_path="meta.csv"))
    with pytest.raises(DatasetError, match="no column 'nope'"):
        scan_any(root, DatasetOptions(csv_path="meta.csv", path_column="nope"))
    opts = DatasetOptions(
        csv_path=str(root / "meta.csv"),
        path_column="wav",
        label_column="cls",
        group_column="source",
        n_folds=3,
    )
    manifest = scan_any(root, opts)
    assert manifest.class_names == ["3", "7"] and manifest.class_ids == [3, 7]
    assert manifest.fold_source == "assigned" and manifest.folds == [1, 2, 3]
    _groups_disjoint_in_every_split(manifest)


def test_make_dataset_writes_each_layout(tmp_path: Path) -> None:
    for layout, opts in [
        ("esc50", DatasetOptions()),
        ("folders", DatasetOptions(fold_pattern=FOLD_PATTERN, group_pattern=GROUP_PATTERN)),
        ("csv", DatasetOptions(csv_path="labels.csv")),
    ]:
        root = make_layout_dataset(
            tmp_path / layout, layout, n_classes=3, folds=5, clips_per_class_per_fold=2
        )
        manifest = scan_any(root, opts)
        assert len(manifest.clips) == 30 and manifest.folds == [1, 2, 3, 4, 5], layout
        assert not manifest.invalid and not manifest.missing_files, layout
        _groups_disjoint_in_every_split(manifest)


# ----------------------------------------------------------------------- small folds


@pytest.mark.parametrize("per_class", [1, 2, 3, 5])
def test_small_datasets_train_or_are_refused(tmp_path: Path, per_class: int) -> None:
    root = _folders(tmp_path / "d", {c: [f"{i}.wav" for i in range(per_class)] for c in "abc"})
    manifest = scan_any(root, DatasetOptions(n_folds=5))
    check_manifest(manifest, "official")
    trials, _ = build_plan("official", manifest.folds)
    for t in trials:
        train = [c for c in manifest.clips if c.fold in t.train_folds]
        assert train
        tr, _ = split_by_fsid(
            np.arange(len(train)),
            np.array([c.fsid for c in train]),
            np.array([c.label for c in train]),
            0.15,
            seed=0,
        )
        assert tr.any()
    if per_class * 3 < 5:
        with pytest.raises(TrainabilityError, match="seed plan"):
            check_manifest(manifest, "seed")


def test_too_small_datasets_are_refused_with_what_to_do(tmp_path: Path) -> None:
    one = scan_any(_folders(tmp_path / "one", {"a": ["1.wav"], "b": ["2.wav"]}))
    check_manifest(one, "official")
    single = Manifest(dataset_root="/x", clips=one.clips[:1], class_names=["a", "b"])
    with pytest.raises(TrainabilityError, match="1 class only"):
        check_manifest(single, "official")
    same_fold = Manifest(
        dataset_root="/x",
        clips=[c.__class__(**{**c.__dict__, "fold": 1}) for c in one.clips],
        class_names=["a", "b"],
    )
    with pytest.raises(TrainabilityError, match=r"too small for the official plan.*add clips"):
        check_manifest(same_fold, "official")
    empty = Manifest(dataset_root="/x", clips=[], class_names=[])
    with pytest.raises(TrainabilityError, match="no usable clip"):
        check_manifest(empty, "official")


def test_fsid_split_falls_back_for_1_2_3_and_5_clips_per_class() -> None:
    for per_class in (1, 2, 3, 5):
        labels = np.repeat(np.arange(10), per_class)
        fsids = np.arange(len(labels))
        train, valid = split_by_fsid(np.arange(len(labels)), fsids, labels, 0.15, seed=0)
        assert train.any() and valid.any() and not (train & valid).any()
    # one recording: nothing held out, the trial trains without early stopping
    train, valid = split_by_fsid(np.arange(3), np.array([7, 7, 7]), np.arange(3), 0.15, seed=0)
    assert train.all() and not valid.any()


# ---------------------------------------------------------------- backward compat


def test_older_manifests_and_stores_still_open(tmp_path: Path) -> None:
    old = {"dataset_root": "/x", "clips": [], "class_names": ["a", "b"]}
    m = Manifest.from_dict(old)
    assert m.dataset == "" and m.original_class_ids == [0, 1] and m.fold_source == "dataset"
    root = make_layout_dataset(tmp_path, "csv", n_classes=2, folds=2, clips_per_class_per_fold=1)
    manifest = scan_any(root, DatasetOptions(csv_path="labels.csv"))
    url = str(tmp_path / "old.zarr")
    create_or_extend(url, manifest, FeatureConfig().to_dict(), (7, 60, 41, 2))
    import zarr

    group = zarr.open_group(url, mode="r+")
    attrs = group.attrs.asdict()
    for key in ("dataset", "class_ids", "fold_source"):
        attrs.pop(key)
    group.attrs.put(attrs)
    store = FeatureStore.open(url)
    assert store.dataset_name == "" and store.class_ids == [0, 1]
    assert store.fold_source == "dataset"
    _, change = create_or_extend(url, manifest, FeatureConfig().to_dict(), (7, 60, 41, 2))
    assert change.added == [] and FeatureStore.open(url).class_ids == [0, 1]


# ------------------------------------------------------------------------------ CLI


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["ESC_HOME"] = str(tmp_path / "home")
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_make_dataset_layouts_and_run_refuses_too_small_up_front(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ("--folds", "2", "--clips-per-class", "1", "--classes", "2")
    proc = _cli(tmp_path, "make-dataset", str(out), "--layout", "folders", *args)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (out / "class-folders").iterdir()) == ["tone_high", "tone_low"]
    proc = _cli(tmp_path, "make-dataset", str(out), "--layout", "nope", *args)
    assert proc.returncode == 2 and "unknown layout 'nope'" in proc.stderr

    small = _folders(tmp_path / "small", {"dog": ["1.wav"]})
    proc = _cli(tmp_path, "run", str(small), "--store", str(tmp_path / "s.zarr"))
    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "1 class only" in message and "add another class" in message
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "home" / "redis").exists()
    proc = _cli(tmp_path, "run", str(tmp_path / "out"), "--store", str(tmp_path / "s.zarr"))
    # class folders are looked for in PATH itself only (not below it)
    message = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "no dataset found" in message and "class folders" in message
