"""One streaming pass over the whole repository, shared by check and prune.

Memory stays bounded: referenced chunk IDs and every index entry go into a scratch LMDB on disk;
only per-pack totals are kept in memory (packs are ~1/30 000 of the data).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import os
import shutil
import struct
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import lmdb

from dtstore.content.damage import DamageSet, damage_names, load_damage
from dtstore.content.index import IndexCache
from dtstore.content.pack import BlobEntry
from dtstore.content.segments import decode_segment, list_packs
from dtstore.crypto.aead import Sealer
from dtstore.crypto.keyed_hash import ChunkHasher
from dtstore.errors import DtstoreError
from dtstore.snapshots.manifest import Item, Snapshot
from dtstore.snapshots.store import SnapshotStore
from dtstore.storage import layout
from dtstore.storage.base import BlobInfo, BlobStore

_BLOB = struct.Struct(">32sQ")  # key: pack id, offset
_BLOB_VALUE = struct.Struct("<32sII")  # chunk id, length, raw length
_CHOSEN = struct.Struct(">32sI")  # pack id, stored length of the chunk's blob there


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
    indexed_bytes: int = 0
    """stored bytes of the pack's distinct index entries (the scan's own bookkeeping)"""
    regular: bool = True
    """listed once, with distinct offsets and chunk IDs ([P5]): the scan's fast path counted it"""

    @property
    def size(self) -> int:
        return self.listed_size or 0


SHED_EVERY = int(os.environ.get("DTSTORE_SCAN_SHED_EVERY", "16384"))
"""entries read or written between two ``Scratch.shed`` calls (0: never shed).  Each random access can
map 64 KiB (the kernel maps the neighbours of a faulted page too), so 16384 bounds the scratch's
resident pages at about 1 GiB however large the repository (4096: 256 MiB, at ~1/3 more time)."""
_MADV_DONTNEED = 4


class Scratch:
    """A throw-away LMDB environment in a temporary directory.

    ``blobs``: (pack ID, offset) → (chunk ID, length, raw length), every index entry once.
    ``chosen``: chunk ID → (pack ID, length) of the copy counted as used (``chosen_pack``).
    ``refs``: chunk ID → b"", every chunk a snapshot refers to.

    The tables live in a memory-mapped file, whose pages stay mapped into the process once touched:
    its resident size would grow with the repository (10 million chunks: gigabytes of page cache
    counted as the process's RSS).  ``touched`` counts the entries used, and every ``SHED_EVERY``
    ``shed`` drops the mapping's pages from the process (Linux ``madvise(MADV_DONTNEED)`` on a shared
    file mapping: the data stays in the file and the page cache, and is faulted back in when next
    read), so the resident set stays bounded whatever the repository's size.
    """

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="dtstore-scan-"))
        self.env = lmdb.open(str(self.path), map_size=1 << 40, max_dbs=4, sync=False, metasync=False,
                             writemap=True)
        self.refs = self.env.open_db(b"refs")
        self.blobs = self.env.open_db(b"blobs")
        self.chosen = self.env.open_db(b"chosen")
        self._since_shed = 0
        self._mapping: tuple[int, int] | None = None
        self._looked_up = False
        self.sheds = 0

    def touched(self, entries: int) -> None:
        """``entries`` were read or written; shed the mapped pages every ``SHED_EVERY``.  Safe beside
        open transactions and other threads (their next access faults the page back in)."""
        self._since_shed += entries
        if SHED_EVERY and self._since_shed >= SHED_EVERY:
            self._since_shed = 0
            self.shed()

    def shed(self) -> None:
        if not self._looked_up:
            self._mapping, self._looked_up = _find_mapping(self.path / "data.mdb"), True
        if self._mapping is None:
            return
        start, length = self._mapping
        info, page = self.env.info(), self.env.stat()["psize"]
        used = min(length, (int(info["last_pgno"]) + 1) * int(page))
        if _madvise is not None and _madvise(start, used, _MADV_DONTNEED) == 0:
            self.sheds += 1

    def close(self) -> None:
        self.env.close()
        shutil.rmtree(self.path, ignore_errors=True)


