"""zstd, keeping a chunk raw when compression does not make it smaller.  Leaf module."""

from __future__ import annotations

import threading

import zstandard

from dtstore.errors import IntegrityError
from dtstore.format import CODEC_RAW, CODEC_ZSTD

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


def encode(data: bytes | memoryview, level: int) -> bytes:
    """Return ``codec(1) ‖ payload``; zstd only if it saves at least 1/64 of the size."""
    if level:
        packed = _compressor(level).compress(data)
        if len(packed) < len(data) - (len(data) >> 6):
            return bytes([CODEC_ZSTD]) + packed
    return bytes([CODEC_RAW]) + bytes(data)


def decode(blob: bytes, raw_length: int, what: str) -> bytes:
    codec = blob[0] if blob else -1
    if codec == CODEC_RAW:
        return blob[1:]
    if codec == CODEC_ZSTD:
        try:
            return _decompressor().decompress(memoryview(blob)[1:], max_output_size=raw_length)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{what}: zstd payload does not decompress ({exc})") from None
    raise IntegrityError(f"{what}: unknown codec byte {codec}")
