"""Chunk lists → a readable binary stream, with read-ahead in parallel."""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar

from dtstore.errors import DtstoreError

COPY_READAHEAD = 32
"""chunks ``copy_to`` keeps in flight (at least): enough runs to keep every worker busy while the
writer waits for the next chunk in order"""
MIN_RUNS = 2
"""runs in flight whatever ``readahead`` says: one run is read and decoded by one worker"""
PLAN_AHEAD = 64
"""chunks grouped into runs at a time: their index lookups are done in one go, and a stream of
millions of chunks never has all its locations in memory"""


class Run(Protocol):
    @property
    def chunk_ids(self) -> Sequence[bytes]: ...


RunT = TypeVar("RunT", bound=Run)


class ChunkReader(Protocol[RunT]):
    """What this layer needs of the content layer (ContentReader, whose runs are ChunkRuns)."""

    def runs(self, chunk_ids: Sequence[bytes]) -> list[RunT]:
        """``chunk_ids`` in order, grouped into runs that one read each fetches."""

    def read_run(self, run: RunT) -> list[bytes | DtstoreError]:
        """Each chunk of the run, or the error reading it raised, in the chunk's place."""


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class ObjectStream(io.RawIOBase, Generic[RunT]):
    """Sequential reader over a chunk list; fetches up to ``readahead`` chunks in parallel, a run of
    neighbouring chunks per task (ContentReader.runs: one range read, not one per chunk)."""

    def __init__(self, reader: ChunkReader[RunT], chunks: Sequence[bytes], pool: ThreadPoolExecutor,
                 readahead: int = 8) -> None:
        super().__init__()
        self._reader = reader
        self._chunks = chunks
        self._pool = pool
        self._readahead = readahead
        self._next = 0
        self._planned: deque[RunT] = deque()
        self._queue: deque[tuple[Future[list[bytes | DtstoreError]], int]] = deque()
        self._queued = 0
        """chunks in the futures of ``_queue``"""
        self._ready: deque[bytes | DtstoreError] = deque()
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while self._queued < self._readahead or len(self._queue) < MIN_RUNS:
            if not self._planned:
                if self._next >= len(self._chunks):
                    return
                window = self._chunks[self._next : self._next + PLAN_AHEAD]
                self._next += len(window)
                self._planned.extend(self._reader.runs(window))
            run = self._planned.popleft()
            self._queue.append((self._pool.submit(self._reader.read_run, run), len(run.chunk_ids)))
            self._queued += len(run.chunk_ids)

    def _next_chunk(self) -> bytes | None:
        """The next chunk's bytes in order (its error is raised now, when its turn comes); None at the end."""
        if not self._ready:
            self._fill()
            if not self._queue:
                return None
            future, count = self._queue.popleft()
            self._queued -= count
            self._ready.extend(future.result())
            self._fill()
        piece = self._ready.popleft()
        if isinstance(piece, DtstoreError):
            raise piece
        return piece

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._current:
            piece = self._next_chunk()
            if piece is None:
                return 0
            self._current = memoryview(piece)
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
        while (piece := self._next_chunk()) is not None:
            out.write(piece)
            written += len(piece)
        return written

    def close(self) -> None:
        for future, _ in self._queue:
            future.cancel()
        self._queue.clear()
        self._planned.clear()
        self._ready.clear()
        super().close()
