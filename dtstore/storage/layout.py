"""Object kind ⇄ object name.  Every name is random or a hash of ciphertext: none reveals content."""

from __future__ import annotations

CONFIG = "config"
KEYS = "keys"
DATA_PACKS = "data"
META_PACKS = "meta"
INDEX = "index"
SNAPSHOTS = "snapshots"
SESSIONS = "sessions"
LOCKS = "locks"
MAINTENANCE = "maintenance"
DAMAGED = "damaged"


def pack_name(pack_id: str, meta: bool) -> str:
    return f"{META_PACKS if meta else DATA_PACKS}/{pack_id[:2]}/{pack_id}"


def pack_id_of(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def key_name(slot_id: str) -> str:
    return f"{KEYS}/{slot_id}"


def index_name(segment_id: str) -> str:
    return f"{INDEX}/{segment_id}"


def snapshot_name(snapshot_id: str) -> str:
    return f"{SNAPSHOTS}/{snapshot_id}"


def session_name(session_id: str) -> str:
    return f"{SESSIONS}/{session_id}"


def lock_name(lock_id: str) -> str:
    return f"{LOCKS}/{lock_id}"


def damage_name(record_id: str) -> str:
    return f"{DAMAGED}/{record_id}"
