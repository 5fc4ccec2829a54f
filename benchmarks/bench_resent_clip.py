"""What a message costs whose store chunk is already whole (a clip sent again on its own).

A clip's message can arrive after its chunk was written: a retry, a re-enqueued lost
message, a redelivery, ``--batch-size 1`` (each message names one clip, the first of a
chunk computes all of the chunk's clips). ``workers.extraction.extract_jobs`` then only
reads the chunk's ``clip_info`` and reports the clips done; it no longer reads the
chunk's windows back. In one run, on the clips of ../shared/data/us8k-subset (or
generated 4-s clips where it is absent), in one process with the workers' allocator
settings (``workers.allocator.keep_freed_memory``), each clip once per round:

1. ``extract_jobs`` of a one-clip message whose chunk is whole (what such a message
   costs now);
2. ``FeatureStore.read_chunk_windows`` of that chunk (what every such message read as
   well before 86d9342, and threw away);
3. for scale, ``featurize_file`` of the clip (decode and compute its windows: what the
   message would cost if its clip had to be computed).

    .venv/bin/python benchmarks/bench_resent_clip.py [--limit N] [--rounds R]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import SUBSET, layout_store, ms_per_call, subset_dataset

from contract.wire import ExtractJob
from orchestrator.datasets import scan_dataset
from orchestrator.synthetic import make_synthetic_dataset
from workers.allocator import keep_freed_memory
from workers.extraction import extract_jobs
from workers.features import FeatureConfig
from workers.featurize import featurize_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=128, help="clips (default 128)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per row (median)")
    args = parser.parse_args()
    allocator = "freed memory kept, as in workers" if keep_freed_memory() else "no mallopt"

    with tempfile.TemporaryDirectory(prefix="bench-resent-") as tmp:
        work = Path(tmp)
        if SUBSET.is_dir():
            data, source = subset_dataset(SUBSET, work / "data", limit=args.limit), "us8k-subset"
        else:
            per_class = max(1, args.limit // 10)
            data = make_synthetic_dataset(
                work / "data", n_classes=10, folds=1, clips_per_class_per_fold=per_class, seed=0
            )
            source = "generated"
        config = FeatureConfig()
        manifest = scan_dataset(data)
        store = layout_store(str(work / "f.zarr"), manifest, config)
        rel = store.rel_paths()
        jobs = [
            ExtractJob("s-bench", store.url, store.dataset_root, str(rel[i]), i, store.generation)
            for i in range(store.n_clips)
        ]
        per = store.clips_per_chunk
        for start in range(0, store.n_clips, per):  # every chunk written once, as a batch does
            result = extract_jobs(jobs[start : start + per], store)
            assert not result.failed and not result.refused, result.failed
        n = store.n_clips
        root = Path(manifest.dataset_root)

        rows = [
            (
                "one-clip message of a whole chunk (`extract_jobs`)",
                ms_per_call(lambda i: extract_jobs([jobs[i]], store), n, rounds=args.rounds),
            ),
            (
                "its chunk's windows read back (what it also read before)",
                ms_per_call(
                    lambda i: store.read_chunk_windows(store.chunk_of(i)), n, rounds=args.rounds
                ),
            ),
            (
                "the clip decoded and computed (`featurize_file`), for scale",
                ms_per_call(
                    lambda i: featurize_file(root / str(rel[i]), config), n, rounds=args.rounds
                ),
            ),
        ]
        chunk_mb = per * config.max_windows * int(np.prod(config.window_shape)) * 4 / 1e6
        print(
            f"{n} clips ({source}), {per} per chunk, windows chunk {chunk_mb:.1f} MB; "
            f"median of {args.rounds} rounds, one process, {allocator}\n"
        )
        print("| per message | wall ms | CPU ms |")
        print("|---|---:|---:|")
        for name, (wall, cpu) in rows:
            print(f"| {name} | {wall:.3f} | {cpu:.3f} |")


if __name__ == "__main__":
    main()
