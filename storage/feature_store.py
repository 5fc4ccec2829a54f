"""The feature store: one Zarr v3 group holding every clip's window features.

Layout (see ``docs/store-layout.md`` for the full description):

* ``windows`` float32 ``(n_clips, max_windows, n_mels, frames, 2)``, one chunk per
  ``clips_per_chunk`` consecutive clips (format 2; one per clip in format 1),
  uncompressed, NaN in unused window slots and for clips not extracted yet.
* ``clip_info`` int32 ``(n_clips, 3)``, chunked like ``windows``, ``-1`` until done:
  ``[n_windows, n_real, n_samples]``. Written after the ``windows`` chunk, it holds
  the completion markers of the chunk's clips.
* ``clip_id``, ``rel_path`` (variable-length UTF-8), ``fold``, ``label`` (int16), ``fsid``
  (int64), ``salience`` (int8), all ``(n_clips,)``: the manifest, written by the setup step.

This module is the handle (open, read, write a clip). The layout (arrays, shapes,
attributes) is created or extended only by ``storage.store_layout.create_or_extend``
(the orchestrator), once, before extraction tasks are enqueued; chunks of a local store
are written by ``storage.chunk_writer``. Workers
only write whole chunks (:meth:`FeatureStore.write_chunk`, through
``workers.extraction``): every write of a chunk holds every clip of the chunk that can
be extracted, so all writes of a chunk carry the same bytes and concurrent or
redelivered writers never lose a clip (the argument is in ``docs/store-layout.md``).
Chunk writes are atomic (rename on a local disk since zarr 3.1.3, one PUT on an object
store). Format 1 stores (one chunk per clip) are read, never written.
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

from contract.errors import EscError, JobError
from contract.wire import split_variant_url, variant_url
from storage.chunk_writer import LocalChunkWriter
from storage.manifest import ClipRecord

FORMAT = "esc-pipeline.features"
FORMAT_VERSION = 2
# Versions this code reads; it writes (and extends) only FORMAT_VERSION.
READABLE_VERSIONS = (1, 2)

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


class UnknownVariantError(StoreError):
    """The store's layout has no variant group of that name."""


VARIANTS_GROUP = "variants"
# Group attribute: sorted names of the variant groups (authoritative, written last).
VARIANTS_ATTR = "variants"
# Attribute of a variant group: the variant's spec (``workers.audio_variants.Variant``).
VARIANT_SPEC_ATTR = "variant"


