"""zstd, keeping a chunk raw when compression does not make it smaller.  Leaf module."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

import zstandard

from dtstore import format as fmt
from dtstore.errors import IntegrityError, UsageError
from dtstore.format import CODEC_RAW, CODEC_ZSTD

_local = threading.local()

PARAMETER_NAMES = frozenset({"window_log", "hash_log", "chain_log", "search_log", "min_match", "target_length",
                             "strategy"})
"""zstd's compression parameters a repository may set on top of its level (zstd's own names)"""

MAX_WINDOW_LOG = 24
"""a larger window needs decoders set up for it (zstd's default limit is 2^27; stay well inside)"""


@dataclass(frozen=True)
class Zstd:
    """How a repository's writers compress: a zstd level and, optionally, zstd parameters that
    replace the level's own.  Only writers use it: every zstd frame carries what decoding needs."""

    level: int
    parameters: tuple[tuple[str, int], ...] = ()
    """(name, value) pairs, sorted by name"""

    @classmethod
    def of(cls, level: int, parameters: Mapping[str, int] | None = None) -> Zstd:
        """A checked setting: UsageError names what zstd refuses."""
        if not 0 <= level <= 22:
            raise UsageError("the zstd level must be between 0 (no compression) and 22")
        setting = cls(level, tuple(sorted((parameters or {}).items())))
        unknown = {name for name, _ in setting.parameters} - PARAMETER_NAMES
        if unknown:
            raise UsageError(f"unknown zstd parameter(s): {', '.join(sorted(unknown))}")
        if dict(setting.parameters).get("window_log", 0) > MAX_WINDOW_LOG:
            raise UsageError(f"a zstd window_log above {MAX_WINDOW_LOG} would make frames some decoders refuse")
        try:
            setting.compressor()
        except (zstandard.ZstdError, TypeError, ValueError, OverflowError) as exc:
            raise UsageError(f"zstd refuses the parameters {dict(setting.parameters)}: {exc}") from None
        return setting

    def compressor(self) -> zstandard.ZstdCompressor:
        if not self.parameters:
            return zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        params = zstandard.ZstdCompressionParameters(compression_level=self.level, write_content_size=1,
                                                     **dict(self.parameters))
        return zstandard.ZstdCompressor(compression_params=params)

    def describe(self) -> str:
        if not self.level:
            return "none (every chunk stored raw)"
        tuned = ", ".join(f"{name} {value}" for name, value in self.parameters)
        return f"zstd level {self.level}" + (f" ({tuned})" if tuned else "")


DEFAULT = Zstd(fmt.DEFAULT_ZSTD_LEVEL, tuple(sorted(fmt.DEFAULT_ZSTD_PARAMETERS.items())))
"""what ``init`` gives a new repository (format.py says why)"""


def _compressor(setting: Zstd) -> zstandard.ZstdCompressor:
    cache: dict[Zstd, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    if setting not in cache:
        cache[setting] = setting.compressor()
    return cache[setting]


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


def encode(data: bytes | memoryview, setting: Zstd) -> bytes:
    """Return ``codec(1) ‖ payload``; zstd only if it saves at least 1/64 of the size."""
    if setting.level:
        packed = _compressor(setting).compress(data)
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
