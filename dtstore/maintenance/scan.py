"""One streaming pass over the whole repository, shared by check and prune.

Memory stays bounded: referenced chunk IDs and every index entry go into a scratch LMDB on disk;
only per-pack totals are kept in memory (packs are ~1/30 000 of the data).
"""

from __future__ import annotations

import datetime as dt
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lmdb

from dtstore.content.damage import DamageSet, damage_names, load_damage
from dtstore.content.index import IndexCache
from dtstore.content.segments import decode_segment, list_packs
from dtstore.crypto.aead import Sealer
from dtstore.crypto.keyed_hash import ChunkHasher
from dtstore.errors import DtstoreError
from dtstore.snapshots.manifest import Item, Snapshot
from dtstore.snapshots.store import SnapshotStore
from dtstore.storage import layout
from dtstore.storage.base import BlobStore

_BLOB = struct.Struct(">32sQ")  # key: pack id, offset
_BLOB_VALUE = struct.Struct("<32sII")  # chunk id, length, raw length


@dataclass
class MaintenanceContext:
    """The narrow view of an open repository that maintenance needs."""

    store: BlobStore
    sealer: Sealer
    cache: IndexCache
    hasher: ChunkHasher
    snapshots: SnapshotStore
    list_items: Callable[[Snapshot], Iterator[Item]]
    host: str


@dataclass
class PackStat:
    pack_id: str
    kind: int = -1
    indexed: bool = False
    listed_size: int | None = None
    name: str = ""
    modified: dt.datetime | None = None
    index_end: int = 0
    blobs: int = 0
    used_blobs: int = 0
    used_bytes: int = 0
    unused_bytes: int = 0
    segments: set[str] = field(default_factory=set)

    @property
    def size(self) -> int:
        return self.listed_size or 0


class Scratch:
    """A throw-away LMDB environment in a temporary directory."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="dtstore-scan-"))
        self.env = lmdb.open(str(self.path), map_size=1 << 40, max_dbs=4, sync=False, metasync=False,
                             writemap=True)
        self.refs = self.env.open_db(b"refs")
        self.blobs = self.env.open_db(b"blobs")
        self.chosen = self.env.open_db(b"chosen")

    def close(self) -> None:
        self.env.close()
        shutil.rmtree(self.path, ignore_errors=True)


@dataclass
class RepositoryScan:
    segments: list[str]
    packs: dict[str, PackStat]
    snapshots: list[Snapshot]
    referenced_chunks: int
    missing: dict[str, list[str]]
    """snapshot ID → paths whose chunks are in no index segment"""
    scratch: Scratch
    started: dt.datetime
    damage: DamageSet = field(default_factory=DamageSet)
    """the repository's damage set, as the scan found it"""
    damage_records: list[str] = field(default_factory=list)
    """the damage records it was read from"""

    def close(self) -> None:
        self.scratch.close()

    def blobs_of(self, pack_id: str) -> Iterator[tuple[bytes, int, int, int]]:
        """(chunk id, offset, length, raw length) of one pack, by offset."""
        prefix = bytes.fromhex(pack_id)
        with self.scratch.env.begin(db=self.scratch.blobs) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(prefix):
                return
            for key, value in cursor:
                pid, offset = _BLOB.unpack(key)
                if pid != prefix:
                    break
                chunk_id, length, raw = _BLOB_VALUE.unpack(value)
                yield chunk_id, offset, length, raw

    def is_referenced(self, chunk_id: bytes) -> bool:
        with self.scratch.env.begin(db=self.scratch.refs) as txn:
            return txn.get(chunk_id) is not None

    def is_used_in(self, chunk_id: bytes, pack_id: str) -> bool:
        """Referenced, and this pack holds the copy counted as used (see ``avoid``)."""
        with self.scratch.env.begin() as txn:
            return (txn.get(chunk_id, db=self.scratch.refs) is not None
                    and txn.get(chunk_id, db=self.scratch.chosen) == bytes.fromhex(pack_id))


