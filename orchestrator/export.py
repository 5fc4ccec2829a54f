"""Export a run's models for deployment: SavedModel, TFLite (LiteRT) or ONNX.

The exported model takes **raw** windows - ``(n, n_mels, frames, 2)`` float32 log-mel
(dB) and delta, exactly what ``workers.features.extract_clip_features`` returns - and
outputs ``(n, n_classes)`` class probabilities per window. The standardisation with
each trial's training statistics is inside the model. With several trials the
model is their equal-weight ensemble (the mean of the trials' probabilities, as
``orchestrator predict`` computes it); ``trial=K`` exports one trial's model. A
clip's probabilities aggregate its windows' as the run's trials were scored
(``clip_aggregation`` in the manifest: ``TrialConfig.test_aggregation``).

Next to the model, ``esc-model.json`` holds the class names, the feature config
(sample rate, mel bands, window length...) and the input and output description, so
a device can compute the windows and read the output without this project.

The three formats go through ``keras.Model.export`` (``tf_saved_model``, ``litert``,
``onnx``; the last uses tf2onnx, an optional dependency: ``pip install
esc-pipeline[export]``). TensorFlow backend only.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from contract.errors import EscError
from storage.runs import RunStore, package_versions
from workers.normalization import Normalization
from workers.training import aggregate_windows
from workers.trial_config import TrialConfig

FORMATS = ("savedmodel", "tflite", "onnx")
MANIFEST = "esc-model.json"
_FILES = {"savedmodel": "savedmodel", "tflite": "model.tflite", "onnx": "model.onnx"}
INPUT_NAME = "windows"


class ExportError(EscError, ValueError):
    """An export that cannot be made (unknown format, missing exporter, no trial)."""


class Standardize(keras.layers.Layer):
    """``(x - mean) / std`` per mel band and channel, the statistics held as weights.

    Weights rather than constants: exporters freeze variables into the graph, while
    tf2onnx turns captured constant tensors into extra model inputs.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._mean = np.asarray(mean, dtype=np.float32)
        self._std = np.asarray(std, dtype=np.float32)

    def build(self, input_shape: Any) -> None:
        shape = (1, self._mean.shape[0], 1, self._mean.shape[1])
        self.mean = self.add_weight(
            shape=shape,
            initializer=keras.initializers.Constant(self._mean.reshape(shape)),
            trainable=False,
            name="mean",
        )
        self.std = self.add_weight(
            shape=shape,
            initializer=keras.initializers.Constant(self._std.reshape(shape)),
            trainable=False,
            name="std",
        )

    def call(self, x: Any) -> Any:
        return (x - self.mean) / self.std


def inference_model(members: Sequence[tuple[keras.Model, Normalization]]) -> keras.Model:
    """One model from raw windows to probabilities: standardise, classify, average."""
    if not members:
        raise ExportError("no trial model to export")
    shape = tuple(int(d) for d in members[0][0].input_shape[1:])
    inputs = keras.Input(shape=shape, name=INPUT_NAME)
    outputs = []
    for i, (model, norm) in enumerate(members):
        if len(members) > 1:
            model.name = f"{model.name}_{i}"  # nested models need unique names
        x = Standardize(norm.mean, norm.std, name=f"standardize_{i}")(inputs)
        outputs.append(model(x))
    probs = outputs[0] if len(outputs) == 1 else keras.layers.Average(name="ensemble")(outputs)
    return keras.Model(inputs, probs, name="esc_classifier")


def load_members(
    runs: RunStore, run_id: str, local_dir: Path, trials: Sequence[int] | None = None
) -> list[tuple[int, keras.Model, Normalization]]:
    """The finished trials' models and normalisations (``trials``: only these)."""
    done = sorted(runs.trial_results(run_id))
    wanted = done if trials is None else list(trials)
    missing = sorted(set(wanted) - set(done))
    if missing:
        raise ExportError(f"run {run_id!r} has no finished trial {missing} (done: {done})")
    if not wanted:
        raise ExportError(f"run {run_id!r} has no finished trial (no model to export)")
    out = []
    for k in wanted:
        model = keras.saving.load_model(runs.model_path(run_id, k, local_dir), compile=False)
        out.append((k, model, Normalization.from_dict(runs.load_normalization(run_id, k))))
    return out


