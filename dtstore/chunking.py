"""FastCDC (pyfastcdc, Cython) with a keyed gear table.  Leaf module."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass
from typing import BinaryIO

from pyfastcdc import FastCDC


@dataclass(frozen=True)
class ChunkerParams:
    min_size: int
    avg_size: int
    max_size: int

    def to_dict(self) -> dict[str, int | str]:
        return {"algorithm": "fastcdc2020", "min": self.min_size, "avg": self.avg_size, "max": self.max_size}


class Chunker:
    """Cuts a stream into content-defined chunks; each yielded buffer is a fresh ``bytes``."""

    def __init__(self, params: ChunkerParams, seed: int) -> None:
        self.params = params
        # pyfastcdc's avg_size is the cut-point mask size; the real mean is about avg + min.
        self._cdc = FastCDC(
            max(params.avg_size - params.min_size, 256),
            min_size=params.min_size,
            max_size=params.max_size,
            normalized_chunking=1,
            seed=seed,
        )

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        for chunk in self._cdc.cut_stream(stream):
            yield bytes(chunk.data)

    def chunks_of(self, data: bytes) -> Iterator[bytes]:
        for chunk in self._cdc.cut_buf(data):
            yield bytes(chunk.data)

    def ring(self, buffers: int, block_size: int = 4 << 20) -> list[bytearray]:
        """Buffers for ``batches``; allocate once and reuse them for every stream.  Each holds a
        block read from the stream after ``max_size`` bytes of room for the previous block's tail."""
        block_size = max(block_size, 2 * self.params.max_size)  # a full block then holds ≥ 2 chunks
        return [bytearray(self.params.max_size + block_size) for _ in range(buffers)]

    def batches(self, stream: BinaryIO, ring: list[bytearray],
                reader: Executor | None = None) -> Iterator[list[memoryview]]:
        """The same chunks as ``chunks``, as views into large blocks: no copy and no allocation per
        chunk, and a whole block's chunks can go to one worker.

        Blocks live in ``ring`` (see ``ring()``): a caller may keep the views of the last
        ``len(ring) - 2`` batches while it asks for the next one.  With a ``reader`` executor the
        next block is read while this one is cut (reads drop the GIL), so on a busy machine the
        read and the cut overlap.  The tail of each block, whose end is not a cut point, is copied
        just in front of the next block; cut points depend only on data from a chunk's start, so the
        result equals cutting the whole stream at once."""
        room = self.params.max_size
        block_size = len(ring[0]) - room

        def read(turn: int) -> int:
            return _read_into(stream, memoryview(ring[turn % len(ring)])[room:])

        pending: Future[int] | None = None
        carry: memoryview | bytes = b""
        try:
            for turn in itertools.count():
                filled = pending.result() if pending is not None else read(turn)
                at_end = filled < block_size
                pending = None if at_end or reader is None else reader.submit(read, turn + 1)
                buf = memoryview(ring[turn % len(ring)])
                buf[room - len(carry) : room] = carry
                block = buf[room - len(carry) : room + filled]
                if not block:
                    return
                views = [chunk.data for chunk in self._cdc.cut_buf(block)]
                carry = b"" if at_end else views.pop()
                if views:
                    yield views
                if at_end:
                    return
        finally:
            if pending is not None and not pending.cancel():
                wait([pending])  # never leave a read running into a buffer the next stream reuses


def _read_into(stream: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from the stream as far as it goes; fewer bytes only at the end of the stream."""
    done = 0
    readinto = getattr(stream, "readinto", None)
    while done < len(view):
        if readinto is not None:
            n = readinto(view[done:])
        else:
            part = stream.read(len(view) - done)
            n = len(part)
            view[done : done + n] = part
        if not n:
            break
        done += n
    return done
