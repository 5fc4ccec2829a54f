"""Bad input: every case ends in correct features or a recorded, readable failure.

Most cases go through ONE submission to one real worker; the per-file outcome is then
read from the ``--json`` summary and the store.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import redis
import soundfile as sf

from orchestrator.local_workers import WorkerKind
from storage.feature_store import FeatureStore
from tests.reliability_helpers import (
    CSV_COLUMNS,
    check_store_chunks,
    direct_extraction,
    write_rows,
)
from workers.audio import load_audio
from workers.features import FeatureConfig

pytestmark = pytest.mark.timeout(400)

SR = 22050


def _wav_bytes(signal: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, signal, sr, subtype=subtype, format="WAV")
    return buf.getvalue()


def _noise(seconds: float, sr: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = max(1, int(seconds * sr))
    x = 0.2 * rng.standard_normal((n, channels)) if channels > 1 else 0.2 * rng.standard_normal(n)
    return x.astype(np.float32)


def _claims_more_frames() -> bytes:
    data = bytearray(_wav_bytes(_noise(1.0)))
    at = data.index(b"data") + 4
    size = int.from_bytes(data[at : at + 4], "little")
    data[at : at + 4] = (size * 10).to_bytes(4, "little")
    return bytes(data)


def _with_non_finite(value: float) -> bytes:
    x = _noise(1.0)
    x[1000:1010] = value
    return _wav_bytes(x, subtype="FLOAT")


# name -> (file bytes or a function writing it, expectation)
# expectation: "done", "either" (done with correct features, or a readable failure) or
# "failed:<words the reason must contain>"
CASES: dict[str, tuple[object, str]] = {
    "not_audio": (b"MZ\x90\x00 this is an executable, not a wav" * 50, "failed:not an audio file"),
    "zero_length": (b"", "failed:file is empty"),
    "truncated_header": (_wav_bytes(_noise(1.0))[:30], "failed:audio"),
    "truncated_data": (_wav_bytes(_noise(2.0))[: 44 + SR], "either"),
    "claims_more_frames": (_claims_more_frames(), "either"),
    "nan_samples": (_with_non_finite(float("nan")), "failed:NaN or infinite"),
    "inf_samples": (_with_non_finite(float("inf")), "failed:NaN or infinite"),
    "silent": (_wav_bytes(np.zeros(SR, np.float32)), "done"),
    "dc_offset": (_wav_bytes(0.6 + 0.05 * _noise(1.0)), "done"),
    "clipping": (_wav_bytes(np.sign(np.sin(np.arange(SR) * 0.05)).astype(np.float32)), "done"),
    "ten_samples": (_wav_bytes(_noise(10 / SR)), "done"),
    "ten_minutes": (_wav_bytes(_noise(600, sr=8000), sr=8000), "done"),
    "pcm_u8": (_wav_bytes(_noise(1.0), subtype="PCM_U8"), "done"),
    "pcm_24": (_wav_bytes(_noise(1.0), subtype="PCM_24"), "done"),
    "float_32": (_wav_bytes(_noise(1.0), subtype="FLOAT"), "done"),
    "stereo": (_wav_bytes(_noise(1.0, channels=2)), "done"),
    "six_channels": (_wav_bytes(_noise(1.0, channels=6)), "done"),
    "eight_channels": (_wav_bytes(_noise(1.0, channels=8)), "done"),
    "rate_8k": (_wav_bytes(_noise(1.0, sr=8000), sr=8000), "done"),
    "rate_192k": (_wav_bytes(_noise(1.0, sr=192000), sr=192000), "done"),
    "unicode ñämé 音": (_wav_bytes(_noise(1.0, seed=3)), "done"),
    "spaces and 'single' \"double\" quotes": (_wav_bytes(_noise(1.0, seed=4)), "done"),
}


def build_corpus(base: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    """The dataset; returns (root, case -> rel_path, metadata-row case -> file name)."""
    root = base / "UrbanSound8K"
    for fold in (1, 2):
        (root / "audio" / f"fold{fold}").mkdir(parents=True)
    rows, rel = [], {}
    for i, (case, (content, _)) in enumerate(CASES.items()):
        name = f"{500 + i}-{i % 3}-0-0.wav" if case.isidentifier() else f"{case}.wav"
        fold = 1 + i % 2
        (root / "audio" / f"fold{fold}" / name).write_bytes(content)  # type: ignore[arg-type]
        rows.append([name, 500 + i, 0, 1, 1, fold, i % 3, f"class{i % 3}"])
        rel[case] = f"audio/fold{fold}/{name}"

    outside = base / "outside.wav"
    outside.write_bytes(_wav_bytes(_noise(1.0, seed=9)))
    os.symlink(outside, root / "audio" / "fold1" / "900-0-0-0.wav")
    good = _wav_bytes(_noise(1.0, seed=10))
    for name in ("901-0-0-0.wav", "902-0-0-0.wav", "903-0-0-0.wav", "904-0-0-0.wav"):
        (root / "audio" / "fold1" / name).write_bytes(good)
    meta = {
        "symlink_outside": "900-0-0-0.wav",
        "class_not_integer": "901-0-0-0.wav",
        "class_negative": "902-0-0-0.wav",
        "fold_11": "903-0-0-0.wav",
        "fold_0": "904-0-0-0.wav",
        "duplicate": f"{500}-0-0-0.wav",
        "missing_file": "905-0-0-0.wav",
    }
    rows += [
        ["900-0-0-0.wav", 900, 0, 1, 1, 1, 0, "class0"],
        ["901-0-0-0.wav", 901, 0, 1, 1, 1, "banana", "class0"],
        ["902-0-0-0.wav", 902, 0, 1, 1, 1, -3, "class0"],
        ["903-0-0-0.wav", 903, 0, 1, 1, 11, 0, "class0"],
        ["904-0-0-0.wav", 904, 0, 1, 1, 0, 0, "class0"],
        rows[0],  # duplicate of the first row
        ["905-0-0-0.wav", 905, 0, 1, 1, 1, 0, "class0"],
    ]
    write_rows(root, rows)
    return root, rel, meta


def test_bad_input_corpus_one_submission(cluster, tmp_path):
    root, rel, meta = build_corpus(tmp_path / "corpus")
    store_url = str(tmp_path / "bad.zarr")
    worker = cluster.start_worker(WorkerKind.EXTRACT, concurrency=1, name="bad@test")

    code, summary = cluster.cli_json("submit-dataset", str(root), "--store", store_url, timeout=240)

    assert code == 1, "failures make the exit code non-zero"
    assert summary["remaining"] == 0
    assert summary["missing_files"] == 1  # 905-0-0-0.wav: listed, not on disk
    failures = {f["path"]: f["reason"] for f in summary["failures"]}
    by_row = {
        path.split(": ", 1)[1]: reason
        for path, reason in failures.items()
        if path.startswith("row ")
    }

    # metadata rows refused by the scanner, each with its reason (nothing enqueued for them)
    assert by_row[meta["symlink_outside"]] == "symlink points outside the dataset root"
    assert "classID 'banana' is not an integer" in by_row[meta["class_not_integer"]]
    assert "classID -3 is negative" in by_row[meta["class_negative"]]
    assert "fold 11 is outside the accepted folds 1..10" in by_row[meta["fold_11"]]
    assert "fold 0 is outside" in by_row[meta["fold_0"]]
    assert "duplicate of row 2" in by_row[meta["duplicate"]]

    store = FeatureStore.open(store_url)
    config = FeatureConfig.from_dict(store.feature_config)
    index = {str(p): i for i, p in enumerate(store.rel_paths())}
    assert set(index) == set(rel.values()), "exactly the audio cases are in the store"
    done = store.done_mask()
    outcomes = {}
    for case, (_, expect) in CASES.items():
        path, i = rel[case], index[rel[case]]
        if done[i]:
            assert path not in failures
            np.testing.assert_array_equal(store.read_clip(i), direct_extraction(root, path, config))
            outcomes[case] = "done"
        else:
            reason = failures[path]  # a failure names the file ...
            assert reason and "Traceback" not in reason and len(reason) < 300  # ... readably
            outcomes[case] = f"failed: {reason}"
        if expect == "done":
            assert outcomes[case] == "done", (case, outcomes[case])
        elif expect.startswith("failed:"):
            assert outcomes[case].startswith("failed"), (case, outcomes[case])
            assert expect.split(":", 1)[1] in outcomes[case], (case, outcomes[case])
    print("BAD_INPUT", outcomes)
    # numbers never silently become NaN: every stored clip is finite where it has windows
    check_store_chunks(store)
    # the ten-minute file cost only max_seconds of audio
    assert store.clip_info(index[rel["ten_minutes"]])[2] == math.ceil(config.max_seconds * SR)
    # the worker survived all of it and still serves
    cluster.wait_for_worker("bad@test", worker, timeout=30)
    assert worker.poll() is None


def test_long_file_is_read_only_up_to_the_cap(tmp_path):
    path = tmp_path / "long.wav"
    path.write_bytes(CASES["ten_minutes"][0])  # type: ignore[arg-type]
    started = time.perf_counter()
    y, info = load_audio(path, sr=SR, max_seconds=4.0)
    elapsed = time.perf_counter() - started
    assert info.orig_frames == 600 * 8000
    assert info.frames_read == 4 * 8000 and info.truncated
    assert y.shape == (4 * SR,)
    assert elapsed < 2.0, f"reading the capped start of a 10-minute file took {elapsed:.2f} s"


def test_unreadable_file_is_reported(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: permissions cannot make a file unreadable")
    path = tmp_path / "locked.wav"
    path.write_bytes(_wav_bytes(_noise(0.5)))
    path.chmod(0)
    with pytest.raises(Exception, match=r"not readable|cannot access|permission"):
        load_audio(path)


# test_symlink_outside_root_refused_by_worker: in tests/test_tasks_inprocess.py (middle
# tier: the same submission and crafted jobs, run by in-process task bodies on a real Redis)


def test_metadata_missing_columns_refused_before_enqueue(cluster, tmp_path):
    root = tmp_path / "ds" / "UrbanSound8K"
    (root / "audio" / "fold1").mkdir(parents=True)
    (root / "audio" / "fold1" / "1-0-0-0.wav").write_bytes(_wav_bytes(_noise(0.5)))
    header = [c for c in CSV_COLUMNS if c not in ("classID", "fold")]
    write_rows(root, [["1-0-0-0.wav", 1, 0, 1, 1, "class0"]], header=header)
    store_url = tmp_path / "never.zarr"

    proc = cluster.cli("submit-dataset", str(root), "--store", str(store_url), "--json")

    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())
    assert "missing required column(s) fold, classID" in message, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    client = redis.Redis.from_url(cluster.url)
    assert client.llen("extract") == 0
    assert not list(client.scan_iter("esc:*"))
    assert not store_url.exists()
