"""The synthetic sounds of ``orchestrator.synthetic`` written in the other dataset layouts.

- ``esc50``: ``ESC-50-master/meta/esc50.csv`` + ``audio/<fold>-<src>-<take>-<target>.wav``,
  5 s at 44.1 kHz; targets are ESC-10's (0, 1, 10, 11, ...), ``esc10`` is true for
  every other class, so ``--subset esc10`` keeps non-contiguous ids.
- ``folders``: ``class-folders/<class>/<fold>-<src>-<take>.wav`` (ESC-10's original
  naming: ``--fold-pattern '^(\\d+)-'``, ``--group-pattern '^\\d+-(\\d+)-'``).
- ``csv``: ``csv-dataset/clips/<class>-<src>-<take>.wav`` + ``csv-dataset/labels.csv``
  with columns ``path, label, fold, group``.

Same arguments and seed give byte-identical files. See ``docs/datasets.md``.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from orchestrator.synthetic import (
    SYNTHETIC_CLASSES,
    _check_arguments,
    _recording_sizes,
    make_synthetic_dataset,
    render_clip,
)

SYNTHETIC_LAYOUTS: tuple[str, ...] = ("urbansound8k", "esc50", "folders", "csv")
ESC10_TARGETS: tuple[int, ...] = (0, 1, 10, 11, 12, 20, 21, 38, 40, 41)
ESC_SECONDS = 5.0
ESC_SAMPLE_RATE = 44100
FIRST_SRC = 100000
ROOT_NAMES = {"esc50": "ESC-50-master", "folders": "class-folders", "csv": "csv-dataset"}


def _takes(
    n_classes: int, folds: int, clips_per_class_per_fold: int, seed: int
) -> list[tuple[int, int, int, int]]:
    """``(fold, class_id, src, n_takes)`` of every recording, in writing order."""
    rng = np.random.default_rng([seed, n_classes, folds, clips_per_class_per_fold, 50])
    out = []
    src = FIRST_SRC
    for fold in range(1, folds + 1):
        for class_id in range(n_classes):
            for size in _recording_sizes(rng, clips_per_class_per_fold):
                out.append((fold, class_id, src, size))
                src += 1
    return out


def _render_takes(
    seed: int, fold: int, class_id: int, src: int, n_takes: int, seconds: float, sr: int
) -> list[np.ndarray]:
    rng = np.random.default_rng([seed, src, class_id, fold, 50])
    freq_scale = rng.uniform(0.85, 1.15)
    cls = SYNTHETIC_CLASSES[class_id]
    return [render_clip(rng, cls, freq_scale, seconds, sr) for _ in range(n_takes)]


def _prepare(root: Path, overwrite: bool) -> None:
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{str(root)!r} already exists and is not empty")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)


def make_layout_dataset(
    out_dir: Path,
    layout: str = "urbansound8k",
    *,
    n_classes: int = 10,
    folds: int = 5,
    clips_per_class_per_fold: int = 4,
    seconds: float | None = None,
    sample_rate: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic dataset in ``layout`` under ``out_dir``; its root.

    ``seconds``/``sample_rate`` default to 4 s / 22,050 Hz for ``urbansound8k`` and
    5 s / 44,100 Hz (ESC's) for the others. Half the clips are shorter than
    ``seconds`` (see ``orchestrator.synthetic.render_clip``).

    Raises:
        ValueError: unknown layout or an argument out of range.
        FileExistsError: the root exists, is not empty and ``overwrite`` is false.
    """
    if layout not in SYNTHETIC_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {list(SYNTHETIC_LAYOUTS)}")
    if layout == "urbansound8k":
        return make_synthetic_dataset(
            out_dir,
            n_classes=n_classes,
            folds=folds,
            clips_per_class_per_fold=clips_per_class_per_fold,
            seconds=seconds or 4.0,
            sample_rate=sample_rate or 22050,
            seed=seed,
            overwrite=overwrite,
        )
    seconds = seconds or ESC_SECONDS
    sr = sample_rate or ESC_SAMPLE_RATE
    _check_arguments(n_classes, folds, clips_per_class_per_fold, seconds, sr)
    root = Path(out_dir) / ROOT_NAMES[layout]
    _prepare(root, overwrite)
    rows: list[list[str]] = []
    for fold, class_id, src, n_takes in _takes(n_classes, folds, clips_per_class_per_fold, seed):
        name = SYNTHETIC_CLASSES[class_id].name
        clips = _render_takes(seed, fold, class_id, src, n_takes, seconds, sr)
        for take, samples in enumerate(clips):
            letter = chr(ord("A") + take)
            if layout == "esc50":
                target = ESC10_TARGETS[class_id]
                rel = f"audio/{fold}-{src}-{letter}-{target}.wav"
                esc10 = "True" if class_id % 2 == 0 else "False"
                row = [rel.split("/")[1], str(fold), str(target), name, esc10, str(src), letter]
            elif layout == "folders":
                rel = f"{name}/{fold}-{src}-{letter}.wav"
                row = []
            else:
                rel = f"clips/{name}-{src}-{letter}.wav"
                row = [rel, name, str(fold), str(src)]
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, samples, sr, subtype="PCM_16", format="WAV")
            if row:
                rows.append(row)
    if layout == "esc50":
        header = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
        _write_csv(root / "meta" / "esc50.csv", header, sorted(rows))
    elif layout == "csv":
        _write_csv(root / "labels.csv", ["path", "label", "fold", "group"], sorted(rows))
    return root


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
