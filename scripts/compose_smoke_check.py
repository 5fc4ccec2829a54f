"""Checks of scripts/compose-smoke.sh, run inside the orchestrator container.

    python compose_smoke_check.py store STORE_URL DATASET_ROOT   # every clip once
    python compose_smoke_check.py run STORE_URL RUN_ID TRIALS     # one result per trial

Prints one JSON line; exits 1 when a check fails.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from pathlib import Path

from storage.feature_store import FeatureStore
from storage.runs import RunStore


def check_store(store_url: str, root: str) -> list[str]:
    meta = next(Path(root).glob("**/metadata/UrbanSound8K.csv"))
    with meta.open() as f:
        expected = sorted(r["slice_file_name"] for r in csv.DictReader(f))
    store = FeatureStore.open(store_url)
    rel = [Path(str(p)).name for p in store.rel_paths()]
    dupes = [p for p, n in Counter(rel).items() if n > 1]
    done = store.done_mask()
    errors = []
    if store.n_clips != len(expected):
        errors.append(f"store has {store.n_clips} clips, metadata {len(expected)}")
    if dupes:
        errors.append(f"{len(dupes)} clips twice in the store: {dupes[:5]}")
    if sorted(rel) != expected:
        errors.append("the store's clips are not the dataset's")
    if not done.all():
        errors.append(f"{int((~done).sum())} clips not done")
    print(json.dumps({"check": "store", "clips": store.n_clips, "done": int(done.sum())}))
    return errors


def check_run(store_url: str, run_id: str, trials: int) -> list[str]:
    runs = RunStore(store_url)
    results = runs.trial_results(run_id)
    report = runs.get_report(run_id) or {}
    rows = report.get("trials", [])
    errors = []
    if sorted(results) != list(range(trials)):
        errors.append(f"trial results {sorted(results)}, expected 0..{trials - 1}")
    if sorted(r["trial"] for r in rows) != list(range(trials)):
        errors.append(f"report rows {[r['trial'] for r in rows]}")
    if not report.get("complete"):
        errors.append("report not complete")
    print(json.dumps({"check": "run", "run_id": run_id, "trials": sorted(results)}))
    return errors


def main(argv: list[str]) -> int:
    kind, *args = argv
    errors = check_store(*args) if kind == "store" else check_run(args[0], args[1], int(args[2]))
    for e in errors:
        print(f"FAILED: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
