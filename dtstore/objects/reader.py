"""Chunk lists → a readable binary stream, with read-ahead in parallel."""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

COPY_READAHEAD = 16
"""chunks ``copy_to`` keeps in flight (at least): enough to keep every worker busy while the
writer waits for the next chunk in order"""


class ChunkReader(Protocol):
    def get(self, chunk_id: bytes) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class ObjectStream(io.RawIOBase):
    """Sequential reader over a chunk list; fetches up to ``readahead`` chunks in parallel."""

    def __init__(self, reader: ChunkReader, chunks: Sequence[bytes], pool: ThreadPoolExecutor,
                 readahead: int = 8) -> None:
        super().__init__()
        self._reader = reader
        self._chunks = chunks
        self._pool = pool
        self._readahead = readahead
        self._next = 0
        self._queue: deque[Future[bytes]] = deque()
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while len(self._queue) < self._readahead and self._next < len(self._chunks):
            self._queue.append(self._pool.submit(self._reader.get, self._chunks[self._next]))
            self._next += 1

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._current:
            self._fill()
            if not self._queue:
                return 0
            self._current = memoryview(self._queue.popleft().result())
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n

    def copy_to(self, out: Writable) -> int:
        """Write the rest of the stream to ``out``, each chunk as one write of the fetched bytes (no
        copy, no buffer), fetching further ahead than ``read``.  Returns the bytes written; an error
        of the chunk reader is raised when its chunk's turn comes, after everything before it."""
        self._readahead = max(self._readahead, COPY_READAHEAD)
        written = 0
        if self._current:
            out.write(bytes(self._current))
            written, self._current = len(self._current), memoryview(b"")
        while True:
            self._fill()
            if not self._queue:
                return written
            data = self._queue.popleft().result()
            out.write(data)
            written += len(data)

    def close(self) -> None:
        for future in self._queue:
            future.cancel()
        self._queue.clear()
        super().close()
