"""Dataset scanner: turn an UrbanSound8K-shaped folder into a :class:`Manifest`.

The scanner reads the metadata CSV and lists the audio folders; it never decodes
audio (the workers do that) and never reads a path outside the dataset root.
See ``docs/datasets.md`` for the accepted layouts and every skip/refusal reason.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.errors import EscError
from contract.paths import is_inside, no_links_below, plain_parts
from storage.manifest import ClipRecord, Manifest, SkippedItem

DEFAULT_AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")
METADATA_CSV_NAME = "UrbanSound8K.csv"
REQUIRED_COLUMNS: tuple[str, ...] = ("slice_file_name", "fold", "classID", "class")
OPTIONAL_COLUMNS: tuple[str, ...] = ("fsID", "salience")
UNUSED_CLASS_NAME = ""
MAX_SEARCH_DEPTH = 2

_FOLD_DIR_RE = re.compile(r"^fold(\d+)$")
_US8K_NAME_RE = re.compile(r"^(\d+)-(\d+)-(\d+)-(\d+)$")
_OUTSIDE_ROOT = "symlink points outside the dataset root"
_PERMISSION_DENIED = "file is not readable (permission denied)"


class DatasetError(EscError, ValueError):
    """The path is not a usable dataset (no/ambiguous root, unusable metadata CSV)."""


# ---------------------------------------------------------------------------
# Finding the dataset root
# ---------------------------------------------------------------------------


def find_dataset_root(path: str | Path) -> Path:
    """Return the resolved dataset root (the folder holding ``audio/``) at or below ``path``.

    ``path`` itself is the root when it holds ``audio/``; otherwise its sub-folders are
    searched at most :data:`MAX_SEARCH_DEPTH` levels down (hidden folders skipped).

    Raises:
        DatasetError: ``path`` is not a folder, or no / more than one candidate was found.
    """
    start = Path(path).expanduser()
    if not start.is_dir():
        raise DatasetError(f"dataset path {str(start)!r} does not exist or is not a folder")
    start = start.resolve()
    if (start / "audio").is_dir():
        return start
    candidates = sorted(_search_candidates(start, depth=1))
    if not candidates:
        raise DatasetError(
            f"no dataset found in {str(start)!r}: looked for a folder holding 'audio/' "
            f"(e.g. UrbanSound8K/audio/fold1/...) in it and up to {MAX_SEARCH_DEPTH} levels below"
        )
    if len(candidates) > 1:
        listed = ", ".join(repr(str(c)) for c in candidates)
        raise DatasetError(
            f"ambiguous dataset path {str(start)!r}: several folders holding 'audio/' "
            f"were found ({listed}); pass one of them"
        )
    return candidates[0].resolve()


def _search_candidates(folder: Path, depth: int) -> Iterator[Path]:
    """Yield sub-folders of ``folder`` (down to the max depth) that hold ``audio/``."""
    for child in _subfolders(folder):
        if (child / "audio").is_dir():
            yield child
        elif depth < MAX_SEARCH_DEPTH:
            yield from _search_candidates(child, depth + 1)


def _subfolders(folder: Path) -> list[Path]:
    """Non-hidden sub-folders of ``folder``; an unreadable folder has none."""
    try:
        with os.scandir(folder) as entries:
            return [Path(e.path) for e in entries if not e.name.startswith(".") and _is_dir(e)]
    except OSError:
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Listing the audio folder
# ---------------------------------------------------------------------------


@dataclass
class _AudioListing:
    """What is under ``audio/``: files per sub-folder, plus files directly in ``audio/``.

    Keys of ``folders`` are sub-folder names (``"fold1"``); values are sets of file names.
    ``outside`` holds sub-folder names whose real path is outside the dataset root
    (they are not listed).
    """

    folders: dict[str, set[str]] = field(default_factory=dict)
    top_level: set[str] = field(default_factory=set)
    outside: set[str] = field(default_factory=set)


def _list_files(folder: str) -> set[str]:
    """Names of the non-hidden non-folder entries of ``folder`` (symlinks included)."""
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries if not e.name.startswith(".") and not _is_dir(e)}
    except OSError:
        return set()


def _list_audio(root: Path) -> _AudioListing:
    """List ``root/audio`` and its direct sub-folders, without leaving the root."""
    root_str = str(root)
    audio_dir = root / "audio"
    if not is_inside(os.path.realpath(audio_dir), root_str):
        raise DatasetError(f"{str(audio_dir)!r} is a symlink pointing outside the dataset root")
    listing = _AudioListing(top_level=_list_files(str(audio_dir)))
    for sub in _subfolders(audio_dir):
        if is_inside(os.path.realpath(sub), root_str):
            listing.folders[sub.name] = _list_files(str(sub))
        else:
            listing.outside.add(sub.name)
    return listing


def _has_audio_ext(name: str, extensions: tuple[str, ...]) -> bool:
    return name.lower().endswith(extensions)


def _check_file(root: Path, rel_path: str) -> str | None:
    """Why the listed file ``root/rel_path`` cannot be used, or ``None`` when it can.

    ``root`` is a real path (resolved, as every scan's root is). Opens (and closes) the
    file to prove it is readable; reads no bytes.
    """
    root_str = str(root)
    joined = os.path.join(root_str, rel_path)
    parts = rel_path.split("/")
    if plain_parts(parts) and no_links_below(root_str, parts):
        real = joined  # what realpath gives: nothing below the real root is a link
    else:
        real = os.path.realpath(joined)
        if not is_inside(real, root_str):
            return _OUTSIDE_ROOT
    if not os.path.isfile(real):
        return "not a regular file"
    if not os.access(real, os.R_OK):
        return _PERMISSION_DENIED
    try:
        os.close(os.open(real, os.O_RDONLY))
    except PermissionError:
        return _PERMISSION_DENIED
    except OSError as exc:
        return f"file is not readable ({exc.strerror or exc})"
    return None


# ---------------------------------------------------------------------------
# Small parsers
# ---------------------------------------------------------------------------


def _parse_int(text: str | None) -> int | None:
    """Parse ``"3"`` or ``"3.0"`` to 3; anything else (``"3.5"``, ``""``, ``None``) -> None."""
    if text is None:
        return None
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _fsid_from_name(name: str) -> int:
    """The fsID of a ``fsID-classID-occurrenceID-sliceID.ext`` name, else -1."""
    match = _US8K_NAME_RE.match(Path(name).stem)
    return int(match.group(1)) if match else -1


def _name_problem(name: str, extensions: tuple[str, ...]) -> str | None:
    """Why a metadata file name is refused, or ``None`` when it is acceptable."""
    if not name:
        return "empty file name"
    if "/" in name or "\\" in name or "\0" in name or ".." in name:
        return f"file name {name!r} contains a path separator or '..'"
    if not _has_audio_ext(name, extensions):
        return f"file name {name!r} does not end with an audio extension {list(extensions)}"
    return None


def _fold_problem(fold: int | None, raw: str, folds: Collection[int] | None) -> str | None:
    """Why a fold value is refused, or ``None`` when it is acceptable."""
    if fold is None:
        return f"fold {raw!r} is not an integer"
    if folds is None:
        return None if fold >= 1 else f"fold {fold} is not a positive integer"
    if fold not in folds:
        return f"fold {fold} is outside the accepted folds {_describe_folds(folds)}"
    return None


def _describe_folds(folds: Collection[int]) -> str:
    if isinstance(folds, range) and folds.step == 1 and len(folds) > 0:
        return f"{folds.start}..{folds.stop - 1}"
    return str(sorted(folds))


class _ClassTable:
    """Class id <-> name bookkeeping; the first valid row naming an id wins."""

    def __init__(self) -> None:
        self.name_of: dict[int, str] = {}
        self.id_of: dict[str, int] = {}
        self.first_row: dict[int, int] = {}

    def problem(self, class_id: int | None, raw_id: str, name: str, row: int) -> str | None:
        """Check one row's (classID, class); register it when valid; return why not."""
        if class_id is None:
            return f"classID {raw_id!r} is not an integer"
        if class_id < 0:
            return f"classID {class_id} is negative"
        if not name:
            return f"class name for classID {class_id} is empty"
        known = self.name_of.get(class_id)
        if known is not None and known != name:
            return (
                f"classID {class_id} is named {name!r} here but {known!r} "
                f"in row {self.first_row[class_id]}"
            )
        other_id = self.id_of.get(name)
        if other_id is not None and other_id != class_id:
            return f"class name {name!r} is used for classID {class_id} but also for {other_id}"
        if known is None:
            self.name_of[class_id] = name
            self.id_of[name] = class_id
            self.first_row[class_id] = row
        return None

    def class_names(self) -> list[str]:
        """Names indexed by id, length ``max_id + 1``; unused ids are ``""``."""
        if not self.name_of:
            return []
        names = [UNUSED_CLASS_NAME] * (max(self.name_of) + 1)
        for class_id, name in self.name_of.items():
            names[class_id] = name
        return names


# ---------------------------------------------------------------------------
# Metadata CSV
# ---------------------------------------------------------------------------


def find_metadata_csv(root: Path) -> Path | None:
    """The metadata CSV of the dataset at ``root``, or ``None`` when there is none.

    ``metadata/UrbanSound8K.csv`` when present, else the only ``*.csv`` in ``metadata/``.

    Raises:
        DatasetError: several CSVs and none named ``UrbanSound8K.csv``, or the CSV / the
            ``metadata`` folder resolves outside the dataset root.
    """
    meta_dir = root / "metadata"
    if not meta_dir.is_dir():
        return None
    if not is_inside(os.path.realpath(meta_dir), str(root)):
        raise DatasetError(f"{str(meta_dir)!r} is a symlink pointing outside the dataset root")
    preferred = meta_dir / METADATA_CSV_NAME
    if preferred.is_file():
        chosen = preferred
    else:
        csvs = sorted(p for p in meta_dir.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
        if not csvs:
            return None
        if len(csvs) > 1:
            names = ", ".join(p.name for p in csvs)
            raise DatasetError(
                f"{str(meta_dir)!r} holds several CSV files ({names}) and none is named "
                f"{METADATA_CSV_NAME!r}; keep one or rename the right one"
            )
        chosen = csvs[0]
    if not is_inside(os.path.realpath(chosen), str(root)):
        raise DatasetError(f"{str(chosen)!r} is a symlink pointing outside the dataset root")
    return chosen


def _column_map(csv_path: Path, header: list[str] | None) -> dict[str, str]:
    """Map canonical column names to the CSV's own spelling (case/space-insensitive).

    Raises:
        DatasetError: no header, or a required column is missing.
    """
    if not header:
        raise DatasetError(f"metadata CSV {str(csv_path)!r} is empty (no header row)")
    by_lower = {h.strip().lower(): h for h in header if h is not None}
    found = {
        col: by_lower[col.lower()]
        for col in REQUIRED_COLUMNS + OPTIONAL_COLUMNS
        if col.lower() in by_lower
    }
    missing = [col for col in REQUIRED_COLUMNS if col not in found]
    if missing:
        raise DatasetError(
            f"metadata CSV {str(csv_path)!r} is missing required column(s) "
            f"{', '.join(missing)} (found: {', '.join(h.strip() for h in header)})"
        )
    return found


def _cell(row: dict[str, str | None], columns: dict[str, str], name: str) -> str:
    """A stripped cell; ``""`` for an absent optional column or a short row."""
    key = columns.get(name)
    value = row.get(key) if key is not None else None
    return value.strip() if isinstance(value, str) else ""


@dataclass
class _ScanState:
    """Accumulates the scan's results."""

    clips: list[ClipRecord] = field(default_factory=list)
    missing: list[tuple[int, str]] = field(default_factory=list)
    invalid: list[SkippedItem] = field(default_factory=list)
    referenced: set[str] = field(default_factory=set)


def _scan_metadata(
    root: Path,
    csv_path: Path,
    listing: _AudioListing,
    folds: Collection[int] | None,
    extensions: tuple[str, ...],
) -> tuple[_ScanState, list[str]]:
    """Match every metadata row with its audio file; returns the state and class names."""
    state = _ScanState()
    classes = _ClassTable()
    accepted_names: dict[str, int] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = _column_map(csv_path, reader.fieldnames)
        for row in reader:
            line = reader.line_num
            name = _cell(row, columns, "slice_file_name")
            item = f"row {line}: {name or '<empty file name>'}"
            problem = _name_problem(name, extensions)
            if problem is None and name in accepted_names:
                problem = f"duplicate of row {accepted_names[name]} (the first row is kept)"
            if problem is None:
                problem = _row_problem(row, columns, line, classes, folds)
            if problem is not None:
                state.invalid.append(SkippedItem(item=item, reason=problem))
                fold = _parse_int(_cell(row, columns, "fold"))
                if fold is not None and _name_problem(name, extensions) is None:
                    state.referenced.add(f"audio/fold{fold}/{name}")
                continue
            accepted_names[name] = line
            _add_listed_file(root, row, columns, name, item, listing, state)
    return state, classes.class_names()


def _row_problem(
    row: dict[str, str | None],
    columns: dict[str, str],
    line: int,
    classes: _ClassTable,
    folds: Collection[int] | None,
) -> str | None:
    """Why a metadata row is refused by its class or fold, or ``None``."""
    raw_id = _cell(row, columns, "classID")
    problem = classes.problem(_parse_int(raw_id), raw_id, _cell(row, columns, "class"), line)
    if problem is not None:
        return problem
    raw_fold = _cell(row, columns, "fold")
    return _fold_problem(_parse_int(raw_fold), raw_fold, folds)


def _add_listed_file(
    root: Path,
    row: dict[str, str | None],
    columns: dict[str, str],
    name: str,
    item: str,
    listing: _AudioListing,
    state: _ScanState,
) -> None:
    """Turn a valid metadata row into a clip, a missing file or an invalid item."""
    fold = _parse_int(_cell(row, columns, "fold"))
    label = _parse_int(_cell(row, columns, "classID"))
    assert fold is not None and label is not None  # checked by _row_problem
    folder = f"fold{fold}"
    rel_path = f"audio/{folder}/{name}"
    state.referenced.add(rel_path)
    if folder in listing.outside:
        state.invalid.append(SkippedItem(item=item, reason=_OUTSIDE_ROOT))
        return
    if name not in listing.folders.get(folder, ()):
        state.missing.append((fold, rel_path))
        return
    problem = _check_file(root, rel_path)
    if problem is not None:
        _record_file_problem(state, item, fold, rel_path, problem, root)
        return
    fsid = _parse_int(_cell(row, columns, "fsID"))
    salience = _parse_int(_cell(row, columns, "salience"))
    state.clips.append(
        ClipRecord(
            clip_id=Path(name).stem,
            rel_path=rel_path,
            fold=fold,
            label=label,
            fsid=fsid if fsid is not None else _fsid_from_name(name),
            salience=salience if salience is not None else -1,
        )
    )


def _record_file_problem(
    state: _ScanState, item: str, fold: int, rel_path: str, problem: str, root: Path
) -> None:
    """A listed path that exists but is unusable: a dangling symlink counts as missing."""
    real = os.path.realpath(root / rel_path)
    if problem == "not a regular file" and not os.path.lexists(real):
        state.missing.append((fold, rel_path))
    else:
        state.invalid.append(SkippedItem(item=item, reason=problem))


def _unlisted(
    listing: _AudioListing, referenced: set[str], extensions: tuple[str, ...]
) -> list[str]:
    """Audio files under ``audio/`` that no metadata row mentions, as sorted rel paths."""
    paths = [f"audio/{n}" for n in listing.top_level]
    for folder, names in listing.folders.items():
        paths.extend(f"audio/{folder}/{n}" for n in names)
    return sorted(p for p in paths if _has_audio_ext(p, extensions) and p not in referenced)


# ---------------------------------------------------------------------------
# File-name fallback (no metadata CSV)
# ---------------------------------------------------------------------------


def _scan_filenames(
    root: Path,
    listing: _AudioListing,
    folds: Collection[int] | None,
    extensions: tuple[str, ...],
) -> tuple[_ScanState, list[str]]:
    """Label clips from ``fsID-classID-occurrenceID-sliceID.ext`` names in ``fold<N>/``."""
    state = _ScanState()
    class_ids: set[int] = set()
    first_seen: dict[str, str] = {}
    for rel_path in _fallback_candidates(listing, extensions):
        problem, record = _fallback_record(root, rel_path, folds)
        if record is not None and record.clip_id in first_seen:
            problem = f"duplicate clip id (first kept: {first_seen[record.clip_id]})"
            record = None
        if record is None:
            state.invalid.append(SkippedItem(item=rel_path, reason=problem or "unusable file"))
            continue
        first_seen[record.clip_id] = rel_path
        class_ids.add(record.label)
        state.clips.append(record)
    names = [UNUSED_CLASS_NAME] * (max(class_ids) + 1 if class_ids else 0)
    for class_id in class_ids:
        names[class_id] = f"class_{class_id}"
    return state, names


def _fallback_candidates(listing: _AudioListing, extensions: tuple[str, ...]) -> list[str]:
    """Every audio file under ``audio/`` as a rel path, fold folders in numeric order."""
    paths = [f"audio/{n}" for n in sorted(listing.top_level)]
    paths += [f"audio/{folder}/" for folder in sorted(listing.outside)]

    def fold_key(folder: str) -> tuple[int, str]:
        match = _FOLD_DIR_RE.match(folder)
        return (int(match.group(1)) if match else 1 << 30, folder)

    for folder in sorted(listing.folders, key=fold_key):
        paths.extend(f"audio/{folder}/{n}" for n in sorted(listing.folders[folder]))
    return [p for p in paths if p.endswith("/") or _has_audio_ext(p, extensions)]


def _fallback_record(
    root: Path, rel_path: str, folds: Collection[int] | None
) -> tuple[str | None, ClipRecord | None]:
    """A clip for one file found without metadata, or the reason it is refused."""
    if rel_path.endswith("/"):
        return _OUTSIDE_ROOT, None
    parts = rel_path.split("/")
    fold_match = _FOLD_DIR_RE.match(parts[1]) if len(parts) == 3 else None
    if fold_match is None:
        return "not inside an audio/fold<N>/ folder, so it has no fold", None
    fold = int(fold_match.group(1))
    problem = _fold_problem(fold, parts[1], folds)
    if problem is not None:
        return problem, None
    stem = Path(parts[2]).stem
    name_match = _US8K_NAME_RE.match(stem)
    if name_match is None:
        return "file name is not fsID-classID-occurrenceID-sliceID, so it has no label", None
    problem = _check_file(root, rel_path)
    if problem is not None:
        return problem, None
    record = ClipRecord(
        clip_id=stem,
        rel_path=rel_path,
        fold=fold,
        label=int(name_match.group(2)),
        fsid=int(name_match.group(1)),
    )
    return None, record


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------


def scan_dataset(
    path: str | Path,
    *,
    folds: Collection[int] | None = range(1, 11),
    audio_extensions: tuple[str, ...] = DEFAULT_AUDIO_EXTENSIONS,
) -> Manifest:
    """Scan an UrbanSound8K-shaped dataset into a :class:`Manifest` (no audio is decoded).

    Args:
        path: The dataset root (holds ``audio/`` and optionally ``metadata/``) or a folder
            at most two levels above it (e.g. ``raw/us8k`` holding ``UrbanSound8K/``).
        folds: Accepted fold numbers; rows/files in other folds are listed as invalid.
            ``None`` accepts any positive integer.
        audio_extensions: File name endings (case-insensitive) that count as audio.

    Returns:
        The manifest: clips sorted by ``(fold, clip_id)``, class names indexed by id,
        missing files (metadata rows without a file), unlisted files (audio files the
        metadata does not mention) and invalid items with their reason.

    Raises:
        DatasetError: no or ambiguous dataset root, unusable metadata CSV (missing
            required columns, several candidate CSVs, outside the root).
    """
    extensions = tuple(e.lower() for e in audio_extensions)
    root = find_dataset_root(path)
    listing = _list_audio(root)
    csv_path = find_metadata_csv(root)
    if csv_path is not None:
        state, class_names = _scan_metadata(root, csv_path, listing, folds, extensions)
        unlisted = _unlisted(listing, state.referenced, extensions)
        source = "metadata"
    else:
        state, class_names = _scan_filenames(root, listing, folds, extensions)
        unlisted = []
        source = "filenames"
    return Manifest(
        dataset_root=str(root),
        clips=sorted(state.clips, key=lambda c: (c.fold, c.clip_id)),
        class_names=class_names,
        source=source,
        missing_files=[rel for _, rel in sorted(state.missing)],
        unlisted_files=unlisted,
        invalid=state.invalid,
    )


def summarize(manifest: Manifest, *, max_examples: int = 5) -> dict[str, Any]:
    """Counts for display: clips per fold and per class, missing/unlisted/invalid counts.

    Returns:
        A JSON-serialisable dict with keys ``dataset_root``, ``source``, ``clips``,
        ``classes`` (named class ids), ``per_fold`` (fold -> clips), ``per_class``
        (class name -> clips, every named class, zero included), ``missing_files``,
        ``unlisted_files``, ``invalid`` (counts) and ``invalid_examples`` (the first
        ``max_examples`` invalid items as ``"item: reason"``).
    """
    per_fold = Counter(c.fold for c in manifest.clips)
    per_label = Counter(c.label for c in manifest.clips)
    return {
        "dataset_root": manifest.dataset_root,
        "source": manifest.source,
        "clips": len(manifest.clips),
        "classes": sum(1 for n in manifest.class_names if n != UNUSED_CLASS_NAME),
        "per_fold": {fold: per_fold[fold] for fold in sorted(per_fold)},
        "per_class": {
            name: per_label[class_id]
            for class_id, name in enumerate(manifest.class_names)
            if name != UNUSED_CLASS_NAME
        },
        "missing_files": len(manifest.missing_files),
        "unlisted_files": len(manifest.unlisted_files),
        "invalid": len(manifest.invalid),
        "invalid_examples": [f"{s.item}: {s.reason}" for s in manifest.invalid[:max_examples]],
    }
