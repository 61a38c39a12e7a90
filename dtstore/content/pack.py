"""Pack bytes ⇄ blobs.  Pure: bytes in, bytes out.

Layout of a pack (see spec/repository-format.md)::

    magic "DTSPACK\\x01" (8) ‖ salt (16) ‖ blob … blob ‖ trailer ‖ trailer_length (uint32 LE)

Every blob and the trailer are ``nonce(12) ‖ AES-256-GCM ciphertext ‖ tag(16)`` under the pack key
HKDF(encryption key, salt, "dtstore/v1/pack").  A key-roles repository writes v2 packs instead:
``"DTSPACK\x02" ‖ ephemeral X25519 public key (32)``, blobs under a key sealed to the data public key,
the trailer under a key of the shared secret (``dtstore.crypto.roles``).  A blob's associated data is its chunk ID; its
plaintext is ``codec(1) ‖ payload``.  The trailer is msgpack ``{"kind": k, "blobs": [[id, offset,
length, raw_length], …]}`` with associated data ``dtstore/v1/pack-trailer``.  The pack ID is the
BLAKE3 hash (unkeyed) of the whole pack, so a complete download can be checked against its name.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

import blake3
import msgpack

from dtstore import compression
from dtstore.crypto.aead import SALT_SIZE, Sealer, SubKey
from dtstore.errors import IntegrityError
from dtstore.format import AAD_PACK_TRAILER, PACK_MAGIC, PACK_MAGIC_V2

PACK_KEY_PURPOSE = b"dtstore/v1/pack"
HEADER_SIZE = len(PACK_MAGIC) + SALT_SIZE
"""the v1 header; a v2 header is longer (``header_size``)"""
HEADER_V2_SIZE = len(PACK_MAGIC_V2) + 32


def header_size(first: bytes | memoryview) -> int:
    """The header length of a pack whose first ``HEADER_SIZE`` bytes are ``first``."""
    return HEADER_V2_SIZE if bytes(first[: len(PACK_MAGIC_V2)]) == PACK_MAGIC_V2 else HEADER_SIZE
TRAILER_LENGTH_SIZE = 4


@dataclass(frozen=True, slots=True)
class BlobLocation:
    """Where one chunk lives: ``length`` is the sealed size, ``raw_length`` the plaintext size."""

    pack_id: str
    kind: int
    offset: int
    length: int
    raw_length: int


class BlobEntry(NamedTuple):
    """One blob of a pack, as its trailer and the index segments list it (a tuple: millions are
    decoded per check, and a tuple is built several times faster than a frozen dataclass)."""

    chunk_id: bytes
    offset: int
    length: int
    raw_length: int


class FinishedPack:
    """A closed pack: its parts in order.  The pack ID is hashed over the parts by upload threads,
    so the builder's lock is never held for it; a store that writes parts (``put_parts``) never
    joins them into one buffer."""

    def __init__(self, kind: int, parts: list[bytes], entries: list[BlobEntry], size: int | None = None) -> None:
        """``size``: of the whole pack, when ``parts`` are only its last ones (the rest already
        taken: ``PackBuilder.take_parts``); ``pack_id`` is then not theirs to give."""
        self.kind = kind
        self.entries = entries
        self.parts = parts
        self.size = sum(len(p) for p in parts) if size is None else size
        self._id = ""

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)

    @property
    def pack_id(self) -> str:
        if not self._id:
            hasher = blake3.blake3()
            for part in self.parts:
                hasher.update(part)
            self._id = hasher.hexdigest()
        return self._id


def pack_id_of(data: bytes | bytearray | memoryview) -> str:
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()


class PackBuilder:
    """Accumulates sealed blobs of one kind; not thread-safe (the content store holds a lock)."""

    def __init__(self, sealer: Sealer, kind: int) -> None:
        self.kind = kind
        header, self._key, self._trailer_key = sealer.new_pack()
        self._parts: list[bytes] = [header]
        self._size = len(header)
        self._held = len(header)
        self._entries: list[BlobEntry] = []

    @property
    def size(self) -> int:
        return self._size

    @property
    def held(self) -> int:
        """Bytes of the parts not taken yet (``take_parts``)."""
        return self._held

    def take_parts(self) -> list[bytes]:
        """The parts so far, in order, to be written before the rest: the builder keeps only
        what follows (a pack need not wait in memory whole)."""
        parts, self._parts, self._held = self._parts, [], 0
        return parts

    @property
    def count(self) -> int:
        return len(self._entries)

    def add(self, chunk_id: bytes, encoded: bytes, raw_length: int) -> BlobEntry:
        nonce, body = self._key.seal_parts(encoded, chunk_id)
        length = len(nonce) + len(body)
        entry = BlobEntry(chunk_id, self._size, length, raw_length)
        self._parts += (nonce, body)
        self._size += length
        self._held += length
        self._entries.append(entry)
        return entry

    def finish(self) -> FinishedPack:
        table = [[e.chunk_id, e.offset, e.length, e.raw_length] for e in self._entries]
        trailer = self._trailer_key.seal(msgpack.packb({"kind": self.kind, "blobs": table}), AAD_PACK_TRAILER)
        parts = [*self._parts, trailer, struct.pack("<I", len(trailer))]
        self._parts = []
        return FinishedPack(self.kind, parts, self._entries, self._size + len(trailer) + TRAILER_LENGTH_SIZE)


def pack_key(sealer: Sealer, header: bytes, pack_id: str) -> SubKey:
    """The key of the pack's blobs (AdminKeyRequired for a backup key)."""
    return sealer.pack_data_key(_checked_header(header, pack_id), pack_id)


