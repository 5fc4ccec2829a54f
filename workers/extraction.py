"""Extraction of clips into the store: load, compute, check, write whole chunks.

Pure orchestration of the feature code and the store; the Celery tasks in
``workers.tasks`` wrap it and record the outcomes.

The store keeps ``clips_per_chunk`` consecutive clips in one chunk. Every write of a
chunk made here holds *every* clip of the chunk that can be extracted: clips the chunk
already marks done are copied from it, every other clip of the chunk is computed (the
job's clips and their chunk-mates alike), and a chunk is not written at all when
something transient (the store) failed. Features are a deterministic function of the
audio file, so every write of a chunk carries the same bytes, whoever writes it and
whatever it read before: a redelivered batch, a clip sent again on its own and two
workers racing on one chunk can only rewrite identical bytes (``docs/store-layout.md``).

A variant handle (``FeatureStore.variant_store``) is extracted the same way, into the
variant's own chunks: its windows are a deterministic function of the audio file, the
variant's spec and, for a background mix, the chosen same-fold clip's file
(``workers.variant_featurize``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np

from contract.errors import ClipError
from contract.paths import is_inside, no_links_below
from contract.wire import ClipOutcome, ClipStatus, ExtractJob
from storage.feature_store import FeatureStore
from workers.audio import AudioDecodeError
from workers.features import FeatureConfig
from workers.featurize import featurize_file


def resolve_clip_path(dataset_root: str, rel_path: str, *, root_is_real: bool = False) -> Path:
    """The absolute path of ``rel_path`` under ``dataset_root``, refusing any escape.

    ``root_is_real``: ``dataset_root`` is already ``os.path.realpath``'d.

    Raises:
        ClipError: ``rel_path`` is absolute, has ``..`` parts, or resolves
            (through symbolic links) outside the dataset root.
    """
    rel = PurePosixPath(rel_path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ClipError(rel_path, "path is not inside the dataset root")
    root = dataset_root if root_is_real else os.path.realpath(dataset_root)
    joined = os.path.join(root, *rel.parts)
    if no_links_below(root, rel.parts):
        return Path(joined)  # what realpath gives, for a real root: a few lstat calls fewer
    real = os.path.realpath(joined)
    if not is_inside(real, root):
        raise ClipError(rel_path, "path resolves outside the dataset root (symlink?); refused")
    return Path(real)


@dataclass
class ChunkResult:
    """What :func:`extract_jobs` did.

    Attributes:
        outcomes: To record: a done or failed outcome for each job's clip, and a done
            outcome for each chunk-mate computed on the way.
        failed: Bad input of the jobs' clips (their failures are in ``outcomes``).
        refused: Jobs that name no clip of the store (nothing to record them against).
    """

    outcomes: list[ClipOutcome] = field(default_factory=list)
    failed: list[ClipError] = field(default_factory=list)
    refused: list[ClipError] = field(default_factory=list)


@lru_cache(maxsize=64)
def _real_root(dataset_root: str) -> str:
    # a worker's datasets do not move while it runs; one realpath per root and process
    return os.path.realpath(dataset_root)


@lru_cache(maxsize=16)
def _config(config_json: str) -> FeatureConfig:
    return FeatureConfig.from_dict(json.loads(config_json))


def check_job(job: ExtractJob, store: FeatureStore) -> Path:
    """Check the job against the store before any file is opened; return the clip's path.

    Its index must be in the store and hold ``job.rel_path`` (else ``job_mismatch``: a
    stale or forged message that names no clip of the store), its dataset root must
    be the store's, and the path must stay inside that root.

    Raises:
        ClipError: the job does not match the store, or its path is refused.
    """
    if not 0 <= job.clip_index < store.n_clips:
        reason = (
            f"clip index {job.clip_index} is out of range: the store holds "
            f"{store.n_clips} clips; refused"
        )
        raise ClipError(job.rel_path, reason, job_mismatch=True)
    stored = str(store.rel_paths()[job.clip_index])
    if stored != job.rel_path:
        reason = f"clip index {job.clip_index} of the store is {stored!r}, not this path; refused"
        raise ClipError(job.rel_path, reason, job_mismatch=True)
    root = _real_root(store.dataset_root)
    if job.dataset_root != store.dataset_root and _real_root(job.dataset_root) != root:
        raise ClipError(job.rel_path, "job's dataset root differs from the store's; refused")
    return resolve_clip_path(root, job.rel_path, root_is_real=True)


def _clip_id(rel_path: str) -> str:
    return PurePosixPath(rel_path).stem


def _featurize(
    store: FeatureStore,
    rel_path: str,
    path: Path | None,
    config: FeatureConfig,
    out: np.ndarray,
    index: int = -1,
) -> np.ndarray:
    """Compute one clip of the store into ``out`` (its padded row); return its clip_info row.

    ``path``: the clip's resolved path, if the caller resolved it already. For a
    variant handle (``store.variant``) the clip's variant is computed
    (``workers.variant_featurize``; ``index`` is the clip's store index).

    Raises:
        ClipError: bad input (undecodable audio, non-finite features, refused path).
    """
    root = _real_root(store.dataset_root)
    if path is None:
        path = resolve_clip_path(root, rel_path, root_is_real=True)
    if store.variant:
        from workers.variant_featurize import featurize_variant

        features = featurize_variant(
            store,
            index,
            path,
            config,
            resolve=lambda rel: resolve_clip_path(root, rel, root_is_real=True),
        )
    else:
        try:
            features = featurize_file(path, config)
        except AudioDecodeError as exc:
            raise ClipError(rel_path, exc.reason) from None
    if not np.isfinite(features.windows).all():
        raise ClipError(rel_path, "features are not finite (NaN or infinite values)")
    return store.padded_clip(
        features.windows,
        n_real=features.n_real,
        n_samples=features.n_samples,
        check_finite=False,
        out=out,
    )[1]


def extract_jobs(jobs: Sequence[ExtractJob], store: FeatureStore) -> ChunkResult:
    """Extract the jobs' clips, chunk by chunk, into ``store`` (see the module docstring).

    Raises:
        OSError, StoreError: the store could not be read or written (transient: the
            caller retries the whole message; no chunk was written half).
    """
    result = ChunkResult()
    by_chunk: dict[int, list[ExtractJob]] = {}
    paths: dict[int, Path] = {}
    for job in jobs:
        try:
            paths[job.clip_index] = check_job(job, store)
        except ClipError as exc:
            if exc.job_mismatch:
                result.refused.append(exc)
            else:
                result.failed.append(exc)
                result.outcomes.append(_failure(job, exc.reason))
            continue
        by_chunk.setdefault(store.chunk_of(job.clip_index), []).append(job)
    if not by_chunk:
        return result
    config = _config(json.dumps(store.feature_config, sort_keys=True))
    rel_paths = store.rel_paths()
    for chunk, chunk_jobs in sorted(by_chunk.items()):
        wanted = {j.clip_index: j for j in chunk_jobs}
        rows = store.chunk_rows(chunk)
        first = rows.start
        info = store.read_chunk_info(chunk)
        done_before = info[:, 0] >= 0
        if all(done_before[i - first] or not rel_paths[i] for i in rows):
            # nothing to compute (a clip sent again after its chunk was written):
            # the outcomes come from clip_info, the windows are not read
            for index in sorted(wanted):
                if done_before[index - first]:
                    job = wanted[index]
                    result.outcomes.append(_done(job.rel_path, index, info[index - first], 0.0))
            continue
        block = (
            store.read_chunk_windows(chunk)
            if done_before.any()
            else np.full((store.clips_per_chunk, *store.window_shape), np.nan, dtype=np.float32)
        )
        computed = False
        for index in rows:
            r = index - first
            job = wanted.get(index)
            if done_before[r]:
                if job is not None:
                    result.outcomes.append(_done(job.rel_path, index, info[r], 0.0))
                continue
            rel_path = str(rel_paths[index])
            if not rel_path:
                continue  # an empty row between two layout extensions
            started = time.perf_counter()
            try:
                marker = _featurize(store, rel_path, paths.get(index), config, block[r], index)
            except ClipError as exc:
                # Bad input fails the same way for every writer: the row stays "not done".
                block[r] = np.nan
                if job is not None:
                    result.failed.append(exc)
                    result.outcomes.append(_failure(job, exc.reason))
                continue
            info[r] = marker
            computed = True
            seconds = time.perf_counter() - started
            result.outcomes.append(_done(rel_path, index, marker, seconds))
        if computed:
            store.write_chunk(chunk, block, info, check_finite=False)
    return result


def _done(rel_path: str, index: int, marker: np.ndarray, seconds: float) -> ClipOutcome:
    return ClipOutcome(
        clip_index=int(index),
        status=ClipStatus.DONE,
        clip_id=_clip_id(rel_path),
        path=rel_path,
        n_windows=int(marker[0]),
        n_real=int(marker[1]),
        seconds=round(seconds, 4),
    )


def _failure(job: ExtractJob, reason: str) -> ClipOutcome:
    return ClipOutcome(
        clip_index=job.clip_index,
        status=ClipStatus.FAILED,
        clip_id=_clip_id(job.rel_path),
        path=job.rel_path,
        reason=reason,
    )


failure_outcome = _failure


def extract_to_store(job: ExtractJob, store: FeatureStore) -> ClipOutcome:
    """Extract one job's clip (with its chunk-mates, see :func:`extract_jobs`).

    Raises:
        ClipError: bad input, or a job that does not match the store.
        OSError, StoreError: the store could not be written (transient).
    """
    result = extract_jobs([job], store)
    if result.refused:
        raise result.refused[0]
    if result.failed:
        raise result.failed[0]
    return next(o for o in result.outcomes if o.clip_index == job.clip_index)
