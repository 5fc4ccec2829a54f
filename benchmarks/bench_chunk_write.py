"""What one store chunk write costs, and how much of it is the kernel's page cache.

A worker writes each store chunk as a new file (temp file, then rename:
``storage.chunk_writer.LocalChunkWriter``). On a virtual machine a page the guest has
never used before costs far more to fill than one the kernel freed a moment ago, so
the same write costs several times more into a fresh page cache than into pages just
released by deleting files. In one run, for chunks of the default store shape (32
clips x 7 windows x 60 x 41 x 2 float32, 4.4 MB), this measures per chunk:

1. a copy of the chunk in memory (the floor: the bytes must be moved once);
2. ``LocalChunkWriter.write_chunk`` into new files, ``--chunks`` of them (as a
   submission into a new store does);
3. the same again after the files of step 2 were deleted (the kernel reuses the
   pages it just freed).

    .venv/bin/python benchmarks/bench_chunk_write.py [--chunks N] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import zarr
from _common import ms_per_call
from zarr.codecs import BytesCodec

from contract.settings import Settings
from storage.chunk_writer import LocalChunkWriter
from workers.features import FeatureConfig

_CONFIG = FeatureConfig()
CLIPS = 32  # clips per chunk: the default ESC_EXTRACT_BATCH
WINDOWS = _CONFIG.max_windows
BANDS, FRAMES, _ = _CONFIG.window_shape


def _writer(path: Path, n_chunks: int) -> LocalChunkWriter:
    array = zarr.create_array(
        store=str(path),
        shape=(n_chunks * CLIPS, WINDOWS, BANDS, FRAMES, 2),
        chunks=(CLIPS, WINDOWS, BANDS, FRAMES, 2),
        dtype="float32",
        serializer=BytesCodec(),
        compressors=None,
        fill_value=np.nan,
    )
    writer = LocalChunkWriter.for_array(array)
    assert writer is not None, "the array must qualify for direct chunk writes"
    return writer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100, help="chunks per row (default 100)")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: ESC_HOME")
    args = parser.parse_args()
    parent = args.work_dir or Settings.from_env().home
    parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    block = rng.normal(-40, 20, size=(CLIPS, WINDOWS, BANDS, FRAMES, 2)).astype(np.float32)
    out = np.empty_like(block)
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-chunk-write-", dir=parent) as tmp:
        rows.append(
            ("copy in memory (np.copyto)", *ms_per_call(lambda i: np.copyto(out, block), 50))
        )
        for label, name in (("write_chunk, new files", "a"), ("write_chunk, pages freed", "b")):
            writer = _writer(Path(tmp) / f"{name}.zarr", args.chunks)
            rows.append(
                (label, *ms_per_call(lambda i, w=writer: w.write_chunk(i, block), args.chunks))
            )
            if name == "a":
                shutil.rmtree(Path(tmp) / "a.zarr")
    mb = block.nbytes / 1e6
    print(f"\n{'operation':34} {'wall ms/chunk':>14} {'CPU ms/chunk':>13} {'CPU ms/clip':>12}")
    for label, wall, cpu in rows:
        print(f"{label:34} {wall:>14.2f} {cpu:>13.2f} {cpu / CLIPS:>12.3f}")
    print(
        f"\nchunk {mb:.2f} MB ({CLIPS} clips); {args.chunks} chunks per write row; under {parent}"
    )


if __name__ == "__main__":
    main()