def trailer_key(sealer: Sealer, header: bytes, pack_id: str) -> SubKey:
    """The key of the pack's trailer (a backup key opens those of v2 packs)."""
    return sealer.pack_trailer_key(_checked_header(header, pack_id), pack_id)


def _checked_header(header: bytes, pack_id: str) -> bytes:
    if len(header) < HEADER_SIZE or bytes(header[: len(PACK_MAGIC) - 1]) != PACK_MAGIC[:-1] \
            or len(header) < header_size(header):
        raise IntegrityError(f"pack {pack_id} does not start with the dtstore pack magic")
    return header


def trailer_length(tail: bytes, pack_id: str, pack_size: int) -> int:
    (length,) = struct.unpack("<I", tail[-TRAILER_LENGTH_SIZE:])
    if length + HEADER_SIZE + TRAILER_LENGTH_SIZE > pack_size:
        raise IntegrityError(f"pack {pack_id} has an impossible trailer length {length}")
    return int(length)


def read_trailer(key: SubKey, sealed_trailer: bytes, pack_id: str) -> tuple[int, list[BlobEntry]]:
    plain = key.open(sealed_trailer, AAD_PACK_TRAILER, f"trailer of pack {pack_id}")
    doc = msgpack.unpackb(plain)
    entries = [BlobEntry(c, o, n, r) for c, o, n, r in doc["blobs"]]  # sealed: written by dtstore
    return int(doc["kind"]), entries


def parse_pack(sealer: Sealer, data: bytes, pack_id: str) -> tuple[int, list[BlobEntry]]:
    """Read the trailer of a whole pack held in memory."""
    key = trailer_key(sealer, data[:HEADER_V2_SIZE], pack_id)
    length = trailer_length(data[-TRAILER_LENGTH_SIZE:], pack_id, len(data))
    start = len(data) - TRAILER_LENGTH_SIZE - length
    return read_trailer(key, data[start : len(data) - TRAILER_LENGTH_SIZE], pack_id)


def open_blob(key: SubKey, sealed: bytes | memoryview, chunk_id: bytes, raw_length: int, pack_id: str,
              hasher: object) -> bytes:
    """Decrypt, decompress and check the keyed hash of one blob; never return unverified bytes."""
    what = f"chunk {chunk_id.hex()[:16]} in pack {pack_id}"
    plain = compression.decode(key.open(sealed, chunk_id, what), raw_length, what)
    if len(plain) != raw_length or hasher(plain) != chunk_id:  # type: ignore[operator]
        raise IntegrityError(f"{what} does not match its ID: the data is corrupt")
    return plain
