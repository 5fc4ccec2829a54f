"""Export a run in every format and compare with the Keras models (docs/deploying.md).

    .venv/bin/python scripts/export_parity.py --store STORE [--run RUN] [--out DIR]

For each format: the size on disk, and the largest absolute difference between the
exported model's probabilities and the Keras ensemble's (each trial's model on its
own standardisation, averaged) over all windows of the trials' test folds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.export import FORMATS, ExportedModel, export_run, load_members  # noqa: E402
from storage.feature_store import FeatureStore  # noqa: E402
from storage.runs import RunStore  # noqa: E402


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--run", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    runs = RunStore(args.store)
    run_id = args.run or runs.latest_run()
    config = runs.get_config(run_id)
    store = FeatureStore.open(args.store)
    windows = store.read_folds(sorted({int(t["test_fold"]) for t in config["trials"]})).windows
    with tempfile.TemporaryDirectory() as tmp:
        members = load_members(runs, run_id, Path(tmp))
        keras_probs = np.mean(
            [np.asarray(m.predict(n.apply(windows), verbose=0)) for _, m, n in members], axis=0
        )
        out = args.out or Path(tmp) / "exported"
        print(f"run {run_id}: {len(members)} trial models, {len(windows)} windows")
        print("| format | size (KB) | max abs difference to Keras |")
        print("|---|---:|---:|")
        for fmt in FORMATS:
            target = out / fmt
            try:
                export_run(runs, run_id, fmt, target)
            except Exception as exc:
                print(f"| {fmt} | - | failed: {type(exc).__name__}: {exc} |")
                continue
            diff = np.abs(ExportedModel(target).predict(windows) - keras_probs).max()
            print(f"| {fmt} | {_size(target) / 1024:.0f} | {diff:.2e} |")


if __name__ == "__main__":
    main()
