"""A repository in a local folder: atomic, durable writes (temporary file, fsync, rename, fsync dir)."""

from __future__ import annotations

import datetime as dt
import errno
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from dtstore.errors import BlobNotFound, StorageAuthError, StorageError
from dtstore.storage.base import BlobInfo, Capabilities


class LocalStore:
    capabilities = Capabilities(connections=2, local=True)

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        """``durable=False`` skips the fsyncs, for caches whose loss only costs a download."""
        self.root = Path(root).absolute()
        self._root = str(self.root)
        self._durable = durable

    @property
    def durable(self) -> bool:
        return self._durable

    def describe(self) -> str:
        return str(self.root)

    def _path(self, name: str) -> Path:
        return self.root / name

    def _file(self, name: str) -> str:
        """The path of ``name`` as a string: a read of a small object (check and prune read
        thousands) does not pay for building a ``Path``."""
        return os.path.join(self._root, name)

    def get(self, name: str) -> bytes:
        try:
            with open(self._file(name), "rb") as f:
                return f.read()
        except OSError as exc:
            raise _translate(exc, "read", name, self) from exc

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        try:
            with open(self._file(name), "rb") as f:
                data = os.pread(f.fileno(), length, offset)
        except OSError as exc:
            raise _translate(exc, "read", name, self) from exc
        if len(data) != length:
            raise StorageError(f"object {name} is shorter than expected (wanted {offset}+{length})")
        return data

    def put(self, name: str, data: bytes) -> None:
        self.put_parts(name, (data,))

    def put_parts(self, name: str, parts: Sequence[bytes]) -> None:
        """One object from its parts in order, written as they are (a pack is never joined into one
        16 MiB buffer first: no copy, no page faults for it)."""
        self.stage_parts(name, parts).commit()

    def stage_parts(self, name: str, parts: Sequence[bytes]) -> StagedPut:
        """``put_parts`` in two steps: the bytes go to a temporary file now, and ``commit`` makes
        them durable and visible (fsync, rename, fsync of the directory).  A writer frees its buffers
        as soon as this returns and leaves the wait for the disk to another thread."""
        path = self._path(name)
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, _NEW_FILE, 0o600)
        except OSError as exc:
            raise _translate(exc, "write", name, self) from exc
        staged = StagedPut(self, name, fd, tmp, path)
        try:
            _write_all(fd, parts)
        except OSError as exc:
            staged.abort()
            raise _translate(exc, "write", name, self) from exc
        return staged

    def open_spool(self, directory: str) -> LocalSpool:
        """An object written piece by piece into ``directory/.tmp-<32 hex>`` ([N2]) and renamed to
        its name at commit: a pack goes to the disk as it fills instead of waiting whole in memory."""
        folder = self._path(directory)
        tmp = folder / f".tmp-{uuid.uuid4().hex}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, _NEW_FILE, 0o600)
        except OSError as exc:
            raise _translate(exc, "write", f"{directory}/{tmp.name}", self) from exc
        return LocalSpool(self, fd, tmp)

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def size(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except OSError as exc:
            raise _translate(exc, "stat", name, self) from exc

    def list(self, prefix: str, *, temporary: bool = False) -> Iterator[BlobInfo]:
        """``temporary``: only the ``.tmp-`` names ([N2]) instead, for prune's cleanup."""
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return
        root = str(self.root)
        strip = len(root) if root.endswith(os.sep) else len(root) + 1  # os.walk's paths start with root
        try:
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames.sort()
                for filename in sorted(filenames):
                    if filename.startswith(".tmp-") != temporary:
                        continue
                    full = os.path.join(dirpath, filename)
                    try:
                        st = os.stat(full)
                    except FileNotFoundError:  # deleted since the directory was read
                        continue
                    name = full[strip:].replace(os.sep, "/")  # relpath: ~60 % of a listing's time
                    yield BlobInfo(name, st.st_size, dt.datetime.fromtimestamp(st.st_mtime, dt.UTC))
        except OSError as exc:
            raise _translate(exc, "list", prefix, self) from exc

    def list_temporary(self) -> Iterator[BlobInfo]:
        return self.list("", temporary=True)

    def delete(self, name: str) -> None:
        try:
            self._path(name).unlink(missing_ok=True)
        except OSError as exc:
            raise _translate(exc, "delete", name, self) from exc

    def close(self) -> None:
        pass


class StagedPut:
    """An object written to its temporary file, not yet durable nor visible (``stage_parts``)."""

    def __init__(self, store: LocalStore, name: str, fd: int, tmp: Path, path: Path) -> None:
        self._store, self._name, self._fd, self._tmp, self._path = store, name, fd, tmp, path

    def commit(self) -> None:
        """fsync, rename into place, fsync the directory; on failure the temporary file is removed.
        Never retried: after a failed fsync the kernel may have dropped the bytes, so a second one
        proves nothing (the caller writes the object again from its source, or fails)."""
        try:
            try:
                if self._store.durable:
                    os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1
            os.replace(self._tmp, self._path)
            if self._store.durable:
                _fsync_dir(self._path.parent)
        except OSError as exc:
            self._tmp.unlink(missing_ok=True)
            raise _translate(exc, "write", self._name, self._store) from exc

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._tmp.unlink(missing_ok=True)


class LocalSpool:
    """A temporary file written in order (``open_spool``); ``stage`` hands it to a StagedPut."""

    def __init__(self, store: LocalStore, fd: int, tmp: Path) -> None:
        self._store, self._fd, self._tmp = store, fd, tmp
        self._size = 0
        """bytes written by calls that returned: a call made again after a failure starts here"""
        self._at_size = True

    def write(self, parts: Sequence[bytes]) -> None:
        try:
            if not self._at_size:
                os.lseek(self._fd, self._size, os.SEEK_SET)
            self._at_size = False
            _write_all(self._fd, parts)
        except OSError as exc:
            raise _translate(exc, "write", self._tmp.name, self._store) from exc
        self._size += sum(len(p) for p in parts)
        self._at_size = True

    def stage(self, name: str) -> StagedPut:
        path = self._store._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _translate(exc, "write", name, self._store) from exc
        staged = StagedPut(self._store, name, self._fd, self._tmp, path)
        self._fd = -1
        return staged

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _translate(exc: OSError, op: str, name: str, store: LocalStore) -> StorageError:
    where = f"{name} in {store.describe()}"
    if isinstance(exc, FileNotFoundError):
        return BlobNotFound(f"unable to {op} {where}: it does not exist")
    if isinstance(exc, PermissionError):
        return StorageAuthError(f"unable to {op} {where}: permission denied")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"unable to {op} {where}: no space left on the device")
    return StorageError(f"unable to {op} {where}: {exc.strerror or exc}", transient=exc.errno == errno.EIO)


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
"""a new file of its own; O_BINARY: on Windows, os.open is otherwise in text mode and writes
every LF byte as CR LF"""

WRITEV_PARTS = 512
"""parts per writev call (IOV_MAX is 1024 on Linux)"""


def _write_all(fd: int, parts: Sequence[bytes]) -> None:
    writev = getattr(os, "writev", None)  # POSIX; Windows writes part by part
    if writev is None:
        for part in parts:
            view = memoryview(part)
            while view:
                view = view[os.write(fd, view) :]
        return
    pending = [memoryview(p) for p in parts if len(p)]
    while pending:
        written = writev(fd, pending[:WRITEV_PARTS])
        while written and pending:  # drop what was written, keep the rest of a part cut short
            if written >= len(pending[0]):
                written -= len(pending.pop(0))
            else:
                pending[0], written = pending[0][written:], 0
