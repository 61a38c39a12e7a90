"""Files and directory trees.  Unreadable entries are reported and skipped (exit code 3)."""

from __future__ import annotations

import os
import stat as statmod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, BinaryIO

from dtstore.errors import UsageError
from dtstore.sources.base import Entry, FileIdentity, Reporter, mode_type


def stored_path(path: bytes) -> bytes:
    """Absolute local path → path inside the snapshot (no leading slash)."""
    return os.path.normpath(path).lstrip(b"/") or b"."


class FilesSource:
    kind = "files"

    def __init__(self, paths: list[str]) -> None:
        if not paths:
            raise UsageError("no paths to back up")
        self._paths = [os.fsencode(os.path.abspath(p)) for p in paths]
        for raw in self._paths:
            if not os.path.lexists(raw):
                raise UsageError(f"{os.fsdecode(raw)}: no such file or directory")

    @property
    def source_id(self) -> str:
        return "files:" + ",".join(sorted(os.fsdecode(p) for p in self._paths))

    @property
    def display_paths(self) -> list[str]:
        return [os.fsdecode(p) for p in self._paths]

    def metadata(self) -> dict[str, Any]:
        return {}

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        for top in sorted(self._paths):
            yield from self._walk(top, reporter)

    def _walk(self, path: bytes, reporter: Reporter) -> Iterator[Entry]:
        try:
            st = os.lstat(path)
        except OSError as exc:
            reporter.warn(stored_path(path), f"cannot stat: {exc.strerror}")
            return
        entry = _entry(path, st)
        if entry is None:
            reporter.warn(stored_path(path), "skipped: not a regular file, directory or symlink")
            return
        yield entry
        if entry.type != "dir":
            return
        try:
            names = sorted(e.name for e in os.scandir(path))
        except OSError as exc:
            reporter.warn(stored_path(path), f"cannot list directory: {exc.strerror}")
            return
        for name in names:
            yield from self._walk(os.path.join(path, name), reporter)


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


def _opener(path: bytes) -> Callable[[], AbstractContextManager[BinaryIO]]:
    def open_file() -> AbstractContextManager[BinaryIO]:
        return open(path, "rb", buffering=0)

    return open_file
