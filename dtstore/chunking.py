"""FastCDC (pyfastcdc, Cython) with a keyed gear table.  Leaf module."""

from __future__ import annotations

import itertools
import mmap
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass
from typing import BinaryIO

from pyfastcdc import FastCDC

Digest = Callable[[memoryview], bytes]
"""a function of a chunk's bytes (its keyed hash), worked out where the chunk is cut, while the chunk
is still in the CPU's cache"""

Cuts = tuple[list[int], list[bytes | None] | None]
"""a block's own cut ends, and the digest of each of its own chunks (None where none was taken)"""

Ring = list[mmap.mmap]
"""the block buffers of ``Chunker.batches`` (``Chunker.ring``)"""


def page_aligned(size: int) -> mmap.mmap:
    """A zeroed buffer that starts on a page boundary (an anonymous mapping, here and on Windows).

    A read copies from the page cache, whose pages start at multiples of 4096 of the file; into a
    buffer 8–31 bytes past a page boundary, as Python's bytearray of a few MiB is (malloc's 16-byte
    header), each store lands just ahead of the loads it follows and the CPU stalls on the 4K
    aliasing: on this project's benchmark machine (AMD EPYC) such a read cost 0.5–0.7 s per GiB,
    against 0.13 s into an aligned buffer.  Pages are touched only when used."""
    return mmap.mmap(-1, size)


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

    def ring(self, buffers: int, block_size: int = 4 << 20) -> Ring:
        """Buffers for ``batches``; allocate once and reuse them for every stream.  Each holds a
        block read from the stream after ``max_size`` bytes of room for the previous block's tail;
        the room is a whole number of pages, so each block is read to a page boundary."""
        block_size = max(block_size, 2 * self.params.max_size)  # a full block then holds ≥ 2 chunks
        return [page_aligned(self._room() + block_size) for _ in range(buffers)]

    def _room(self) -> int:
        """Where a ring buffer's block starts: ``max_size`` rounded up to whole pages."""
        return -(-self.params.max_size // mmap.PAGESIZE) * mmap.PAGESIZE

    def batches(self, stream: BinaryIO, ring: Ring, reader: Executor | None = None,
                cutter: Executor | None = None, ahead: int = 1) -> Iterator[list[memoryview]]:
        """The same chunks as ``chunks``, as views into large blocks: no copy and no allocation per
        chunk, and a whole block's chunks can go to one worker.

        Blocks live in ``ring`` (see ``ring()``): a caller may keep the views of the last
        ``len(ring) - 1 - ahead`` batches while it asks for the next one.  The tail of each block,
        whose end is not a cut point, is copied just in front of the next block; cut points depend
        only on data from a chunk's start, so the result equals cutting the whole stream at once.

        With a ``reader`` executor the next ``ahead`` blocks are read while this one is cut (reads
        drop the GIL; the reader must run its tasks in order, as a one-thread pool does).  With a
        ``cutter`` executor as well, each block is also cut on its own, from its first byte, as
        soon as it is read, in parallel with other work (``ahead`` blocks at once: a worker each);
        the calling thread then only cuts from the previous block's tail until that chain of cuts
        meets one of the block's own (from a common cut point on, both continue alike), usually
        within a few chunks (see _stitch)."""
        for batch in self._blocks(stream, ring, reader, cutter, None, ahead):
            yield [view for view, _ in batch]

    def digested_batches(self, stream: BinaryIO, ring: Ring, reader: Executor, cutter: Executor,
                         digest: Digest, ahead: int = 1) -> Iterator[list[tuple[memoryview, bytes | None]]]:
        """``batches``, each chunk with its ``digest`` when the cutter could take it: the cutter
        hashes each of the block's own chunks right after cutting it (one pass over memory instead
        of two), and every chunk where the block's own cuts agree with the true ones keeps it; the
        first one or two of a block, cut from the previous block's tail, come with None."""
        return self._blocks(stream, ring, reader, cutter, digest, ahead)

    def _blocks(self, stream: BinaryIO, ring: Ring, reader: Executor | None, cutter: Executor | None,
                digest: Digest | None, ahead: int) -> Iterator[list[tuple[memoryview, bytes | None]]]:
        if not 1 <= ahead <= len(ring) - 2:
            raise ValueError(f"a ring of {len(ring)} buffers reads 1 to {len(ring) - 2} blocks ahead, not {ahead}")
        room = self._room()
        block_size = len(ring[0]) - room

        def read(turn: int) -> tuple[int, Future[Cuts] | None]:
            block = memoryview(ring[turn % len(ring)])[room:]
            filled = _read_into(stream, block)
            own_cuts = None
            if cutter is not None and filled:
                own_cuts = cutter.submit(self._own_cuts, block[:filled], digest, turn == 0, filled < block_size)
            return filled, own_cuts

        pending: deque[Future[tuple[int, Future[Cuts] | None]]] = deque()
        carry: memoryview | bytes = b""
        try:
            for turn in itertools.count():
                filled, own_cuts = pending.popleft().result() if pending else read(turn)
                at_end = filled < block_size
                if at_end:
                    _settle(pending)
                elif reader is not None:
                    while len(pending) < ahead:  # the reads after turn's: turn + 1 … turn + ahead
                        pending.append(reader.submit(read, turn + 1 + len(pending)))
                buf = memoryview(ring[turn % len(ring)])
                start, end = room - len(carry), room + filled
                buf[start:room] = carry
                if start == end:
                    return
                own_ends, digests = own_cuts.result() if own_cuts is not None else (None, None)
                ends = self._stitch(buf, start, room, end, own_ends)
                known = _digests_by_span(room, own_ends, digests)
                batch = [(buf[a:b], known.get((a, b))) for a, b in itertools.pairwise([start, *ends])]
                carry = b"" if at_end else batch.pop()[0]
                if batch:
                    yield batch
                if at_end:
                    return
        finally:
            _settle(pending)  # never leave a read running into a buffer the next stream reuses

    def _own_cuts(self, block: memoryview, digest: Digest | None, first: bool, last: bool) -> Cuts:
        """The block cut from its first byte and, with ``digest``, each chunk hashed as it is cut.
        The block's first chunk is a true one only in the stream's first block, its last only in the
        stream's last (elsewhere it is forced by the block's end): those are not hashed."""
        if digest is None:
            return self.cut_ends(block), None
        ends: list[int] = []
        digests: list[bytes | None] = []
        for chunk in self._cdc.cut_buf(block):
            start, end = chunk.offset, chunk.offset + chunk.length
            ends.append(end)
            true_start, true_end = first or start > 0, last or end < len(block)
            digests.append(digest(block[start:end]) if true_start and true_end else None)
        return ends, digests

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


def _settle(pending: deque[Future[tuple[int, Future[Cuts] | None]]]) -> None:
    """Cancel the reads not started, wait for the others and for the cuts they started."""
    started = [read for read in pending if not read.cancel()]
    pending.clear()
    wait(started)
    wait([cuts for read in started if read.exception() is None and (cuts := read.result()[1]) is not None])


def _digests_by_span(room: int, own_ends: list[int] | None,
                     digests: list[bytes | None] | None) -> dict[tuple[int, int], bytes]:
    """(start, end) in the buffer → digest, for the block's own chunks that were hashed."""
    if own_ends is None or digests is None:
        return {}
    spans = itertools.pairwise([room, *(room + e for e in own_ends)])
    return {span: d for span, d in zip(spans, digests, strict=True) if d is not None}


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