def _load_madvise() -> Callable[[int, int, int], int] | None:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_madvise = _load_madvise()


def _find_mapping(path: Path) -> tuple[int, int] | None:
    """(start, length) of this process's mapping of ``path`` (LMDB maps its file once, whole)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].rstrip("\n") == str(path):
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    return start, end - start
    except OSError:
        pass
    return None


def chosen_pack(txn: lmdb.Transaction, chunk_id: bytes, db: lmdb._Database | None = None) -> bytes | None:
    """The pack ID (32 bytes) of the copy of ``chunk_id`` counted as used, or None: none is indexed."""
    value = txn.get(chunk_id, db=db)
    return None if value is None else bytes(value[:32])


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
        count = 0
        with self.scratch.env.begin(db=self.scratch.blobs) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(prefix):
                return
            for key, value in cursor:
                pid, offset = _BLOB.unpack(key)
                if pid != prefix:
                    break
                chunk_id, length, raw = _BLOB_VALUE.unpack(value)
                count += 1
                yield chunk_id, offset, length, raw
        self.scratch.touched(count)

    def is_referenced(self, chunk_id: bytes) -> bool:
        with self.scratch.env.begin(db=self.scratch.refs) as txn:
            return txn.get(chunk_id) is not None

    def is_used_in(self, chunk_id: bytes, pack_id: str) -> bool:
        """Referenced, and this pack holds the copy counted as used (see ``avoid``)."""
        with self.scratch.env.begin() as txn:
            return (txn.get(chunk_id, db=self.scratch.refs) is not None
                    and chosen_pack(txn, chunk_id, self.scratch.chosen) == bytes.fromhex(pack_id))


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
    listed_segments = sorted(ctx.store.list(layout.INDEX), key=lambda info: info.name)
    segments = [info.name for info in listed_segments]
    for name, sealed in _fetch_ahead(ctx.store, listed_segments):
        records, _ = decode_segment(ctx.sealer, sealed, name)
        with scratch.env.begin(write=True) as txn:
            blobs, chosen = txn.cursor(db=scratch.blobs), txn.cursor(db=scratch.chosen)
            for record in records:
                stat = packs.setdefault(record.pack_id, PackStat(record.pack_id))
                first = not stat.indexed
                stat.indexed = True
                stat.kind = record.kind
                stat.segments.add(name)
                pid = bytes.fromhex(record.pack_id)
                entries = record.entries
                if first and stat.regular and _distinct(entries):
                    _index_fast(blobs, chosen, stat, pid, entries, rank)
                else:
                    stat.regular = False
                    _index_slow(txn, scratch, stat, pid, entries, rank)
                scratch.touched(len(entries))
    progress("reading snapshots")
    snapshots = ctx.snapshots.load_all()
    missing: dict[str, list[str]] = {}
    marker = _Marker(scratch)
    try:
        for snap, read in _read_ahead(ctx, scratch, snapshots):
            _mark_references(ctx, scratch, marker, snap, missing, read)
        marker.commit()
    finally:
        marker.abort()
    referenced = marker.added
    progress("counting used data")
    if _count_used(scratch, packs):
        # some referenced chunk is in no index: name the snapshots and paths (rare, so a second walk)
        progress("finding missing data")
        missing = {}
        for snap in snapshots:
            _find_missing(ctx, scratch, snap, missing)
    return RepositoryScan(segments, packs, snapshots, referenced, missing, scratch, started, damage, damage_records)


def _distinct(entries: list[BlobEntry]) -> bool:
    return len({e.offset for e in entries}) == len(entries) == len({e.chunk_id for e in entries})


def _index_fast(blobs: lmdb.Cursor, chosen: lmdb.Cursor, stat: PackStat, pid: bytes, entries: list[BlobEntry],
                rank: Callable[[str, bytes], int]) -> None:
    """A pack seen for the first time, with distinct offsets and chunk IDs: one C call per table.
    The same result as ``_index_slow``: every key is new, and a chunk is chosen here unless another
    pack already holds a copy that ranks at least as well."""
    blobs.putmulti([(_BLOB.pack(pid, e.offset), _BLOB_VALUE.pack(e.chunk_id, e.length, e.raw_length))
                    for e in entries], overwrite=False)
    stat.blobs += len(entries)
    stat.index_end = max(stat.index_end, max((e.offset + e.length for e in entries), default=0))
    stat.indexed_bytes += sum(e.length for e in entries)
    _, added = chosen.putmulti([(e.chunk_id, _CHOSEN.pack(pid, e.length)) for e in entries], overwrite=False)
    if added == len(entries):
        return
    txn_get, txn_put = chosen.get, chosen.put  # copies elsewhere: compare them (rare)
    for e in entries:
        current = txn_get(e.chunk_id)
        if current is not None and bytes(current[:32]) != pid \
                and rank(stat.pack_id, e.chunk_id) < rank(bytes(current[:32]).hex(), e.chunk_id):
            txn_put(e.chunk_id, _CHOSEN.pack(pid, e.length))


def _index_slow(txn: lmdb.Transaction, scratch: Scratch, stat: PackStat, pid: bytes, entries: list[BlobEntry],
                rank: Callable[[str, bytes], int]) -> None:
    """Entry by entry: a pack listed again (several segments), or one with repeated offsets or chunk IDs."""
    for e in entries:
        key = _BLOB.pack(pid, e.offset)
        if txn.get(key, db=scratch.blobs) is None:
            stat.blobs += 1
            stat.index_end = max(stat.index_end, e.offset + e.length)
        txn.put(key, _BLOB_VALUE.pack(e.chunk_id, e.length, e.raw_length), db=scratch.blobs)
        current = chosen_pack(txn, e.chunk_id, scratch.chosen)
        if current is None or rank(stat.pack_id, e.chunk_id) < rank(current.hex(), e.chunk_id):
            txn.put(e.chunk_id, _CHOSEN.pack(pid, e.length), db=scratch.chosen)


def _count_used(scratch: Scratch, packs: dict[str, PackStat]) -> bool:
    """Used and unused bytes per pack.  A chunk is used in its pack when it is referenced and that
    pack holds its counted copy: for regular packs, one merge of ``chosen`` and ``refs`` (both in
    chunk ID order, read sequentially); the others entry by entry.  True if some referenced chunk
    has no indexed copy (missing data)."""
    by_pid = {bytes.fromhex(pack_id): stat for pack_id, stat in packs.items()}
    absent = False
    with scratch.env.begin() as txn:
        refs = txn.cursor(db=scratch.refs).iternext(keys=True, values=False)
        ref = next(refs, None)
        for chunk_id, value in txn.cursor(db=scratch.chosen):
            scratch.touched(1)
            while ref is not None and ref < chunk_id:
                absent = True
                ref = next(refs, None)
            if ref is None:
                break
            if ref != chunk_id:
                continue
            ref = next(refs, None)  # matched: what is left behind from here on is in no index
            if len(value) != _CHOSEN.size:
                continue
            pid, length = _CHOSEN.unpack(value)
            stat = by_pid[pid]
            if stat.regular:
                stat.used_blobs += 1
                stat.used_bytes += length
        if ref is not None:
            absent = True  # references past the last indexed chunk
        for stat in packs.values():
            if stat.regular:
                stat.unused_bytes = stat.indexed_bytes - stat.used_bytes
        irregular = [pid for pid, stat in by_pid.items() if not stat.regular]
        cursor = txn.cursor(db=scratch.blobs)
        for prefix in irregular:
            stat = by_pid[prefix]
            if not cursor.set_range(prefix):
                continue
            for key, value in cursor:
                pid, _ = _BLOB.unpack(key)
                if pid != prefix:
                    break
                scratch.touched(1)
                chunk_id, length, _ = _BLOB_VALUE.unpack(value)
                if txn.get(chunk_id, db=scratch.refs) is not None \
                        and chosen_pack(txn, chunk_id, scratch.chosen) == pid:
                    stat.used_blobs += 1
                    stat.used_bytes += length
                else:
                    stat.unused_bytes += length
    return absent


FETCH_AHEAD_BYTES = 64 << 20
"""segment bytes ``_fetch_ahead`` holds in flight at most (besides the one being decoded)"""


def _workers(store: BlobStore) -> int:
    """Requests the scan keeps in flight: 0 on a local store (a read there costs microseconds, and
    threads only contend for the interpreter), else the store's connections."""
    capabilities = getattr(store, "capabilities", None)
    if capabilities is None or capabilities.local:
        return 0
    return max(1, int(capabilities.connections))


