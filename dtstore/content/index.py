"""The local LMDB cache: chunk → pack location, known index segments and packs, and file metadata.

It is only a cache of the remote index: deleting the directory loses nothing, the next open
rebuilds it from the index segments.  It also holds the repository's damage set (``damaged/``
records): a chunk keeps one location, and a location the damage set names never replaces another
one, so the cache points at a good copy whenever the index has one.  Several processes on one host
may share it (LMDB locks).
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterable
from pathlib import Path

import lmdb
import msgpack

from dtstore.content.damage import DamageSet
from dtstore.content.mapped import MappedPages
from dtstore.content.pack import BlobEntry, BlobLocation

_LOCATION = struct.Struct("<32sBQII")
_MAP_SIZE = 1 << 40  # address space only; LMDB files grow as needed
RESIDENT_BUDGET = 128 << 20
"""growth of the resident mapped pages after which the cache's are shed (``dtstore.content.mapped``):
lookups in a cache of millions of chunks keep about this much of it resident"""


_ENVS: dict[str, tuple[lmdb.Environment, MappedPages, int]] = {}
_ENVS_LOCK = threading.Lock()


def _acquire_env(path: Path) -> tuple[lmdb.Environment, MappedPages]:
    """LMDB allows one environment per file per process: share it (and its pages) between handles."""
    key = str(path.resolve())
    with _ENVS_LOCK:
        if key in _ENVS:
            env, pages, users = _ENVS[key]
        else:
            env = lmdb.open(key, map_size=_MAP_SIZE, max_dbs=8, subdir=True, metasync=False, sync=False,
                            lock=True, writemap=False)
            pages, users = MappedPages(env, Path(key) / "data.mdb"), 0
        _ENVS[key] = (env, pages, users + 1)
        return env, pages


def _release_env(path: Path) -> None:
    key = str(path.resolve())
    with _ENVS_LOCK:
        env, pages, users = _ENVS[key]
        if users <= 1:
            del _ENVS[key]
            pages.close()
            env.close()
        else:
            _ENVS[key] = (env, pages, users - 1)


class IndexCache:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        self.path = path
        self._env, self._pages = _acquire_env(path)
        self._chunks = self._env.open_db(b"chunks")
        self._segments = self._env.open_db(b"segments")
        self._packs = self._env.open_db(b"packs")
        self._files = self._env.open_db(b"files")
        self._damaged = self._env.open_db(b"damaged")
        """pack ID (32 bytes): the whole pack is bad; pack ID + chunk ID (64 bytes): one copy is bad"""
        self._damage_records = self._env.open_db(b"damage_records")
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release_env(self.path)

    # chunks -------------------------------------------------------------------------------
    def lookup(self, chunk_id: bytes) -> BlobLocation | None:
        with self._env.begin(db=self._chunks) as txn:
            raw = txn.get(chunk_id)
        self._pages.touched(1, RESIDENT_BUDGET)
        return None if raw is None else _decode_location(raw)

    def lookup_many(self, chunk_ids: Iterable[bytes]) -> dict[bytes, BlobLocation]:
        found: dict[bytes, BlobLocation] = {}
        looked_up = 0
        with self._env.begin(db=self._chunks) as txn:
            for chunk_id in chunk_ids:
                raw = txn.get(chunk_id)
                looked_up += 1
                if raw is not None:
                    found[chunk_id] = _decode_location(raw)
        self._pages.touched(looked_up, RESIDENT_BUDGET)
        return found

    def lookup_usable(self, chunk_id: bytes) -> BlobLocation | None:
        """The cached location, unless the damage set names it (then no good copy is known)."""
        self._pages.touched(1, RESIDENT_BUDGET)
        with self._env.begin() as txn:
            raw = txn.get(chunk_id, db=self._chunks)
            if raw is None:
                return None
            location = _decode_location(raw)
            if _is_damaged(txn, self._damaged, bytes(raw[:32]), chunk_id):
                return None
        return location

    def is_damaged(self, pack_id: str, chunk_id: bytes) -> bool:
        with self._env.begin(db=self._damaged) as txn:
            return _is_damaged(txn, self._damaged, bytes.fromhex(pack_id), chunk_id)

    def contains(self, chunk_id: bytes) -> bool:
        with self._env.begin(db=self._chunks) as txn:
            found = txn.get(chunk_id) is not None
        self._pages.touched(1, RESIDENT_BUDGET)
        return found

    def chunk_count(self) -> int:
        with self._env.begin(db=self._chunks) as txn:
            return int(txn.stat(self._chunks)["entries"])

    # segments and packs -------------------------------------------------------------------
    def known_segments(self) -> set[str]:
        with self._env.begin(db=self._segments) as txn:
            return {bytes(k).decode() for k, _ in txn.cursor()}

    def known_packs(self) -> set[str]:
        with self._env.begin(db=self._packs) as txn:
            return {bytes(k).hex() for k, _ in txn.cursor()}

    def add_segment(self, name: str, packs: list[tuple[str, int, list[BlobEntry]]]) -> None:
        """Record one remote segment's content in a single transaction."""
        with self._env.begin(write=True) as txn:
            any_damage = int(txn.stat(self._damaged)["entries"]) > 0
            for pack_id, kind, entries in packs:
                pid = bytes.fromhex(pack_id)
                txn.put(pid, struct.pack("<B", kind), db=self._packs)
                for e in entries:
                    value = _LOCATION.pack(pid, kind, e.offset, e.length, e.raw_length)
                    # a known-bad copy never displaces another location (which is good, or bad too)
                    bad = any_damage and _is_damaged(txn, self._damaged, pid, e.chunk_id)
                    txn.put(e.chunk_id, value, db=self._chunks, overwrite=not bad)
            txn.put(name.encode(), b"", db=self._segments)
        self._env.sync()
        self._pages.touched(sum(len(entries) for _, _, entries in packs), RESIDENT_BUDGET)

    def reset(self) -> None:
        with self._env.begin(write=True) as txn:
            for db in (self._chunks, self._segments, self._packs, self._damaged, self._damage_records):
                txn.drop(db, delete=False)

    # damage set ---------------------------------------------------------------------------
    def known_damage_records(self) -> set[str]:
        with self._env.begin(db=self._damage_records) as txn:
            return {bytes(k).decode() for k, _ in txn.cursor()}

    def set_damage(self, names: set[str], damage: DamageSet) -> None:
        """Record the damage set (of the records ``names``); call on an empty index (after
        ``reset``), so that segments loaded afterwards choose good copies."""
        with self._env.begin(write=True) as txn:
            txn.drop(self._damaged, delete=False)
            txn.drop(self._damage_records, delete=False)
            for pack_id in damage.packs:
                txn.put(bytes.fromhex(pack_id), b"", db=self._damaged)
            for pack_id, chunk_id in damage.blobs:
                txn.put(bytes.fromhex(pack_id) + chunk_id, b"", db=self._damaged)
            for name in names:
                txn.put(name.encode(), b"", db=self._damage_records)
        self._env.sync()

    def damage(self) -> DamageSet:
        found = DamageSet()
        with self._env.begin(db=self._damaged) as txn:
            for key, _ in txn.cursor():
                raw = bytes(key)
                if len(raw) == 32:
                    found.packs.add(raw.hex())
                else:
                    found.blobs.add((raw[:32].hex(), raw[32:]))
        return found

    # file-metadata cache ------------------------------------------------------------------
    def get_file(self, key: bytes) -> tuple[tuple[int, ...], list[bytes]] | None:
        with self._env.begin(db=self._files) as txn:
            raw = txn.get(key)
        if raw is None:
            return None
        identity, chunks = msgpack.unpackb(raw)
        return tuple(identity), [chunks[i : i + 32] for i in range(0, len(chunks), 32)]

    def put_files(self, records: list[tuple[bytes, tuple[int, ...], list[bytes]]]) -> None:
        if not records:
            return
        with self._env.begin(write=True, db=self._files) as txn:
            for key, identity, chunks in records:
                txn.put(key, msgpack.packb([list(identity), b"".join(chunks)]))


def _is_damaged(txn: lmdb.Transaction, db: lmdb._Database, pid: bytes, chunk_id: bytes) -> bool:
    return txn.get(pid, db=db) is not None or txn.get(pid + chunk_id, db=db) is not None


def _decode_location(raw: bytes) -> BlobLocation:
    pid, kind, offset, length, raw_length = _LOCATION.unpack(raw)
    return BlobLocation(pid.hex(), kind, offset, length, raw_length)
