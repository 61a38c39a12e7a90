"""Key slots: several passwords for one repository, never fewer than one."""

from __future__ import annotations

import os
from dataclasses import dataclass

from dtstore.crypto.keys import (
    BackupKey,
    KeySlotInfo,
    MasterKey,
    ScryptParams,
    calibrate_scrypt,
    parse_slot,
    wrap_backup_key,
    wrap_key,
)
from dtstore.errors import UsageError
from dtstore.storage import layout
from dtstore.storage.base import BlobStore


@dataclass(frozen=True)
class KeyEntry:
    slot_id: str
    current: bool
    kdf: str
    role: str = "admin"
    """from the slot's version: 1 admin, 2 backup (the role itself is inside the wrapped payload)"""


def list_keys(store: BlobStore, current: KeySlotInfo) -> list[KeyEntry]:
    entries = []
    for blob in store.list(layout.KEYS):
        slot_id = layout.pack_id_of(blob.name)
        doc = parse_slot(store.get(blob.name), slot_id)
        kdf = doc["kdf"]
        entries.append(KeyEntry(slot_id, slot_id == current.slot_id, f"scrypt n={kdf['n']} r={kdf['r']} p={kdf['p']}",
                                "backup" if doc.get("version") == 2 else "admin"))
    return entries


def add_key(store: BlobStore, master: MasterKey, repository_id: str, password: bytes, *, label: str = "",
            kdf: ScryptParams | None = None) -> str:
    if not password:
        raise UsageError("an empty password is not allowed")
    slot_id = os.urandom(16).hex()
    slot = wrap_key(master, password, repository_id=repository_id, params=kdf or calibrate_scrypt(), label=label)
    store.put(layout.key_name(slot_id), slot)
    return slot_id


def add_backup_key(store: BlobStore, key: BackupKey, repository_id: str, password: bytes, *, label: str = "",
                   kdf: ScryptParams | None = None) -> str:
    if not password:
        raise UsageError("an empty password is not allowed")
    slot_id = os.urandom(16).hex()
    slot = wrap_backup_key(key, password, repository_id=repository_id, params=kdf or calibrate_scrypt(), label=label)
    store.put(layout.key_name(slot_id), slot)
    return slot_id


def remove_key(store: BlobStore, slot_id: str, current: KeySlotInfo, *, allow_current: bool = False) -> None:
    slots = [layout.pack_id_of(b.name) for b in store.list(layout.KEYS)]
    matches = [s for s in slots if s.startswith(slot_id)]
    if len(matches) != 1:
        raise UsageError(f"key {slot_id!r} matches {len(matches)} key slots")
    if len(slots) <= 1:
        raise UsageError("refusing to remove the last key: the repository would be unreadable forever")
    if matches[0] == current.slot_id and not allow_current:
        raise UsageError("refusing to remove the key in use; open the repository with another password")
    store.delete(layout.key_name(matches[0]))
