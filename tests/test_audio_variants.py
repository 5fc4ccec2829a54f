"""workers.audio_variants (pure functions) and the extraction of variants into a store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from contract.wire import VARIANT_NAME
from storage.feature_store import FeatureStore
from storage.manifest import ClipRecord, Manifest
from storage.store_layout import create_or_extend
from workers.audio import load_audio
from workers.audio_variants import (
    VARIANT_SETS,
    Variant,
    choose_background,
    drc_preset,
    dynamic_range_compression,
    mix_background,
    pitch_shift,
    time_stretch,
    variant_set,
)
from workers.extraction import extract_jobs
from workers.features import FeatureConfig, extract_clip_features
from workers.variant_featurize import background_candidates

SR = 22050


def tone(freq: float, seconds: float = 2.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return amp * np.sin(2 * np.pi * freq * t)


def peak_hz(y: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y)), n=8 * len(y)))
    return float(np.argmax(spec) * SR / (8 * len(y)))


def noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n) * 0.1


@pytest.mark.parametrize("n", [1, 1000, 44100, 44101])
def test_every_transform_keeps_the_length_and_is_deterministic(n: int) -> None:
    y = noise(n, seed=n)
    outputs = [
        lambda: time_stretch(y, rate=0.81),
        lambda: time_stretch(y, rate=1.23),
        lambda: pitch_shift(y, semitones=-3.5),
        lambda: pitch_shift(y, semitones=2.5),
        lambda: drc_preset(y, sr=SR, preset="radio"),
        lambda: mix_background(y, noise(777, seed=1), snr_db=6.0, offset=5),
    ]
    for make in outputs:
        a, b = make(), make()
        assert a.shape == (n,) and a.dtype == np.float32
        assert np.isfinite(a).all()
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("semitones", [-3.5, -2.0, 1.0, 2.5])
def test_pitch_shift_moves_a_pure_tone_by_the_semitone_ratio(semitones: float) -> None:
    out = pitch_shift(tone(440.0), semitones=semitones)
    measured = peak_hz(out[SR // 2 : 3 * SR // 2])
    expected = 440.0 * 2 ** (semitones / 12)
    assert abs(measured - expected) < 2.0, (measured, expected)
    assert abs(measured - 440.0) > 20.0  # it did move


@pytest.mark.parametrize("rate", [0.81, 0.93, 1.07, 1.23])
def test_time_stretch_keeps_pitch_and_moves_events_by_the_rate(rate: float) -> None:
    assert abs(peak_hz(time_stretch(tone(660.0), rate=rate)[: SR // 2]) - 660.0) < 2.0
    # a burst centred at 1.0 s: its energy centroid moves to about 1.0 / rate s
    y = np.zeros(3 * SR)
    burst = np.hanning(2000) * np.sin(2 * np.pi * 1000 * np.arange(2000) / SR)
    y[SR - 1000 : SR + 1000] = burst
    out = time_stretch(y, rate=rate).astype(np.float64)
    centroid = float(np.sum(np.arange(len(out)) * out**2) / np.sum(out**2)) / SR
    assert abs(centroid - 1.0 / rate) < 0.02, (centroid, 1.0 / rate)


@pytest.mark.parametrize("snr_db", [0.0, 3.0, 10.0, 20.0])
def test_mix_reaches_the_requested_snr(snr_db: float) -> None:
    y = tone(300.0, seconds=1.0)
    bg = noise(5000, seed=3)  # shorter than y: repeated
    out = mix_background(y, bg, snr_db=snr_db, offset=1234).astype(np.float64)
    added = out - y
    measured = 10 * np.log10(np.mean(y**2) / np.mean(added**2))
    assert abs(measured - snr_db) < 0.01
    index = (1234 + np.arange(len(y))) % len(bg)
    np.testing.assert_allclose(added / added[0] * bg[index[0]], bg[index], rtol=1e-4, atol=1e-6)


def test_mix_with_silence_is_the_clip() -> None:
    y = tone(300.0, seconds=0.5)
    assert np.array_equal(mix_background(y, np.zeros(100), snr_db=3), y.astype(np.float32))
    assert np.array_equal(mix_background(y, np.array([]), snr_db=3), y.astype(np.float32))


def test_compression_reduces_dynamic_range_and_spares_quiet_audio() -> None:
    loud, quiet = tone(200.0, 1.0, amp=0.9), tone(200.0, 1.0, amp=0.01)
    y = np.concatenate([quiet, loud])
    out = dynamic_range_compression(
        y, sr=SR, threshold_db=-30.0, ratio=4.0, attack_ms=1.0, release_ms=50.0
    )

    def rms_db(z: np.ndarray) -> float:
        return float(10 * np.log10(np.mean(z.astype(np.float64) ** 2)))

    gap_in = rms_db(y[SR // 2 : SR]) - rms_db(y[SR + SR // 2 :])
    gap_out = rms_db(out[SR // 2 : SR]) - rms_db(out[SR + SR // 2 :])
    assert gap_out > gap_in + 10  # the loud half was pulled down (range compressed)
    # the quiet half (-43 dBFS, below the threshold) is untouched, up to the last few
    # ms before the loud half (the gain is interpolated between 5 ms blocks)
    end = SR - SR // 100
    np.testing.assert_allclose(out[SR // 2 : end], y[SR // 2 : end], rtol=1e-5, atol=1e-7)
    # a ratio of 1 and no makeup is the identity
    same = dynamic_range_compression(
        y, sr=SR, threshold_db=-30.0, ratio=1.0, attack_ms=1.0, release_ms=50.0
    )
    np.testing.assert_allclose(same, y, rtol=1e-5, atol=1e-7)


def test_variant_sets_are_well_formed() -> None:
    sbcnn = VARIANT_SETS["sbcnn"]
    kinds = [v.kind for v in sbcnn]
    assert len(sbcnn) == 19 and kinds.count("pitch_shift") == 8
    assert kinds.count("time_stretch") == 4 and kinds.count("drc") == 4
    assert kinds.count("background") == 3
    assert all(VARIANT_NAME.match(v.name) for vs in VARIANT_SETS.values() for v in vs)
    assert variant_set("none") == ()
    assert [v.name for v in variant_set("light,drc_radio")] == sorted(
        [v.name for v in VARIANT_SETS["light"]] + ["drc_radio"]
    )
    for v in sbcnn:
        assert Variant.from_dict(v.to_dict()) == v
    with pytest.raises(ValueError, match="unknown variant"):
        variant_set("ts_9")


def test_background_choice_is_deterministic_and_never_the_clip() -> None:
    ids = [f"c{i}" for i in range(9)]
    picks = {choose_background("c3", ids, variant=f"bg_{k}") for k in range(1, 30)}
    assert 3 not in picks and len(picks) > 3
    assert choose_background("c3", ids, variant="bg_1") == choose_background(
        "c3", list(ids), variant="bg_1"
    )
    assert choose_background("c3", ["c3"], variant="bg_1") is None


# ---------------------------------------------------------------- into a store

SMALL = FeatureConfig(max_seconds=1.0)
SPECS = [
    Variant.make("ps_+2", "pitch_shift", semitones=2.0),
    Variant.make("bg_1", "background", snr_db=6.0, seed=1),
]


def _dataset(root: Path, n: int = 8, folds: int = 2) -> Manifest:
    rng = np.random.default_rng(4)
    clips = []
    for i in range(n):
        fold = i % folds + 1
        rel = f"audio/fold{fold}/{i}-1-0-0.wav"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sig = (0.2 * rng.standard_normal(SR) + tone(200.0 + 50 * i, 1.0)).clip(-1, 1)
        sf.write(root / rel, sig.astype(np.float32), SR, subtype="FLOAT")
        clips.append(ClipRecord(f"{i}-1-0-0", rel, fold, i % 2, 100 + i, 1))
    (root / "audio/fold1/0-1-0-0.wav").write_bytes(b"not audio")  # a bad file
    clips.sort(key=lambda c: (c.fold, c.clip_id))
    return Manifest(dataset_root=str(root), clips=clips, class_names=["a", "b"])


def _jobs(store: FeatureStore) -> list:
    from contract.wire import ExtractJob

    return [
        ExtractJob("s", store.url, store.dataset_root, str(p), i, store.generation)
        for i, p in enumerate(store.rel_paths().tolist())
    ]


def test_variant_extraction_into_the_store(tmp_path: Path) -> None:
    manifest = _dataset(tmp_path / "d")
    store, _ = create_or_extend(
        str(tmp_path / "s.zarr"),
        manifest,
        SMALL.to_dict(),
        (SMALL.max_windows, *SMALL.window_shape),
        clips_per_chunk=4,
        variants={v.name: v.to_dict() for v in SPECS},
    )
    original = extract_jobs(_jobs(store), store)
    before = store.read_folds([1, 2])
    folds, ids = store.folds(), store.clip_ids()
    bad = store.index_of("0-1-0-0")
    for spec in SPECS:
        vstore = store.variant_store(spec.name)
        result = extract_jobs(_jobs(vstore), vstore)
        # the bad file fails with the same path and reason as the original
        assert [(e.path, e.reason) for e in result.failed] == [
            (e.path, e.reason) for e in original.failed
        ]
        assert len(result.failed) == 1
        data = store.read_variant(spec.name, np.arange(store.n_clips))
        assert data.clip_done.tolist() == before.clip_done.tolist()
        for i in np.flatnonzero(data.clip_done).tolist():
            y, _ = load_audio(tmp_path / "d" / str(store.rel_paths()[i]), sr=SR, max_seconds=1.0)
            bg = None
            if spec.needs_background:
                order = background_candidates(vstore, i, spec)
                assert order and i not in order and set(folds[order]) == {folds[i]}
                j = next(k for k in order if k != bad)  # the bad file is skipped
                bg, _ = load_audio(tmp_path / "d" / str(store.rel_paths()[j]), sr=SR)
            ref = extract_clip_features(
                spec.apply(y, sr=SR, clip_id=str(ids[i]), background=bg), SMALL
            ).windows
            got = data.windows[data.clip_index == i]
            np.testing.assert_array_equal(got, ref)
            assert len(got) == int(np.sum(before.clip_index == i))  # same window count
            assert not np.array_equal(got, before.windows[before.clip_index == i])
        # a redelivery computes nothing and writes nothing new
        again = extract_jobs(_jobs(vstore), vstore)
        assert all(o.seconds == 0.0 for o in again.outcomes if o.status == "done")
    after = FeatureStore.open(store.url).read_folds([1, 2])
    np.testing.assert_array_equal(after.windows, before.windows)
