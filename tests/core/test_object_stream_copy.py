"""ObjectStream.copy_to (``dtstore dump``): whole chunks in order, errors when their turn comes."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from dtstore.errors import DtstoreError, IntegrityError
from dtstore.objects.reader import COPY_READAHEAD, ObjectStream


@dataclass
class _Run:
    chunk_ids: Sequence[bytes]


class _Chunks:
    """Runs of three chunks, as a pack would hold them; ``bad`` fails as a damaged blob does."""

    def __init__(self, bad: bytes | None = None) -> None:
        self.bad = bad
        self.lock = threading.Lock()
        self.fetched: list[bytes] = []

    def runs(self, chunk_ids: Sequence[bytes]) -> list[_Run]:
        return [_Run(chunk_ids[i : i + 3]) for i in range(0, len(chunk_ids), 3)]

    def read_run(self, run: _Run) -> list[bytes | DtstoreError]:
        with self.lock:
            self.fetched.extend(run.chunk_ids)
        return [IntegrityError(f"chunk {c.hex()} does not match its ID") if c == self.bad else c * 1000
                for c in run.chunk_ids]


CHUNKS = [bytes([i]) for i in range(100)]


def test_copy_to_writes_every_chunk_in_order() -> None:
    out = io.BytesIO()
    with ThreadPoolExecutor(4) as pool:
        written = ObjectStream(_Chunks(), CHUNKS, pool, readahead=2).copy_to(out)
    assert out.getvalue() == b"".join(c * 1000 for c in CHUNKS)
    assert written == 100_000


def test_copy_to_after_a_read_continues_where_the_read_stopped() -> None:
    out = io.BytesIO()
    with ThreadPoolExecutor(4) as pool:
        stream = ObjectStream(_Chunks(), CHUNKS, pool)
        head = bytearray(1500)
        n = stream.readinto(memoryview(head))
        stream.copy_to(out)
    assert bytes(head[:n]) + out.getvalue() == b"".join(c * 1000 for c in CHUNKS)


def test_copy_to_writes_what_precedes_a_damaged_chunk_then_raises() -> None:
    out = io.BytesIO()
    chunks = _Chunks(bad=CHUNKS[40])
    with ThreadPoolExecutor(4) as pool, pytest.raises(IntegrityError, match="does not match"):
        ObjectStream(chunks, CHUNKS, pool).copy_to(out)
    assert out.getvalue() == b"".join(c * 1000 for c in CHUNKS[:40])
    assert len(chunks.fetched) <= 42 + COPY_READAHEAD + 3  # the read-ahead is bounded (runs of three)
