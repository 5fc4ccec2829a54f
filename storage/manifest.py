"""The scanned description of a dataset: which clips exist, with their labels and folds.

A :class:`Manifest` is what the dataset scanner (``orchestrator.datasets``) produces
and what the feature store (``storage.feature_store``) lays out. It is a plain,
JSON-serialisable record; nothing here touches the file system.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ClipRecord:
    """One audio clip of a dataset.

    Attributes:
        clip_id: Stable identifier, the file name without extension
            (UrbanSound8K: ``fsID-classID-occurrenceID-sliceID``).
        rel_path: POSIX path of the audio file relative to the dataset root
            (the folder that holds ``audio/`` and ``metadata/``), e.g.
            ``audio/fold1/100032-3-0-0.wav``.
        fold: Predefined cross-validation fold (UrbanSound8K: 1..10).
        label: Class id, an index into :attr:`Manifest.class_names`.
        fsid: Source recording id (Freesound id for UrbanSound8K); slices of one
            recording share it. ``-1`` when unknown.
        salience: 1 foreground, 2 background, ``-1`` unknown.
    """

    clip_id: str
    rel_path: str
    fold: int
    label: int
    fsid: int = -1
    salience: int = -1


@dataclass(frozen=True)
class SkippedItem:
    """A metadata row or file that the scanner did not turn into a clip, and why."""

    item: str
    reason: str


@dataclass
class Manifest:
    """Everything the pipeline knows about a dataset before any audio is decoded.

    Attributes:
        dataset_root: Absolute path of the dataset root (holds ``audio/``).
        clips: The clips to extract, sorted by ``(fold, clip_id)``.
        class_names: Class name of each class id (index = id).
        source: How labels were found: ``"metadata"`` (the CSV) or ``"filenames"``.
        missing_files: Metadata rows whose audio file is absent (partial download).
        unlisted_files: Audio files that the metadata does not list (skipped).
        invalid: Rows or files refused, with the reason (bad fold, bad class id,
            duplicate row, symlink outside the root, unreadable file...).
        dataset: Name of the dataset or layout (``"UrbanSound8K"``, ``"ESC-50"``,
            ``"ESC-10"``, ``"class-folders"``, ``"csv"``); ``""`` unknown.
        class_ids: The dataset's own id of each class (index = training id), e.g.
            ESC-10's ``[0, 1, 10, ...]``; empty when they equal the training ids.
        clip_seconds: Nominal clip length in seconds (UrbanSound8K 4, ESC 5), which
            fixes the windows per clip; ``None`` unknown.
        fold_source: Where the folds come from: ``"dataset"`` (metadata or folders),
            ``"file names"`` (a pattern) or ``"assigned"`` (stratified, grouped).
    """

    dataset_root: str
    clips: list[ClipRecord]
    class_names: list[str]
    source: str = "metadata"
    missing_files: list[str] = field(default_factory=list)
    unlisted_files: list[str] = field(default_factory=list)
    invalid: list[SkippedItem] = field(default_factory=list)
    dataset: str = ""
    class_ids: list[int] = field(default_factory=list)
    clip_seconds: float | None = None
    fold_source: str = "dataset"

    @property
    def original_class_ids(self) -> list[int]:
        """The dataset's own id of each training class id (identity when not remapped)."""
        return list(self.class_ids) if self.class_ids else list(range(len(self.class_names)))

    @property
    def folds(self) -> list[int]:
        """The folds that hold at least one clip, sorted."""
        return sorted({c.fold for c in self.clips})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (see :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Inverse of :meth:`to_dict`."""
        return cls(
            dataset_root=data["dataset_root"],
            clips=[ClipRecord(**c) for c in data["clips"]],
            class_names=list(data["class_names"]),
            source=data.get("source", "metadata"),
            missing_files=list(data.get("missing_files", [])),
            unlisted_files=list(data.get("unlisted_files", [])),
            invalid=[SkippedItem(**s) for s in data.get("invalid", [])],
            dataset=str(data.get("dataset", "")),
            class_ids=[int(i) for i in data.get("class_ids", [])],
            clip_seconds=data.get("clip_seconds"),
            fold_source=str(data.get("fold_source", "dataset")),
        )
