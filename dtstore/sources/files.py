"""Files and directory trees.  Unreadable entries are reported and skipped (exit code 3)."""

from __future__ import annotations

import os
import stat as statmod
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, BinaryIO

from dtstore.errors import UsageError
from dtstore.sources.base import Entry, FileIdentity, Reporter, mode_type
from dtstore.sources.excludes import NO_EXCLUDES, Excludes
from dtstore.sources.readahead import READ_AHEAD_BYTES, ReadAhead


def stored_path(path: bytes) -> bytes:
    """Absolute local path → path inside the snapshot (no leading slash)."""
    return os.path.normpath(path).lstrip(b"/") or b"."


class FilesSource:
    """Files and trees below ``paths``, less what ``excludes`` leaves out (``dtstore.Excludes``)."""

    kind = "files"
    estimate_concurrently = True

    def __init__(self, paths: Sequence[str | bytes], excludes: Excludes | None = None) -> None:
        if not paths:
            raise UsageError("no paths to back up")
        self._paths = [os.fsencode(os.path.abspath(p)) for p in paths]
        for raw in self._paths:
            if not os.path.lexists(raw):
                raise UsageError(f"{os.fsdecode(raw)}: no such file or directory")
        self.excludes = excludes or NO_EXCLUDES
        self._ahead: ReadAhead | None = None

    @property
    def source_id(self) -> str:
        return "files:" + ",".join(sorted(os.fsdecode(p) for p in self._paths))

    @property
    def display_paths(self) -> list[str]:
        return [os.fsdecode(p) for p in self._paths]

    def metadata(self) -> dict[str, Any]:
        if self.excludes.is_empty():
            return {}
        ex = self.excludes
        recorded = {key: list(value) if isinstance(value, tuple) else value
                    for key in Excludes.KEYS if (value := getattr(ex, key)) not in ((), False, None)}
        return {"excludes": recorded}

    def read_ahead(self, limit: int = READ_AHEAD_BYTES) -> None:
        """Start reading the first file ``entries`` will yield (``dtstore.sources.readahead``): called
        before the repository is opened, so reading overlaps the password KDF."""
        for entry in self._first_files():
            self._ahead = ReadAhead(_local_path(entry), limit)
            return

    def _first_files(self) -> Iterator[Entry]:
        top = sorted(self._paths)[0]
        try:
            device = os.lstat(top).st_dev
        except OSError:
            return
        yield from (e for e in self._walk(top, _SILENT, device, []) if e.type == "file")

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        ahead, self._ahead = self._ahead, None
        try:
            for top in sorted(self._paths):
                try:
                    device = os.lstat(top).st_dev
                except OSError:
                    device = -1
                for entry in self._walk(top, reporter, device, []):
                    if ahead is not None and entry.type == "file":
                        entry.opener = _opener(_local_path(entry), ahead, entry.identity)
                    yield entry
        finally:
            if ahead is not None:
                ahead.discard()  # after the backup: whatever it did not take is closed

    def estimated_size(self, stop: threading.Event | None = None) -> int:
        """The bytes of the regular files ``entries`` would yield (one walk of the metadata); it
        gives up, returning what it has counted, once ``stop`` is set."""
        total = 0
        for top in sorted(self._paths):
            try:
                device = os.lstat(top).st_dev
            except OSError:
                continue
            for entry in self._walk(top, _SILENT, device, []):
                if stop is not None and stop.is_set():
                    return total
                total += entry.size or 0
        return total

    def _walk(self, path: bytes, reporter: Reporter, device: int, pending: list[Entry]) -> Iterator[Entry]:
        """``pending``: directories left out by a pattern that a ``!`` pattern may re-include below;
        each is yielded just before the first entry below it that is kept."""
        try:
            st = os.lstat(path)
        except OSError as exc:
            reporter.warn(stored_path(path), f"cannot stat: {exc.strerror}")
            return
        ex = self.excludes
        kind = mode_type(st.st_mode)
        excluded = ex.path_excluded(os.fsdecode(path))
        if excluded and not (kind == "dir" and ex.may_reinclude_below(os.fsdecode(path))):
            return
        if ex.one_file_system and st.st_dev != device and kind != "dir":
            return
        if kind == "file" and ex.size_excluded(st.st_size):
            return
        entry = _entry(path, st)
        if entry is None:
            if not excluded:
                reporter.warn(stored_path(path), "skipped: not a regular file, directory or symlink")
            return
        if excluded:
            pending.append(entry)
        else:
            yield from pending
            pending.clear()
            yield entry
        if entry.type == "dir" and not (ex.one_file_system and st.st_dev != device):
            try:
                names = ex.markers_in(path) or sorted(e.name for e in os.scandir(path))
            except OSError as exc:
                if not excluded:
                    reporter.warn(stored_path(path), f"cannot list directory: {exc.strerror}")
                names = []
            for name in names:
                yield from self._walk(os.path.join(path, name), reporter, device, pending)
        if pending and pending[-1] is entry:
            pending.pop()


class _Silent:
    def warn(self, path: bytes, message: str) -> None:
        return None


_SILENT = _Silent()


def _entry(path: bytes, st: os.stat_result) -> Entry | None:
    kind = mode_type(st.st_mode)
    if kind is None:
        return None
    entry = Entry(path=stored_path(path), type=kind, mode=statmod.S_IMODE(st.st_mode), uid=st.st_uid,
                  gid=st.st_gid, mtime_ns=st.st_mtime_ns)
    if kind == "file":
        entry.size = st.st_size
        entry.identity = FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        entry.opener = _opener(path)
        entry.cache_key = b"file:" + path
    elif kind == "symlink":
        entry.target = os.readlink(path)
    return entry


def _local_path(entry: Entry) -> bytes:
    """The path on disk of a file entry (``cache_key`` is ``file:`` and that path)."""
    assert entry.cache_key is not None
    return entry.cache_key[len(b"file:"):]


def _opener(path: bytes, ahead: ReadAhead | None = None,
            identity: FileIdentity | None = None) -> Callable[[], AbstractContextManager[BinaryIO]]:
    def open_file() -> AbstractContextManager[BinaryIO]:
        taken = ahead.take(identity) if ahead is not None and ahead.path == path else None
        return taken if taken is not None else open(path, "rb", buffering=0)

    return open_file