def export_run(
    runs: RunStore,
    run_id: str,
    fmt: str,
    out_dir: str | Path,
    *,
    trial: int | None = None,
) -> dict[str, Any]:
    """Export the run's ensemble (or one ``trial``) as ``fmt`` into ``out_dir``.

    Returns:
        The manifest written to ``out_dir/esc-model.json``.

    Raises:
        ExportError: unknown format, missing exporter, or no such finished trial.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if keras.backend.backend() != "tensorflow":
        raise ExportError(f"export needs the TensorFlow backend, not {keras.backend.backend()}")
    if fmt == "onnx":
        try:
            import tf2onnx  # noqa: F401
        except ImportError:
            raise ExportError(
                "ONNX export needs tf2onnx: pip install 'esc-pipeline[export]'"
            ) from None
    config = runs.get_config(run_id)
    aggregation = TrialConfig.from_dict(config.get("training", {})).test_aggregation
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="esc-export-") as tmp:
        members = load_members(runs, run_id, Path(tmp), None if trial is None else [trial])
        model = inference_model([(m, n) for _, m, n in members])
        model(np.zeros((1, *model.input_shape[1:]), dtype=np.float32))  # the ONNX path needs it
        target = out / _FILES[fmt]
        kind = {"savedmodel": "tf_saved_model", "tflite": "litert", "onnx": "onnx"}[fmt]
        with warnings.catch_warnings():
            # tf2onnx probes numpy attributes that numpy 2 deprecates
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"keras\.src\.export")
            model.export(str(target), format=kind, verbose=False)
    shape = [None, *(int(d) for d in model.input_shape[1:])]
    manifest = {
        "format": fmt,
        "file": _FILES[fmt],
        "run_id": run_id,
        "trials": [k for k, _, _ in members],
        "model": config.get("model"),
        "class_names": list(config["class_names"]),
        "feature_config": config["feature_config"],
        "input": {
            "name": INPUT_NAME,
            "shape": shape,
            "dtype": "float32",
            "layout": "(windows, mel bands, frames, [log-mel dB, delta])",
            "normalization": "inside the model (each trial's training statistics)",
        },
        "output": {
            "shape": [None, len(config["class_names"])],
            "meaning": "class probabilities per window; a clip aggregates its windows "
            "as clip_aggregation says",
        },
        "clip_aggregation": {
            "name": aggregation,
            "meaning": {
                "mean_prob": "the mean of the windows' probabilities",
                "mean_log_prob": "the mean of the windows' log-probabilities (log floored "
                "at 1e-7), exponentiated and renormalised to sum to 1",
            }[aggregation],
        },
        "package_versions": package_versions(),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


class ExportedModel:
    """An exported model loaded with its runtime: ``predict(windows) -> probabilities``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path} is missing: not an exported model")
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        self.format = self.manifest["format"]
        self.class_names: list[str] = list(self.manifest["class_names"])
        path = self.directory / self.manifest["file"]
        if self.format == "savedmodel":
            import tensorflow as tf

            self._loaded = tf.saved_model.load(str(path))  # owns the variables serve uses
            self._serve = self._loaded.serve
        elif self.format == "tflite":
            self._interpreter = _tflite_interpreter(path)
        elif self.format == "onnx":
            import onnxruntime as ort

            self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        else:
            raise ExportError(f"unknown exported format {self.format!r}")

    def predict(self, windows: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """``(n, n_mels, frames, 2)`` raw windows -> ``(n, n_classes)`` float32."""
        x = np.asarray(windows, dtype=np.float32)
        parts = [self._run(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        if not parts:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.format == "savedmodel":
            return np.asarray(self._serve(x))
        if self.format == "onnx":
            name = self._session.get_inputs()[0].name
            return np.asarray(self._session.run(None, {name: x})[0])
        it = self._interpreter
        inp, outp = it.get_input_details()[0], it.get_output_details()[0]
        if tuple(inp["shape"]) != x.shape:
            it.resize_tensor_input(inp["index"], x.shape)
            it.allocate_tensors()
        it.set_tensor(inp["index"], x)
        it.invoke()
        return np.array(it.get_tensor(outp["index"]))


def _tflite_interpreter(path: Path) -> Any:
    """LiteRT's interpreter when ``ai-edge-litert`` is installed, else TensorFlow's."""
    from orchestrator.quiet import filtered_stderr

    with filtered_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf

            with warnings.catch_warnings():
                # TensorFlow's copy announces its move to ai-edge-litert; it still works.
                warnings.filterwarnings(
                    "ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated"
                )
                interpreter = tf.lite.Interpreter(model_path=str(path))
        else:
            interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
    return interpreter


def predict_files_exported(
    paths: Sequence[str | Path], model_dir: str | Path, *, top_k: int = 3
) -> list[dict[str, Any]]:
    """Like ``orchestrator.predict.predict_files``, with an exported model (no store)."""
    from orchestrator.predict import file_result
    from workers.features import FeatureConfig
    from workers.featurize import featurize_file

    model = ExportedModel(model_dir)
    features = FeatureConfig.from_dict(model.manifest["feature_config"])
    # a model exported before the manifest recorded it was scored with the mean
    aggregation = model.manifest.get("clip_aggregation", {}).get("name", "mean_prob")
    out: list[dict[str, Any]] = []
    for path in paths:
        try:
            windows = featurize_file(path, features).windows
            if len(windows) == 0:
                raise ValueError("no window could be extracted (clip too short)")
            probs = aggregate_windows(model.predict(windows), aggregation)
        except Exception as exc:  # one bad file must not stop the others
            out.append({"path": str(path), "error": f"{type(exc).__name__}: {exc}"})
            continue
        n_models = len(model.manifest.get("trials") or [1])
        out.append(file_result(path, probs, model.class_names, len(windows), n_models, top_k))
    return out
