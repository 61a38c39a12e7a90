"""This host's write journal: which runs are in progress and which packs they put.

``<cache>/writes/<32 hex>`` is one writer's journal (spec/repository-format.md §16, "Write
journal").  Its first line is ``dtstore-writes 1``; then one pack object name per line, each
appended and fsynced *before* that pack's put starts.  The writer holds an exclusive ``flock`` on
it while it runs; it deletes the file once every pack it names is listed in a segment that has been
put.  A journal that is not locked (its writer died, or failed) names every pack that may be an
orphan of this host, so the next writer adopts just those instead of listing ``data/`` and
``meta/``.  Without a ``writes/`` directory (a new or deleted cache) nothing is known: the writer
lists every pack, as before, and creates the directory afterwards.

On Windows no journal is kept (no ``flock``, and an open file can be neither renamed nor deleted):
``journal_known`` is always false there, so every writer lists, as dtstore did before.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

HEADER = b"dtstore-writes 1\n"
WRITES_DIR = "writes"
_NAME = re.compile(r"^[0-9a-f]{32}$")
_PACK = re.compile(r"^(data|meta)/[0-9a-f]{2}/[0-9a-f]{64}$")
SUPPORTED = sys.platform != "win32"
"""whether this platform keeps a journal (``flock``, and unlinking a file that is open)"""

if SUPPORTED:
    import fcntl


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunJournal:
    """One writer's journal; created on the first ``record`` (nothing is written before a pack)."""

    def __init__(self, cache_path: Path) -> None:
        self._dir = cache_path / WRITES_DIR
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._names = 0

    def record(self, pack_name: str) -> None:
        """Durably note ``pack_name`` before its put starts."""
        if not SUPPORTED:
            return
        line = pack_name.encode() + b"\n"
        with self._lock:
            if self._fd is None:
                self._open()
            assert self._fd is not None
            os.write(self._fd, line)
            os.fsync(self._fd)
            self._names += 1

    def _open(self) -> None:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = os.urandom(16).hex()
        tmp = self._dir / f".tmp-{name}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            # locked before it has its final name: a scanner never sees a live journal unlocked
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, HEADER)
            os.fsync(fd)
            final = self._dir / name
            os.rename(tmp, final)
            _fsync_dir(self._dir)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        self._fd, self._path = fd, final

    def all_indexed(self) -> None:
        """Every pack recorded so far is in a segment that has been put: forget them."""
        with self._lock:
            if self._fd is None or self._path is None:
                return
            self._path.unlink(missing_ok=True)
            _fsync_dir(self._dir)
            os.close(self._fd)
            self._fd, self._path, self._names = None, None, 0

    def close(self) -> None:
        """Release the lock; a journal still present is left for the next writer."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd, self._path = None, None


@dataclass
class LeftOver:
    """Journals of writers that are gone, held locked until ``release``."""

    pack_names: set[str]
    complete: bool
    """False: a journal could not be read whole, so the caller must list every pack"""
    _held: list[tuple[int, Path]]

    def discard(self) -> None:
        """The recorded packs are adopted (or unreadable): delete the journals."""
        for _, path in self._held:
            path.unlink(missing_ok=True)
        if self._held:
            _fsync_dir(self._held[0][1].parent)
        self.release()

    def release(self) -> None:
        for fd, _ in self._held:
            os.close(fd)
        self._held = []


def journal_known(cache_path: Path) -> bool:
    """True once this cache has a write journal: packs of this host's failed runs are recorded."""
    return SUPPORTED and (cache_path / WRITES_DIR).is_dir()


def start_journal(cache_path: Path) -> None:
    """Create the journal directory (after a full listing has adopted every orphan)."""
    if not SUPPORTED:
        return
    path = cache_path / WRITES_DIR
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _fsync_dir(cache_path)


def left_over(cache_path: Path) -> LeftOver:
    """The journals no live writer holds, locked by this process (live ones are skipped)."""
    names: set[str] = set()
    complete = True
    held: list[tuple[int, Path]] = []
    directory = cache_path / WRITES_DIR
    if not SUPPORTED:
        return LeftOver(names, False, held)
    try:
        entries = sorted(directory.iterdir())
    except FileNotFoundError:
        return LeftOver(names, False, held)
    for path in entries:
        if not _NAME.match(path.name):
            continue  # .tmp-*: a writer between creating and naming its journal (no pack put yet)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live writer: it indexes its own packs
        try:
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(path)
        except FileNotFoundError:
            os.close(fd)  # another writer adopted and deleted it meanwhile
            continue
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read()
        held.append((fd, path))
        if not raw.startswith(HEADER):
            if len(raw) >= len(HEADER) or not HEADER.startswith(raw):
                complete = False
            continue  # torn header: the writer died before its first pack
        lines = raw[len(HEADER):].split(b"\n")
        # the last piece has no newline: a torn append, whose put never started (the fsync precedes it)
        for line in lines[:-1]:
            text = line.decode("ascii", "replace")
            if _PACK.match(text):
                names.add(text)
            else:
                complete = False
    return LeftOver(names, complete, held)
