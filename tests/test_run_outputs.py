"""What a finished run gives a user: the HTML page, TensorBoard logs, exported models.

One small real run (synthetic WAVs, 2 trials of 2 epochs, trained in-process by the
trial runner) is shared by the tests of this module.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from storage.feature_store import FeatureStore
from storage.runs import RunStore
from tests.run_helpers import build_tiny_run
from workers.html_report import collect, render_html

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, str, FeatureStore]:
    return build_tiny_run(tmp_path_factory.mktemp("run"), epochs=2)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium) to render the page")
    return found


def _browser(chromium: str, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="esc-chromium-") as profile:
        return subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                # lets the page's <audio> read clips by their relative file:// paths
                "--allow-file-access-from-files",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=10000",
                *args,
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )


def _wrong_clips(runs: RunStore, run_id: str) -> int:
    n = 0
    for k in runs.trial_results(run_id):
        p = runs.load_predictions(run_id, k)
        n += int((p["clip_probs"].argmax(axis=1) != p["clip_labels"]).sum())
    return n


# ------------------------------------------------------------------ HTML


def test_html_report_is_in_the_records_and_renders_in_chromium(tiny_run, tmp_path) -> None:
    runs, run_id, store = tiny_run
    stored = Path(runs.store_url) / "runs" / run_id / "report.html"
    assert run_id in stored.read_text(encoding="utf-8")

    page = tmp_path / "out" / "report.html"
    result = CliRunner().invoke(
        app, ["cv-report", run_id, "--store", runs.store_url, "--html", str(page)]
    )
    assert result.exit_code == 0, result.output
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']https?://""", text), "the page must not need a network"

    chromium = _chromium()
    dom = _browser(chromium, page, "--dump-dom").stdout
    assert len(re.findall(r'<tr class="trial-row">', dom)) == 2
    assert len(re.findall(r'<tr class="class-row">', dom)) == len(store.class_names)
    table = re.search(r'<table class="cm" id="confusion">(.*?)</table>', dom, re.S)
    assert table is not None
    cells = re.findall(r"<td[^>]*>(\d+)</td>", table.group(1))
    assert sum(int(c) for c in cells) == store.n_clips  # every test clip, once per trial
    assert len(re.findall(r'data-series="loss"', dom)) == 2
    assert len(re.findall(r'data-series="val_accuracy"', dom)) == 2
    n_wrong = _wrong_clips(runs, run_id)
    assert n_wrong > 0
    assert len(re.findall(r'<tr class="wrong">', dom)) == n_wrong
    assert len(re.findall(r"<audio ", dom)) == n_wrong
    # the page's script writes a clip's length once the browser has decoded its header
    durations = [float(d) for d in re.findall(r'class="duration muted">(\d+\.\d\d) s<', dom)]
    assert durations and all(0.4 < d <= 4.01 for d in durations)

    shot = tmp_path / "shot.png"
    _browser(chromium, page, "--window-size=1300,2000", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_html_report_shows_paths_when_the_dataset_is_gone(tiny_run, tmp_path) -> None:
    runs, run_id, _ = tiny_run
    data = collect(runs, run_id)
    data.dataset_root = str(tmp_path / "elsewhere")
    page = render_html(data, page_dir=tmp_path)
    assert "<audio" not in page and "not reachable" in page
    assert data.misclassified[0]["path"] in page


def test_html_report_can_embed_the_audio(tiny_run, tmp_path) -> None:
    runs, run_id, _ = tiny_run
    data = collect(runs, run_id)
    page = render_html(data, page_dir=tmp_path, embed_audio=True)
    assert page.count('src="data:audio/wav;base64,') == len(data.misclassified)


# ------------------------------------------------------------ TensorBoard


def test_tensorboard_logs_hold_every_epoch(tiny_run) -> None:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    from tensorboard.util import tensor_util

    runs, run_id, _ = tiny_run
    for k, result in runs.trial_results(run_id).items():
        history = result["history"]
        base = Path(runs.store_url) / "runs" / run_id / "tensorboard" / f"trial{k}"
        for sub, keys in (
            ("train", {"loss": "loss", "accuracy": "accuracy", "learning_rate": "learning_rate"}),
            ("validation", {"loss": "val_loss", "accuracy": "val_accuracy"}),
        ):
            acc = event_accumulator.EventAccumulator(str(base / sub))
            acc.Reload()
            for name, history_key in keys.items():
                events = acc.Tensors(f"epoch_{name}")
                values = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in events]
                assert [e.step for e in events] == list(range(len(history["loss"])))
                np.testing.assert_allclose(values, history[history_key], rtol=1e-6)


# ----------------------------------------------------------------- export