def scan_repository(ctx: MaintenanceContext, started: dt.datetime, avoid: set[str] = frozenset(),  # type: ignore[assignment]
                    progress: Callable[[str], None] = lambda _: None) -> RepositoryScan:
    """List packs, load every segment, walk every snapshot, then count used bytes per pack.

    ``avoid`` are marked packs.  When a chunk has copies in several packs, the one counted as used
    (``chosen``) is, in this order of preference: a copy the damage set does not name, in a pack that
    exists; outside ``avoid``.  So deleting marked packs never loses the only copy, and a damaged copy
    whose content was stored again (self-healing) is garbage.
    """
    scratch = Scratch()
    packs: dict[str, PackStat] = {}
    for pack_id, info in list_packs(ctx.store).items():
        packs[pack_id] = PackStat(pack_id, listed_size=info.size, name=info.name, modified=info.modified)
    damage_records = sorted(damage_names(ctx.store))
    damage = load_damage(ctx.store, ctx.sealer, damage_records)

    def rank(pack_id: str, chunk_id: bytes) -> int:
        stat = packs.get(pack_id)
        bad = stat is None or stat.listed_size is None or damage.is_bad(pack_id, chunk_id)
        return 2 * bad + (pack_id in avoid)
    progress("reading the index")
    segments = sorted(info.name for info in ctx.store.list(layout.INDEX))
    for name in segments:
        records, _ = decode_segment(ctx.sealer, ctx.store.get(name), name)
        with scratch.env.begin(write=True) as txn:
            for record in records:
                stat = packs.setdefault(record.pack_id, PackStat(record.pack_id))
                stat.indexed = True
                stat.kind = record.kind
                stat.segments.add(name)
                pid = bytes.fromhex(record.pack_id)
                for e in record.entries:
                    key = _BLOB.pack(pid, e.offset)
                    if txn.get(key, db=scratch.blobs) is None:
                        stat.blobs += 1
                        stat.index_end = max(stat.index_end, e.offset + e.length)
                    txn.put(key, _BLOB_VALUE.pack(e.chunk_id, e.length, e.raw_length), db=scratch.blobs)
                    current = txn.get(e.chunk_id, db=scratch.chosen)
                    if current is None or (rank(record.pack_id, e.chunk_id)
                                           < rank(bytes(current).hex(), e.chunk_id)):
                        txn.put(e.chunk_id, pid, db=scratch.chosen)
    progress("reading snapshots")
    snapshots = ctx.snapshots.load_all()
    missing: dict[str, list[str]] = {}
    referenced = 0
    for snap in snapshots:
        referenced += _mark_references(ctx, scratch, snap, missing)
    progress("counting used data")
    with scratch.env.begin() as txn:
        cursor = txn.cursor(db=scratch.blobs)
        for key, value in cursor:
            pid, _ = _BLOB.unpack(key)
            chunk_id, length, _ = _BLOB_VALUE.unpack(value)
            stat = packs[pid.hex()]
            used = txn.get(chunk_id, db=scratch.refs) is not None and txn.get(chunk_id, db=scratch.chosen) == pid
            if used:
                stat.used_blobs += 1
                stat.used_bytes += length
            else:
                stat.unused_bytes += length
    return RepositoryScan(segments, packs, snapshots, referenced, missing, scratch, started, damage, damage_records)


def _mark_references(ctx: MaintenanceContext, scratch: Scratch, snap: Snapshot,
                     missing: dict[str, list[str]]) -> int:
    count = 0

    def mark(chunks: list[bytes], path: str) -> None:
        nonlocal count
        with scratch.env.begin(write=True) as txn:
            for chunk_id in chunks:
                if txn.get(chunk_id, db=scratch.chosen) is None:
                    missing.setdefault(snap.id, []).append(path)
                    break
            for chunk_id in chunks:
                if txn.put(chunk_id, b"", db=scratch.refs, overwrite=False):
                    count += 1

    mark(snap.items_chunks, "(item list)")
    if snap.id in missing:
        return count
    try:
        for item in ctx.list_items(snap):
            if item.chunks:
                mark(item.chunks, "/" + item.name)
    except DtstoreError as exc:
        missing.setdefault(snap.id, []).append(f"(item list unreadable: {exc})")
    return count
