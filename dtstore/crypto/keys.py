"""The master secret, the subkeys derived from it, and the password-wrapped key slots that hold it.

A key slot is a small JSON document (it has to be readable before any key is known)::

    {"format": "dtstore-key", "version": 1,
     "kdf": {"name": "scrypt", "n": N, "r": R, "p": P, "salt": base64},
     "wrapped": base64(nonce(12) ‖ AES-256-GCM(KEK, msgpack{master, repository_id, created, label}) ‖ tag)}

KEK = scrypt(password, salt, n, r, p) (32 bytes).  The associated data is ``dtstore/v1/key-slot``.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dtstore.crypto import scrypt
from dtstore.crypto.aead import NONCE_SIZE, Sealer, hkdf
from dtstore.errors import UnsupportedFormat, WrongPassword
from dtstore.format import AAD_KEY_SLOT, INFO_CHUNKER, INFO_ENC_KEY, INFO_ID_KEY, INFO_NAME_KEY

MASTER_SIZE = 64
CHUNKER_SEED_LIMIT = 1 << 63
"""chunker seeds are 1 ≤ seed < 2**63 (pyfastcdc XORs them into its gear table)"""


@dataclass(frozen=True)
class ScryptParams:
    n: int
    r: int = 8
    p: int = 1

    @property
    def memory_bytes(self) -> int:
        return 128 * self.r * self.n


CHEAP_KDF = ScryptParams(n=1 << 10)
"""For tests and examples only: brute-forcing a password wrapped with this is cheap."""

MAX_KDF = ScryptParams(n=1 << 17)


CALIBRATION_TRIALS = 3
"""derivations timed at the smallest N; the fastest counts, so a busy moment on the machine (or the
first touch of scrypt's memory) does not make a repository's key weaker than the machine allows"""


def calibrate_scrypt(target_seconds: float = 0.3, limit: ScryptParams = MAX_KDF) -> ScryptParams:
    """Double N from 2**14 until one derivation takes about ``target_seconds`` (restic-style)."""
    params = ScryptParams(n=1 << 14)
    elapsed = min(_time_scrypt(params) for _ in range(CALIBRATION_TRIALS))
    while elapsed * 2 <= target_seconds and params.n < limit.n:
        params = ScryptParams(n=params.n * 2, r=params.r, p=params.p)
        elapsed *= 2
    return params


def _time_scrypt(params: ScryptParams) -> float:
    start = time.perf_counter()
    derive_kek(b"calibration", os.urandom(16), params)
    return time.perf_counter() - start


def derive_kek(password: bytes, salt: bytes, params: ScryptParams) -> bytes:
    """A derivation started ahead with the same inputs is taken (``scrypt.start``)."""
    return scrypt.derive(password, salt, params.n, params.r, params.p)


@dataclass(frozen=True)
class MasterKey:
    """The repository's master secret and the keys derived from it (domain-separated by HKDF)."""

    secret: bytes

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(MASTER_SIZE))

    @property
    def id_key(self) -> bytes:
        """Key of the keyed BLAKE3 that names chunks: the provider cannot confirm known content."""
        return hkdf(self.secret, info=INFO_ID_KEY)

    @property
    def name_key(self) -> bytes:
        return hkdf(self.secret, info=INFO_NAME_KEY)

    @property
    def chunker_seed(self) -> int:
        """Seed that permutes the FastCDC gear table, so cut points don't leak known content."""
        return (int.from_bytes(hkdf(self.secret, info=INFO_CHUNKER, length=8), "little") >> 1) or 1

    def sealer(self) -> Sealer:
        return Sealer(hkdf(self.secret, info=INFO_ENC_KEY))

    def chunk_keys(self) -> ChunkKeys:
        """The keys derived from this secret that decide cut points and chunk IDs."""
        return ChunkKeys(self.id_key, self.chunker_seed)


@dataclass(frozen=True)
class ChunkKeys:
    """What decides where chunks are cut and what they are called: the chunk-ID key and the chunker
    seed.  Two repositories with equal chunk keys (and chunker parameters) give equal data equal chunk
    IDs (``init --copy-chunker-from``); the keys that encrypt stay each repository's own."""

    id_key: bytes
    chunker_seed: int

    def __post_init__(self) -> None:
        if len(self.id_key) != 32 or not 1 <= self.chunker_seed < CHUNKER_SEED_LIMIT:
            raise UnsupportedFormat("chunk keys need a 32-byte ID key and a chunker seed 1 ≤ seed < 2**63")


