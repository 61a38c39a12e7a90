"""Keeping an LMDB file's memory map out of the process's resident set.

LMDB reads through a shared memory map of its file, and every page touched stays mapped into the
process: with random lookups in a large table the kernel maps up to 64 KiB around each faulted page
(fault-around), so the resident size grows with the table (10 million chunks: gigabytes of page
cache counted as the process's RSS).  ``MappedPages.touched`` paces looks at the process's resident
file pages, and once they have grown by a budget, ``shed`` drops the mapping's pages from the process
with Linux ``madvise(MADV_DONTNEED)``: on a shared file mapping the data stays in the file and the page
cache, and is faulted back in when next read, so it is safe beside open transactions and other
threads.  The growth is measured, not estimated: how much a lookup maps depends on the kernel (here
80 KiB to 700 KiB).  Elsewhere than Linux it does nothing.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import lmdb

_MADV_DONTNEED = 4
LOOKUP_BYTES = 128 << 10
"""a guess at what one random lookup maps, only to pace the checks (the kernel decides: fault-around
maps 64 KiB around a faulted page, readahead and large folios more)"""
CHECK_EVERY = 8 << 20
"""guessed bytes mapped between two looks at the process's resident file pages (``/proc/self/statm``)"""
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if sys.platform == "linux" else 4096
_madvise: Callable[[int, int, int], int] | None = None
_madvise_loaded = False
_load_lock = threading.Lock()


def _load_madvise() -> Callable[[int, int, int], int] | None:
    """libc's ``madvise``, loaded on first use (ctypes costs start-up time every command would pay)."""
    global _madvise, _madvise_loaded
    with _load_lock:
        if not _madvise_loaded:
            _madvise_loaded = True
            if sys.platform == "linux":
                import ctypes

                try:
                    fn = ctypes.CDLL(None, use_errno=True).madvise
                except (OSError, AttributeError):
                    return None
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                fn.restype = ctypes.c_int
                _madvise = fn
    return _madvise


def file_resident() -> int | None:
    """Bytes of this process's resident file-backed (and shared) pages; None where unknown."""
    if sys.platform != "linux":
        return None
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[2]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None



def find_mapping(path: Path) -> tuple[int, int] | None:
    """(start, length) of this process's mapping of ``path`` (LMDB maps its file once, whole)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].rstrip("\n") == str(path):
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    return start, end - start
    except OSError:
        pass
    return None


class _Pacing:
    """One pace for every mapping of the process: the resident file pages are one number, so when
    they have grown by a budget, every registered mapping is shed (measuring each mapping alone
    would mean parsing ``/proc/self/smaps``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.guessed = 0
        self.baseline = file_resident()
        self.mappings: set[MappedPages] = set()


_PACING = _Pacing()


class MappedPages:
    """The mapped pages of one LMDB environment (``data_file`` is its ``data.mdb``), registered for
    shedding until ``close``."""

    def __init__(self, env: lmdb.Environment, data_file: Path) -> None:
        self._env = env
        self._file = data_file
        self._mapping: tuple[int, int] | None = None
        self._looked_up = False
        self.sheds = 0
        with _PACING.lock:
            _PACING.mappings.add(self)

    def close(self) -> None:
        """Before the environment closes: no more sheds of it."""
        with _PACING.lock:
            _PACING.mappings.discard(self)

    def touched(self, lookups: int, budget: int, streamed: int = 0) -> None:
        """``lookups`` random lookups and ``streamed`` bytes read or written in key order were done;
        once the process's resident file pages have grown by ``budget`` bytes since the last shed
        (0: never), shed every registered mapping, which bounds their resident pages at about
        ``budget`` together."""
        pacing = _PACING
        if not budget or pacing.baseline is None:
            return
        pacing.guessed += lookups * LOOKUP_BYTES + streamed
        if pacing.guessed < CHECK_EVERY:
            return
        with pacing.lock:
            pacing.guessed = 0
            resident = file_resident()
            if resident is None or resident - pacing.baseline < budget:
                return
            for mapping in pacing.mappings:
                mapping.shed()
            pacing.baseline = file_resident() or 0

    def shed(self) -> None:
        madvise = _load_madvise()
        if madvise is None:
            return
        if not self._looked_up:
            self._mapping, self._looked_up = find_mapping(self._file), True
        if self._mapping is None:
            return
        start, length = self._mapping
        info, page = self._env.info(), self._env.stat()["psize"]
        used = min(length, (int(info["last_pgno"]) + 1) * int(page))
        if madvise(start, used, _MADV_DONTNEED) == 0:
            self.sheds += 1
