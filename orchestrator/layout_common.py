"""Pieces shared by the dataset layouts other than UrbanSound8K (ESC-50, class folders, CSV).

Options that say how to read a dataset (:class:`DatasetOptions`), the contiguous
remapping of class ids, fold assignment for layouts without folds and the checks
that keep every listed file inside the dataset root.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.datasets import DatasetError, _check_file, _has_audio_ext
from orchestrator.fold_assignment import DEFAULT_ASSIGNED_FOLDS, FoldItem, assign_folds
from storage.manifest import ClipRecord, SkippedItem

LAYOUTS: tuple[str, ...] = ("auto", "urbansound8k", "esc50", "folders", "csv")
SUBSETS: tuple[str, ...] = ("esc10",)
CLASS_FOLDER_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
MAX_PROBED_SECONDS = 30.0

# The UrbanSound8K scanner's file checks, shared by every layout.
has_audio_ext = _has_audio_ext


@dataclass(frozen=True)
class DatasetOptions:
    """How to read a dataset; the defaults detect the layout.

    Attributes:
        layout: ``"auto"`` (detect), ``"urbansound8k"``, ``"esc50"``, ``"folders"``
            (one folder per class) or ``"csv"`` (the CSV named by ``csv_path``).
        subset: ``"esc10"`` keeps ESC-50's rows whose ``esc10`` is true.
        csv_path: Metadata CSV of the ``csv`` layout (relative to the dataset path or
            absolute); giving it selects that layout.
        path_column, label_column, fold_column, group_column: CSV columns (``None``:
            the first of the usual names present, see ``docs/datasets.md``).
        fold_pattern: Regular expression searched in a file name whose first group
            (or group ``fold``) is the fold, e.g. ``^(\\d+)-`` for ``1-100032-A.ogg``.
        group_pattern: Regular expression whose first group (or the whole match) names
            the source recording of a file, e.g. ``^\\d+-(\\d+)-``.
        n_folds: K of the assigned folds when the dataset has none.
        clip_seconds: Clip length that fixes the windows per clip (``None``: the
            layout's, the store's or the longest file's).
    """

    layout: str = "auto"
    subset: str | None = None
    csv_path: str | None = None
    path_column: str | None = None
    label_column: str | None = None
    fold_column: str | None = None
    group_column: str | None = None
    fold_pattern: str | None = None
    group_pattern: str | None = None
    n_folds: int = DEFAULT_ASSIGNED_FOLDS
    clip_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise DatasetError(f"unknown layout {self.layout!r}; choose one of {list(LAYOUTS)}")
        if self.subset is not None and self.subset not in SUBSETS:
            raise DatasetError(f"unknown subset {self.subset!r}; choose one of {list(SUBSETS)}")
        if self.n_folds < 2:
            raise DatasetError(f"--assign-folds must be at least 2, got {self.n_folds}")
        if self.clip_seconds is not None and not self.clip_seconds > 0:
            raise DatasetError(f"--clip-seconds must be > 0, got {self.clip_seconds}")
        for name in ("fold_pattern", "group_pattern"):
            pattern = getattr(self, name)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise DatasetError(f"--{name.replace('_', '-')} {pattern!r}: {exc}") from None


def compile_pattern(pattern: str | None) -> re.Pattern[str] | None:
    return re.compile(pattern) if pattern else None


def match_value(pattern: re.Pattern[str], text: str, name: str) -> str | None:
    """The named group ``name``, else group 1, else the whole match of ``pattern`` in ``text``."""
    match = pattern.search(text)
    if match is None:
        return None
    if name in pattern.groupindex:
        return match.group(name)
    return match.group(1) if pattern.groups else match.group(0)


def fold_from_name(pattern: re.Pattern[str], name: str) -> tuple[int | None, str | None]:
    """``(fold, None)`` parsed from a file name, or ``(None, reason)``."""
    raw = match_value(pattern, name, "fold")
    if raw is None:
        return None, f"file name does not match the fold pattern {pattern.pattern!r}"
    if not raw.strip().isdigit():
        return None, f"fold {raw!r} (from the file name) is not an integer"
    fold = int(raw)
    if fold < 1:
        return None, f"fold {fold} (from the file name) is not a positive integer"
    return fold, None


def remap_classes(ids_to_names: Mapping[int, str]) -> tuple[list[str], list[int], dict[int, int]]:
    """Contiguous training ids for the dataset's own class ids, in id order.

    Returns:
        ``(class_names, class_ids, training_id_of)``: the name and the dataset's own id
        of each training id, and dataset id -> training id.
    """
    ids = sorted(ids_to_names)
    return [ids_to_names[i] for i in ids], ids, {i: k for k, i in enumerate(ids)}


def with_assigned_folds(
    clips: Sequence[ClipRecord],
    groups: Mapping[str, str],
    n_folds: int,
    previous: Mapping[str, int] | None,
) -> list[ClipRecord]:
    """The clips with folds assigned (``fold`` of the input is ignored).

    ``groups`` maps rel paths to a group key (a clip without one is its own group);
    ``previous`` maps rel paths to folds already recorded in the feature store.
    """
    items = [FoldItem(c.rel_path, c.label, groups.get(c.rel_path, c.rel_path)) for c in clips]
    folds = assign_folds(items, n_folds, previous)
    out = []
    for c in clips:
        out.append(
            ClipRecord(
                clip_id=c.clip_id,
                rel_path=c.rel_path,
                fold=folds[c.rel_path],
                label=c.label,
                fsid=c.fsid,
                salience=c.salience,
            )
        )
    return out


def listed_file_problem(root: Path, rel_path: str) -> tuple[bool, str | None]:
    """``(missing, reason)`` for a listed file: missing (absent or dangling symlink),
    refused (``reason``) or usable (``False, None``)."""
    full = root / rel_path
    if not os.path.lexists(full):
        return True, None
    problem = _check_file(root, rel_path)
    if problem == "not a regular file" and not os.path.lexists(os.path.realpath(full)):
        return True, None
    return False, problem


def probe_clip_seconds(root: str, rel_paths: Sequence[str]) -> float | None:
    """Longest duration of the files, from their headers (no audio decoded), rounded up
    to 0.1 s and capped at :data:`MAX_PROBED_SECONDS`; ``None`` if no header is readable."""
    import soundfile as sf

    longest = 0.0
    for rel in rel_paths:
        try:
            info = sf.info(os.path.join(root, rel))
        except Exception:  # an unreadable file is reported by the worker that decodes it
            continue
        if info.samplerate > 0:
            longest = max(longest, info.frames / info.samplerate)
    if longest <= 0:
        return None
    return min(MAX_PROBED_SECONDS, math.ceil(longest * 10 - 1e-6) / 10)


def skipped(item: str, reason: str) -> SkippedItem:
    return SkippedItem(item=item, reason=reason)
