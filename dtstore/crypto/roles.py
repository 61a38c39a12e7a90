"""Key roles (feature ``key-roles``, spec/repository-format.md §4.4): admin keys and write-only backup keys.

An admin key holds the master secret ``M``.  A backup key holds only the *shared secret*
``S = HKDF(M, "dtstore/v1/shared")`` and the repository's X25519 *data public key* ``P``:

* ``C = HKDF(S, "dtstore/v1/shared/encryption")`` seals the structure both roles read and write:
  config, index segments, pack trailers, sessions, locks, marks, damage records;
* pack blobs and manifests are sealed to ``P``: a fresh ephemeral X25519 key per pack (per
  manifest), ``K = HKDF(X25519(e, P), salt = e_pub ‖ P, info = label)``.  Only the holder of the
  data private key ``d = HKDF(M, "dtstore/v1/data-x25519")`` (an admin) recomputes ``K``; the writer
  forgets ``e`` once the pack is closed;
* a backup host therefore writes new data and deduplicates against the index (chunk IDs and sizes,
  under ``C``), but cannot open any blob or manifest, old or new.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dtstore.crypto.aead import SALT_SIZE, Sealer, SubKey, hkdf
from dtstore.errors import AdminKeyRequired, IntegrityError
from dtstore.format import (
    AAD_SNAPSHOT,
    INFO_DATA_X25519,
    INFO_PACK_DATA,
    INFO_PACK_TRAILER_KEY,
    INFO_SHARED,
    INFO_SHARED_ENC,
    PACK_MAGIC_V2,
    PUBLIC_SEALED_VERSION,
)
from dtstore.format import (
    PACK_MAGIC as PACK_MAGIC_V1,
)

PUBLIC_KEY_SIZE = 32
ROLE_ADMIN = "admin"
ROLE_BACKUP = "backup"
ROLES = (ROLE_ADMIN, ROLE_BACKUP)
PACK_KEY_PURPOSE = b"dtstore/v1/pack"
PACK_HEADER_V2_SIZE = len(PACK_MAGIC_V2) + PUBLIC_KEY_SIZE


def shared_secret(master_secret: bytes) -> bytes:
    return hkdf(master_secret, info=INFO_SHARED)


def data_private_key(master_secret: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(hkdf(master_secret, info=INFO_DATA_X25519))


def public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def data_public_key(master_secret: bytes) -> bytes:
    return public_bytes(data_private_key(master_secret).public_key())


def _recipient_key(shared: bytes, ephemeral_pub: bytes, recipient_pub: bytes, info: bytes) -> bytes:
    return hkdf(shared, salt=ephemeral_pub + recipient_pub, info=info)


def admin_required(what: str) -> AdminKeyRequired:
    return AdminKeyRequired(f"{what} needs an admin key: this repository was opened with a backup key, "
                            "which can write new backups but not read stored data or manifests")


class RoleSealer(Sealer):
    """The sealer of a ``key-roles`` repository.

    ``seal``/``open`` of structure objects use ``C``; manifests are sealed to ``P`` (envelope 0x02)
    and opened only with the data private key.  ``legacy`` is the v1 encryption key ``E`` (admins
    only): it opens what was written before the repository was converted (v1 packs, v1 manifests).
    """

    def __init__(self, shared: bytes, public_key: bytes, private_key: X25519PrivateKey | None = None,
                 legacy: Sealer | None = None) -> None:
        super().__init__(hkdf(shared, info=INFO_SHARED_ENC))
        if len(public_key) != PUBLIC_KEY_SIZE:
            raise IntegrityError("the repository's data public key is not 32 bytes")
        self.public_key = public_key
        self._public = X25519PublicKey.from_public_bytes(public_key)
        self._private = private_key
        self._legacy = legacy
        self._trailer_root = hkdf(shared, info=INFO_PACK_TRAILER_KEY)

    @property
    def is_admin(self) -> bool:
        return self._private is not None

    # sealed objects ------------------------------------------------------------------------------
    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        if aad == AAD_SNAPSHOT:
            return self.seal_to_public(plaintext, aad)
        return super().seal(plaintext, aad)

    def open(self, sealed: bytes, aad: bytes, what: str) -> bytes:
        if sealed[:1] == bytes([PUBLIC_SEALED_VERSION]):
            return self.open_public(sealed, aad, what)
        if aad == AAD_SNAPSHOT:  # a manifest written before conversion: under E
            if self._legacy is None:
                raise admin_required(f"reading {what}")
            return self._legacy.open(sealed, aad, what)
        try:
            return super().open(sealed, aad, what)
        except IntegrityError:
            if self._legacy is None:
                raise
            return self._legacy.open(sealed, aad, what)

    def seal_to_public(self, plaintext: bytes, aad: bytes) -> bytes:
        """``0x02 ‖ e_pub(32) ‖ nonce(12) ‖ AES-256-GCM(K, plaintext, aad) ‖ tag(16)``, K as above with
        info = ``aad``."""
        ephemeral = X25519PrivateKey.generate()
        e_pub = public_bytes(ephemeral.public_key())
        key = _recipient_key(ephemeral.exchange(self._public), e_pub, self.public_key, aad)
        return bytes([PUBLIC_SEALED_VERSION]) + e_pub + SubKey(key).seal(plaintext, aad)

    def open_public(self, sealed: bytes, aad: bytes, what: str) -> bytes:
        if len(sealed) < 1 + PUBLIC_KEY_SIZE + 28:
            raise IntegrityError(f"{what} is truncated ({len(sealed)} bytes)")
        if self._private is None:
            raise admin_required(f"reading {what}")
        e_pub = sealed[1 : 1 + PUBLIC_KEY_SIZE]
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(e_pub))
        except ValueError:
            raise IntegrityError(f"{what} carries an invalid ephemeral public key") from None
        key = _recipient_key(shared, e_pub, self.public_key, aad)
        return SubKey(key).open(memoryview(sealed)[1 + PUBLIC_KEY_SIZE :], aad, what)

    # packs -----------------------------------------------------------------------------------------
    def new_pack(self) -> tuple[bytes, SubKey, SubKey]:
        ephemeral = X25519PrivateKey.generate()
        e_pub = public_bytes(ephemeral.public_key())
        data = _recipient_key(ephemeral.exchange(self._public), e_pub, self.public_key, INFO_PACK_DATA)
        return PACK_MAGIC_V2 + e_pub, SubKey(data), self._trailer_key(e_pub)

    def pack_data_key(self, header: bytes, pack_id: str) -> SubKey:
        if header[: len(PACK_MAGIC_V1)] == PACK_MAGIC_V1:
            if self._legacy is None:
                raise admin_required(f"reading pack {pack_id}")
            return self._legacy.pack_data_key(header, pack_id)
        e_pub = self._v2_public(header, pack_id)
        if self._private is None:
            raise admin_required(f"reading pack {pack_id}")
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(e_pub))
        except ValueError:
            raise IntegrityError(f"pack {pack_id} carries an invalid ephemeral public key") from None
        return SubKey(_recipient_key(shared, e_pub, self.public_key, INFO_PACK_DATA))

    def pack_trailer_key(self, header: bytes, pack_id: str) -> SubKey:
        if header[: len(PACK_MAGIC_V1)] == PACK_MAGIC_V1:
            if self._legacy is None:
                raise admin_required(f"reading the trailer of pack {pack_id}")
            return self._legacy.pack_trailer_key(header, pack_id)
        return self._trailer_key(self._v2_public(header, pack_id))

    def _trailer_key(self, e_pub: bytes) -> SubKey:
        return SubKey(hkdf(self._trailer_root, salt=e_pub, info=INFO_PACK_TRAILER_KEY))

    @staticmethod
    def _v2_public(header: bytes, pack_id: str) -> bytes:
        if len(header) < PACK_HEADER_V2_SIZE or header[: len(PACK_MAGIC_V2)] != PACK_MAGIC_V2:
            raise IntegrityError(f"pack {pack_id} does not start with a dtstore pack magic")
        return bytes(header[len(PACK_MAGIC_V2) : PACK_HEADER_V2_SIZE])


def v1_pack_salt(header: bytes) -> bytes:
    return bytes(header[len(PACK_MAGIC_V1) : len(PACK_MAGIC_V1) + SALT_SIZE])


def random_id() -> str:
    return os.urandom(16).hex()