def variant_path(name: str) -> str:
    """Path of variant ``name``'s group under the store's root (``variants/<name>``)."""
    return f"{VARIANTS_GROUP}/{name}"


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
    """Refuse a group that is not a finished feature store this code can read or write.

    ``verb`` (``reads``/``writes``) says what this code was about to do: it reads the
    versions in :data:`READABLE_VERSIONS` and writes only :data:`FORMAT_VERSION`.
    Returns True for a store whose creation did not finish, when ``incomplete_ok`` (the
    setup step then completes it); such a store is refused otherwise.

    Raises:
        StoreError: another format, an unfinished store, or a format version this code
            cannot ``verb`` (the message says what to do).
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
    version = attrs.get("format_version")
    if version not in READABLE_VERSIONS:
        raise StoreError(
            f"{url!r} has feature-store format version {version!r}; this code reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}: update esc-pipeline to read it"
        )
    if verb == "writes" and version != FORMAT_VERSION:
        raise StoreError(
            f"{url!r} has feature-store format version {version!r} (one chunk file per "
            f"clip); this code reads it but writes only version {FORMAT_VERSION}. To extract "
            "into it or extend it, extract the dataset into a new store (--store NEW_PATH) "
            "and use that one; reading it (training, predict) works as it is"
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
        self.base_url = url
        self.variant = ""
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
        try:
            base, variant = split_variant_url(url)
        except JobError as exc:
            raise StoreError(str(exc)) from None
        store = make_store(base, read_only=mode == "r", storage_options=storage_options)
        group = cls._open_group(base, store, mode)
        handle = cls(base, group, store, mode, storage_options)
        return handle.variant_store(variant) if variant else handle

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
        check_format(url, group.attrs.asdict(), verb="writes" if mode == "r+" else "reads")
        return group

    def _load(self, group: zarr.Group) -> None:
        """(Re)read attributes and array handles from ``group``; clears cached manifests."""
        self._group = group
        self._attrs: dict[str, Any] = group.attrs.asdict()
        prefix = f"{variant_path(self.variant)}/" if self.variant else ""
        if self.variant and self.variant not in self.variant_names():
            raise UnknownVariantError(
                f"the feature store {self.base_url!r} has no variant {self.variant!r} "
                f"(it has: {', '.join(self.variant_names()) or 'none'})"
            )
        try:
            self._windows = group[f"{prefix}windows"]
            self._clip_info = group[f"{prefix}clip_info"]
            self._windows_writer = LocalChunkWriter.for_array(self._windows)
            self._clip_info_writer = LocalChunkWriter.for_array(self._clip_info)
        except KeyError as exc:
            raise StoreError(f"the feature store {self.url!r} lacks the array {exc}") from exc
        self._manifest_cache: dict[str, np.ndarray] = {}
        self._index: dict[str, int] | None = None

    def _reopen(self) -> None:
        """Re-read the layout, in case it was extended since this handle was opened."""
        self._load(self._open_group(self.base_url, self._store, self._mode))

    # ---------------------------------------------------------------- variants

    def variant_names(self) -> list[str]:
        """Names of the variant groups in the layout, sorted (``[]`` for older stores)."""
        return sorted(str(v) for v in self._attrs.get(VARIANTS_ATTR, []))

    def _variant_group(self, name: str) -> zarr.Group:
        if name not in self.variant_names():
            self._reopen()  # the setup step may have added it since this handle was opened
        if name not in self.variant_names():
            raise UnknownVariantError(
                f"the feature store {self.base_url!r} has no variant {name!r} "
                f"(it has: {', '.join(self.variant_names()) or 'none'})"
            )
        try:
            return self._group[variant_path(name)]
        except KeyError as exc:
            raise StoreError(
                f"the feature store {self.base_url!r} lists the variant {name!r} but lacks "
                f"its group {variant_path(name)!r}"
            ) from exc

    def variant_spec(self, name: str) -> dict[str, Any]:
        """The spec of variant ``name`` as stored (its group's ``variant`` attribute).

        Raises:
            UnknownVariantError: the layout has no variant of that name.
        """
        return dict(self._variant_group(name).attrs.asdict().get(VARIANT_SPEC_ATTR, {}))

    def variant_store(self, name: str) -> FeatureStore:
        """A handle on variant ``name``: its ``windows`` and ``clip_info``, this manifest.

        Reads and writes (``read_chunk_info``, ``write_chunk``, ``done_mask``, ...) go to
        the variant's arrays; the manifest (``rel_paths``, ``folds``, ...) is the store's.
        Its ``url`` is the variant's wire address (``contract.wire.variant_url``).

        Raises:
            UnknownVariantError: the layout has no variant of that name.
        """
        self._variant_group(name)
        handle = FeatureStore.__new__(FeatureStore)
        handle.url = variant_url(self.base_url, name)
        handle.base_url = self.base_url
        handle.variant = name
        handle._store = self._store
        handle._mode = self._mode
        handle._storage_options = self._storage_options
        handle._load(self._group)
        return handle

    def read_variant(self, name: str, clips: np.ndarray, *, only_real: bool = False) -> FoldData:
        """The windows of ``clips`` (store indices) that are done in variant ``name``.

        Like :meth:`read_folds`, for given clips: windows in the order of ``clips``
        (each clip's slots in order), ``clips`` as given, ``clip_done`` the clip is
        done *in the variant*, ``clip_index`` the store index of each window's clip;
        labels, folds and fsids are the store's (a variant is its clip, transformed).

        Args:
            name: A name of :meth:`variant_names`.
            clips: ``(k,)`` int64 store indices, each in ``[0, n_clips)``.
            only_real: Keep only windows made of the clip's own audio (``n_real``).

        Raises:
            UnknownVariantError: the layout has no variant of that name.
            ClipIndexError: an index is out of range.
        """
        group = self._variant_group(name)
        clips = np.asarray(clips, dtype=np.int64).reshape(-1)
        if len(clips) and (clips.min() < 0 or clips.max() >= self.n_clips):
            raise ClipIndexError(
                f"clip indices must be in [0, {self.n_clips}) for the store {self.base_url!r}"
            )
        windows_arr, info_arr = group["windows"], group["clip_info"]
        # Rows beyond the variant's arrays (a crash before the setup step resized them)
        # are not done.
        stored = min(int(info_arr.shape[0]), int(windows_arr.shape[0]))
        unique = np.unique(clips)
        readable = unique[unique < stored]
        info_u = np.full((len(unique), 3), -1, dtype=np.int64)
        info_u[: len(readable)] = _read_rows(info_arr, readable)
        pos = np.searchsorted(unique, clips)
        info = info_u[pos]
        done = info[:, 0] >= 0
        done_u = unique[info_u[:, 0] >= 0]
        block_u = _read_rows(windows_arr, done_u)
        done_idx = clips[done]
        block = block_u[np.searchsorted(done_u, done_idx)]
        n_windows, n_real = info[done, 0], info[done, 1]
        slots = np.arange(self.window_shape[0])[None, :]
        keep = slots < (n_real if only_real else n_windows)[:, None]
        labels_all = self.labels().astype(np.int64)
        rows = np.broadcast_to(done_idx[:, None], keep.shape)[keep]
        return FoldData(
            windows=block[keep],
            labels=labels_all[rows],
            clip_index=rows.astype(np.int64),
            real=np.broadcast_to(slots < n_real[:, None], keep.shape)[keep],
            clips=clips,
            clip_labels=labels_all[clips],
            clip_folds=self.folds()[clips].astype(np.int64),
            clip_fsids=self.fsids()[clips].astype(np.int64),
            clip_done=done,
        )

    # -------------------------------------------------------------- properties

    @property
    def n_clips(self) -> int:
        """Number of clips in the layout (as of opening / the last reopen)."""
        return int(self._attrs["n_clips"])

    @property
    def format_version(self) -> int:
        """The store's format version (1: one chunk per clip; 2: ``clips_per_chunk``)."""
        return int(self._attrs["format_version"])

    @property
    def clips_per_chunk(self) -> int:
        """Consecutive clips (store rows) per chunk of ``windows`` and ``clip_info``."""
        return int(self._attrs.get("clips_per_chunk", 1))

    def chunk_of(self, index: int) -> int:
        """The chunk number (along the clip axis) that holds store row ``index``."""
        return int(index) // self.clips_per_chunk

    def chunk_rows(self, chunk: int) -> range:
        """The store rows of chunk ``chunk`` that are in the layout (``< n_clips``)."""
        start = int(chunk) * self.clips_per_chunk
        return range(start, min(start + self.clips_per_chunk, self.n_clips))

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

    def padded_clip(
        self,
        windows: np.ndarray,
        *,
        n_real: int,
        n_samples: int,
        check_finite: bool = True,
        out: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One clip's row of ``windows`` (NaN-padded) and of ``clip_info``, checked.

        Args:
            windows: ``(n, n_mels, frames, 2)`` with ``0 <= n <= max_windows``, finite.
            n_real: Leading windows made only of the clip's own audio, ``0 <= n_real <= n``.
            n_samples: Length of the decoded signal in samples.
            check_finite: Check that ``windows`` is finite (False: the caller did).
            out: Where to write the padded row (``window_shape`` float32), e.g. a row of
                a chunk being assembled; a new array if ``None``.

        Returns:
            ``(max_windows, n_mels, frames, 2)`` float32 and ``(3,)`` int32
            ``[n_windows, n_real, n_samples]``.

        Raises:
            ValueError: Bad shape, counts, or non-finite features.
        """
        max_windows, *shape = self.window_shape
        data = np.asarray(windows)
        if data.ndim != 4 or list(data.shape[1:]) != shape or data.shape[0] > max_windows:
            raise ValueError(
                f"windows must have shape (n <= {max_windows}, {', '.join(map(str, shape))}), "
                f"got {data.shape}"
            )
        data = data.astype(np.float32, copy=False)
        if check_finite and not np.isfinite(data).all():
            raise ValueError("features are not finite")
        n = int(data.shape[0])
        if not 0 <= int(n_real) <= n:
            raise ValueError(f"n_real must be in [0, {n}], got {n_real}")
        if not 0 <= int(n_samples) <= np.iinfo(np.int32).max:
            raise ValueError(f"n_samples must be a non-negative int32, got {n_samples}")
        padded = np.empty(self.window_shape, dtype=np.float32) if out is None else out
        padded[:n] = data
        padded[n:] = np.nan
        return padded, np.array([n, int(n_real), int(n_samples)], dtype=np.int32)

    def _writable(self) -> None:
        if self._mode != "r+":
            raise StoreError(f"the store {self.url!r} was opened read-only (mode 'r')")

    def read_chunk_info(self, chunk: int) -> np.ndarray:
        """``(clips_per_chunk, 3)`` int32: the ``clip_info`` rows of chunk ``chunk``.

        Rows of clips not done, and rows beyond the layout, are ``-1``.
        """
        rows = self.chunk_rows(chunk)
        out = np.full((self.clips_per_chunk, 3), -1, dtype=np.int32)
        if self._clip_info_writer is not None:
            data = self._clip_info_writer.read_chunk(chunk)
            if data is not None:
                out[:] = data
        elif len(rows):
            out[: len(rows)] = self._clip_info[rows.start : rows.stop]
        out[len(rows) :] = -1
        return out

    def read_chunk_windows(self, chunk: int) -> np.ndarray:
        """``(clips_per_chunk, *window_shape)`` float32: the ``windows`` rows of a chunk."""
        rows = self.chunk_rows(chunk)
        out = np.full((self.clips_per_chunk, *self.window_shape), np.nan, dtype=np.float32)
        if self._windows_writer is not None:
            data = self._windows_writer.read_chunk(chunk)
            if data is not None:
                out[:] = data
        elif len(rows):
            out[: len(rows)] = self._windows[rows.start : rows.stop]
        return out

    def write_chunk(
        self, chunk: int, windows: np.ndarray, info: np.ndarray, *, check_finite: bool = True
    ) -> None:
        """Write a whole chunk: its ``windows`` rows, then its ``clip_info`` rows.

        Every write of a chunk must hold every clip of the chunk that is done (see
        ``docs/store-layout.md``, concurrency rules): ``workers.extraction`` builds such
        writes; this method only writes them. Rows beyond the layout are stored as fill.

        Args:
            chunk: Chunk number along the clip axis.
            windows: ``(clips_per_chunk, *window_shape)`` float32, NaN where not done.
            info: ``(clips_per_chunk, 3)`` int32, ``-1`` rows where not done.
            check_finite: Check that done rows' windows are finite (False: the caller did).

        Raises:
            ValueError: wrong shapes, or a done row whose windows are not finite.
        """
        self._writable()
        per = self.clips_per_chunk
        rows = self._chunk_rows_checked(chunk)
        windows = np.asarray(windows, dtype=np.float32)
        info = np.asarray(info, dtype=np.int32)
        if windows.shape != (per, *self.window_shape) or info.shape != (per, 3):
            raise ValueError(
                f"a chunk is windows {(per, *self.window_shape)} and info {(per, 3)}, "
                f"got {windows.shape} and {info.shape}"
            )
        k = len(rows)
        if k < per and ((info[k:] != -1).any() or not np.isnan(windows[k:]).all()):
            raise ValueError(f"rows beyond the layout ({rows.stop}) must hold fill values")
        for r in np.flatnonzero(info[:, 0] >= 0).tolist() if check_finite else ():
            if not np.isfinite(windows[r, : info[r, 0]]).all():
                raise ValueError(f"features of clip {rows.start + r} are not finite")
        # One complete-chunk write each (no read-modify-write); the markers go last.
        if self._windows_writer is not None and self._clip_info_writer is not None:
            self._windows_writer.write_chunk(chunk, windows)
            self._clip_info_writer.write_chunk(chunk, info)
        else:
            self._windows[rows.start : rows.stop] = windows[:k]
            self._clip_info[rows.start : rows.stop] = info[:k]

    def _chunk_rows_checked(self, chunk: int) -> range:
        rows = self.chunk_rows(chunk)
        if not len(rows) and int(chunk) >= 0:
            self._reopen()
            rows = self.chunk_rows(chunk)
        if int(chunk) < 0 or not len(rows):
            raise ClipIndexError(
                f"chunk {chunk} is out of range: the store {self.url!r} holds "
                f"{self.n_clips} clips, {self.clips_per_chunk} per chunk"
            )
        return rows

    def write_clip(
        self,
        index: int,
        windows: np.ndarray,
        *,
        n_real: int,
        n_samples: int,
        expect_rel_path: str | None = None,
    ) -> None:
        """Store one clip: read its chunk, set the clip's rows, write the chunk back.

        A read-modify-write of the clip's chunk: only for a single writer per chunk
        (tests, tools writing a store alone). Extraction workers write through
        ``workers.extraction``, whose chunk writes are safe with concurrent writers.

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
        self._writable()
        index = self._check_index(index)
        if expect_rel_path is not None:
            stored = str(self.rel_paths()[index])
            if stored != expect_rel_path:
                raise ClipIndexError(
                    f"clip index {index} of {self.url!r} is {stored!r}, not "
                    f"{expect_rel_path!r}: the task does not match this store's layout"
                )
        try:
            padded, marker = self.padded_clip(windows, n_real=n_real, n_samples=n_samples)
        except ValueError as exc:
            raise ValueError(f"{exc} (clip index {index})") from None
        chunk = self.chunk_of(index)
        block = self.read_chunk_windows(chunk)
        info = self.read_chunk_info(chunk)
        row = index - chunk * self.clips_per_chunk
        block[row] = padded
        info[row] = marker
        self.write_chunk(chunk, block, info)

    def clip_info(self, index: int) -> tuple[int, int, int] | None:
        """``(n_windows, n_real, n_samples)`` of a done clip; ``None`` if not done."""
        index = self._check_index(index)
        n, n_real, n_samples = (int(v) for v in self._clip_info[index])
        return None if n < 0 else (n, n_real, n_samples)

    def done_mask(self) -> np.ndarray:
        """``(n_clips,)`` bool: the clip's completion marker is written.

        Lists the ``clip_info`` chunk keys (one directory listing, or a few LIST requests
        on an object store) instead of touching every chunk: a marker chunk exists
        exactly when it was written. With one clip per chunk (format 1) the listing is
        the answer; with several, the listed chunks are read (one small file each).
        """
        store = self._clip_info.store_path.store
        prefix = self._clip_info.store_path.path

        async def keys() -> list[str]:
            return [k async for k in store.list_dir(prefix)]

        per = self.clips_per_chunk
        n_chunks = -(-self.n_clips // per)
        present = np.zeros(n_chunks, dtype=bool)
        for key in sync(keys()):
            match = _CLIP_INFO_KEY.match(key.rsplit("/", 1)[-1])
            if match is not None:
                c = int(match.group(1))
                if c < n_chunks:
                    present[c] = True
        if per == 1:
            return present.copy()
        mask = np.zeros(n_chunks * per, dtype=bool)
        chunks = np.flatnonzero(present)
        if self._clip_info_writer is not None:
            for c in chunks.tolist():
                mask[c * per : (c + 1) * per] = self.read_chunk_info(c)[:, 0] >= 0
        elif len(chunks):
            mask[: self.n_clips] = np.asarray(self._clip_info[: self.n_clips, 0]) >= 0
        return mask[: self.n_clips]

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
    "READABLE_VERSIONS",
    "VARIANTS_ATTR",
    "VARIANTS_GROUP",
    "VARIANT_SPEC_ATTR",
    "ClipIndexError",
    "FeatureStore",
    "FoldData",
    "StoreConfigError",
    "StoreError",
    "UnknownVariantError",
    "check_format",
    "make_store",
    "variant_path",
]