def _fetch_ahead(store: BlobStore, infos: list[BlobInfo]) -> Iterator[tuple[str, bytes]]:
    """(name, content) of each object in order, downloaded up to the store's connections at a time
    and at most ``FETCH_AHEAD_BYTES`` ahead (by listed size); one by one on a local store."""
    workers = _workers(store)
    if workers <= 1 or len(infos) < 2:
        for info in infos:
            yield info.name, store.get(info.name)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="dtstore-scan") as pool:
        pending: deque[tuple[BlobInfo, Future[bytes]]] = deque()
        ahead, in_flight = 0, 0
        try:
            for _ in infos:
                while ahead < len(infos) and (not pending or (len(pending) < 2 * workers
                                                              and in_flight + infos[ahead].size <= FETCH_AHEAD_BYTES)):
                    pending.append((infos[ahead], pool.submit(store.get, infos[ahead].name)))
                    in_flight += infos[ahead].size
                    ahead += 1
                info, future = pending.popleft()
                in_flight -= info.size
                yield info.name, future.result()
        finally:
            for _, future in pending:
                future.cancel()


READ_AHEAD_ITEM_CHUNKS = 4
"""a snapshot whose item list has at most this many chunks (metadata chunks are at most 256 KiB:
1 MiB of item stream) is read ahead in a worker thread, several at a time; a larger one is read in
the scan's own thread, item by item, so memory stays bounded"""


