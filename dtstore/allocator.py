"""glibc's allocator, told to keep the memory a backup frees for the next blocks and packs.

A backup allocates and frees ~2 GiB of short-lived buffers per GiB it reads (compressed and sealed
chunks of a few hundred KiB, on every worker thread).  By default glibc hands freed memory back to
the kernel once twice its adaptive mmap threshold lies free at the top of an arena, and the next
allocation faults the pages in again and has them zeroed: measured on a 1 GiB first backup of
binary pages (bench/README.md, 4 December), 390,000-420,000 page faults and ~2.1 s of system time,
against 34,000-35,000 and 1.2-1.5 s with the settings below, for the same peak RSS (the KDF's
64 MiB stays the peak).

``M_MMAP_THRESHOLD``: allocations below 4 MiB (every chunk, compressed or sealed) come from the
arenas, not from their own ``mmap``; ``M_TRIM_THRESHOLD``: an arena keeps up to 32 MiB free at its
top.  Process-wide and idempotent; elsewhere than glibc (musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import sys
import threading

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 32 << 20

_lock = threading.Lock()
_done = False


def keep_freed_memory() -> bool:
    """Apply the settings once per process; True if glibc took them."""
    global _done
    with _lock:
        if _done:
            return True
        _done = _apply()
        return _done


def _apply() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # here: only a command that writes packs pays for the import (~2 ms)

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):  # no mallopt to be had
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
