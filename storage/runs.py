"""Run records: a training run's config, per-trial artifacts and report.

Layout under the store's root (see ``docs/training.md``)::

    runs/<run_id>/config.json
    runs/<run_id>/trials/<k>/predictions.npz
    runs/<run_id>/trials/<k>/model.keras
    runs/<run_id>/trials/<k>/normalization.json
    runs/<run_id>/trials/<k>/result.json      # written last: the trial is complete
    runs/<run_id>/report.json

Every blob is written atomically (``BlobStore``), so a reader never sees half a file.
"""

from __future__ import annotations

import importlib.metadata
import io
import secrets
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from storage.blobs import BlobStore
from storage.run_records import RunConfig

PREDICTION_KEYS = (
    "clip_index",
    "clip_labels",
    "clip_probs",
    "window_clip_index",
    "window_labels",
    "window_probs",
)
_VERSIONED_PACKAGES = (
    "numpy",
    "keras",
    "tensorflow",
    "tensorflow-cpu",
    "jax",
    "scikit-learn",
    "librosa",
    "zarr",
    "celery",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape a run's results (absent ones left out)."""
    versions = {}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def project_version() -> dict[str, str | None]:
    """``version`` of the installed esc-pipeline and the ``git_commit`` of its checkout."""
    try:
        version: str | None = importlib.metadata.version("esc-pipeline")
    except importlib.metadata.PackageNotFoundError:
        version = None
    try:
        commit: str | None = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"version": version, "git_commit": commit or None}


class RunStore:
    """Reads and writes run records under ``<store_url>/runs/``."""

    def __init__(self, store_url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.store_url = store_url
        self.storage_options = storage_options
        self.blobs = BlobStore(store_url, storage_options)

    @staticmethod
    def _key(run_id: str, *parts: object) -> str:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ValueError(f"invalid run id {run_id!r}")
        return "/".join(["runs", run_id, *(str(p) for p in parts)])

    @staticmethod
    def new_run_id() -> str:
        """A fresh id that sorts by creation time, e.g. ``20261126-183000-ab12``."""
        return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"

    # ------------------------------------------------------------------ runs

    def create_run(self, config: dict[str, Any], run_id: str | None = None) -> str:
        """Record a new run's config (with versions, creation time, store URL); its id.

        ``config`` should hold the plan, trials, model, training config, feature
        config and class names; provenance fields are added here unless present.
        """
        run_id = run_id or self.new_run_id()
        full = dict(config)
        full.setdefault("run_id", run_id)
        full.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
        full.setdefault("store_url", self.store_url)
        full.setdefault("package_versions", package_versions())
        full.setdefault("project", project_version())
        self.blobs.put_json(self._key(run_id, "config.json"), full)
        return run_id

    def get_config(self, run_id: str) -> dict[str, Any]:
        """The run's config; ``FileNotFoundError`` if no such run."""
        try:
            return self.blobs.get_json(self._key(run_id, "config.json"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no run {run_id!r} under {self.store_url}") from None

    def list_runs(self) -> list[str]:
        """Ids of the runs that have a config, oldest first."""
        return [
            r for r in self.blobs.list("runs") if self.blobs.exists(self._key(r, "config.json"))
        ]

    def latest_run(self) -> str | None:
        """The newest run id, or ``None``."""
        runs = self.list_runs()
        return runs[-1] if runs else None

    # ---------------------------------------------------------------- trials

    def save_trial(
        self,
        run_id: str,
        k: int,
        result: dict[str, Any],
        predictions: dict[str, np.ndarray],
        model_path: str | Path,
        normalization: dict[str, Any],
    ) -> None:
        """Write all of trial ``k``'s artifacts, ``result.json`` last.

        Saving again overwrites every artifact; a reader that sees ``result.json``
        sees a complete set.

        Args:
            result: JSON metrics and training record.
            predictions: Arrays named as in :data:`PREDICTION_KEYS`.
            model_path: A local ``.keras`` file (from ``model.save``).
            normalization: ``Normalization.to_dict()``.
        """
        missing = set(PREDICTION_KEYS) - set(predictions)
        if missing:
            raise ValueError(f"predictions lack {sorted(missing)}")
        self.blobs.delete(self._key(run_id, "trials", k, "result.json"))
        buf = io.BytesIO()
        np.savez(buf, **{name: np.asarray(predictions[name]) for name in PREDICTION_KEYS})
        self.blobs.put_bytes(self._key(run_id, "trials", k, "predictions.npz"), buf.getvalue())
        self.blobs.put_file(self._key(run_id, "trials", k, "model.keras"), model_path)
        self.blobs.put_json(self._key(run_id, "trials", k, "normalization.json"), normalization)
        self.blobs.put_json(self._key(run_id, "trials", k, "result.json"), result)

    def trial_result(self, run_id: str, k: int) -> dict[str, Any] | None:
        """Trial ``k``'s ``result.json``, or ``None`` while it is not complete."""
        try:
            return self.blobs.get_json(self._key(run_id, "trials", k, "result.json"))
        except FileNotFoundError:
            return None

    def trial_results(self, run_id: str) -> dict[int, dict[str, Any]]:
        """Complete trials of the run: index -> result."""
        out = {}
        for name in self.blobs.list(self._key(run_id, "trials")):
            if name.isdigit():
                result = self.trial_result(run_id, int(name))
                if result is not None:
                    out[int(name)] = result
        return dict(sorted(out.items()))

    def load_predictions(self, run_id: str, k: int) -> dict[str, np.ndarray]:
        """Trial ``k``'s prediction arrays (see :data:`PREDICTION_KEYS`)."""
        data = self.blobs.get_bytes(self._key(run_id, "trials", k, "predictions.npz"))
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {name: z[name] for name in z.files}

    def load_normalization(self, run_id: str, k: int) -> dict[str, Any]:
        """Trial ``k``'s normalisation statistics (``Normalization.to_dict()`` form)."""
        return self.blobs.get_json(self._key(run_id, "trials", k, "normalization.json"))

    def model_path(self, run_id: str, k: int, local_dir: str | Path) -> Path:
        """Copy trial ``k``'s model to ``local_dir/<run_id>-trial<k>.keras``; that path."""
        target = Path(local_dir) / f"{run_id}-trial{k}.keras"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.blobs.get_file(self._key(run_id, "trials", k, "model.keras"), target)
        return target

    # ---------------------------------------------------------------- report

    def save_report(self, run_id: str, report: dict[str, Any]) -> None:
        """Write the run's ``report.json`` (atomic; same content on every call)."""
        self.blobs.put_json(self._key(run_id, "report.json"), report)

    def get_report(self, run_id: str) -> dict[str, Any] | None:
        """The run's report, or ``None`` before it is finalised."""
        try:
            return self.blobs.get_json(self._key(run_id, "report.json"))
        except FileNotFoundError:
            return None


def run_status(runs: RunStore, run_id: str) -> dict[str, Any]:
    """``n_trials``, ``done`` and ``missing`` trial indices, ``complete``, ``has_report``."""
    config = RunConfig.from_dict(runs.get_config(run_id))
    wanted = [t.index for t in config.trials]
    done = sorted(runs.trial_results(run_id))
    return {
        "run_id": run_id,
        "n_trials": len(wanted),
        "done": [k for k in wanted if k in done],
        "missing": [k for k in wanted if k not in done],
        "complete": all(k in done for k in wanted),
        "has_report": runs.get_report(run_id) is not None,
    }
