"""Damage records: which stored copies of chunks are known to be bad, so every host stops using them.

``damaged/<32 random hex>`` is a sealed msgpack document (label ``dtstore/v1/damaged``)::

    {"version": 1, "time": ISO 8601 UTC, "host": str, "found_by": str,
     "blobs": [[pack_id (64 hex str), chunk_id (bin 32)], …], "packs": [pack_id, …]}

A ``blobs`` entry says that the copy of one chunk in one pack failed verification (or lies past the
end of the pack); a ``packs`` entry says that no blob of that pack may be used (the pack is missing,
its header is unreadable, or ``repair packs`` copied everything readable out of it).  The damage
set of a repository is the union of all records.  Records are only ever added, by whoever finds
damage (check, restore, dump, repair); prune rewrites them into one when it deletes packs.

A writer never deduplicates against a copy the damage set names: the next backup that meets the
content stores it afresh, and readers prefer the new copy (spec/repository-format.md §13.4).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgpack

from dtstore import clock
from dtstore.crypto.aead import Sealer
from dtstore.errors import BlobNotFound, DtstoreError
from dtstore.format import AAD_DAMAGED
from dtstore.storage import layout
from dtstore.storage.base import BlobStore

DAMAGE_VERSION = 1


@dataclass
class DamageSet:
    """Bad copies: (pack ID, chunk ID) pairs and whole packs."""

    blobs: set[tuple[str, bytes]] = field(default_factory=set)
    packs: set[str] = field(default_factory=set)

    def is_bad(self, pack_id: str, chunk_id: bytes) -> bool:
        return pack_id in self.packs or (pack_id, chunk_id) in self.blobs

    def __bool__(self) -> bool:
        return bool(self.blobs or self.packs)

    def update(self, other: DamageSet) -> None:
        self.blobs |= other.blobs
        self.packs |= other.packs

    def minus(self, other: DamageSet) -> DamageSet:
        """What this set says that ``other`` does not already (a blob of a bad pack is known)."""
        return DamageSet({(p, c) for p, c in self.blobs if not other.is_bad(p, c)},
                         self.packs - other.packs)

    def only_packs(self, keep: Iterable[str]) -> DamageSet:
        wanted = set(keep)
        return DamageSet({(p, c) for p, c in self.blobs if p in wanted}, self.packs & wanted)

    def pack_ids(self) -> set[str]:
        return self.packs | {p for p, _ in self.blobs}


def encode_damage(sealer: Sealer, damage: DamageSet, *, host: str, found_by: str) -> bytes:
    doc = {"version": DAMAGE_VERSION, "time": clock.now().isoformat(), "host": host, "found_by": found_by,
           "blobs": [[p, c] for p, c in sorted(damage.blobs)], "packs": sorted(damage.packs)}
    return sealer.seal(msgpack.packb(doc), AAD_DAMAGED)


def decode_damage(sealer: Sealer, sealed: bytes, name: str) -> DamageSet:
    doc = msgpack.unpackb(sealer.open(sealed, AAD_DAMAGED, f"damage record {name}"))
    if doc.get("version") != DAMAGE_VERSION:
        # a newer writer's record: ignoring it only means not avoiding what it names
        return DamageSet()
    return DamageSet({(str(p), bytes(c)) for p, c in doc.get("blobs", [])}, {str(p) for p in doc.get("packs", [])})


def damage_names(store: BlobStore) -> set[str]:
    return {info.name for info in store.list(layout.DAMAGED)}


def load_damage(store: BlobStore, sealer: Sealer, names: Iterable[str] | None = None) -> DamageSet:
    """The union of the damage records (those listed, or ``names``).  A record that vanished
    meanwhile (prune compacting them) or does not open is skipped: the damage set is advisory."""
    found = DamageSet()
    for name in sorted(damage_names(store) if names is None else names):
        try:
            found.update(decode_damage(sealer, store.get(name), name))
        except BlobNotFound:
            continue
        except DtstoreError:
            continue
    return found


def write_damage(store: BlobStore, sealer: Sealer, damage: DamageSet, *, host: str, found_by: str) -> str:
    name = layout.damage_name(os.urandom(16).hex())
    store.put(name, encode_damage(sealer, damage, host=host, found_by=found_by))
    return name


def compact_damage(store: BlobStore, sealer: Sealer, names: Iterable[str], existing_packs: Iterable[str], *,
                   host: str) -> None:
    """Replace the records ``names`` by one holding what still concerns existing packs: the new
    record is written before the old ones are deleted, so a crash leaves duplicates, never less."""
    old = sorted(names)
    if not old:
        return
    kept = load_damage(store, sealer, old).only_packs(existing_packs)
    if kept:
        write_damage(store, sealer, kept, host=host, found_by="prune")
    for name in old:
        store.delete(name)
