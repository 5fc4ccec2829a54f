"""The feature store: one Zarr v3 group holding every clip's window features.

Layout (see ``docs/store-layout.md`` for the full description):

* ``windows`` float32 ``(n_clips, max_windows, n_mels, frames, 2)``, one chunk per clip,
  uncompressed, NaN in unused window slots and for clips not extracted yet.
* ``clip_info`` int32 ``(n_clips, 3)``, one chunk per clip, ``-1`` until done:
  ``[n_windows, n_real, n_samples]``. Written after the clip's ``windows`` chunk, it is
  the clip's completion marker.
* ``clip_id``, ``rel_path`` (variable-length UTF-8), ``fold``, ``label`` (int16), ``fsid``
  (int64), ``salience`` (int8), all ``(n_clips,)``: the manifest, written by the setup step.

This module is the handle (open, read, write a clip). The layout (arrays, shapes,
attributes) is created or extended only by ``storage.store_layout.create_or_extend``
(the orchestrator), once, before extraction tasks are enqueued; chunks of a local store
are written by ``storage.chunk_writer``. Workers
only call :meth:`FeatureStore.write_clip`, which writes the two chunks that belong to one
clip. Chunk writes are atomic (rename on a local disk since zarr 3.1.3, one PUT on an
object store), and no two tasks share a chunk, so concurrent workers never lose data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zarr
import zarr.dtype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

from contract.errors import EscError
from storage.chunk_writer import LocalChunkWriter
from storage.manifest import ClipRecord

FORMAT = "esc-pipeline.features"
FORMAT_VERSION = 1

_CLIP_INFO_KEY = re.compile(r"^c\.(\d+)\.0$")
_STRING_ARRAYS = ("clip_id", "rel_path")
# read_folds reads up to this many contiguous runs of clip indices as slices, else oindex.
_MAX_SLICE_RUNS = 8


class StoreError(EscError):
    """Base class of the feature store's errors."""


class StoreConfigError(StoreError):
    """The store's layout or feature configuration disagrees with what was asked for."""


class ClipIndexError(StoreError):
    """A clip index is out of range, or the clip at that index is not the one expected."""


@dataclass
class FoldData:
    """All windows of the done clips of some folds (see :meth:`FeatureStore.read_folds`).

    Attributes:
        windows: ``(n_windows_total, n_mels, frames, 2)`` float32 (log-mel dB, delta).
        labels: ``(n_windows_total,)`` int64, class id of each window's clip.
        clip_index: ``(n_windows_total,)`` int64, store index of each window's clip.
        real: ``(n_windows_total,)`` bool, the window is made only of the clip's own audio.
        clips: ``(n_selected_clips,)`` int64, store indices of all clips of the folds
            (done or not), sorted.
        clip_labels: ``(n_selected_clips,)`` int64 class ids.
        clip_folds: ``(n_selected_clips,)`` int64 folds.
        clip_fsids: ``(n_selected_clips,)`` int64 source recording ids.
        clip_done: ``(n_selected_clips,)`` bool; False: not extracted (or failed), no windows.
    """

    windows: np.ndarray
    labels: np.ndarray
    clip_index: np.ndarray
    real: np.ndarray
    clips: np.ndarray
    clip_labels: np.ndarray
    clip_folds: np.ndarray
    clip_fsids: np.ndarray
    clip_done: np.ndarray


def make_store(
    url: str, *, read_only: bool, storage_options: dict[str, Any] | None
) -> LocalStore | FsspecStore:
    """A zarr store for ``url``: LocalStore for plain paths and ``file://``, else fsspec."""
    if url.startswith("file://"):
        return LocalStore(url[len("file://") :], read_only=read_only)
    if "://" not in url:
        return LocalStore(url, read_only=read_only)
    return FsspecStore.from_url(url, storage_options=storage_options, read_only=read_only)


