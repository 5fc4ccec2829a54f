"""Helpers shared by the reliability tests (test_faults, test_bad_input, test_load, test_security).

Nothing here mocks the broker or the workers: these are small utilities to write
datasets quickly, wait for a submission (checked through the real CLI), and check a
store against a direct in-process extraction.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from storage.feature_store import FeatureStore
from workers.audio import load_audio
from workers.features import FeatureConfig, extract_clip_features

CSV_COLUMNS = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
# The visibility timeout of the extraction tests that kill workers (or Redis) and wait
# for the messages the dead held to come back: their tasks run for milliseconds, so 8 s
# is still far above any delivery's life, and each such wait costs 8 s instead of the
# cluster's default 20 (kept for tests whose trials run longer than a task does).
KILL_VISIBILITY_S = 8
SUCCEEDED_RE = re.compile(r"Task esc\.extract_clip\[([^\]]+)\] succeeded")


def write_rows(root: Path, rows: Iterable[list[Any]], *, header: list[str] | None = None) -> None:
    """Write ``root/metadata/UrbanSound8K.csv`` with ``rows`` (in CSV_COLUMNS order)."""
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    with open(root / "metadata" / "UrbanSound8K.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header or CSV_COLUMNS)
        writer.writerows(rows)


def tiny_dataset(
    base: Path,
    n: int,
    *,
    seconds: float = 0.1,
    sr: int = 8000,
    folds: int = 10,
    seed: int = 0,
    copies: int = 1,
) -> Path:
    """An UrbanSound8K-layout dataset of ``n`` tiny 16-bit WAVs (fast to write and extract).

    ``copies`` > 1 adds each file again ``copies - 1`` times as a hard link under a new
    fsID (``n * copies`` clips for the cost of writing ``n``).
    """
    root = base / "UrbanSound8K"
    rng = np.random.default_rng(seed)
    n_samples = max(1, int(seconds * sr))
    rows = []
    for fold in range(1, folds + 1):
        (root / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        fold, cls = i % folds + 1, i % 10
        name = f"{100000 + i}-{cls}-0-0.wav"
        signal = (0.3 * rng.standard_normal(n_samples)).clip(-1, 1).astype(np.float32)
        path = root / "audio" / f"fold{fold}" / name
        sf.write(path, signal, sr, subtype="PCM_16")
        rows.append([name, 100000 + i, 0.0, seconds, 1, fold, cls, f"class{cls}"])
        for k in range(1, copies):
            fsid = 100000 + i + k * 10**6
            os.link(path, path.with_name(f"{fsid}-{cls}-0-0.wav"))
            rows.append([f"{fsid}-{cls}-0-0.wav", fsid, 0.0, seconds, 1, fold, cls, f"class{cls}"])
    write_rows(root, rows)
    return root


def direct_extraction(root: Path, rel_path: str, config: FeatureConfig) -> np.ndarray:
    """Windows of one clip, computed in this process (the reference)."""
    signal, _ = load_audio(root / rel_path, sr=config.sample_rate, max_seconds=config.max_seconds)
    return extract_clip_features(signal, config).windows


def check_store_chunks(store: FeatureStore) -> None:
    """Every done clip's chunk is whole: finite windows, right shape, NaN only past its end.

    Reads each chunk once as the workers read one back (``read_chunk_windows``: straight
    from the file on a local store); a zarr call per clip costs more than the check
    when a store has thousands of chunks. A done clip whose chunk is missing reads as
    NaN and fails.
    """
    max_windows, *shape = store.window_shape
    done = store.done_mask()
    n_chunks = -(-store.n_clips // store.clips_per_chunk)
    for chunk in range(n_chunks):
        rows = store.chunk_rows(chunk)
        if not done[rows.start : rows.stop].any():
            continue
        infos = store.read_chunk_info(chunk)
        raws = store.read_chunk_windows(chunk)  # whole rows, unused slots included
        assert raws.shape == (store.clips_per_chunk, max_windows, *shape)
        for r, i in enumerate(rows):
            if not done[i]:
                continue
            n, n_real, _ = (int(v) for v in infos[r])
            assert 0 <= n_real <= n <= max_windows, f"clip {i}: counts {infos[r]}"
            assert np.isfinite(raws[r, :n]).all(), f"clip {i}: non-finite features in the store"
            assert np.isnan(raws[r, n:]).all(), f"clip {i}: data past its {n} windows"


def assert_store_matches(
    store_url: str, root: Path, *, indices: Iterable[int] | None = None
) -> FeatureStore:
    """All clips done; each (or each of ``indices``) equals a direct extraction.

    Empty rows (``rel_path`` ``""``, left by a layout extension) are not clips.
    """
    store = FeatureStore.open(store_url)
    rel_paths = store.rel_paths()
    clips = rel_paths != ""
    done = store.done_mask()
    missing = clips & ~done
    assert not missing.any(), f"{int(missing.sum())} clips not done: {np.flatnonzero(missing)[:10]}"
    assert not (done & ~clips).any(), "an empty row is marked done"
    config = FeatureConfig.from_dict(store.feature_config)
    for i in np.flatnonzero(clips).tolist() if indices is None else indices:
        np.testing.assert_array_equal(
            store.read_clip(i), direct_extraction(root, str(rel_paths[i]), config)
        )
    check_store_chunks(store)
    return store


def submit_no_wait(cluster: Any, root: Path, store_url: str, *extra: str) -> dict[str, Any]:
    code, data = cluster.cli_json(
        "submit-dataset", str(root), "--store", store_url, "--no-wait", *extra
    )
    assert code == 0, data
    return data


def wait_status(
    cluster: Any,
    submission: str,
    *,
    timeout: float,
    until: Callable[[dict[str, Any]], bool] | None = None,
    poll: float = 0.3,
) -> dict[str, Any]:
    """Wait until ``until(status)`` (default: finished) holds for ``status --json``.

    Polls the command's own query (``status_of``) in this process, since each
    ``status`` process costs a Python start-up (~0.8 s of CPU, taken from the workers
    being waited for); once ``until`` holds, runs the real ``status --json`` and
    returns its output if ``until`` holds for that too (else polls on), so every wait
    still checks the command. Redis errors (a restart in the fault tests) are retried.
    """
    import redis

    from contract.settings import Settings
    from orchestrator.submission_status import status_of
    from workers.redis_records import SubmissionRecords

    until = until or (lambda s: s["remaining"] == 0)
    settings = Settings.from_env(cluster.env)
    client = redis.Redis.from_url(cluster.url, socket_timeout=5, socket_connect_timeout=2)
    records = SubmissionRecords(client, ttl=settings.record_ttl)
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    try:
        while time.monotonic() < deadline:
            try:
                found = status_of(records, settings, submission)
            except (redis.RedisError, OSError):
                found = None
            if found is not None:
                last = found.to_json()
                if until(last):
                    proc = cluster.cli("status", submission, "--json", timeout=60)
                    if proc.returncode == 0:
                        last = json.loads(proc.stdout)
                        if until(last):
                            return last
            time.sleep(poll)
    finally:
        client.close()
    raise AssertionError(f"submission {submission} did not get there in {timeout} s: {last}")


def succeeded_ids(log_text: str) -> list[str]:
    """Task ids of every ``succeeded`` line in worker logs (duplicates kept)."""
    return SUCCEEDED_RE.findall(log_text)


def wait_for_log(cluster: Any, pattern: str, *, timeout: float) -> re.Match[str]:
    """Wait until the worker logs match ``pattern``; return the match."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = regex.search(cluster.worker_logs())
        if match:
            return match
        time.sleep(0.2)
    raise AssertionError(
        f"no {pattern!r} in worker logs after {timeout} s:\n{cluster.worker_logs()[-3000:]}"
    )


