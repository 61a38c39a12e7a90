"""FastCDC (pyfastcdc, Cython) with a keyed gear table.  Leaf module."""

from __future__ import annotations

from collections.abc import Iterator
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
