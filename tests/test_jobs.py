"""Job records: strict decoding of task messages."""

from __future__ import annotations

import pytest

from contract.wire import MAX_BATCH, ExtractBatch, ExtractJob, JobError, TrialJob, store_key


def job(i: int = 0, store: str = "/s.zarr") -> ExtractJob:
    return ExtractJob("s1", store, "/data", f"audio/fold1/{i}-0-0-0.wav", i, 1)


def test_round_trip_and_deterministic_ids():
    j = job(3)
    assert ExtractJob.from_dict(j.to_dict()) == j
    assert j.task_id() == f"extract-{store_key('/s.zarr')}-3"
    batch = ExtractBatch((job(3), job(4)))
    assert ExtractBatch.from_dict(batch.to_dict()) == batch
    assert batch.task_id() == f"extract-{store_key('/s.zarr')}-3-n2"
    t = TrialJob("/s.zarr", "r1", 2)
    assert TrialJob.from_dict(t.to_dict()) == t and t.task_id() == "trial-r1-2"


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {**job().to_dict(), "extra": 1},
        {k: v for k, v in job().to_dict().items() if k != "clip_index"},
        {**job().to_dict(), "clip_index": "3"},
        {**job().to_dict(), "clip_index": True},
        {**job().to_dict(), "rel_path": 5},
    ],
)
def test_malformed_jobs_are_refused(payload):
    with pytest.raises(JobError):
        ExtractJob.from_dict(payload)


@pytest.mark.parametrize(
    "payload",
    [
        {"jobs": []},
        {"jobs": [job().to_dict()] * (MAX_BATCH + 1)},
        {"jobs": [job(0).to_dict(), job(1, store="/other.zarr").to_dict()]},
        {"jobs": [job().to_dict()], "more": 1},
        {"jobs": [{"clip_index": 1}]},
        {"jobs": "x"},
    ],
)
def test_malformed_batches_are_refused(payload):
    with pytest.raises(JobError):
        ExtractBatch.from_dict(payload)
