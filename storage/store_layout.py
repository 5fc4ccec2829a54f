"""Creating and extending a feature store's layout: the orchestrator's job, never a worker's.

:func:`create_or_extend` runs once per submission, before its extraction tasks are
enqueued: it creates the arrays and attributes of ``docs/store-layout.md`` for a
manifest, or appends the clips a grown dataset adds. Workers only open the store
(``storage.feature_store.FeatureStore``) and write their clips' chunks.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import zarr
import zarr.dtype
from zarr.storage import FsspecStore, LocalStore

from contract.wire import MAX_BATCH, VARIANT_NAME
from storage.feature_store import (
    FORMAT,
    FORMAT_VERSION,
    VARIANT_SPEC_ATTR,
    VARIANTS_ATTR,
    VARIANTS_GROUP,
    FeatureStore,
    StoreConfigError,
    check_format,
    make_store,
    variant_path,
)
from storage.manifest import ClipRecord, Manifest

_KEY_ENCODING: dict[str, Any] = {"name": "default", "separator": "."}
DEFAULT_CLIPS_PER_CHUNK = 32
# name -> (zarr dtype, fill value); every manifest array has shape (n_clips,).
_MANIFEST_ARRAYS: dict[str, tuple[Any, Any]] = {
    "clip_id": (zarr.dtype.VariableLengthUTF8(), ""),
    "rel_path": (zarr.dtype.VariableLengthUTF8(), ""),
    "fold": ("int16", -1),
    "label": ("int16", -1),
    "fsid": ("int64", -1),
    "salience": ("int8", -1),
}


@dataclass(frozen=True)
class LayoutChange:
    """What :func:`create_or_extend` did.

    Attributes:
        created: A new store was made.
        added: Store indices of the clips added now (all clips when created). An
            extension starts them at a chunk boundary, so the rows between the old
            clip count and the first new clip are empty (``clip_id`` ``""``).
        gone: Clip ids in the store that the new manifest lacks (kept, only reported).
        generation: The store's layout generation afterwards (1 when created).
        variants_added: Names of the variant groups created now.
    """

    created: bool
    added: list[int]
    gone: list[str]
    generation: int
    variants_added: list[str] = dataclass_field(default_factory=list)


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


def _dataset_attrs(manifest: Manifest) -> dict[str, Any]:
    """Optional group attributes describing the dataset (absent in older stores)."""
    return {
        "dataset": manifest.dataset,
        "class_ids": manifest.original_class_ids,
        "fold_source": manifest.fold_source,
    }


def create_or_extend(
    url: str,
    manifest: Manifest,
    feature_config: dict[str, Any],
    window_shape: tuple[int, int, int, int],
    *,
    storage_options: dict[str, Any] | None = None,
    clips_per_chunk: int = DEFAULT_CLIPS_PER_CHUNK,
    variants: Mapping[str, Mapping[str, Any]] | None = None,
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
        clips_per_chunk: Consecutive clips per chunk of ``windows`` and ``clip_info`` of a
            new store (an existing store keeps its own); extraction messages carry one
            chunk's clips.

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
    if not 1 <= int(clips_per_chunk) <= MAX_BATCH:
        raise ValueError(f"clips_per_chunk must be in 1..{MAX_BATCH}, got {clips_per_chunk}")
    config = _json_normalise(dict(feature_config))
    counts = Counter(c.clip_id for c in manifest.clips)
    dupes = sorted(i for i, k in counts.items() if k > 1)
    if dupes:
        raise StoreConfigError(f"the manifest lists clip ids more than once: {dupes[:5]}")

    store = make_store(url, read_only=False, storage_options=storage_options)
    try:
        group = zarr.open_group(store=store, mode="r", zarr_format=3)
        attrs = group.attrs.asdict()
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        group, attrs = None, {}
    if group is None or check_format(url, attrs, verb="writes", incomplete_ok=True):
        change = _create(store, manifest, config, shape4, int(clips_per_chunk))
    else:
        change = _extend(url, store, attrs, manifest, config, shape4)
    added = _sync_variants(url, store, dict(variants or {}))
    if added:
        change = replace(change, variants_added=added)
    return FeatureStore.open(url, mode="r+", storage_options=storage_options), change


def ensure_variants(
    url: str,
    variants: Mapping[str, Mapping[str, Any]],
    *,
    storage_options: dict[str, Any] | None = None,
) -> tuple[FeatureStore, list[str]]:
    """Give an existing store the variant groups ``variants`` (see :func:`create_or_extend`).

    Returns the store (``r+``) and the names of the groups created now.
    """
    store = make_store(url, read_only=False, storage_options=storage_options)
    FeatureStore.open(url, mode="r+", storage_options=storage_options)  # format checks
    added = _sync_variants(url, store, dict(variants))
    return FeatureStore.open(url, mode="r+", storage_options=storage_options), added


def _create_rows_array(
    group: zarr.Group, name: str, like: zarr.Array, attributes: dict[str, Any] | None = None
) -> None:
    """Create ``name`` in ``group`` with the shape, chunks, dtype, fill and codecs of ``like``."""
    group.create_array(
        name,
        shape=like.shape,
        chunks=like.chunks,
        dtype=like.dtype,
        fill_value=like.fill_value,
        compressors=None,
        chunk_key_encoding=_KEY_ENCODING,
        dimension_names=like.metadata.dimension_names,
        attributes=attributes,
        overwrite=True,
    )


def _sync_variants(
    url: str, store: LocalStore | FsspecStore, wanted: dict[str, Mapping[str, Any]]
) -> list[str]:
    """Size every variant group like the top level and create the ``wanted`` ones missing.

    Existing variant arrays are only resized (never rewritten); new groups are complete
    before their name enters the ``variants`` attribute (written last), so a crash
    leaves a group that the next run recreates (it holds no data yet: its tasks are
    enqueued only after this returns).
    """
    group = zarr.open_group(store=store, mode="r+", zarr_format=3)
    attrs = group.attrs.asdict()
    listed = [str(v) for v in attrs.get(VARIANTS_ATTR, [])]
    if not listed and not wanted:
        return []
    for name in wanted:
        if not VARIANT_NAME.match(name):
            raise StoreConfigError(
                f"invalid variant name {name!r} (lower-case letters, digits, _.+-)"
            )
    windows, clip_info = group["windows"], group["clip_info"]
    rows = int(windows.shape[0])
    for name in listed:
        sub = group[variant_path(name)]
        stored = _json_normalise(sub.attrs.asdict().get(VARIANT_SPEC_ATTR))
        if name in wanted and stored != _json_normalise(dict(wanted[name])):
            raise StoreConfigError(
                f"the variant {name!r} of the store {url!r} was extracted with the spec "
                f"{stored}, requested {_json_normalise(dict(wanted[name]))}: use another "
                "variant name or another store"
            )
        for arr_name in ("windows", "clip_info"):
            arr = sub[arr_name]
            if int(arr.shape[0]) < rows:
                arr.resize((rows, *arr.shape[1:]))
    new = sorted(set(wanted) - set(listed))
    if not new:
        return []
    parent = zarr.open_group(store=store, path=VARIANTS_GROUP, mode="a", zarr_format=3)
    for name in new:
        sub = parent.create_group(
            name,
            attributes={VARIANT_SPEC_ATTR: _json_normalise(dict(wanted[name]))},
            overwrite=True,
        )
        _create_rows_array(sub, "windows", windows)
        _create_rows_array(
            sub, "clip_info", clip_info, {"fields": ["n_windows", "n_real", "n_samples"]}
        )
    group.attrs.update({VARIANTS_ATTR: sorted({*listed, *new})})
    return new


def _create(
    store: LocalStore | FsspecStore,
    manifest: Manifest,
    config: dict[str, Any],
    window_shape: tuple[int, int, int, int],
    clips_per_chunk: int,
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
        chunks=(clips_per_chunk, *window_shape),
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
        chunks=(clips_per_chunk, 3),
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
            "clips_per_chunk": clips_per_chunk,
            "generation": 1,
            "n_clips": n,
            "dataset_root": manifest.dataset_root,
            "created": now,
            "extended": now,
            **_dataset_attrs(manifest),
        }
    )
    return LayoutChange(created=True, added=list(range(n)), gone=[], generation=1)


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

    old_ids = [int(i) for i in attrs.get("class_ids") or range(len(old_names))]
    new_ids = manifest.original_class_ids
    if any(a != b for a, b in zip(old_ids, new_ids, strict=False)):
        raise StoreConfigError(
            f"the dataset's own class ids of the store {url!r} ({old_ids}) differ from "
            f"the manifest's ({new_ids}). {remedy}"
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
    gone = [str(c) for c in old["clip_id"].tolist() if c and c not in manifest_ids]
    generation = int(attrs["generation"])
    if not new_clips:
        return LayoutChange(created=False, added=[], gone=gone, generation=generation)

    # New clips start at a chunk boundary: a chunk's clips never change once it has
    # any, so a worker that still has the old layout writes the same bytes as one with
    # the new (docs/store-layout.md). The rows in between stay empty (fill values).
    per = int(attrs.get("clips_per_chunk", 1))
    start = -(-n_old // per) * per
    n_new = start + len(new_clips)
    # Arrays first, attributes (n_clips, generation) last: until then readers keep using
    # n_old, and a rerun after a crash redoes the same resize and writes.
    group["windows"].resize((n_new, *window_shape))
    group["clip_info"].resize((n_new, 3))
    added = _manifest_columns(new_clips)
    for name in _MANIFEST_ARRAYS:
        arr = group[name]
        arr.resize((n_new,))
        arr[start:n_new] = added[name]
    class_names = old_names + new_names[len(old_names) :]
    extra = _dataset_attrs(manifest)
    extra["class_ids"] = old_ids + new_ids[len(old_ids) :]
    group.attrs.update(
        {
            **extra,
            "class_names": class_names,
            "generation": generation + 1,
            "n_clips": n_new,
            "dataset_root": manifest.dataset_root,
            "extended": _now(),
        }
    )
    return LayoutChange(
        created=False, added=list(range(start, n_new)), gone=gone, generation=generation + 1
    )


__all__ = ["DEFAULT_CLIPS_PER_CHUNK", "LayoutChange", "create_or_extend", "ensure_variants"]
