"""Keep freed memory in the process's C heap instead of handing it back at once.

Feature extraction allocates and frees the same few arrays for every clip (a
clip's frames, its spectra, its windows: 0.1-5 MB each). glibc's malloc serves
blocks above its mmap threshold (128 KiB, raised on the fly up to 32 MiB) with
fresh ``mmap`` calls and gives the top of the heap back to the kernel whenever
more than the trim threshold is free. Either way each clip touches new pages, and
every 4 KiB page costs a page fault and a zeroing: about 1,150 faults per clip in
the pure loop, 2,200 in a prefork worker child. With a fixed mmap threshold and a
large trim threshold the pages stay mapped and are reused: about 40 faults per clip
in the loop, 10 in a worker child, and the loop takes two thirds of the time.

The price is memory kept after a peak: at most ``trim_threshold`` bytes of freed
heap per process. For extraction it is none: the pure loop's peak RSS over 785 clips
was 180 MB with and without the setting. Training arrays above the mmap threshold
still come from ``mmap`` and go back when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt(3) parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 256 * 1024 * 1024


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt, macOS no libc.so)
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return libc


def keep_freed_memory(
    *, mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD
) -> bool:
    """Set glibc's mmap and trim thresholds (bytes) for this process and its future forks.

    Returns:
        True if both were set; False where the C library has no ``mallopt`` (then
        nothing changes, and the code is only slower).
    """
    libc = _libc()
    if libc is None:
        return False
    ok_mmap = libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    ok_trim = libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold)) == 1
    return ok_mmap and ok_trim