def _read_rows(array: zarr.Array, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` for sorted, distinct ``rows`` ``(k,)``: shape ``(k, *array.shape[1:])``.

    A few contiguous runs (a fold of a store laid out fold by fold) are read as slices,
    about twice as fast as ``oindex``; scattered rows use one ``oindex`` read. Either way
    zarr fetches the chunks of one read concurrently.
    """
    out_shape = (len(rows), *array.shape[1:])
    if not len(rows):
        return np.empty(out_shape, dtype=array.dtype)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    if len(breaks) >= _MAX_SLICE_RUNS:
        return np.asarray(array.oindex[rows])
    if not len(breaks):
        return np.asarray(array[int(rows[0]) : int(rows[-1]) + 1])
    out = np.empty(out_shape, dtype=array.dtype)
    for start, stop in zip([0, *breaks], [*breaks, len(rows)], strict=True):
        out[start:stop] = array[int(rows[start]) : int(rows[stop - 1]) + 1]
    return out


def check_format(
    url: str, attrs: dict[str, Any], *, verb: str, incomplete_ok: bool = False
) -> bool:
    """Refuse a group that is not a finished feature store of this format version.

    ``verb`` (``reads``/``writes``) says what this code was about to do. Returns True for
    a store whose creation did not finish, when ``incomplete_ok`` (the setup step then
    completes it); such a store is refused otherwise.

    Raises:
        StoreError: another format, an unfinished store, or another format version.
    """
    if attrs.get("format") != FORMAT:
        raise StoreError(
            f"{url!r} is a Zarr group but not an esc-pipeline feature store "
            f"(format attribute {attrs.get('format')!r}, expected {FORMAT!r})"
        )
    if attrs.get("incomplete"):
        if incomplete_ok:
            return True
        raise StoreError(
            f"creation of the feature store {url!r} did not finish; run the setup step "
            "again (it completes the store)"
        )
    if attrs.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{url!r} has feature-store format version {attrs.get('format_version')!r}; "
            f"this code {verb} version {FORMAT_VERSION}"
        )
    return False


class FeatureStore:
    """Handle on a feature store; open it once per process and keep it.

    Attributes:
        url: Where the store lives (local path or fsspec URL).
    """

    def __init__(
        self,
        url: str,
        group: zarr.Group,
        store: LocalStore | FsspecStore,
        mode: Literal["r", "r+"],
        storage_options: dict[str, Any] | None,
    ) -> None:
        """Use :meth:`open` or ``storage.store_layout.create_or_extend`` instead."""
        self.url = url
        self._store = store
        self._mode = mode
        self._storage_options = storage_options
        self._load(group)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        url: str,
        *,
        mode: Literal["r", "r+"] = "r",
        storage_options: dict[str, Any] | None = None,
    ) -> FeatureStore:
        """Open an existing store; :class:`StoreError` if absent, unfinished or foreign.

        Workers use ``mode="r+"`` (write clips); readers the default ``"r"``.
        """
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', not {mode!r}")
        store = make_store(url, read_only=mode == "r", storage_options=storage_options)
        group = cls._open_group(url, store, mode)
        return cls(url, group, store, mode, storage_options)

    @staticmethod
    def _open_group(url: str, store: LocalStore | FsspecStore, mode: str) -> zarr.Group:
        try:
            group = zarr.open_group(store=store, mode=mode, zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            raise StoreError(
                f"no feature store at {url!r} (create it with the setup step first)"
            ) from exc
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreError(f"{url!r} is not a readable Zarr v3 group: {exc}") from exc
        check_format(url, group.attrs.asdict(), verb="reads")
        return group

    def _load(self, group: zarr.Group) -> None:
        """(Re)read attributes and array handles from ``group``; clears cached manifests."""
        self._group = group
        self._attrs: dict[str, Any] = group.attrs.asdict()
        try:
            self._windows = group["windows"]
            self._clip_info = group["clip_info"]
            self._windows_writer = LocalChunkWriter.for_array(self._windows)
            self._clip_info_writer = LocalChunkWriter.for_array(self._clip_info)
        except KeyError as exc:
            raise StoreError(f"the feature store {self.url!r} lacks the array {exc}") from exc
        self._manifest_cache: dict[str, np.ndarray] = {}
        self._index: dict[str, int] | None = None

    def _reopen(self) -> None:
        """Re-read the layout, in case it was extended since this handle was opened."""
        self._load(self._open_group(self.url, self._store, self._mode))

    # -------------------------------------------------------------- properties

    @property
    def n_clips(self) -> int:
        """Number of clips in the layout (as of opening / the last reopen)."""
        return int(self._attrs["n_clips"])

    @property
    def generation(self) -> int:
        """Layout generation: 1 when created, +1 per extension."""
        return int(self._attrs["generation"])

    @property
    def feature_config(self) -> dict[str, Any]:
        """The feature configuration the store was created for (``FeatureConfig.to_dict``)."""
        return dict(self._attrs["feature_config"])

    @property
    def class_names(self) -> list[str]:
        """Class name of each class id."""
        return list(self._attrs["class_names"])

    @property
    def class_ids(self) -> list[int]:
        """The dataset's own id of each class (index = training id); stores written before
        this attribute existed give the identity."""
        ids = self._attrs.get("class_ids")
        return [int(i) for i in ids] if ids else list(range(len(self.class_names)))

    @property
    def dataset_name(self) -> str:
        """Name of the dataset (``"ESC-50"``, ...); ``""`` for stores written before it."""
        return str(self._attrs.get("dataset", ""))

    @property
    def fold_source(self) -> str:
        """``"dataset"``, ``"file names"`` or ``"assigned"``; ``"dataset"`` for older stores."""
        return str(self._attrs.get("fold_source", "dataset"))

    @property
    def window_shape(self) -> tuple[int, int, int, int]:
        """``(max_windows, n_mels, frames, 2)``: one clip's slot in ``windows``."""
        a, b, c, d = self._attrs["window_shape"]
        return (int(a), int(b), int(c), int(d))

    @property
    def dataset_root(self) -> str:
        """The dataset root recorded by the last setup step."""
        return str(self._attrs["dataset_root"])

    # --------------------------------------------------------------- manifest

    def _manifest_array(self, name: str) -> np.ndarray:
        cached = self._manifest_cache.get(name)
        if cached is None:
            raw = self._group[name][: self.n_clips]
            if name in _STRING_ARRAYS:
                # Fixed-width unicode: reads the same whether zarr returns numpy's StringDType
                # (numpy 2) or object arrays.
                cached = np.array(np.asarray(raw).tolist(), dtype=str)
            else:
                cached = np.asarray(raw)
            cached.flags.writeable = False
            self._manifest_cache[name] = cached
        return cached

    def clip_ids(self) -> np.ndarray:
        """``(n_clips,)`` str: clip id of each store index (read once, then cached)."""
        return self._manifest_array("clip_id")

    def rel_paths(self) -> np.ndarray:
        """``(n_clips,)`` str: audio path relative to the dataset root."""
        return self._manifest_array("rel_path")

    def folds(self) -> np.ndarray:
        """``(n_clips,)`` int16: fold of each clip."""
        return self._manifest_array("fold")

    def labels(self) -> np.ndarray:
        """``(n_clips,)`` int16: class id of each clip."""
        return self._manifest_array("label")

    def fsids(self) -> np.ndarray:
        """``(n_clips,)`` int64: source recording id of each clip (-1 unknown)."""
        return self._manifest_array("fsid")

    def saliences(self) -> np.ndarray:
        """``(n_clips,)`` int8: salience of each clip (-1 unknown)."""
        return self._manifest_array("salience")

    def index_of(self, clip_id: str) -> int:
        """Store index of ``clip_id``; :class:`ClipIndexError` if the store lacks it."""
        for attempt in range(2):
            if self._index is None:
                self._index = {c: i for i, c in enumerate(self.clip_ids().tolist())}
            found = self._index.get(clip_id)
            if found is not None:
                return found
            if attempt == 0:
                self._reopen()
        raise ClipIndexError(f"clip id {clip_id!r} is not in the store {self.url!r}")

    def manifest_records(self) -> list[ClipRecord]:
        """The stored manifest as :class:`ClipRecord` objects, in store-index order."""
        columns = zip(
            self.clip_ids().tolist(),
            self.rel_paths().tolist(),
            self.folds().tolist(),
            self.labels().tolist(),
            self.fsids().tolist(),
            self.saliences().tolist(),
            strict=True,
        )
        return [
            ClipRecord(clip_id=c, rel_path=p, fold=f, label=lb, fsid=fs, salience=s)
            for c, p, f, lb, fs, s in columns
        ]

    # ------------------------------------------------------------------ clips

    def _check_index(self, index: int) -> int:
        index = int(index)
        if index >= self.n_clips:
            self._reopen()
        if not 0 <= index < self.n_clips:
            raise ClipIndexError(
                f"clip index {index} is out of range: the store {self.url!r} holds "
                f"{self.n_clips} clips"
            )
        return index

    def write_clip(
        self,
        index: int,
        windows: np.ndarray,
        *,
        n_real: int,
        n_samples: int,
        expect_rel_path: str | None = None,
    ) -> None:
        """Store one clip's windows, then its completion marker.

        Args:
            index: Store index of the clip.
            windows: ``(n, n_mels, frames, 2)`` with ``0 <= n <= max_windows``, finite.
            n_real: Leading windows made only of the clip's own audio, ``0 <= n_real <= n``.
            n_samples: Length of the decoded signal in samples.
            expect_rel_path: If given, the clip's stored ``rel_path`` must equal it (guards
                against a task built for another layout).

        Raises:
            ClipIndexError: ``index`` out of range or ``expect_rel_path`` differs.
            ValueError: Bad shape, counts, or non-finite features.
        """
        if self._mode != "r+":
            raise StoreError(f"the store {self.url!r} was opened read-only (mode 'r')")
        index = self._check_index(index)
        if expect_rel_path is not None:
            stored = str(self.rel_paths()[index])
            if stored != expect_rel_path:
                raise ClipIndexError(
                    f"clip index {index} of {self.url!r} is {stored!r}, not "
                    f"{expect_rel_path!r}: the task does not match this store's layout"
                )
        max_windows, *shape = self.window_shape
        data = np.asarray(windows)
        if data.ndim != 4 or list(data.shape[1:]) != shape or data.shape[0] > max_windows:
            raise ValueError(
                f"windows must have shape (n <= {max_windows}, {', '.join(map(str, shape))}), "
                f"got {data.shape}"
            )
        data = data.astype(np.float32, copy=False)
        if not np.isfinite(data).all():
            raise ValueError(f"features are not finite (clip index {index})")
        n = int(data.shape[0])
        if not 0 <= int(n_real) <= n:
            raise ValueError(f"n_real must be in [0, {n}], got {n_real}")
        if not 0 <= int(n_samples) <= np.iinfo(np.int32).max:
            raise ValueError(f"n_samples must be a non-negative int32, got {n_samples}")
        padded = np.full(self.window_shape, np.nan, dtype=np.float32)
        padded[:n] = data
        marker = np.array([n, int(n_real), int(n_samples)], dtype=np.int32)
        # One complete-chunk write each (no read-modify-write); the marker goes last.
        if self._windows_writer is not None and self._clip_info_writer is not None:
            self._windows_writer.write_row(index, padded)
            self._clip_info_writer.write_row(index, marker)
        else:
            self._windows[index] = padded
            self._clip_info[index] = marker

    def clip_info(self, index: int) -> tuple[int, int, int] | None:
        """``(n_windows, n_real, n_samples)`` of a done clip; ``None`` if not done."""
        index = self._check_index(index)
        n, n_real, n_samples = (int(v) for v in self._clip_info[index])
        return None if n < 0 else (n, n_real, n_samples)

    def done_mask(self) -> np.ndarray:
        """``(n_clips,)`` bool: the clip's completion marker is written.

        Lists the ``clip_info`` chunk keys (one directory listing, or a few LIST requests
        on an object store) instead of reading every chunk: a marker chunk exists exactly
        when it was written, as it never equals the fill value.
        """
        store = self._clip_info.store_path.store
        prefix = self._clip_info.store_path.path

        async def keys() -> list[str]:
            return [k async for k in store.list_dir(prefix)]

        mask = np.zeros(self.n_clips, dtype=bool)
        for key in sync(keys()):
            match = _CLIP_INFO_KEY.match(key.rsplit("/", 1)[-1])
            if match is not None:
                i = int(match.group(1))
                if i < self.n_clips:
                    mask[i] = True
        return mask

    def read_clip(self, index: int) -> np.ndarray:
        """``(n_windows, n_mels, frames, 2)`` float32 windows of a done clip.

        Raises:
            StoreError: The clip is not done.
        """
        info = self.clip_info(index)
        if info is None:
            raise StoreError(f"clip {index} of {self.url!r} has not been extracted")
        n = info[0]
        if n == 0:
            return np.empty((0, *self.window_shape[1:]), dtype=np.float32)
        return np.asarray(self._windows[index, :n])

    def read_folds(self, folds: Sequence[int], *, only_real: bool = False) -> FoldData:
        """All windows of the done clips of ``folds``, in store-index order.

        One read of ``clip_info`` for the folds' clips, then one of ``windows`` for those
        that are done (slices of contiguous index runs, or one ``oindex`` read when the
        indices are scattered); empty slots are dropped using ``n_windows`` (and ``n_real``
        when ``only_real``).
        """
        fold_arr = self.folds()
        clips = np.flatnonzero(np.isin(fold_arr, np.asarray(list(folds), dtype=np.int64)))
        clips = clips.astype(np.int64)
        info = _read_rows(self._clip_info, clips).astype(np.int64)
        done = info[:, 0] >= 0
        done_idx = clips[done]
        n_windows, n_real = info[done, 0], info[done, 1]
        max_windows = self.window_shape[0]
        block = _read_rows(self._windows, done_idx)
        slots = np.arange(max_windows)[None, :]
        keep = slots < (n_real if only_real else n_windows)[:, None]
        labels_all = self.labels().astype(np.int64)
        rows = np.broadcast_to(done_idx[:, None], keep.shape)[keep]
        windows = block.reshape(-1, *block.shape[2:]) if keep.all() else block[keep]
        return FoldData(
            windows=windows,
            labels=labels_all[rows],
            clip_index=rows.astype(np.int64),
            real=np.broadcast_to(slots < n_real[:, None], keep.shape)[keep],
            clips=clips,
            clip_labels=labels_all[clips],
            clip_folds=fold_arr[clips].astype(np.int64),
            clip_fsids=self.fsids()[clips].astype(np.int64),
            clip_done=done,
        )


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ClipIndexError",
    "FeatureStore",
    "FoldData",
    "StoreConfigError",
    "StoreError",
    "check_format",
    "make_store",
]
