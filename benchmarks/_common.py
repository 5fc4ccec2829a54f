"""What the benchmark scripts share; everything they measure is production code.

Scripts import it as ``_common`` (a script's own folder is on ``sys.path``).
"""

from __future__ import annotations

import csv
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from orchestrator.datasets import scan_dataset
from storage.feature_store import FeatureStore
from storage.manifest import Manifest
from storage.store_layout import create_or_extend
from workers.features import FeatureConfig
from workers.featurize import featurize_file

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SUBSET = SHARED_DATA / "us8k-subset" / "UrbanSound8K"


def subset_dataset(source: Path, out: Path, *, limit: int, copies: int = 1) -> Path:
    """A dataset of the first ``limit`` present clips of ``source``, ``copies`` times over.

    Clips are taken in (fold, file name) order; files are hard links (copies where
    links fail). Copy ``k`` > 0 of ``<fsID>-<rest>.wav`` is named
    ``<fsID + k * 10**7>-<rest>.wav`` with a metadata row of its own (same fold and
    class), so every copy is a distinct clip to the scanner and the store.
    Returns the new ``UrbanSound8K`` folder under ``out``.
    """
    with (source / "metadata" / "UrbanSound8K.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = [
            r
            for r in reader
            if (source / "audio" / f"fold{r['fold']}" / r["slice_file_name"]).is_file()
        ]
    rows.sort(key=lambda r: (int(r["fold"]), r["slice_file_name"]))
    root = out / "UrbanSound8K"
    (root / "metadata").mkdir(parents=True)
    written = []
    for row in rows[:limit]:
        rel = Path("audio") / f"fold{row['fold']}" / row["slice_file_name"]
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        _link(source / rel, target)
        written.append(row)
        fsid, rest = row["slice_file_name"].split("-", 1)
        for k in range(1, copies):
            name = f"{int(fsid) + k * 10**7}-{rest}"
            _link(target, target.with_name(name))
            written.append({**row, "slice_file_name": name, "fsID": name.split("-")[0]})
    with (root / "metadata" / "UrbanSound8K.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(written)
    return root


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def layout_store(url: str, manifest: Manifest, config: FeatureConfig) -> FeatureStore:
    """Create (or extend) the store at ``url`` for ``manifest``, as ``submit-dataset`` does."""
    store, _ = create_or_extend(
        url, manifest, config.to_dict(), (config.max_windows, *config.window_shape)
    )
    return store


def build_store(data: Path, url: str, config: FeatureConfig | None = None) -> FeatureStore:
    """Extract every clip of ``data`` not yet done into the store at ``url``, in this process.

    The store is created (or extended) as ``submit-dataset`` does, and each clip goes
    through :func:`workers.featurize.featurize_file`, as in a worker; a rerun only
    extracts what is missing.
    """
    config = config or FeatureConfig()
    manifest = scan_dataset(data)
    store = layout_store(url, manifest, config)
    root = Path(manifest.dataset_root)
    done = store.done_mask()
    for i, rel in enumerate(store.rel_paths()):
        if not done[i]:
            f = featurize_file(root / str(rel), config)
            store.write_clip(i, f.windows, n_real=f.n_real, n_samples=f.n_samples)
    return store


def ms_per_call(fn: Callable[[int], object], n: int, *, rounds: int = 1) -> tuple[float, float]:
    """Median over ``rounds`` of (wall, CPU) milliseconds per call of ``fn(i)`` for i < n.

    CPU is this process's user + system time (``time.process_time``).
    """
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            fn(i)
        walls.append((time.perf_counter() - wall) / n * 1e3)
        cpus.append((time.process_time() - cpu) / n * 1e3)
    return statistics.median(walls), statistics.median(cpus)


def worker_tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds so far of a worker's main process and of its pool children together."""
    proc = psutil.Process(pid)
    main = children = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        if p.pid == pid:
            main = t.user + t.system
        else:
            children += t.user + t.system
    return main, children


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's waited-for child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def orchestrator(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``orchestrator ARGS`` in ``env`` to its exit, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], env=env, text=True, capture_output=True
    )


def process_tree_cpu(pid: int) -> float:
    """User + system CPU seconds so far of process ``pid`` and its live descendants,
    each with the children it has reaped (a worker's exited pool children)."""
    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total
