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

    def batches(self, stream: BinaryIO, ring: list[bytearray], reader: Executor | None = None,
                cutter: Executor | None = None) -> Iterator[list[memoryview]]:
        """The same chunks as ``chunks``, as views into large blocks: no copy and no allocation per
        chunk, and a whole block's chunks can go to one worker.

        Blocks live in ``ring`` (see ``ring()``): a caller may keep the views of the last
        ``len(ring) - 2`` batches while it asks for the next one.  The tail of each block, whose end
        is not a cut point, is copied just in front of the next block; cut points depend only on
        data from a chunk's start, so the result equals cutting the whole stream at once.

        With a ``reader`` executor the next block is read while this one is cut (reads drop the
        GIL).  With a ``cutter`` executor as well, each block is also cut on its own, from its first
        byte, as soon as it is read, in parallel with other work; the calling thread then only cuts
        from the previous block's tail until that chain of cuts meets one of the block's own (from
        a common cut point on, both continue alike), usually within a chunk or two (see _stitch)."""
        room = self.params.max_size
        block_size = len(ring[0]) - room

        def read(turn: int) -> tuple[int, Future[list[int]] | None]:
            block = memoryview(ring[turn % len(ring)])[room:]
            filled = _read_into(stream, block)
            own_cuts = cutter.submit(self.cut_ends, block[:filled]) if cutter is not None and filled else None
            return filled, own_cuts

        pending: Future[tuple[int, Future[list[int]] | None]] | None = None
        carry: memoryview | bytes = b""
        try:
            for turn in itertools.count():
                filled, own_cuts = pending.result() if pending is not None else read(turn)
                at_end = filled < block_size
                pending = None if at_end or reader is None else reader.submit(read, turn + 1)
                buf = memoryview(ring[turn % len(ring)])
                start, end = room - len(carry), room + filled
                buf[start:room] = carry
                if start == end:
                    return
                ends = self._stitch(buf, start, room, end, own_cuts.result() if own_cuts is not None else None)
                views = [buf[a:b] for a, b in itertools.pairwise([start, *ends])]
                carry = b"" if at_end else views.pop()
                if views:
                    yield views
                if at_end:
                    return
        finally:
            if pending is not None and not pending.cancel():
                wait([pending])  # never leave a read running into a buffer the next stream reuses

    def cut_ends(self, data: bytes | memoryview) -> list[int]:
        """The end offsets of the chunks ``data`` is cut into (the last one is ``len(data)``)."""
        return [chunk.offset + chunk.length for chunk in self._cdc.cut_buf(data)]

    def _stitch(self, buf: memoryview, start: int, room: int, end: int, own_cuts: list[int] | None) -> list[int]:
        """The true cut ends (offsets in ``buf``) of ``buf[start:end]``, whose block starts at ``room``.

        ``own_cuts`` are the block's cut ends (relative to ``room``) when cut from its first byte.  The
        true chain starts at ``start`` (the previous block's tail); cut it until it ends a chunk where
        the block's own chain also does, then take the rest from ``own_cuts``.  The block's last own
        cut is forced by the end of the buffer, not a real one, so it never counts as a meeting."""
        if own_cuts is not None and start == room:
            return [room + e for e in own_cuts]
        meeting = {room + e for e in own_cuts or ()}
        meeting.discard(end)
        ends: list[int] = []
        for chunk in self._cdc.cut_buf(buf[start:end]):
            ends.append(start + chunk.offset + chunk.length)
            if ends[-1] in meeting:
                ends.extend(room + e for e in own_cuts or () if room + e > ends[-1])
                break
        return ends


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
