"""Any metadata CSV given explicitly: one row per clip with its path, label, fold, group.

Paths are relative to the dataset root (the dataset path given to the command) and
may name sub-folders; a path that leaves the root (``..``, absolute, or a symlink
resolving outside) is refused. Labels are class names (or ids); training ids follow
their sorted order (numeric when every label is an integer, which then are the
dataset's own ids). Without a fold column, folds are assigned as for class folders.
See ``docs/datasets.md``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from contract.paths import is_inside
from orchestrator.datasets import DatasetError, _list_files, _parse_int
from orchestrator.fold_assignment import group_id
from orchestrator.layout_common import (
    CLASS_FOLDER_EXTENSIONS,
    DatasetOptions,
    has_audio_ext,
    listed_file_problem,
    with_assigned_folds,
)
from storage.manifest import ClipRecord, Manifest, SkippedItem

DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "path": ("path", "filename", "file_name", "file", "slice_file_name", "fname"),
    "label": ("label", "class", "category", "class_name", "classid", "target"),
    "fold": ("fold",),
    "group": ("group", "src_file", "fsid", "source", "recording"),
}


def resolve_csv(root: Path, csv_path: str) -> Path:
    """The CSV file: ``csv_path`` as given when absolute, else relative to ``root``."""
    path = Path(csv_path).expanduser()
    if not path.is_absolute():
        path = root / path
    if not path.is_file():
        raise DatasetError(f"metadata CSV {str(path)!r} does not exist or is not a file")
    return path


def _columns(csv_path: Path, header: list[str] | None, options: DatasetOptions) -> dict[str, str]:
    if not header:
        raise DatasetError(f"metadata CSV {str(csv_path)!r} is empty (no header row)")
    by_lower = {h.strip().lower(): h for h in header if h is not None}
    chosen = {
        "path": options.path_column,
        "label": options.label_column,
        "fold": options.fold_column,
        "group": options.group_column,
    }
    found: dict[str, str] = {}
    for role, given in chosen.items():
        if given is not None:
            if given.strip().lower() not in by_lower:
                raise DatasetError(
                    f"metadata CSV {str(csv_path)!r} has no column {given!r} "
                    f"(--{role}-column); found: {', '.join(h.strip() for h in header)}"
                )
            found[role] = by_lower[given.strip().lower()]
            continue
        for candidate in DEFAULT_COLUMNS[role]:
            if candidate in by_lower:
                found[role] = by_lower[candidate]
                break
    missing = [r for r in ("path", "label") if r not in found]
    if missing:
        raise DatasetError(
            f"metadata CSV {str(csv_path)!r} has no {' or '.join(missing)} column: name it "
            f"with --{missing[0]}-column (looked for {', '.join(DEFAULT_COLUMNS[missing[0]])}; "
            f"found: {', '.join(h.strip() for h in header)})"
        )
    return found


def _path_problem(rel: str) -> str | None:
    if not rel:
        return "empty path"
    if "\\" in rel or "\0" in rel or rel.startswith("/") or ".." in PurePosixPath(rel).parts:
        return f"path {rel!r} points outside the dataset root (absolute, '..' or '\\\\')"
    if not has_audio_ext(rel, CLASS_FOLDER_EXTENSIONS):
        return f"path {rel!r} does not end with an audio extension {list(CLASS_FOLDER_EXTENSIONS)}"
    return None


def scan_csv(
    root: Path, options: DatasetOptions, previous_folds: Mapping[str, int] | None = None
) -> Manifest:
    """Scan the dataset at ``root`` (resolved) described by ``options.csv_path``."""
    assert options.csv_path is not None
    csv_path = resolve_csv(root, options.csv_path)
    invalid: list[SkippedItem] = []
    missing: list[str] = []
    rows: list[tuple[str, str, int, str]] = []
    first_row: dict[str, int] = {}
    referenced: set[str] = set()
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = _columns(csv_path, reader.fieldnames, options)
        for row in reader:
            line = reader.line_num

            def cell(role: str, row: dict[str, str | None] = row) -> str:
                key = columns.get(role)
                value = row.get(key) if key is not None else None
                return value.strip() if isinstance(value, str) else ""

            rel = PurePosixPath(cell("path")).as_posix() if cell("path") else ""
            item = f"row {line}: {rel or '<empty path>'}"
            problem = _path_problem(rel)
            if problem is None:
                referenced.add(rel)
            if problem is None and rel in first_row:
                problem = f"duplicate of row {first_row[rel]} (the first row is kept)"
            label = cell("label")
            if problem is None and not label:
                problem = "empty label (unknown class)"
            fold = 0
            if problem is None and "fold" in columns:
                raw = cell("fold")
                parsed = _parse_int(raw)
                if parsed is None:
                    problem = f"fold {raw!r} is not an integer"
                elif parsed < 1:
                    problem = f"fold {parsed} is not a positive integer"
                else:
                    fold = parsed
            if problem is not None:
                invalid.append(SkippedItem(item=item, reason=problem))
                continue
            first_row[rel] = line
            rows.append((rel, label, fold, cell("group")))
    labels = sorted({r[1] for r in rows})
    as_ids = [_parse_int(x) for x in labels]
    numeric = bool(labels) and all(i is not None and i >= 0 for i in as_ids)
    class_ids: list[int] = []
    if numeric:
        pairs = sorted((int(i or 0), x) for i, x in zip(as_ids, labels, strict=True))
        class_ids, labels = [i for i, _ in pairs], [x for _, x in pairs]
    train_id = {name: i for i, name in enumerate(labels)}
    clips: list[ClipRecord] = []
    groups: dict[str, str] = {}
    for rel, label, fold, group in rows:
        is_missing, problem = listed_file_problem(root, rel)
        if is_missing:
            missing.append(rel)
            continue
        if problem is not None:
            invalid.append(SkippedItem(item=f"row {first_row[rel]}: {rel}", reason=problem))
            continue
        if group:
            groups[rel] = group
        clips.append(
            ClipRecord(
                clip_id=rel.rsplit(".", 1)[0],
                rel_path=rel,
                fold=fold,
                label=train_id[label],
                fsid=group_id(group) if group else -1,
            )
        )
    if "fold" not in columns:
        clips = with_assigned_folds(clips, groups, options.n_folds, previous_folds)
    return Manifest(
        dataset_root=str(root),
        clips=sorted(clips, key=lambda c: (c.fold, c.clip_id)),
        class_names=labels,
        source="metadata",
        missing_files=sorted(missing),
        unlisted_files=_unlisted(root, {r[0] for r in rows}, referenced),
        invalid=invalid,
        dataset="csv",
        class_ids=class_ids,
        clip_seconds=None,
        fold_source="dataset" if "fold" in columns else "assigned",
    )


def _unlisted(root: Path, accepted: set[str], referenced: set[str]) -> list[str]:
    """Audio files in the folders that hold listed files, which no row lists."""
    folders = {str(PurePosixPath(r).parent) for r in accepted}
    out = []
    for folder in sorted(folders):
        base = "" if folder == "." else f"{folder}/"
        if not is_inside(os.path.realpath(root / base), str(root)):
            continue
        for name in _list_files(str(root / base)):
            rel = f"{base}{name}"
            if has_audio_ext(name, CLASS_FOLDER_EXTENSIONS) and rel not in referenced:
                out.append(rel)
    return sorted(out)
