"""Typed records of what is persisted: strict on unknown fields, with a format version."""

from __future__ import annotations

import pytest

from contract.errors import EscError
from storage.run_records import FORMAT_VERSION, RecordError, Report, RunConfig, Trial, TrialResult
from workers.redis_records import SubmissionRecord

CONFIG = {
    "plan": {"kind": "official", "explanation": "2 trials", "folds": [1, 2]},
    "trials": [
        {"index": 0, "train_folds": [2], "valid_folds": [], "test_fold": 1,
         "valid_from_train_fraction": 0.15},
        {"index": 1, "train_folds": [1], "valid_folds": [], "test_fold": 2,
         "valid_from_train_fraction": 0.15},
    ],
    "model": "default",
    "training": {"epochs": 2},
    "only_real": False,
    "feature_config": {"n_mels": 60},
    "class_names": ["hum", "bark"],
    "n_clips": 12,
    "run_id": "20261126-183000-ab12",
    "created": "2026-11-26T18:30:00+00:00",
    "store_url": "/tmp/store.zarr",
    "package_versions": {"numpy": "2.0"},
    "project": {"version": "0.1.0", "git_commit": None},
}  # fmt: skip


def test_run_config_round_trip_and_documents_without_format() -> None:
    config = RunConfig.from_dict(CONFIG)  # written before the format field existed
    assert config.trial(1) == Trial(1, (1,), (), 2, 0.15)
    data = config.to_dict()
    assert data["format"] == FORMAT_VERSION
    assert {k: v for k, v in data.items() if k != "format"} == CONFIG
    assert RunConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="no trial 5"):
        config.trial(5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"surprise": 1}, r"unknown fields \['surprise'\]"),
        ({"format": 99}, "format 99 is not supported"),
    ],
)
def test_run_config_is_strict(change: dict, message: str) -> None:
    with pytest.raises(RecordError, match=message) as info:
        RunConfig.from_dict({**CONFIG, **change})
    assert isinstance(info.value, EscError)
    missing = {k: v for k, v in CONFIG.items() if k != "model"}
    with pytest.raises(RecordError, match=r"missing fields \['model'\]"):
        RunConfig.from_dict(missing)


def test_trial_result_accepts_older_documents_and_refuses_unknown_fields() -> None:
    old = {
        "trial": 0, "train_folds": [2], "valid_folds": [], "test_fold": 1,
        "valid_from_train_fraction": 0.15, "window_accuracy": 0.5, "clip_accuracy": 0.6,
        "roc_auc_macro": None, "roc_auc_note": "n/a", "f1_macro": 0.5, "f1_micro": 0.6,
        "per_class": {}, "confusion_matrix": [[1]], "n_clips": 5, "n_windows": 10,
        "epochs": 3, "seconds": 1.5, "device": "tensorflow:CPU",
    }  # fmt: skip
    result = TrialResult.from_dict(old)
    assert result.best_epoch is None and result.n_clips_without_windows == 0
    assert result.history == {}
    assert TrialResult.from_dict(result.to_dict()) == result
    with pytest.raises(RecordError, match="unknown fields"):
        TrialResult.from_dict({**old, "clip_acuracy": 0.6})


def test_report_round_trip() -> None:
    report = Report(
        run_id="r", model="default", plan={"kind": "official"}, training={}, class_names=["a"],
        n_trials=1, complete=False, trials=[], aggregate={},
    )  # fmt: skip
    assert Report.from_dict(report.to_dict()) == report
    with pytest.raises(RecordError):
        Report.from_dict({**report.to_dict(), "extra": True})


def test_submission_record_round_trip_and_strictness() -> None:
    record = SubmissionRecord(
        id="s1", created=1.0, user="u", host="h", dataset_root="/d", store_url="/s",
        store_key="k", clips=3, already_done=0, already_queued=0, to_enqueue=3, enqueued=3,
        missing_files=0, unlisted_files=0,
    )  # fmt: skip
    data = record.to_dict()
    assert data["format"] == 1 and "finished" not in data
    assert SubmissionRecord.from_dict(data) == record
    older = {k: v for k, v in data.items() if k not in ("format", "requeued_lost")}
    assert SubmissionRecord.from_dict(older) == record
    with pytest.raises(EscError, match="unknown fields"):
        SubmissionRecord.from_dict({**data, "bogus": 1})