@dataclass(frozen=True)
class BackupKey:
    """What a backup-role key slot holds (feature key-roles, spec §4.4): the shared secret ``S`` and
    the data public key ``P`` — never the master secret, so nothing stored can be decrypted with it."""

    shared: bytes
    data_public: bytes


@dataclass(frozen=True)
class KeySlotInfo:
    slot_id: str
    repository_id: str
    created: str
    label: str
    kdf: dict[str, Any]
    role: str = "admin"


def wrap_key(
    master: MasterKey, password: bytes, *, repository_id: str, params: ScryptParams, label: str = ""
) -> bytes:
    salt = os.urandom(16)
    kek = derive_kek(password, salt, params)
    payload = msgpack.packb(
        {
            "master": master.secret,
            "repository_id": repository_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "label": label,
        }
    )
    nonce = os.urandom(NONCE_SIZE)
    wrapped = nonce + AESGCM(kek).encrypt(nonce, payload, AAD_KEY_SLOT)
    doc = {
        "format": "dtstore-key",
        "version": 1,
        "kdf": {"name": "scrypt", "n": params.n, "r": params.r, "p": params.p, "salt": _b64(salt)},
        "wrapped": _b64(wrapped),
    }
    return json.dumps(doc, indent=1).encode()


def wrap_backup_key(key: BackupKey, password: bytes, *, repository_id: str, params: ScryptParams,
                    label: str = "") -> bytes:
    """A version-2 key slot of role ``backup`` (v1 readers skip it: [K1])."""
    payload = {"role": "backup", "shared": key.shared, "data_public": key.data_public,
               "repository_id": repository_id,
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "label": label}
    return _slot_doc(msgpack.packb(payload), password, params, version=2)


def _slot_doc(payload: bytes, password: bytes, params: ScryptParams, *, version: int) -> bytes:
    salt = os.urandom(16)
    kek = derive_kek(password, salt, params)
    nonce = os.urandom(NONCE_SIZE)
    wrapped = nonce + AESGCM(kek).encrypt(nonce, payload, AAD_KEY_SLOT)
    doc = {
        "format": "dtstore-key",
        "version": version,
        "kdf": {"name": "scrypt", "n": params.n, "r": params.r, "p": params.p, "salt": _b64(salt)},
        "wrapped": _b64(wrapped),
    }
    return json.dumps(doc, indent=1).encode()


def unwrap_key(slot: bytes, password: bytes, slot_id: str) -> tuple[MasterKey, KeySlotInfo]:
    """Open one admin key slot; raise WrongPassword if the password does not open it."""
    key, info = unwrap_any(slot, password, slot_id)
    if not isinstance(key, MasterKey):
        raise UnsupportedFormat(f"key slot {slot_id} is a backup key, not an admin key")
    return key, info


def unwrap_any(slot: bytes, password: bytes, slot_id: str) -> tuple[MasterKey | BackupKey, KeySlotInfo]:
    """Open one key slot of either role; raise WrongPassword if the password does not open it."""
    doc = parse_slot(slot, slot_id)
    kdf = doc["kdf"]
    params = ScryptParams(n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"]))
    kek = derive_kek(password, base64.b64decode(kdf["salt"]), params)
    wrapped = base64.b64decode(doc["wrapped"])
    try:
        payload = AESGCM(kek).decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], AAD_KEY_SLOT)
    except InvalidTag:
        raise WrongPassword("wrong password: no key slot of this repository opens with it") from None
    data = msgpack.unpackb(payload)
    role = str(data.get("role", "admin"))
    info = KeySlotInfo(slot_id, data["repository_id"], data["created"], data.get("label", ""), dict(kdf), role)
    if role == "backup":
        return BackupKey(bytes(data["shared"]), bytes(data["data_public"])), info
    return MasterKey(data["master"]), info


def parse_slot(slot: bytes, slot_id: str) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(slot)
        ok = doc.get("format") == "dtstore-key" and doc["kdf"]["name"] == "scrypt"
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise UnsupportedFormat(f"key slot {slot_id} is not a dtstore v1 key slot")
    if doc.get("version") not in (1, 2):
        raise UnsupportedFormat(f"key slot {slot_id} has version {doc.get('version')}; this dtstore reads 1 and 2")
    return doc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
