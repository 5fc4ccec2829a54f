"""The feature store: one Zarr v3 group holding every clip's window features.

Layout (see ``docs/store-layout.md`` for the full description):

* ``windows`` float32 ``(n_clips, max_windows, n_mels, frames, 2)``, one chunk per clip,
  uncompressed, NaN in unused window slots and for clips not extracted yet.
* ``clip_info`` int32 ``(n_clips, 3)``, one chunk per clip, ``-1`` until done:
  ``[n_windows, n_real, n_samples]``. Written after the clip's ``windows`` chunk, it is
  the clip's completion marker.
* ``clip_id``, ``rel_path`` (variable-length UTF-8), ``fold``, ``label`` (int16), ``fsid``
  (int64), ``salience`` (int8), all ``(n_clips,)``: the manifest, written by the setup step.

Concurrency rules: the layout (arrays, shapes, attributes) is created or extended only by
:meth:`FeatureStore.create_or_extend`, once, before extraction tasks are enqueued. Workers
only call :meth:`FeatureStore.write_clip`, which writes the two chunks that belong to one
clip. Chunk writes are atomic (rename on a local disk since zarr 3.1.3, one PUT on an
object store), and no two tasks share a chunk, so concurrent workers never lose data.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
import zarr.dtype
from zarr.codecs import BytesCodec, Endian
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

from contract.errors import EscError
from storage.manifest import ClipRecord, Manifest

FORMAT = "esc-pipeline.features"
FORMAT_VERSION = 1

_KEY_ENCODING: dict[str, Any] = {"name": "default", "separator": "."}
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_CLIP_INFO_KEY = re.compile(r"^c\.(\d+)\.0$")
# name -> (zarr dtype, fill value); every manifest array has shape (n_clips,).
_MANIFEST_ARRAYS: dict[str, tuple[Any, Any]] = {
    "clip_id": (zarr.dtype.VariableLengthUTF8(), ""),
    "rel_path": (zarr.dtype.VariableLengthUTF8(), ""),
    "fold": ("int16", -1),
    "label": ("int16", -1),
    "fsid": ("int64", -1),
    "salience": ("int8", -1),
}
_STRING_ARRAYS = ("clip_id", "rel_path")
# read_folds reads up to this many contiguous runs of clip indices as slices, else oindex.
_MAX_SLICE_RUNS = 8


class StoreError(EscError):
    """Base class of the feature store's errors."""


class StoreConfigError(StoreError):
    """The store's layout or feature configuration disagrees with what was asked for."""


class ClipIndexError(StoreError):
    """A clip index is out of range, or the clip at that index is not the one expected."""


@dataclass(frozen=True)
class LayoutChange:
    """What :meth:`FeatureStore.create_or_extend` did.

    Attributes:
        created: A new store was made.
        added: Store indices of the clips added now (all clips when created).
        gone: Clip ids in the store that the new manifest lacks (kept, only reported).
        generation: The store's layout generation afterwards (1 when created).
    """

    created: bool
    added: list[int]
    gone: list[str]
    generation: int


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


def _make_store(
    url: str, *, read_only: bool, storage_options: dict[str, Any] | None
) -> LocalStore | FsspecStore:
    """A zarr store for ``url``: LocalStore for plain paths and ``file://``, else fsspec."""
    if url.startswith("file://"):
        return LocalStore(url[len("file://") :], read_only=read_only)
    if "://" not in url:
        return LocalStore(url, read_only=read_only)
    return FsspecStore.from_url(url, storage_options=storage_options, read_only=read_only)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json_normalise(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists...), for comparisons."""
    return json.loads(json.dumps(obj))


def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One ``key: old -> new`` line per differing key, sorted."""
    missing = object()
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            a_text = "(absent)" if a is missing else repr(a)
            b_text = "(absent)" if b is missing else repr(b)
            lines.append(f"{key}: {a_text} -> {b_text}")
    return lines


