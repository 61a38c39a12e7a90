"""AES-256-GCM sealing with a fresh HKDF subkey per object (or per pack).

Random 96-bit nonces are safe for about 2**32 messages per key; deriving a subkey from a random
16-byte salt for every object and every pack keeps each key's message count in the thousands.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dtstore.errors import IntegrityError
from dtstore.format import PACK_MAGIC, SEALED_VERSION

NONCE_SIZE = 12
TAG_SIZE = 16
SALT_SIZE = 16
SEALED_OVERHEAD = 1 + SALT_SIZE + NONCE_SIZE + TAG_SIZE
PACK_PURPOSE = b"dtstore/v1/pack"
PACK_HEADER_SIZE = len(PACK_MAGIC) + SALT_SIZE


def hkdf(ikm: bytes, *, info: bytes, salt: bytes | None = None, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


class SubKey:
    """One AES-GCM key; seals many blobs with random nonces."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        return b"".join(self.seal_parts(plaintext, aad))

    def seal_parts(self, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """``seal`` as (nonce, ciphertext ‖ tag), not joined: a pack writes the two as they are."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce, self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes | memoryview, aad: bytes, what: str) -> bytes:
        if len(sealed) < NONCE_SIZE + TAG_SIZE:
            raise IntegrityError(f"{what} is truncated ({len(sealed)} bytes)")
        nonce, body = bytes(sealed[:NONCE_SIZE]), sealed[NONCE_SIZE:]
        try:
            return self._aead.decrypt(nonce, body, aad)
        except InvalidTag:
            raise IntegrityError(f"{what} failed authentication: it is corrupt or was tampered with") from None


class Sealer:
    """Seals whole objects: ``version(1) ‖ salt(16) ‖ nonce(12) ‖ ciphertext ‖ tag(16)``."""

    def __init__(self, encryption_key: bytes) -> None:
        self._key = encryption_key

    def subkey(self, salt: bytes, purpose: bytes) -> SubKey:
        return SubKey(hkdf(self._key, salt=salt, info=purpose))

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        salt = os.urandom(SALT_SIZE)
        return bytes([SEALED_VERSION]) + salt + self.subkey(salt, aad).seal(plaintext, aad)

    def open(self, sealed: bytes, aad: bytes, what: str) -> bytes:
        if len(sealed) < SEALED_OVERHEAD:
            raise IntegrityError(f"{what} is truncated ({len(sealed)} bytes)")
        if sealed[0] != SEALED_VERSION:
            raise IntegrityError(f"{what} has unknown envelope version {sealed[0]}")
        salt = sealed[1 : 1 + SALT_SIZE]
        return self.subkey(salt, aad).open(memoryview(sealed)[1 + SALT_SIZE :], aad, what)

    # packs: ``new_pack`` gives the header and the keys of a new pack; the others read a stored header.
    # v1 (this class): header = magic ‖ salt, one key for the blobs and the trailer.  A key-roles
    # repository's sealer (dtstore.crypto.roles) writes v2 headers sealed to its public key.
    def new_pack(self) -> tuple[bytes, SubKey, SubKey]:
        salt = os.urandom(SALT_SIZE)
        key = self.subkey(salt, PACK_PURPOSE)
        return PACK_MAGIC + salt, key, key

    def pack_data_key(self, header: bytes, pack_id: str) -> SubKey:
        if len(header) < PACK_HEADER_SIZE or header[: len(PACK_MAGIC)] != PACK_MAGIC:
            raise IntegrityError(f"pack {pack_id} does not start with the dtstore pack magic")
        return self.subkey(bytes(header[len(PACK_MAGIC) : PACK_HEADER_SIZE]), PACK_PURPOSE)

    def pack_trailer_key(self, header: bytes, pack_id: str) -> SubKey:
        return self.pack_data_key(header, pack_id)
