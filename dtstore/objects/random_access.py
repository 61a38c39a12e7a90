"""A chunk list read at any offset (``mount``): the chunks a read needs, fetched and verified by the
chunk reader, a few kept for the reads that follow, and the next ones fetched ahead."""

from __future__ import annotations

import bisect
import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol


class ChunkGetter(Protocol):
    def get(self, chunk_id: bytes) -> bytes: ...


class RandomAccess:
    """``read(offset, size)`` over the concatenation of ``chunks`` (whose plaintext lengths are
    ``sizes``).  Thread-safe.  Errors of the chunk reader (IntegrityError, StorageError) pass through."""

    def __init__(self, reader: ChunkGetter, chunks: Sequence[bytes], sizes: Sequence[int], pool: ThreadPoolExecutor,
                 *, keep: int = 8, readahead: int = 2) -> None:
        if len(chunks) != len(sizes):
            raise ValueError("one size per chunk")
        self._reader = reader
        self._chunks = list(chunks)
        self._starts = [0, *itertools.accumulate(sizes)]
        self.size = self._starts[-1]
        self._pool = pool
        self._keep = max(keep, readahead + 2)
        self._readahead = readahead
        self._cache: OrderedDict[int, Future[bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def _chunk(self, index: int) -> Future[bytes]:
        with self._lock:
            future = self._cache.get(index)
            if future is None or (future.done() and future.exception() is not None):
                future = self._pool.submit(self._reader.get, self._chunks[index])
                self._cache[index] = future
            self._cache.move_to_end(index)
            while len(self._cache) > self._keep:
                self._cache.popitem(last=False)  # not cancelled: a read in progress may still hold it
            return future

    def read(self, offset: int, size: int) -> bytes:
        if offset >= self.size or size <= 0:
            return b""
        end = min(self.size, offset + size)
        first = bisect.bisect_right(self._starts, offset) - 1
        last = bisect.bisect_right(self._starts, end - 1) - 1
        wanted = [self._chunk(i) for i in range(first, last + 1)]
        for ahead in range(last + 1, min(last + 1 + self._readahead, len(self._chunks))):
            self._chunk(ahead)
        parts = []
        for index, future in zip(range(first, last + 1), wanted, strict=True):
            data = future.result()
            start = self._starts[index]
            parts.append(data[max(0, offset - start): end - start])
        return b"".join(parts)


__all__ = ["ChunkGetter", "RandomAccess"]