@dataclass
class _ItemChunks:
    """One snapshot's item list as read ahead: the chunk lists of its items, in order."""

    listed: bool
    """every chunk of the item list is indexed (otherwise it was not read)"""
    chunks: list[list[bytes]] = field(default_factory=list)
    error: DtstoreError | None = None
    """why the item list could not be read (after the items in ``chunks``)"""


def _read_ahead(ctx: MaintenanceContext, scratch: Scratch,
                snapshots: list[Snapshot]) -> Iterator[tuple[Snapshot, _ItemChunks | None]]:
    """The snapshots in order, each with its item list read ahead (None: too large, or alone: read
    it in this thread).  Up to twice the store's connections small item lists are read at once: one
    by one, most of their time is waiting for a range read.  Not on a local store (``_workers``)."""
    workers = _workers(ctx.store)

    def read(snap: Snapshot) -> _ItemChunks:
        with scratch.env.begin(db=scratch.chosen) as txn:
            if not all(txn.get(c) is not None for c in snap.items_chunks):
                return _ItemChunks(False)
        found = _ItemChunks(True)
        try:
            for item in ctx.list_items(snap):
                if item.chunks:
                    found.chunks.append(item.chunks)
        except DtstoreError as exc:
            found.error = exc
        return found

    small = [len(snap.items_chunks) <= READ_AHEAD_ITEM_CHUNKS for snap in snapshots]
    if workers <= 1 or sum(small) < 2:
        yield from ((snap, None) for snap in snapshots)
        return
    window = 2 * workers
    with ThreadPoolExecutor(workers, thread_name_prefix="dtstore-scan") as pool:
        pending: deque[Future[_ItemChunks]] = deque()
        ahead = 0  # the next snapshot to submit

        def fill(upto: int) -> None:
            nonlocal ahead
            while ahead < min(upto, len(snapshots)):
                if small[ahead]:
                    pending.append(pool.submit(read, snapshots[ahead]))
                ahead += 1

        try:
            for number, snap in enumerate(snapshots):
                fill(number + window)
                yield snap, pending.popleft().result() if small[number] else None
        finally:
            for future in pending:
                future.cancel()


