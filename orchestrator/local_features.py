"""``orchestrator features FILE...``: window features of local files, without the cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from workers.audio import AudioDecodeError
from workers.features import FeatureConfig
from workers.featurize import featurize_file


def _npy_path(out_dir: Path, stem: str, used: set[str]) -> Path:
    """``out_dir / f"{stem}.npy"``, or ``{stem}-2.npy``, ... when an earlier file had that stem."""
    name = f"{stem}.npy"
    n = 1
    while name in used:
        n += 1
        name = f"{stem}-{n}.npy"
    used.add(name)
    return out_dir / name


def extract_files(
    paths: list[Path], out_dir: Path | None, config: FeatureConfig
) -> list[dict[str, Any]]:
    """Load and extract the window features of each file; save them when ``out_dir`` is given.

    One bad file never stops the others: its entry carries ``error`` and ``None``
    elsewhere.

    Args:
        paths: Audio files.
        out_dir: Folder for one ``<stem>.npy`` per file (float32
            ``(n_windows, n_mels, frames, 2)``), created if needed; ``None``: save nothing.
            A repeated stem gets ``<stem>-2.npy``, ``<stem>-3.npy``, ...
        config: Feature parameters.

    Returns:
        Per file, in order, a JSON-able dict: ``path`` (str), ``shape`` (list of int),
        ``n_windows``, ``n_real``, ``n_samples`` (after resampling and the
        ``max_seconds`` cap), ``seconds`` (``n_samples / sample_rate``), ``npy`` (str or
        ``None``), ``error`` (``None`` or the reason).
    """
    results: list[dict[str, Any]] = []
    used: set[str] = set()
    for path in paths:
        entry: dict[str, Any] = {
            "path": str(path),
            "shape": None,
            "n_windows": None,
            "n_real": None,
            "n_samples": None,
            "seconds": None,
            "npy": None,
            "error": None,
        }
        try:
            features = featurize_file(path, config)
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
                npy = _npy_path(out_dir, Path(path).stem, used)
                np.save(npy, features.windows)
                entry["npy"] = str(npy)
        except AudioDecodeError as exc:
            entry["error"] = exc.reason
        except (ValueError, OSError) as exc:
            entry["error"] = str(exc)
        else:
            entry.update(
                shape=[int(d) for d in features.windows.shape],
                n_windows=int(features.windows.shape[0]),
                n_real=features.n_real,
                n_samples=features.n_samples,
                seconds=features.n_samples / config.sample_rate,
            )
        results.append(entry)
    return results
