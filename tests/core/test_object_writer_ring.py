"""ObjectWriter on its ring of block buffers: no chunk is stored from a buffer already refilled."""

from __future__ import annotations

import collections
import io
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import blake3
import pytest

from dtstore.chunking import Chunker, ChunkerParams
from dtstore.objects.writer import ObjectWriter


class SlowWriter:
    """Stores a copy of every chunk it is given, sometimes slowly, so that batches pile up in flight."""

    def __init__(self) -> None:
        self.stored: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        self._rng = random.Random(5)

    @property
    def hasher(self) -> Callable[[bytes | memoryview], bytes]:
        return lambda data: blake3.blake3(data).digest()

    def put_many(self, chunks: Sequence[tuple[bytes, bytes | memoryview]], kind: int) -> None:
        for chunk_id, data in chunks:
            self.put_with_id(chunk_id, data)

    def put_with_id(self, chunk_id: bytes, data: bytes | memoryview) -> None:
        with self._lock:
            pause = self._rng.random() < 0.01
        if pause:
            time.sleep(0.003)
        copy = bytes(data)  # after the pause: a refilled buffer would show here
        with self._lock:
            self.stored[chunk_id] = copy


def test_every_stored_chunk_is_the_stream_s_own_bytes() -> None:
    rng = random.Random(11)
    data = b"".join(rng.randbytes(rng.randrange(1, 300)) * rng.randrange(1, 40) for _ in range(14_000))
    assert len(data) > 6 * (4 << 20)  # more blocks than the ring has buffers
    chunker = Chunker(ChunkerParams(1024, 4096, 16384), seed=7)
    store = SlowWriter()
    writer = ObjectWriter(store, workers=2)
    try:
        ref = writer.write_stream(io.BytesIO(data), chunker, kind=0)
    finally:
        writer.close()
    assert b"".join(store.stored[c] for c in ref.chunks) == data
    assert all(blake3.blake3(store.stored[c]).digest() == c for c in ref.chunks)
    assert ref.chunks == [blake3.blake3(c).digest() for c in chunker.chunks_of(data)]


def _address(buffer: object) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))  # type: ignore[arg-type]


def test_every_block_is_read_to_a_page_boundary() -> None:
    """A read into a buffer a few bytes past a page boundary stalls on 4K aliasing (0.5–0.7 s/GiB
    against 0.13 on the benchmark machine): each block must start on a page."""
    import mmap

    for max_size in (1 << 21, 100_001):  # the default, and one that is not a whole number of pages
        chunker = Chunker(ChunkerParams(max_size // 8, max_size // 4, max_size), seed=3)
        block = 2 * max_size + 12_345
        for buffer in chunker.ring(3, block_size=block):
            room = len(buffer) - block
            assert room >= max_size  # room for the previous block's tail
            assert (_address(buffer) + room) % mmap.PAGESIZE == 0
        stream = io.BytesIO(random.Random(2).randbytes(5 * block))
        ring = chunker.ring(4, block_size=block)
        joined = b"".join(bytes(v) for batch in chunker.batches(stream, ring) for v in batch)
        assert joined == stream.getvalue()  # the room may be larger than max_size: same chunks


class CountingReader(ThreadPoolExecutor):
    """A one-thread reader that counts the reads it was given."""

    def __init__(self) -> None:
        super().__init__(1)
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.mark.parametrize("ahead", [1, 2, 3])
def test_blocks_read_ahead_never_land_in_a_held_batch(ahead: int) -> None:
    """``ahead`` blocks are read (and cut) while the caller holds ``len(ring) - 1 - ahead`` batches:
    none of the held ones may be overwritten, and the result is the stream's own cuts."""
    rng = random.Random(ahead)
    chunker = Chunker(ChunkerParams(1024, 4096, 16384), seed=5)
    hold = 2
    for _ in range(20):
        data = rng.randbytes(rng.randrange(100_000, 400_000))
        ring = chunker.ring(hold + 1 + ahead, block_size=rng.randrange(33_000, 60_000))
        held: collections.deque[tuple[list[memoryview], list[bytes]]] = collections.deque()
        got: list[bytes] = []
        with CountingReader() as reader, ThreadPoolExecutor(ahead) as cutter:
            for batch in chunker.batches(io.BytesIO(data), ring, reader, cutter, ahead):
                for views, copies in held:
                    assert [bytes(v) for v in views] == copies, "a read ahead overwrote a held batch"
                copies = [bytes(v) for v in batch]
                got.extend(copies)
                held.append((batch, copies))
                if len(held) > hold:
                    held.popleft()
                if len(got) == len(copies):  # the first batch: the next ``ahead`` blocks are on their way
                    assert reader.submitted == ahead
        assert got == list(chunker.chunks_of(data))


def test_a_ring_too_small_for_its_reads_ahead_is_refused() -> None:
    chunker = Chunker(ChunkerParams(1024, 4096, 16384), seed=5)
    with ThreadPoolExecutor(1) as reader, pytest.raises(ValueError, match="1 to 2 blocks ahead"):
        next(chunker.batches(io.BytesIO(bytes(100_000)), chunker.ring(4, block_size=40_000), reader, None, 3))
