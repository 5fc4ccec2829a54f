"""The class-folder layout: ``ROOT/<class name>/*.wav|flac|ogg|mp3``.

The class is the folder name; training ids follow the sorted names. Folds come from
the file name when a fold pattern is given (ESC-10's original ``1-100032-A.ogg``:
``^(\\d+)-``), else they are assigned (K folds, stratified by class, grouped by the
group pattern's source recording) and kept stable through the feature store. See
``docs/datasets.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from contract.paths import is_inside
from orchestrator.datasets import _list_files, _subfolders
from orchestrator.fold_assignment import group_id
from orchestrator.layout_common import (
    CLASS_FOLDER_EXTENSIONS,
    DatasetOptions,
    compile_pattern,
    fold_from_name,
    has_audio_ext,
    listed_file_problem,
    match_value,
    skipped,
    with_assigned_folds,
)
from storage.manifest import ClipRecord, Manifest, SkippedItem

IGNORED_FOLDERS = frozenset({"audio", "meta", "metadata"})


def class_folders(root: Path) -> list[Path]:
    """Non-hidden sub-folders of ``root`` (except ``audio``/``meta``/``metadata``) that
    directly hold at least one audio file, sorted by name."""
    found = []
    for sub in _subfolders(root):
        if sub.name in IGNORED_FOLDERS:
            continue
        if any(has_audio_ext(n, CLASS_FOLDER_EXTENSIONS) for n in _list_files(str(sub))):
            found.append(sub)
    return sorted(found, key=lambda p: p.name)


def scan_class_folders(
    root: Path, options: DatasetOptions, previous_folds: Mapping[str, int] | None = None
) -> Manifest:
    """Scan ``root`` (resolved) holding one folder per class.

    Args:
        root: The dataset root.
        options: ``fold_pattern``, ``group_pattern`` and ``n_folds`` are used.
        previous_folds: rel path -> fold already in the feature store (assigned folds
            are kept).
    """
    fold_re = compile_pattern(options.fold_pattern)
    group_re = compile_pattern(options.group_pattern)
    folders = class_folders(root)
    class_names = [f.name for f in folders]
    clips: list[ClipRecord] = []
    invalid: list[SkippedItem] = []
    groups: dict[str, str] = {}
    for label, folder in enumerate(folders):
        if not is_inside(os.path.realpath(folder), str(root)):
            invalid.append(skipped(f"{folder.name}/", "symlink points outside the dataset root"))
            continue
        for name in sorted(_list_files(str(folder))):
            if not has_audio_ext(name, CLASS_FOLDER_EXTENSIONS):
                continue
            rel = f"{folder.name}/{name}"
            fold = 0
            if fold_re is not None:
                parsed, problem = fold_from_name(fold_re, name)
                if problem is not None:
                    invalid.append(skipped(rel, problem))
                    continue
                assert parsed is not None
                fold = parsed
            is_missing, problem = listed_file_problem(root, rel)
            if is_missing:
                problem = "dangling symlink"
            if problem is not None:
                invalid.append(skipped(rel, problem))
                continue
            group = match_value(group_re, name, "group") if group_re is not None else None
            if group:
                groups[rel] = group
            clips.append(
                ClipRecord(
                    clip_id=rel.rsplit(".", 1)[0],
                    rel_path=rel,
                    fold=fold,
                    label=label,
                    fsid=group_id(group) if group else -1,
                )
            )
    if fold_re is None:
        clips = with_assigned_folds(clips, groups, options.n_folds, previous_folds)
    unlisted = sorted(
        n for n in _list_files(str(root)) if has_audio_ext(n, CLASS_FOLDER_EXTENSIONS)
    )
    return Manifest(
        dataset_root=str(root),
        clips=sorted(clips, key=lambda c: (c.fold, c.clip_id)),
        class_names=class_names,
        source="folders",
        missing_files=[],
        unlisted_files=unlisted,
        invalid=invalid,
        dataset="class-folders",
        class_ids=[],
        clip_seconds=None,
        fold_source="file names" if fold_re is not None else "assigned",
    )