def progress(client: Any, store_url: str) -> tuple[int, int]:
    """``(done, failed)`` of a store, read from Redis in this process (fast, for tight polls)."""
    from workers.redis_records import SubmissionRecords

    p = SubmissionRecords(client, ttl=3600).progress(store_url)
    return p.done, p.failed


def wait_progress(
    client: Any,
    store_url: str,
    until: Callable[[int, int], bool],
    *,
    timeout: float,
    poll: float = 0.05,
) -> tuple[int, int]:
    """Poll ``(done, failed)`` until ``until(done, failed)``; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    state = (0, 0)
    while time.monotonic() < deadline:
        try:
            state = progress(client, store_url)
        except Exception:
            state = state
        else:
            if until(*state):
                return state
        time.sleep(poll)
    raise AssertionError(f"(done, failed) still {state} after {timeout} s")


def wait_ping(cluster: Any, node: str, *, timeout: float) -> float:
    """Wait until worker ``node`` answers ``celery inspect ping`` (the health check).

    Unlike ``cluster.wait_for_worker``, connection errors are retried: this is used
    right after Redis restarts. Returns the seconds it took.
    """
    from contract.settings import Settings
    from workers.celery_app import create_app

    started = time.monotonic()
    deadline = started + timeout
    error: Exception | None = None
    while time.monotonic() < deadline:
        app = create_app(Settings.from_env(cluster.env))
        try:
            replies = app.control.ping(destination=[node], timeout=1.0) or []
            if any(node in r for r in replies):
                return time.monotonic() - started
        except Exception as exc:  # a broker that is still coming back
            error = exc
        finally:
            app.close()
        time.sleep(0.5)
    raise AssertionError(f"{node} did not answer a ping in {timeout} s (last error: {error!r})")
