"""The ESC-50 layout (and its ESC-10 subset): ``meta/esc50.csv`` and a flat ``audio/``.

``esc50.csv`` columns: ``filename, fold, target, category, esc10, src_file, take``.
``src_file`` (the Freesound source) is the clip's group, stored as its fsID. The
dataset's targets are remapped to contiguous training ids in target order; the
targets themselves are kept as ``Manifest.class_ids``. See ``docs/datasets.md``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from contract.paths import is_inside
from orchestrator.datasets import (
    DatasetError,
    _ClassTable,
    _fold_problem,
    _list_files,
    _name_problem,
    _parse_int,
    _subfolders,
)
from orchestrator.fold_assignment import group_id
from orchestrator.layout_common import (
    CLASS_FOLDER_EXTENSIONS,
    has_audio_ext,
    listed_file_problem,
    remap_classes,
    skipped,
)
from storage.manifest import ClipRecord, Manifest, SkippedItem

ESC50_CSV = Path("meta") / "esc50.csv"
ESC_CLIP_SECONDS = 5.0
REQUIRED = ("filename", "fold", "target", "category")
OPTIONAL = ("esc10", "src_file", "take")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def is_esc50_root(folder: Path) -> bool:
    """``folder`` holds ``meta/esc50.csv`` and ``audio/``."""
    return (folder / ESC50_CSV).is_file() and (folder / "audio").is_dir()


def _columns(csv_path: Path, header: list[str] | None, subset: str | None) -> dict[str, str]:
    if not header:
        raise DatasetError(f"metadata CSV {str(csv_path)!r} is empty (no header row)")
    by_lower = {h.strip().lower(): h for h in header if h is not None}
    found = {c: by_lower[c] for c in REQUIRED + OPTIONAL if c in by_lower}
    needed = REQUIRED + (("esc10",) if subset == "esc10" else ())
    missing = [c for c in needed if c not in found]
    if missing:
        raise DatasetError(
            f"ESC-50 metadata {str(csv_path)!r} is missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(h.strip() for h in header)})"
        )
    return found


def _cell(row: dict[str, str | None], columns: dict[str, str], name: str) -> str:
    key = columns.get(name)
    value = row.get(key) if key is not None else None
    return value.strip() if isinstance(value, str) else ""


def _src_from_name(name: str) -> str:
    """``src_file`` of a ``<fold>-<src_file>-<take>-<target>.wav`` name, else ``""``."""
    parts = Path(name).stem.split("-")
    return parts[1] if len(parts) == 4 else ""


def scan_esc50(root: Path, *, subset: str | None = None) -> Manifest:
    """Scan an ESC-50 root (resolved; holds ``meta/esc50.csv`` and ``audio/``).

    Rows with a bad file name, target, category, fold or ``esc10`` value are invalid
    (with the CSV line); rows outside ``subset`` are left out (their files are not
    "unlisted"); a valid row without its file is a missing file (partial download).
    """
    csv_path = root / ESC50_CSV
    audio_dir = root / "audio"
    for p in (csv_path, audio_dir):
        if not is_inside(os.path.realpath(p), str(root)):
            raise DatasetError(f"{str(p)!r} is a symlink pointing outside the dataset root")
    on_disk = _list_files(str(audio_dir))
    extensions = CLASS_FOLDER_EXTENSIONS
    classes = _ClassTable()
    invalid: list[SkippedItem] = []
    missing: list[str] = []
    rows: list[tuple[str, int, int, str]] = []  # name, fold, target, src
    referenced: set[str] = set()
    first_row: dict[str, int] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = _columns(csv_path, reader.fieldnames, subset)
        for row in reader:
            line = reader.line_num
            name = _cell(row, columns, "filename")
            item = f"row {line}: {name or '<empty file name>'}"
            problem = _name_problem(name, extensions)
            if problem is None:
                referenced.add(name)
            if problem is None and name in first_row:
                problem = f"duplicate of row {first_row[name]} (the first row is kept)"
            esc10 = _cell(row, columns, "esc10").lower()
            if problem is None and "esc10" in columns and esc10 not in _TRUE | _FALSE:
                problem = f"esc10 {esc10!r} is not True or False"
            if problem is None and subset == "esc10" and esc10 not in _TRUE:
                continue
            if problem is None:
                raw_target = _cell(row, columns, "target")
                category = _cell(row, columns, "category")
                problem = classes.problem(_parse_int(raw_target), raw_target, category, line)
                problem = problem and problem.replace("classID", "target")
            raw_fold = _cell(row, columns, "fold")
            fold = _parse_int(raw_fold)
            if problem is None:
                problem = _fold_problem(fold, raw_fold, None)
            if problem is not None:
                invalid.append(SkippedItem(item=item, reason=problem))
                continue
            first_row[name] = line
            assert fold is not None
            target = _parse_int(_cell(row, columns, "target"))
            assert target is not None
            src = _cell(row, columns, "src_file") or _src_from_name(name)
            rows.append((name, fold, target, src))
    names = classes.name_of
    class_names, class_ids, train_id = remap_classes(names)
    clips: list[ClipRecord] = []
    for name, fold, target, src in rows:
        rel = f"audio/{name}"
        if name not in on_disk:
            missing.append(rel)
            continue
        is_missing, problem = listed_file_problem(root, rel)
        if is_missing:
            missing.append(rel)
            continue
        if problem is not None:
            invalid.append(skipped(f"audio/{name}", problem))
            continue
        clips.append(
            ClipRecord(
                clip_id=Path(name).stem,
                rel_path=rel,
                fold=fold,
                label=train_id[target],
                fsid=group_id(src) if src else -1,
            )
        )
    unlisted = sorted(
        f"audio/{n}" for n in on_disk if has_audio_ext(n, extensions) and n not in referenced
    )
    for sub in _subfolders(audio_dir):
        unlisted += sorted(
            f"audio/{sub.name}/{n}" for n in _list_files(str(sub)) if has_audio_ext(n, extensions)
        )
    return Manifest(
        dataset_root=str(root),
        clips=sorted(clips, key=lambda c: (c.fold, c.clip_id)),
        class_names=class_names,
        source="metadata",
        missing_files=sorted(missing),
        unlisted_files=unlisted,
        invalid=invalid,
        dataset="ESC-10" if subset == "esc10" else "ESC-50",
        class_ids=class_ids,
        clip_seconds=ESC_CLIP_SECONDS,
        fold_source="dataset",
    )
