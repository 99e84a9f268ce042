"""Process-wide memory allocator setting for the `grow` command.

Noisy growth splits every bf16 weight exactly in float32 chunks of 2 MiB, with a dozen temporaries per chunk.
glibc's malloc serves blocks that size with fresh mmap() calls, or from a heap it trims back to the kernel as
soon as 4 MiB are free at its top, so nearly every temporary pays the page faults of new memory: 0.79 M minor
faults and 7 s of system time in a noisy 8.28 GB grow on the 2-core development VM. Raising the mmap
threshold to 32 MiB and the trim threshold to 256 MiB keeps freed chunks for reuse: 0.18 M faults, wall
17.2 -> 15.3 s (`benchmarks/bench_grow.py`). Setting only the trim threshold is much worse (it freezes the
mmap threshold at 128 KiB: 16 M faults, 43 s), so both are set together.

This is the process's allocator, so only the CLI's grow (a process of its own) calls it, not the library's
grow(); glibc's mallopt through ctypes, skipped where the C library has none (macOS, Windows).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's <malloc.h>
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed on 64-bit
TRIM_THRESHOLD = 256 * 2**20


def keep_freed_memory() -> bool:
    """Let malloc reuse freed blocks up to 32 MiB instead of returning them to the kernel; True if set."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