def _keras_ensemble(runs: RunStore, run_id: str, windows: np.ndarray) -> np.ndarray:
    from orchestrator.export import load_members

    with tempfile.TemporaryDirectory() as tmp:
        members = load_members(runs, run_id, Path(tmp))
        return np.mean(
            [np.asarray(m.predict(n.apply(windows), verbose=0)) for _, m, n in members], axis=0
        )


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
def test_export_reproduces_the_keras_probabilities(tiny_run, tmp_path, fmt) -> None:
    if fmt == "onnx":
        pytest.importorskip("tf2onnx", reason="ONNX export needs esc-pipeline[export]")
        pytest.importorskip("onnxruntime", reason="ONNX export needs esc-pipeline[export]")
    import json

    from orchestrator.export import ExportedModel

    runs, run_id, store = tiny_run
    out = tmp_path / fmt
    args = ["export", run_id, "--store", runs.store_url, "--format", fmt, "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "esc-model.json").read_text())
    assert manifest["class_names"] == list(store.class_names)
    assert manifest["feature_config"] == store.feature_config
    assert manifest["trials"] == [0, 1] and manifest["input"]["shape"][1:] == [60, 41, 2]

    model = ExportedModel(out)
    config = runs.get_config(run_id)
    for t in config["trials"]:
        windows = store.read_folds([t["test_fold"]]).windows  # raw, as extracted
        expected = _keras_ensemble(runs, run_id, windows)
        got = model.predict(windows)
        assert got.shape == expected.shape == (len(windows), len(store.class_names))
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_predict_with_an_exported_model_matches_the_run(tiny_run, tmp_path) -> None:
    from orchestrator.export import export_run, predict_files_exported
    from orchestrator.predict import predict_files

    runs, run_id, store = tiny_run
    export_run(runs, run_id, "tflite", tmp_path / "m")
    clips = [Path(store.dataset_root) / str(p) for p in store.rel_paths()[:3]]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    exported = predict_files_exported([*clips, bad], tmp_path / "m", top_k=2)
    direct = predict_files([*clips, bad], runs, run_id, top_k=2)
    for e, d in zip(exported[:3], direct[:3], strict=True):
        assert e["n_models"] == d["n_models"] == 2
        assert [g["class"] for g in e["top"]] == [g["class"] for g in d["top"]]
        for c, p in d["probabilities"].items():
            assert e["probabilities"][c] == pytest.approx(p, abs=1e-4)
    assert "error" in exported[3] and "error" in direct[3]


def test_predict_and_export_aggregate_clips_as_the_run_was_scored(tiny_run, tmp_path) -> None:
    """A run scored with the geometric mean of window probabilities (``mean_log_prob``):
    ``predict`` and an exported model's ``predict`` both aggregate a file's windows so,
    over the ensemble's window probabilities."""
    import json

    from orchestrator.export import export_run, predict_files_exported
    from orchestrator.predict import predict_files
    from workers.features import FeatureConfig
    from workers.featurize import featurize_file

    runs, run_id, store = tiny_run
    blobs = runs.blobs
    config = runs.get_config(run_id)
    assert config["training"]["test_aggregation"] == "mean_prob"  # the default
    config["training"]["test_aggregation"] = "mean_log_prob"
    log_run = f"{run_id}-log"  # the same trained trials, recorded as a geometric-mean run
    src, dst = Path(runs.store_url) / "runs" / run_id, Path(runs.store_url) / "runs" / log_run
    shutil.copytree(src, dst, dirs_exist_ok=True)
    blobs.put_json(f"runs/{log_run}/config.json", config)

    manifest = export_run(runs, log_run, "tflite", tmp_path / "m")
    assert manifest["clip_aggregation"]["name"] == "mean_log_prob"
    saved = json.loads((tmp_path / "m" / "esc-model.json").read_text())
    assert saved["clip_aggregation"] == manifest["clip_aggregation"]

    clips = [Path(store.dataset_root) / str(p) for p in store.rel_paths()[:3]]
    direct = predict_files(clips, runs, log_run, top_k=2)
    exported = predict_files_exported(clips, tmp_path / "m", top_k=2)
    features = FeatureConfig.from_dict(config["feature_config"])
    for path, d, e in zip(clips, direct, exported, strict=True):
        windows = featurize_file(path, features).windows
        assert len(windows) >= 2  # with one window both aggregations are the same
        window_probs = _keras_ensemble(runs, log_run, windows).astype(np.float64)
        geometric = np.exp(np.log(np.maximum(window_probs, 1e-7)).mean(axis=0))
        geometric /= geometric.sum()
        for c, name in enumerate(store.class_names):
            assert d["probabilities"][name] == pytest.approx(geometric[c], abs=1e-5)
            assert e["probabilities"][name] == pytest.approx(geometric[c], abs=1e-4)


def test_reconciler_writes_a_missing_report_and_closes_the_run(tiny_run, redis_db, tmp_path):
    """Both trials have results, the last trial's worker died before the report: a
    reconciler pass (workers.reconciler, in the test process) writes the report, equal to
    the one the workers wrote, and closes the run. Here rather than in test_reconciler.py
    so that it reuses this module's trained run."""
    from contract.settings import Settings
    from contract.wire import OPEN_RUNS_KEY
    from workers.celery_app import create_app
    from workers.reconciler import Reconciler
    from workers.redis_records import SubmissionRecords

    runs, run_id, store = tiny_run
    written = runs.get_report(run_id)
    copy = tmp_path / "features.zarr"
    shutil.copytree(store.url, copy)
    (copy / "runs" / run_id / "report.json").unlink()
    copied = RunStore(str(copy))
    assert copied.get_report(run_id) is None
    settings = Settings.from_env({"REDIS_URL": redis_db.url, "ESC_HOME": str(tmp_path / "h")})
    SubmissionRecords(redis_db.client, ttl=settings.record_ttl).open_run(run_id, str(copy), [0, 1])
    app = create_app(settings)
    try:
        report = Reconciler(app, redis_db.client, settings).run_pass()
    finally:
        app.close()
    assert report.closed_runs == [run_id] and report.trials_requeued == []
    assert copied.get_report(run_id) == written
    assert not redis_db.client.hexists(OPEN_RUNS_KEY, run_id)
