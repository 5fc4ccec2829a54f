"""Extraction of one clip into the store: load, compute, check, write.

Pure orchestration of the feature code and the store; the Celery task in
``workers.tasks`` wraps it and records the outcome.
"""

from __future__ import annotations

import os
import time
from pathlib import Path, PurePosixPath

import numpy as np

from contract.errors import ClipError
from contract.wire import ClipOutcome, ClipStatus, ExtractJob
from storage.feature_store import ClipIndexError, FeatureStore
from workers.audio import AudioDecodeError
from workers.features import FeatureConfig
from workers.featurize import featurize_file


def resolve_clip_path(dataset_root: str, rel_path: str) -> Path:
    """The absolute path of ``rel_path`` under ``dataset_root``, refusing any escape.

    Raises:
        ClipError: ``rel_path`` is absolute, has ``..`` parts, or resolves
            (through symbolic links) outside the dataset root.
    """
    rel = PurePosixPath(rel_path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ClipError(rel_path, "path is not inside the dataset root")
    root = os.path.realpath(dataset_root)
    real = os.path.realpath(os.path.join(root, *rel.parts))
    if os.path.commonpath([root, real]) != root:
        raise ClipError(rel_path, "path resolves outside the dataset root (symlink?); refused")
    return Path(real)


def extract_to_store(job: ExtractJob, store: FeatureStore) -> ClipOutcome:
    """Extract the job's clip and write it into ``store``.

    The job is checked against the store before any file is opened: its index must
    be in the store and hold ``job.rel_path`` (else ``job_mismatch``: a stale or forged
    message that names no clip of the store), its dataset root must be the store's,
    and the path must stay inside that root.

    Raises:
        ClipError: bad input (undecodable audio, non-finite features, a path
            outside the dataset root, an index that does not match the store).
        OSError: the store could not be written (transient: retried by the task).
    """
    started = time.perf_counter()
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
    if os.path.realpath(job.dataset_root) != os.path.realpath(store.dataset_root):
        raise ClipError(job.rel_path, "job's dataset root differs from the store's; refused")
    path = resolve_clip_path(store.dataset_root, job.rel_path)
    config = FeatureConfig.from_dict(store.feature_config)
    try:
        features = featurize_file(path, config)
    except AudioDecodeError as exc:
        raise ClipError(job.rel_path, exc.reason) from None
    if not np.isfinite(features.windows).all():
        raise ClipError(job.rel_path, "features are not finite (NaN or infinite values)")
    try:
        store.write_clip(
            job.clip_index,
            features.windows,
            n_real=features.n_real,
            n_samples=features.n_samples,
        )
    except ClipIndexError as exc:
        raise ClipError(job.rel_path, str(exc)) from None
    return ClipOutcome(
        clip_index=job.clip_index,
        status=ClipStatus.DONE,
        clip_id=PurePosixPath(job.rel_path).stem,
        path=job.rel_path,
        n_windows=int(features.windows.shape[0]),
        n_real=features.n_real,
        seconds=round(time.perf_counter() - started, 4),
    )
