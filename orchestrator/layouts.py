"""Which layout a dataset folder has, and scanning it with the right reader.

Layouts (``docs/datasets.md``): UrbanSound8K (``audio/`` + ``metadata/``), ESC-50
(``meta/esc50.csv`` + flat ``audio/``), class folders (``ROOT/<class>/*.wav``) and an
explicit CSV. ``scan_any`` detects the layout unless one is named, and refuses a
folder that holds two layouts with a message naming both.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from orchestrator.datasets import MAX_SEARCH_DEPTH, DatasetError, _subfolders, scan_dataset
from orchestrator.layout_common import DatasetOptions
from orchestrator.layout_csv import scan_csv
from orchestrator.layout_esc50 import ESC_CLIP_SECONDS, is_esc50_root, scan_esc50
from orchestrator.layout_folders import class_folders, scan_class_folders
from storage.manifest import Manifest

US8K_CLIP_SECONDS = 4.0
LAYOUT_NAMES = {
    "urbansound8k": "UrbanSound8K (audio/ with metadata/ or fold folders)",
    "esc50": "ESC-50 (meta/esc50.csv and audio/)",
    "folders": "class folders (<class>/*.wav)",
}


def _kinds(folder: Path) -> list[str]:
    """The dataset-root layouts ``folder`` itself has (``urbansound8k``, ``esc50``)."""
    kinds = []
    if is_esc50_root(folder):
        kinds.append("esc50")
    if (folder / "audio").is_dir() and (not kinds or (folder / "metadata").is_dir()):
        kinds.append("urbansound8k")
    return kinds


def _roots_below(folder: Path, depth: int) -> Iterator[tuple[Path, str]]:
    for child in _subfolders(folder):
        kinds = _kinds(child)
        if kinds:
            yield from ((child, k) for k in kinds)
        elif depth < MAX_SEARCH_DEPTH:
            yield from _roots_below(child, depth + 1)


def _describe(found: list[tuple[Path, str]]) -> str:
    return "; ".join(f"{LAYOUT_NAMES[k]} at {str(p)!r}" for p, k in found)


def detect_layout(path: str | Path, layout: str = "auto") -> tuple[str, Path]:
    """``(layout, resolved root)`` of the dataset at or below ``path``.

    ``path`` itself is checked first (UrbanSound8K, ESC-50); otherwise roots are
    searched up to two levels below, and ``path``'s own sub-folders that directly hold
    audio files make it a class-folder root. A named ``layout`` only looks for that one.

    Raises:
        DatasetError: not a folder; nothing found; or several layouts / roots found
            (the message names each, with its path).
    """
    start = Path(path).expanduser()
    if not start.is_dir():
        raise DatasetError(f"dataset path {str(start)!r} does not exist or is not a folder")
    start = start.resolve()
    wanted = None if layout == "auto" else layout
    here = [(start, k) for k in _kinds(start) if wanted in (None, k)]
    if not here and wanted != "folders":
        found = [(p, k) for p, k in _roots_below(start, 1) if wanted in (None, k)]
    else:
        found = here
    if wanted in (None, "folders") and not here:
        folders = class_folders(start)
        if folders:
            found.append((start, "folders"))
    if not found:
        looked = [LAYOUT_NAMES[wanted]] if wanted else list(LAYOUT_NAMES.values())
        raise DatasetError(
            f"no dataset found in {str(start)!r}: looked for {', '.join(looked)} in it "
            f"(roots also up to {MAX_SEARCH_DEPTH} levels below); pass --layout csv --csv FILE "
            "for a dataset described by a CSV"
        )
    if len(found) > 1:
        raise DatasetError(
            f"ambiguous dataset path {str(start)!r}: it holds several datasets or layouts "
            f"({_describe(found)}); pass one folder, or name the layout with --layout"
        )
    kind, root = found[0][1], found[0][0].resolve()
    return kind, root


def scan_any(
    path: str | Path,
    options: DatasetOptions | None = None,
    *,
    previous_folds: Mapping[str, int] | None = None,
) -> Manifest:
    """Scan the dataset at ``path`` with the reader of its layout.

    Args:
        path: Dataset root or a folder above it (see :func:`detect_layout`); for the
            CSV layout the root the CSV's paths are relative to.
        options: Layout and its options (default: detect).
        previous_folds: rel path -> fold recorded in the feature store; layouts whose
            folds are assigned keep these.

    Raises:
        DatasetError: see :func:`detect_layout` and each layout's reader.
    """
    options = options or DatasetOptions()
    if options.csv_path is not None or options.layout == "csv":
        if options.csv_path is None:
            raise DatasetError("--layout csv needs --csv FILE (the metadata CSV)")
        root = Path(path).expanduser()
        if not root.is_dir():
            raise DatasetError(f"dataset path {str(root)!r} does not exist or is not a folder")
        return scan_csv(root.resolve(), options, previous_folds)
    if options.subset is not None and options.layout not in ("auto", "esc50"):
        raise DatasetError(f"--subset {options.subset} applies to the ESC-50 layout only")
    kind, root = detect_layout(path, options.layout)
    if options.subset is not None and kind != "esc50":
        raise DatasetError(
            f"--subset {options.subset} applies to the ESC-50 layout; {str(root)!r} is "
            f"{LAYOUT_NAMES[kind]}"
        )
    if kind == "esc50":
        manifest = scan_esc50(root, subset=options.subset)
    elif kind == "folders":
        manifest = scan_class_folders(root, options, previous_folds)
    else:
        manifest = scan_dataset(root)
        manifest.dataset = "UrbanSound8K"
        manifest.clip_seconds = US8K_CLIP_SECONDS
    return manifest


__all__ = ["ESC_CLIP_SECONDS", "DatasetOptions", "detect_layout", "scan_any"]