def _manifest_columns(clips: Sequence[ClipRecord]) -> dict[str, np.ndarray]:
    """The manifest arrays' values for ``clips``, each ``(len(clips),)``."""
    return {
        "clip_id": np.array([c.clip_id for c in clips], dtype=object),
        "rel_path": np.array([c.rel_path for c in clips], dtype=object),
        "fold": np.array([c.fold for c in clips], dtype=np.int16),
        "label": np.array([c.label for c in clips], dtype=np.int16),
        "fsid": np.array([c.fsid for c in clips], dtype=np.int64),
        "salience": np.array([c.salience for c in clips], dtype=np.int8),
    }


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


class _LocalChunkWriter:
    """Writes whole chunks of an uncompressed array straight to files (LocalStore only).

    For an array whose only codec is the little-endian ``bytes`` codec, a chunk file
    holds exactly ``data.astype("<dtype").tobytes()``: this writes the same bytes, under
    the same key, with the same atomic temp-file-then-rename as zarr's LocalStore, in
    about a tenth of the time (zarr's async machinery costs ~1.3 ms per chunk write,
    more than the write itself). Arrays with other codecs, and other stores, use zarr.
    """

    def __init__(self, base: Path, array: zarr.Array) -> None:
        self._base = str(base)
        self._made_dirs: set[str] = set()
        self._metadata = array.metadata
        self._dtype = np.dtype(array.dtype).newbyteorder("<")
        self._chunk_shape = tuple(array.chunks)
        self._tail = (0,) * (len(self._chunk_shape) - 1)

    @classmethod
    def for_array(cls, array: zarr.Array) -> _LocalChunkWriter | None:
        store = array.store_path.store
        codecs = getattr(array.metadata, "codecs", ())
        plain = (
            len(codecs) == 1
            and isinstance(codecs[0], BytesCodec)
            and codecs[0].endian in (Endian.little, None)
        )
        if not isinstance(store, LocalStore) or not plain or array.chunks[0] != 1:
            return None
        return cls(Path(store.root) / array.store_path.path, array)

    def write_row(self, index: int, data: np.ndarray) -> None:
        """Write row ``index`` (one whole chunk, shape ``chunks[1:]``) atomically."""
        if data.shape != self._chunk_shape[1:]:
            raise ValueError(f"chunk data must have shape {self._chunk_shape[1:]}")
        key = self._metadata.encode_chunk_key((index, *self._tail))
        path = os.path.join(self._base, key)
        parent = os.path.dirname(path)
        if parent not in self._made_dirs:
            os.makedirs(parent, exist_ok=True)
            self._made_dirs.add(parent)
        tmp = f"{path}.{uuid.uuid4().hex}.partial"
        buffer = memoryview(np.ascontiguousarray(data, dtype=self._dtype)).cast("B")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
            try:
                while buffer:
                    buffer = buffer[os.write(fd, buffer) :]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


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
        """Use :meth:`open` or :meth:`create_or_extend` instead."""
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
        store = _make_store(url, read_only=mode == "r", storage_options=storage_options)
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
        attrs = group.attrs.asdict()
        if attrs.get("format") != FORMAT:
            raise StoreError(
                f"{url!r} is a Zarr group but not an esc-pipeline feature store "
                f"(format attribute {attrs.get('format')!r}, expected {FORMAT!r})"
            )
        if attrs.get("incomplete"):
            raise StoreError(
                f"creation of the feature store {url!r} did not finish; run the setup step "
                "again (it completes the store)"
            )
        if attrs.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{url!r} has feature-store format version {attrs.get('format_version')!r}; "
                f"this code reads version {FORMAT_VERSION}"
            )
        return group

    def _load(self, group: zarr.Group) -> None:
        """(Re)read attributes and array handles from ``group``; clears cached manifests."""
        self._group = group
        self._attrs: dict[str, Any] = group.attrs.asdict()
        try:
            self._windows = group["windows"]
            self._clip_info = group["clip_info"]
            self._windows_writer = _LocalChunkWriter.for_array(self._windows)
            self._clip_info_writer = _LocalChunkWriter.for_array(self._clip_info)
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

    # ----------------------------------------------------------------- layout

    @classmethod
    def create_or_extend(
        cls,
        url: str,
        manifest: Manifest,
        feature_config: dict[str, Any],
        window_shape: tuple[int, int, int, int],
        *,
        storage_options: dict[str, Any] | None = None,
    ) -> tuple[FeatureStore, LayoutChange]:
        """Create the store's layout for ``manifest``, or append the clips it lacks.

        Only the orchestrator calls this, before enqueueing the tasks of the clips it adds;
        no worker may be writing to the store's new indices meanwhile. Rerunning after a
        crash completes the interrupted creation or extension.

        Args:
            url: Local path, ``file://`` URL or fsspec URL (``s3://bucket/x.zarr``).
            manifest: The scanned dataset.
            feature_config: ``FeatureConfig.to_dict()``; must equal the stored one.
            window_shape: ``(max_windows, n_mels, frames, 2)``; must equal the stored one.
            storage_options: fsspec options for object-store URLs.

        Raises:
            StoreConfigError: Feature configuration, window shape, an existing clip's
                rel_path/fold/label or an existing class name differ; duplicate clip ids.
        """
        dims = [int(v) for v in window_shape]
        if len(dims) != 4 or dims[3] != 2 or min(dims) < 1:
            raise ValueError(
                f"window_shape must be (max_windows, n_mels, frames, 2), got {window_shape}"
            )
        shape4 = (dims[0], dims[1], dims[2], dims[3])
        config = _json_normalise(dict(feature_config))
        counts = Counter(c.clip_id for c in manifest.clips)
        dupes = sorted(i for i, k in counts.items() if k > 1)
        if dupes:
            raise StoreConfigError(f"the manifest lists clip ids more than once: {dupes[:5]}")

        store = _make_store(url, read_only=False, storage_options=storage_options)
        try:
            group = zarr.open_group(store=store, mode="r", zarr_format=3)
            attrs = group.attrs.asdict()
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            group, attrs = None, {}
        if group is not None and attrs.get("format") != FORMAT:
            raise StoreError(f"{url!r} is a Zarr group but not an esc-pipeline feature store")
        if group is None or attrs.get("incomplete"):
            change = cls._create(store, manifest, config, shape4)
        elif attrs.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{url!r} has feature-store format version {attrs.get('format_version')!r}; "
                f"this code writes version {FORMAT_VERSION}"
            )
        else:
            change = cls._extend(url, store, attrs, manifest, config, shape4)
        return cls.open(url, mode="r+", storage_options=storage_options), change

    @staticmethod
    def _create(
        store: LocalStore | FsspecStore,
        manifest: Manifest,
        config: dict[str, Any],
        window_shape: tuple[int, int, int, int],
    ) -> LayoutChange:
        n = len(manifest.clips)
        # Marked incomplete until every array exists, so that a crash leaves a store that
        # open() refuses and create_or_extend() finishes. overwrite=False on the group:
        # other modules' folders (runs/, ...) under the root must survive.
        group = zarr.open_group(
            store=store, mode="a", zarr_format=3, attributes={"format": FORMAT, "incomplete": True}
        )
        group.attrs.put({"format": FORMAT, "incomplete": True})
        group.create_array(
            "windows",
            shape=(n, *window_shape),
            chunks=(1, *window_shape),
            dtype="float32",
            fill_value=np.nan,
            compressors=None,
            chunk_key_encoding=_KEY_ENCODING,
            dimension_names=("clip", "slot", "mel", "frame", "channel"),
            overwrite=True,
        )
        group.create_array(
            "clip_info",
            shape=(n, 3),
            chunks=(1, 3),
            dtype="int32",
            fill_value=-1,
            compressors=None,
            chunk_key_encoding=_KEY_ENCODING,
            dimension_names=("clip", "field"),
            attributes={"fields": ["n_windows", "n_real", "n_samples"]},
            overwrite=True,
        )
        columns = _manifest_columns(manifest.clips)
        for name, (dtype, fill) in _MANIFEST_ARRAYS.items():
            arr = group.create_array(
                name,
                shape=(n,),
                chunks=(max(n, 1),),
                dtype=dtype,
                fill_value=fill,
                chunk_key_encoding=_KEY_ENCODING,
                dimension_names=("clip",),
                overwrite=True,
            )
            if n:
                arr[:] = columns[name]
        now = _now()
        group.attrs.put(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "feature_config": config,
                "class_names": list(manifest.class_names),
                "window_shape": list(window_shape),
                "generation": 1,
                "n_clips": n,
                "dataset_root": manifest.dataset_root,
                "created": now,
                "extended": now,
            }
        )
        return LayoutChange(created=True, added=list(range(n)), gone=[], generation=1)

    @staticmethod
    def _extend(
        url: str,
        store: LocalStore | FsspecStore,
        attrs: dict[str, Any],
        manifest: Manifest,
        config: dict[str, Any],
        window_shape: tuple[int, int, int, int],
    ) -> LayoutChange:
        remedy = "use another --store, or re-extract into a new store"
        diff = _config_diff(attrs.get("feature_config", {}), config)
        if diff:
            raise StoreConfigError(
                f"the store {url!r} was extracted with another feature configuration; "
                f"differing keys (stored -> requested): {'; '.join(diff)}. {remedy}"
            )
        if list(attrs["window_shape"]) != list(window_shape):
            raise StoreConfigError(
                f"the store {url!r} has window shape {tuple(attrs['window_shape'])}, "
                f"requested {window_shape}. {remedy}"
            )
        old_names = list(attrs["class_names"])
        new_names = list(manifest.class_names)
        renamed = [
            f"{i}: {a!r} -> {b!r}"
            for i, (a, b) in enumerate(zip(old_names, new_names, strict=False))
            if a != b
        ]
        if renamed:
            raise StoreConfigError(
                f"class names of the store {url!r} differ from the manifest's "
                f"(id: stored -> manifest): {'; '.join(renamed)}. {remedy}"
            )

        group = zarr.open_group(store=store, mode="r+", zarr_format=3)
        n_old = int(attrs["n_clips"])
        old = {name: np.asarray(group[name][:n_old]) for name in _MANIFEST_ARRAYS}
        old_index = {str(c): i for i, c in enumerate(old["clip_id"].tolist())}
        changed = []
        new_clips = []
        for clip in manifest.clips:
            i = old_index.get(clip.clip_id)
            if i is None:
                new_clips.append(clip)
                continue
            stored = (str(old["rel_path"][i]), int(old["fold"][i]), int(old["label"][i]))
            if stored != (clip.rel_path, clip.fold, clip.label):
                changed.append(
                    f"{clip.clip_id}: (rel_path, fold, label) {stored} -> "
                    f"{(clip.rel_path, clip.fold, clip.label)}"
                )
        if changed:
            more = f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""
            raise StoreConfigError(
                f"{len(changed)} clips of the store {url!r} changed in the manifest: "
                f"{'; '.join(changed[:5])}{more}. {remedy}"
            )
        manifest_ids = {c.clip_id for c in manifest.clips}
        gone = [str(c) for c in old["clip_id"].tolist() if c not in manifest_ids]
        generation = int(attrs["generation"])
        if not new_clips:
            return LayoutChange(created=False, added=[], gone=gone, generation=generation)

        n_new = n_old + len(new_clips)
        # Arrays first, attributes (n_clips, generation) last: until then readers keep using
        # n_old, and a rerun after a crash redoes the same resize and writes.
        group["windows"].resize((n_new, *window_shape))
        group["clip_info"].resize((n_new, 3))
        added = _manifest_columns(new_clips)
        for name in _MANIFEST_ARRAYS:
            arr = group[name]
            arr.resize((n_new,))
            arr[n_old:n_new] = added[name]
        class_names = old_names + new_names[len(old_names) :]
        group.attrs.update(
            {
                "class_names": class_names,
                "generation": generation + 1,
                "n_clips": n_new,
                "dataset_root": manifest.dataset_root,
                "extended": _now(),
            }
        )
        return LayoutChange(
            created=False, added=list(range(n_old, n_new)), gone=gone, generation=generation + 1
        )


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ClipIndexError",
    "FeatureStore",
    "FoldData",
    "LayoutChange",
    "StoreConfigError",
    "StoreError",
]