COMMIT_EVERY = 16384
"""references added in one write transaction of ``refs``, at most (a transaction per chunk list cost
more than the inserts themselves when snapshots are small)"""


class _Marker:
    """Adds referenced chunk IDs to ``refs``: one write transaction for many chunk lists, committed
    every ``COMMIT_EVERY`` entries and at the end (``commit``)."""

    def __init__(self, scratch: Scratch) -> None:
        self._scratch = scratch
        self._txn: lmdb.Transaction | None = None
        self._cursor: lmdb.Cursor | None = None
        self._pending = 0
        self.added = 0
        """chunk IDs new in ``refs``"""

    def mark(self, chunks: list[bytes]) -> None:
        step = SHED_EVERY or len(chunks) or 1
        for start in range(0, len(chunks), step):  # a file of millions of chunks: shed as it goes
            part = chunks[start : start + step]
            if self._cursor is None:
                self._txn = self._scratch.env.begin(write=True, db=self._scratch.refs)
                self._cursor = self._txn.cursor()
            _, added = self._cursor.putmulti([(c, b"") for c in part], overwrite=False)
            self.added += added
            self._pending += len(part)
            if self._pending >= COMMIT_EVERY:
                self.commit()
            self._scratch.touched(len(part))

    def commit(self) -> None:
        if self._txn is not None:
            self._txn.commit()
        self._txn, self._cursor, self._pending = None, None, 0

    def abort(self) -> None:
        if self._txn is not None:
            self._txn.abort()
        self._txn, self._cursor, self._pending = None, None, 0


def _mark_references(ctx: MaintenanceContext, scratch: Scratch, marker: _Marker, snap: Snapshot,
                     missing: dict[str, list[str]], read: _ItemChunks | None = None) -> None:
    """Add the snapshot's chunks to ``refs`` (through ``marker``).  Only the item list is checked
    against the index here (its chunks must be there to be read); missing data chunks are found by
    ``_count_used`` and named by ``_find_missing``.  ``read``: the item list as read ahead."""
    if read is None:
        with scratch.env.begin(db=scratch.chosen) as txn:
            listed = all(txn.get(c) is not None for c in snap.items_chunks)
    else:
        listed = read.listed
    marker.mark(snap.items_chunks)
    if not listed:
        missing.setdefault(snap.id, []).append("(item list)")
        return
    if read is not None:
        for chunks in read.chunks:
            marker.mark(chunks)
        if read.error is not None:
            missing.setdefault(snap.id, []).append(f"(item list unreadable: {read.error})")
        return
    try:
        for item in ctx.list_items(snap):
            if item.chunks:
                marker.mark(item.chunks)
    except DtstoreError as exc:
        missing.setdefault(snap.id, []).append(f"(item list unreadable: {exc})")


def _find_missing(ctx: MaintenanceContext, scratch: Scratch, snap: Snapshot, missing: dict[str, list[str]]) -> None:
    """The snapshot's paths (in item order) with a chunk in no index, ``(item list)`` if its item
    list is not indexed, or why its item list could not be read."""
    def absent(chunks: list[bytes]) -> bool:
        with scratch.env.begin(db=scratch.chosen) as txn:
            found = True
            for chunk_id in chunks:
                if txn.get(chunk_id) is None:
                    found = False
                    break
        scratch.touched(len(chunks))
        return not found

    if absent(snap.items_chunks):
        missing.setdefault(snap.id, []).append("(item list)")
        return
    try:
        for item in ctx.list_items(snap):
            if item.chunks and absent(item.chunks):
                missing.setdefault(snap.id, []).append("/" + item.name)
    except DtstoreError as exc:
        missing.setdefault(snap.id, []).append(f"(item list unreadable: {exc})")
