"""Variants through the real queue: real Redis, real ``celery worker`` processes, the CLI.

Small: a few tiny synthetic clips and two cheap variants, so both tests take seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import redis

from contract.wire import RECONCILER_STATS_KEY, extract_task_prefix, variant_url
from orchestrator.local_workers import WorkerKind
from storage.feature_store import FeatureStore
from tests.reliability_helpers import (
    direct_extraction,
    tiny_dataset,
    wait_progress,
    wait_status,
)
from workers.audio import load_audio
from workers.audio_variants import variant_set
from workers.features import FeatureConfig, extract_clip_features
from workers.variant_featurize import background_candidates

pytestmark = pytest.mark.timeout(300)
VARIANTS = "ts_1.07,bg_1"


def _digest(root: Path, top: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in (root / top).rglob("c.*")}


def _check_variants(store_url: str, root: Path, bad: str) -> None:
    """Every clip but ``bad`` done in every variant and equal to its direct computation."""
    store = FeatureStore.open(store_url)
    config = FeatureConfig.from_dict(store.feature_config)
    sr = config.sample_rate
    rel = store.rel_paths()
    for variant in variant_set(VARIANTS):
        vstore = store.variant_store(variant.name)
        data = store.read_variant(variant.name, np.arange(store.n_clips))
        assert data.clip_done.tolist() == [str(p) != bad for p in rel], variant.name
        for i in np.flatnonzero(data.clip_done).tolist():
            y, _ = load_audio(root / str(rel[i]), sr=sr, max_seconds=config.max_seconds)
            bg = None
            if variant.needs_background:
                j = next(k for k in background_candidates(vstore, i, variant) if rel[k] != bad)
                bg, _ = load_audio(root / str(rel[j]), sr=sr, max_seconds=config.max_seconds)
            ref = extract_clip_features(
                variant.apply(y, sr=sr, clip_id=str(store.clip_ids()[i]), background=bg),
                config,
            ).windows
            np.testing.assert_array_equal(data.windows[data.clip_index == i], ref)


def test_submit_with_variants_extracts_them_and_a_rerun_adds_nothing(cluster, tmp_path):
    n = 8
    root = tiny_dataset(tmp_path / "d", n, seconds=0.5, sr=8000, folds=2, seed=31)
    store_url = str(tmp_path / "f.zarr")
    bad = sorted(p.relative_to(root).as_posix() for p in root.glob("audio/fold1/*.wav"))[1]
    (root / bad).write_bytes(b"RIFF but not audio")
    cluster.start_worker(WorkerKind.EXTRACT, concurrency=2)
    # originals first, alone: their bytes are the reference for "variants change nothing"
    code, first = cluster.cli_json(
        "submit-dataset", str(root), "--store", store_url, "--batch-size", "4"
    )
    assert code == 1 and (first["done"], first["failed"]) == (n - 1, 1)
    assert "variants" not in first
    [failure] = first["failures"]
    assert failure["path"] == bad and failure["reason"]
    windows, info = _digest(Path(store_url), "windows"), _digest(Path(store_url), "clip_info")

    args = ("submit-dataset", str(root), "--store", store_url, "--variants", VARIANTS)
    code, second = cluster.cli_json(*args)
    assert code == 1, second  # the bad file fails in each variant too
    assert second["enqueued"] == 0 and second["skipped_already_done"] == n - 1
    assert second["already_failed"] == 1
    assert sorted(second["variants"]) == ["bg_1", "ts_1.07"]
    for name, part in second["variants"].items():
        assert (part["enqueued"], part["done"], part["failed"]) == (n, n - 1, 1), name
        assert part["submission"] == f"{second['submission']}.{name}"
        assert part["store"] == variant_url(store_url, name)
        assert [(f["path"], f["reason"]) for f in part["failures"]] == [
            (failure["path"], failure["reason"])
        ]
    _check_variants(store_url, root, bad)
    good = [i for i, p in enumerate(FeatureStore.open(store_url).rel_paths()) if p != bad]
    assert_store_matches_but(store_url, root, good)
    assert _digest(Path(store_url), "windows") == windows, "originals changed"
    assert _digest(Path(store_url), "clip_info") == info
    # one message per (chunk, variant), with deterministic ids naming the variant
    logs = cluster.worker_logs()
    for name in ("bg_1", "ts_1.07"):
        prefix = extract_task_prefix(variant_url(store_url, name))
        ids = set(re.findall(rf"Task esc\.extract_clips\[({re.escape(prefix)}[^\]]*)\]", logs))
        assert ids == {f"{prefix}0-n4", f"{prefix}4-n4"}, ids

    code, third = cluster.cli_json(*args)
    assert third["enqueued"] == 0
    assert {k: v["enqueued"] for k, v in third["variants"].items()} == {"bg_1": 0, "ts_1.07": 0}
    assert all(v["skipped_already_done"] == n - 1 for v in third["variants"].values())
    assert all(v["already_failed"] == 1 for v in third["variants"].values())
    summary = Path(store_url) / "submissions" / f"{second['submission']}.bg_1.json"
    assert json.loads(summary.read_text())["done"] == n - 1


def assert_store_matches_but(store_url: str, root: Path, good: list[int]) -> None:
    """The originals of ``good`` equal a direct extraction (the rest failed)."""
    store = FeatureStore.open(store_url)
    config = FeatureConfig.from_dict(store.feature_config)
    assert np.flatnonzero(store.done_mask()).tolist() == good
    for i in good:
        np.testing.assert_array_equal(
            store.read_clip(i), direct_extraction(root, str(store.rel_paths()[i]), config)
        )


def test_a_lost_variant_message_is_found_and_sent_again(cluster, tmp_path):
    n = 4
    root = tiny_dataset(tmp_path / "d", n, seconds=0.3, sr=8000, folds=2, seed=32)
    store_url = str(tmp_path / "f.zarr")
    client = redis.Redis.from_url(cluster.url)
    code, sub = cluster.cli_json(
        "submit-dataset", str(root), "--store", store_url, "--variants", "ts_1.07", "--no-wait"
    )
    assert code == 0 and sub["variants"]["ts_1.07"]["enqueued"] == n
    assert client.llen("extract") == 2 * n  # one message per clip (ESC_EXTRACT_BATCH=1)
    # the first variant message vanishes, as with a worker killed after BRPOP
    messages = client.lrange("extract", 0, -1)
    lost = next(m for m in messages if b".ts_1.07-" in m)
    assert client.lrem("extract", 1, lost) == 1
    cluster.start_worker(WorkerKind.EXTRACT, concurrency=1, wait=False)
    vurl = variant_url(store_url, "ts_1.07")
    wait_progress(client, vurl, lambda done, failed: done + failed == n, timeout=120, poll=0.2)
    final = wait_status(cluster, f"{sub['submission']}.ts_1.07", timeout=60)
    assert (final["done"], final["failed"], final["remaining"]) == (n, 0, 0)
    assert final["store"] == vurl
    assert wait_progress(client, store_url, lambda d, f: d + f == n, timeout=60) == (n, 0)
    stats = {k.decode(): int(v) for k, v in client.hgetall(RECONCILER_STATS_KEY).items()}
    assert stats["clips_requeued"] == 1
    assert "lost clip message(s) of store" in cluster.worker_logs()
    store = FeatureStore.open(store_url)
    assert store.variant_store("ts_1.07").done_mask().all()
    assert store.done_mask().all()
