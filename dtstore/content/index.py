"""The local LMDB cache: chunk → pack location, known index segments and packs, and file metadata.

It is only a cache of the remote index: deleting the directory loses nothing, the next open
rebuilds it from the index segments.  Several processes on one host may share it (LMDB locks).
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterable
from pathlib import Path

import lmdb
import msgpack

from dtstore.content.pack import BlobEntry, BlobLocation

_LOCATION = struct.Struct("<32sBQII")
_MAP_SIZE = 1 << 40  # address space only; LMDB files grow as needed


_ENVS: dict[str, tuple[lmdb.Environment, int]] = {}
_ENVS_LOCK = threading.Lock()


def _acquire_env(path: Path) -> lmdb.Environment:
    """LMDB allows one environment per file per process: share it between handles."""
    key = str(path.resolve())
    with _ENVS_LOCK:
        env, users = _ENVS.get(key, (None, 0))
        if env is None:
            env = lmdb.open(key, map_size=_MAP_SIZE, max_dbs=8, subdir=True, metasync=False, sync=False,
                            lock=True, writemap=False)
        _ENVS[key] = (env, users + 1)
        return env


def _release_env(path: Path) -> None:
    key = str(path.resolve())
    with _ENVS_LOCK:
        env, users = _ENVS[key]
        if users <= 1:
            del _ENVS[key]
            env.close()
        else:
            _ENVS[key] = (env, users - 1)


class IndexCache:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        self.path = path
        self._env = _acquire_env(path)
        self._chunks = self._env.open_db(b"chunks")
        self._segments = self._env.open_db(b"segments")
        self._packs = self._env.open_db(b"packs")
        self._files = self._env.open_db(b"files")
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release_env(self.path)

    # chunks -------------------------------------------------------------------------------
    def lookup(self, chunk_id: bytes) -> BlobLocation | None:
        with self._env.begin(db=self._chunks) as txn:
            raw = txn.get(chunk_id)
        return None if raw is None else _decode_location(raw)

    def lookup_many(self, chunk_ids: Iterable[bytes]) -> dict[bytes, BlobLocation]:
        found: dict[bytes, BlobLocation] = {}
        with self._env.begin(db=self._chunks) as txn:
            for chunk_id in chunk_ids:
                raw = txn.get(chunk_id)
                if raw is not None:
                    found[chunk_id] = _decode_location(raw)
        return found

    def contains(self, chunk_id: bytes) -> bool:
        with self._env.begin(db=self._chunks) as txn:
            return txn.get(chunk_id) is not None

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
            for pack_id, kind, entries in packs:
                pid = bytes.fromhex(pack_id)
                txn.put(pid, struct.pack("<B", kind), db=self._packs)
                for e in entries:
                    txn.put(e.chunk_id, _LOCATION.pack(pid, kind, e.offset, e.length, e.raw_length),
                            db=self._chunks)
            txn.put(name.encode(), b"", db=self._segments)
        self._env.sync()

    def reset(self) -> None:
        with self._env.begin(write=True) as txn:
            for db in (self._chunks, self._segments, self._packs):
                txn.drop(db, delete=False)

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


def _decode_location(raw: bytes) -> BlobLocation:
    pid, kind, offset, length, raw_length = _LOCATION.unpack(raw)
    return BlobLocation(pid.hex(), kind, offset, length, raw_length)
