"""``extract_to_store`` called in-process against a real store (no queue, no worker).

The refusals are also tested through real workers (tests/test_security.py); here the
logic runs directly, so each case costs milliseconds.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from contract.errors import ClipError
from contract.wire import ClipStatus, ExtractJob
from orchestrator.datasets import scan_dataset
from storage.feature_store import FeatureStore
from storage.store_layout import create_or_extend
from tests.reliability_helpers import direct_extraction, tiny_dataset
from workers.extraction import extract_to_store, resolve_clip_path
from workers.features import FeatureConfig

CONFIG = FeatureConfig()


@pytest.fixture
def setup(tmp_path: Path) -> tuple[FeatureStore, ExtractJob, Path]:
    root = tiny_dataset(tmp_path / "data", 4, seconds=1.0, sr=22050, folds=2)
    manifest = scan_dataset(root)
    store, _ = create_or_extend(
        str(tmp_path / "s.zarr"),
        manifest,
        CONFIG.to_dict(),
        (CONFIG.max_windows, *CONFIG.window_shape),
    )
    store = FeatureStore.open(store.url, mode="r+")
    job = ExtractJob(
        submission_id="s1",
        store_url=store.url,
        dataset_root=manifest.dataset_root,
        rel_path=str(store.rel_paths()[1]),
        clip_index=1,
        generation=store.generation,
    )
    return store, job, Path(manifest.dataset_root)


def test_extracts_the_clip_as_the_reference_does(setup: tuple) -> None:
    store, job, root = setup
    outcome = extract_to_store(job, store)
    assert outcome.status is ClipStatus.DONE and outcome.clip_index == 1
    assert outcome.path == job.rel_path and outcome.n_windows > 0
    expected = direct_extraction(root, job.rel_path, CONFIG)
    np.testing.assert_array_equal(store.read_clip(1), expected)
    # the 4 clips share one store chunk: the clip's chunk-mates are extracted with it
    assert store.done_mask().tolist() == [True] * 4
    assert extract_to_store(job, store).n_windows == outcome.n_windows  # idempotent
    np.testing.assert_array_equal(store.read_clip(1), expected)


@pytest.mark.parametrize(
    ("change", "message", "mismatch"),
    [
        ({"clip_index": 99}, "out of range: the store holds 4 clips; refused", True),
        ({"clip_index": 2}, "not this path; refused", True),
        ({"dataset_root": "/elsewhere"}, "dataset root differs from the store's; refused", False),
    ],
)
def test_refuses_jobs_that_do_not_match_the_store(
    setup: tuple, change: dict, message: str, mismatch: bool
) -> None:
    store, job, _ = setup
    with pytest.raises(ClipError, match=message) as info:
        extract_to_store(replace(job, **change), store)
    assert info.value.job_mismatch is mismatch
    assert not store.done_mask().any()


def test_undecodable_audio_is_a_clip_error_with_its_path(setup: tuple) -> None:
    store, job, root = setup
    (root / job.rel_path).write_bytes(b"not audio")
    with pytest.raises(ClipError) as info:
        extract_to_store(job, store)
    assert info.value.path == job.rel_path and str(info.value).startswith(f"{job.rel_path}: ")
    assert not info.value.job_mismatch
    # the bad clip stays not done; its chunk-mates were extracted with it
    assert store.done_mask().tolist() == [True, False, True, True]


def test_clip_paths_resolve_as_realpath_does(tmp_path: Path) -> None:
    # resolve_clip_path skips realpath when no part below the (real) root is a link:
    # it must give realpath's answer in every case, links inside the root included.
    root = tmp_path / "root"
    (root / "audio" / "fold1").mkdir(parents=True)
    (root / "elsewhere").mkdir()
    (root / "audio" / "fold1" / "a.wav").write_bytes(b"x")
    (root / "elsewhere" / "b.wav").write_bytes(b"x")
    (root / "audio" / "fold1" / "link.wav").symlink_to(root / "elsewhere" / "b.wav")
    (root / "audio" / "fold2").symlink_to(root / "elsewhere")
    (tmp_path / "outside.wav").write_bytes(b"x")
    (root / "audio" / "fold1" / "out.wav").symlink_to(tmp_path / "outside.wav")
    real = os.path.realpath(root)
    for rel in ("audio/fold1/a.wav", "audio/fold1/link.wav", "audio/fold2/b.wav", "audio/x.wav"):
        expected = Path(os.path.realpath(os.path.join(real, rel)))
        assert resolve_clip_path(real, rel, root_is_real=True) == expected
        assert resolve_clip_path(str(root), rel) == expected
    with pytest.raises(ClipError, match="outside the dataset root"):
        resolve_clip_path(real, "audio/fold1/out.wav", root_is_real=True)
