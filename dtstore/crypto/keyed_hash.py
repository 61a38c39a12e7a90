"""Chunk IDs: keyed BLAKE3 of the plaintext, 32 bytes."""

from __future__ import annotations

import blake3

ID_SIZE = 32


class ChunkHasher:
    __slots__ = ("_key",)

    def __init__(self, id_key: bytes) -> None:
        self._key = id_key

    def __call__(self, data: bytes | memoryview) -> bytes:
        return blake3.blake3(data, key=self._key).digest()
