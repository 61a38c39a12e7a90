"""Entries a connector yields: directories, files on disk, bytes, and streams of a tool's output.

Every helper here builds a :class:`dtstore.Entry`; the core stores it (``spec/connectors.md`` §2).
Connector items are private to the backup user (mode 0700/0600) and stamped with the time of the run.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from dtstore import clock
from dtstore.connectors import _proc
from dtstore.errors import ConnectorError
from dtstore.sources.base import Entry

BLOCK = 1 << 20
Opener = Callable[[], AbstractContextManager[BinaryIO]]


def now_ns() -> int:
    return int(clock.now().timestamp() * 1_000_000_000)


def dir_entry(path: str) -> Entry:
    return Entry(path=path.encode(), type="dir", mode=0o700, mtime_ns=now_ns())


def file_entry(path: str, opener: Opener, *, size: int | None = None) -> Entry:
    """A stored file whose bytes come from ``opener()`` (read to its end, then ``__exit__``)."""
    return Entry(path=path.encode(), type="file", mode=0o600, mtime_ns=now_ns(), opener=opener, size=size)


def open_path(path: Path) -> AbstractContextManager[BinaryIO]:
    return open(path, "rb", buffering=BLOCK)


def path_entry(path: str, source: Path) -> Entry:
    """A file on this machine's disk (a staged dump, a log file), stored as ``path``."""
    return file_entry(path, partial(open_path, source))


def bytes_entry(path: str, data: bytes) -> Entry:
    return file_entry(path, partial(io.BytesIO, data), size=len(data))


class ChunkStream(io.RawIOBase):
    """An iterator of byte strings as a readable raw stream; ``count`` is what has been read."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._pending = memoryview(nxt)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self.count += n
        return n

    def drain(self) -> None:
        """Consume what is left (the next item starts where this one ends, read or not)."""
        self.count += len(self._pending)
        self._pending = memoryview(b"")
        for chunk in self._chunks:
            self.count += len(chunk)


class _TailKeeper(io.RawIOBase):
    """Passes a stream through, remembering its last ``keep`` bytes (for completion markers)."""

    def __init__(self, raw: BinaryIO, keep: int) -> None:
        self._raw, self._keep, self.tail = raw, keep, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self.tail = (self.tail + bytes(memoryview(buffer)[:n]))[-self._keep :]
        return int(n or 0)


@contextlib.contextmanager
def _open_tool(argv: list[str], env: dict[str, str] | None, secrets: list[str], marker: bytes | None,
               on_done: Callable[[int], None] | None) -> Iterator[BinaryIO]:
    with _proc.ToolProcess(argv, env=_proc.tool_env() if env is None else env, secrets=secrets) as proc:
        keeper = _TailKeeper(proc.stdout, max(len(marker or b""), 1))
        with io.BufferedReader(keeper, BLOCK) as stream:
            yield stream  # type: ignore[misc]
        code = proc.wait()
        if on_done is not None:
            on_done(code)
        proc.check()
        if marker is not None and not keeper.tail.rstrip(b"\r\n").endswith(marker.rstrip(b"\r\n")):
            raise ConnectorError(f"{proc.label} exited 0 but its output does not end with {marker!r}: it is incomplete")


def tool_entry(path: str, argv: list[str], *, env: dict[str, str] | None = None, secrets: list[str] | None = None,
               completion_marker: bytes | None = None, on_done: Callable[[int], None] | None = None) -> Entry:
    """A tool's standard output, streamed into the repository as one item.

    The tool starts when the core opens the item.  After the last byte the entry's ``__exit__`` waits
    for it: a non-zero exit (with the tail of its standard error, secrets redacted) or output without
    ``completion_marker`` raises ConnectorError, so no snapshot is made of a partial stream.
    """
    return file_entry(path, partial(_open_tool, argv, env, list(secrets or ()), completion_marker, on_done))


__all__ = [
    "BLOCK",
    "ChunkStream",
    "Opener",
    "bytes_entry",
    "dir_entry",
    "file_entry",
    "now_ns",
    "open_path",
    "path_entry",
    "tool_entry",
]
