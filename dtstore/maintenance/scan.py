"""One streaming pass over the whole repository, shared by check and prune.

Memory stays bounded: referenced chunk IDs and every index entry go into a scratch LMDB on disk;
only per-pack totals are kept in memory (packs are ~1/30 000 of the data).  Time grows with the
repository, not faster: the per-chunk tables are never updated at random.  Candidates and references
are spilled to files partitioned by the chunk ID's first byte, then each partition is sorted in memory
and appended to its table in key order (an external sort; chunk IDs are keyed hashes, so the
partitions are even).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import struct
import tempfile
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import lmdb

from dtstore.content.damage import DamageSet, damage_names, load_damage
from dtstore.content.index import IndexCache
from dtstore.content.mapped import MappedPages
from dtstore.content.pack import BlobEntry
from dtstore.content.segments import decode_segment, list_packs
from dtstore.crypto.aead import Sealer
from dtstore.crypto.keyed_hash import ChunkHasher
from dtstore.errors import DtstoreError
from dtstore.snapshots.manifest import Item, Snapshot
from dtstore.snapshots.store import SnapshotStore
from dtstore.storage import layout
from dtstore.storage.base import BlobInfo, BlobStore

_ENTRY = struct.Struct(">32sQII")  # one index entry in a ``blobs`` value: chunk id, offset, length, raw length
_CHOSEN = struct.Struct(">32sI")  # pack id, stored length of the chunk's blob there
_CANDIDATE = struct.Struct(">32sBI32sI")
"""a copy of a chunk, as spilled for ``chosen``: chunk id, rank, read order, then the ``_CHOSEN`` value;
so the copy to count sorts first among its chunk's"""


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


RESIDENT_BUDGET = int(os.environ.get("DTSTORE_SCAN_RESIDENT_MIB", "128")) << 20
"""growth of the resident mapped pages after which the scratch's are shed (0: never; see
``dtstore.content.mapped``): about this much of the scratch stays resident however large the
repository"""


class Scratch:
    """A throw-away LMDB environment in a temporary directory.

    ``blobs``: pack ID → its index entries (``_ENTRY`` each, by offset; one per offset).
    ``chosen``: chunk ID → (pack ID, length) of the copy counted as used (``chosen_pack``).
    ``refs``: chunk ID → b"", every chunk a snapshot refers to.
    ``chosen`` and ``refs`` are written once, in key order, from a ``Spill``, which keeps its files
    in the same directory.  ``touched`` counts the entries used and keeps the file's mapped pages out
    of the resident set (``MappedPages``).  Not ``writemap``: LMDB then writes its pages with
    ``pwrite``, and shedding never turns a later write into a write fault on the mapping (10M chunks:
    7 s of kernel time instead of 17 s).
    """

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="dtstore-scan-"))
        try:
            self.env = lmdb.open(str(self.path), map_size=1 << 40, max_dbs=4, sync=False, metasync=False,
                                 writemap=False)
            self.refs = self.env.open_db(b"refs")
            self.blobs = self.env.open_db(b"blobs")
            self.chosen = self.env.open_db(b"chosen")
            self.pages = MappedPages(self.env, self.path / "data.mdb")
        except BaseException:
            if hasattr(self, "env"):
                self.env.close()
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        # gigabytes at scale: gone with close(), and also if a caller drops the scan without closing
        # it or the interpreter exits first (an interrupt between two steps)
        self._removal = weakref.finalize(self, _remove_scratch, self.pages, self.env, self.path)

    @property
    def sheds(self) -> int:
        return self.pages.sheds

    def touched(self, lookups: int = 0, streamed: int = 0) -> None:
        """``lookups`` random lookups and ``streamed`` bytes in key order were done in the tables."""
        self.pages.touched(lookups, RESIDENT_BUDGET, streamed)

    def close(self) -> None:
        self._removal()


def _remove_scratch(pages: MappedPages, env: lmdb.Environment, path: Path) -> None:
    pages.close()
    env.close()
    shutil.rmtree(path, ignore_errors=True)


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
        return iter(self.entries_of(pack_id))

    def entries_of(self, pack_id: str) -> list[BlobEntry]:
        """The pack's index entries, by offset."""
        with self.scratch.env.begin() as txn:
            entries = _entries(txn, self.scratch, bytes.fromhex(pack_id))
        self.scratch.touched(1)
        return entries

    def is_referenced(self, chunk_id: bytes) -> bool:
        self.scratch.touched(1)
        with self.scratch.env.begin(db=self.scratch.refs) as txn:
            return txn.get(chunk_id) is not None

    def is_used_in(self, chunk_id: bytes, pack_id: str) -> bool:
        """Referenced, and this pack holds the copy counted as used (see ``avoid``)."""
        self.scratch.touched(2)
        with self.scratch.env.begin() as txn:
            return (txn.get(chunk_id, db=self.scratch.refs) is not None
                    and chosen_pack(txn, chunk_id, self.scratch.chosen) == bytes.fromhex(pack_id))


def scan_repository(ctx: MaintenanceContext, started: dt.datetime, avoid: set[str] = frozenset(),  # type: ignore[assignment]
                    progress: Callable[[str], None] = lambda _: None) -> RepositoryScan:
    """List packs, load every segment, walk every snapshot, then count used bytes per pack.

    ``avoid`` are marked packs.  When a chunk has copies in several packs, the one counted as used
    (``chosen``) is, in this order of preference: a copy the damage set does not name, in a pack that
    exists; outside ``avoid``; the one read first.  So deleting marked packs never loses the only
    copy, and a damaged copy whose content was stored again (self-healing) is garbage.  The scratch
    (tables and spill files, gigabytes at 10 million chunks) is removed if the scan fails.
    """
    scratch = Scratch()
    try:
        return _scan(ctx, scratch, started, avoid, progress)
    except BaseException:
        scratch.close()
        raise


def _scan(ctx: MaintenanceContext, scratch: Scratch, started: dt.datetime, avoid: set[str],
          progress: Callable[[str], None]) -> RepositoryScan:
    packs: dict[str, PackStat] = {}
    for pack_id, info in list_packs(ctx.store).items():
        packs[pack_id] = PackStat(pack_id, listed_size=info.size, name=info.name, modified=info.modified)
    damage_records = sorted(damage_names(ctx.store))
    damage = load_damage(ctx.store, ctx.sealer, damage_records)
    progress("reading the index")
    listed_segments = sorted(ctx.store.list(layout.INDEX), key=lambda info: info.name)
    segments = [info.name for info in listed_segments]
    candidates = Spill(scratch.path, "chosen", _CANDIDATE.size)
    ranks = _Ranks(damage, avoid)
    for name, sealed in _fetch_ahead(ctx.store, listed_segments):
        records, _ = decode_segment(ctx.sealer, sealed, name)
        with scratch.env.begin(write=True, db=scratch.blobs) as txn:
            for record in records:
                stat = packs.setdefault(record.pack_id, PackStat(record.pack_id))
                first = not stat.indexed
                stat.indexed = True
                stat.kind = record.kind
                stat.segments.add(name)
                pid = bytes.fromhex(record.pack_id)
                entries = record.entries
                if first and stat.regular and _distinct(entries):
                    _index_pack(txn, stat, pid, entries)
                else:
                    stat.regular = False
                    _merge_pack(txn, stat, pid, entries)
                candidates.add(ranks.candidates(stat, pid, entries, candidates.records))
                scratch.touched(1, len(entries) * _ENTRY.size)
    _write_chosen(scratch, candidates)
    progress("reading snapshots")
    snapshots = ctx.snapshots.load_all()
    missing: dict[str, list[str]] = {}
    refs = _References(Spill(scratch.path, "refs", 32))
    for snap, read in _read_ahead(ctx, scratch, snapshots):
        _mark_references(ctx, scratch, refs, snap, missing, read)
    refs.forget()
    progress("counting used data")
    referenced, absent = _write_references(scratch, refs.spill, packs)
    if absent:
        # some referenced chunk is in no index: name the snapshots and paths (rare, so a second walk)
        progress("finding missing data")
        missing = {}
        for snap in snapshots:
            _find_missing(ctx, scratch, snap, missing)
    return RepositoryScan(segments, packs, snapshots, referenced, missing, scratch, started, damage, damage_records)


SPILL_BUFFER = 32 << 20
"""bytes a ``Spill`` holds in memory before appending them to its files"""


class Spill:
    """Fixed-size records whose first byte is evenly spread (they start with a keyed hash), kept in
    256 partitions by that byte: in memory up to ``SPILL_BUFFER`` bytes, then appended to a file per
    partition.  Read back partition by partition (``partitions``), each sorted alone, they come out
    in the order of the whole, with one partition in memory at a time."""

    def __init__(self, directory: Path, name: str, record_size: int) -> None:
        self.record_size = record_size
        self.records = 0
        self._paths = [directory / f"{name}-{number:02x}" for number in range(256)]
        self._buffers = [bytearray() for _ in range(256)]
        self._on_disk = [False] * 256
        self._buffered = 0

    def add(self, records: Sequence[bytes]) -> None:
        buffers = self._buffers
        for record in records:
            buffers[record[0]] += record
        self.records += len(records)
        self._buffered += len(records) * self.record_size
        if self._buffered >= SPILL_BUFFER:
            self._write()

    def _write(self) -> None:
        for number, buffer in enumerate(self._buffers):
            if buffer:
                with open(self._paths[number], "ab") as file:
                    file.write(buffer)
                self._on_disk[number] = True
                buffer.clear()
        self._buffered = 0

    def partitions(self) -> Iterator[list[bytes]]:
        """Each partition's records (unsorted), in partition order; a partition's file goes as it is read."""
        size = self.record_size
        for number, buffer in enumerate(self._buffers):
            data = bytes(buffer)
            if self._on_disk[number]:
                data = self._paths[number].read_bytes() + data
                self._paths[number].unlink()
            buffer.clear()
            yield [data[start : start + size] for start in range(0, len(data), size)]
        self._buffered = 0


RECENT_REFERENCES = 1 << 19
"""chunk IDs ``_References`` remembers at most (~45 MiB)"""


class _References:
    """The chunk IDs snapshots refer to, spilled for ``refs``; an ID added recently is not spilled
    again.  Consecutive snapshots of a source share most of their chunks (that is deduplication), so
    this shrinks the spill, its files and its sorting by that share (half in the synthetic history)."""

    def __init__(self, spill: Spill) -> None:
        self.spill = spill
        self._recent: set[bytes] = set()

    def add(self, chunks: list[bytes]) -> None:
        recent = self._recent
        new = [chunk_id for chunk_id in chunks if chunk_id not in recent]
        if len(recent) + len(new) > RECENT_REFERENCES:
            recent.clear()
        if len(new) <= RECENT_REFERENCES:
            recent.update(new)
        self.spill.add(new)

    def forget(self) -> None:
        self._recent.clear()


class _Ranks:
    """How well a copy ranks for ``chosen`` (lower is better): 2 × bad (in a pack not listed, or named
    by the damage set) + in a marked pack."""

    def __init__(self, damage: DamageSet, avoid: set[str]) -> None:
        self._damage = damage
        self._damaged = damage.pack_ids()
        self._avoid = avoid

    def candidates(self, stat: PackStat, pid: bytes, entries: list[BlobEntry], order: int) -> list[bytes]:
        """The ``_CANDIDATE`` records of a pack's entries, the first read as ``order``."""
        pack_rank = 2 * (stat.listed_size is None) + (stat.pack_id in self._avoid)
        pack = _CANDIDATE.pack
        if stat.pack_id not in self._damaged:
            return [pack(e.chunk_id, pack_rank, order + n, pid, e.length) for n, e in enumerate(entries)]
        is_bad = self._damage.is_bad
        return [pack(e.chunk_id, pack_rank | 2 * is_bad(stat.pack_id, e.chunk_id), order + n, pid, e.length)
                for n, e in enumerate(entries)]


def _distinct(entries: list[BlobEntry]) -> bool:
    return len({e.offset for e in entries}) == len(entries) == len({e.chunk_id for e in entries})


def _entries(txn: lmdb.Transaction, scratch: Scratch, pid: bytes) -> list[BlobEntry]:
    """A pack's index entries, by offset."""
    value = txn.get(pid, db=scratch.blobs)
    return [] if value is None else list(map(BlobEntry._make, _ENTRY.iter_unpack(value)))


def _index_pack(txn: lmdb.Transaction, stat: PackStat, pid: bytes, entries: list[BlobEntry]) -> None:
    """A pack seen for the first time, with distinct offsets and chunk IDs (the fast path: its used
    bytes are counted from ``chosen`` alone)."""
    ordered = sorted(entries, key=lambda e: e.offset)
    txn.put(pid, b"".join([_ENTRY.pack(*e) for e in ordered]))
    stat.blobs += len(entries)
    stat.index_end = max(stat.index_end, max((e.offset + e.length for e in entries), default=0))
    stat.indexed_bytes += sum(e.length for e in entries)


def _merge_pack(txn: lmdb.Transaction, stat: PackStat, pid: bytes, entries: list[BlobEntry]) -> None:
    """A pack listed again (several segments), or one with repeated offsets or chunk IDs: entry by
    entry, a later entry at an offset replacing the earlier."""
    value = txn.get(pid)
    by_offset = {} if value is None else {entry[1]: entry for entry in _ENTRY.iter_unpack(value)}
    for e in entries:
        if e.offset not in by_offset:
            stat.blobs += 1
            stat.index_end = max(stat.index_end, e.offset + e.length)
        by_offset[e.offset] = e
    txn.put(pid, b"".join([_ENTRY.pack(*by_offset[offset]) for offset in sorted(by_offset)]))


def _write_chosen(scratch: Scratch, candidates: Spill) -> None:
    """``chosen`` from the candidates, partition by partition in key order: per chunk, the candidate
    that sorts first (best rank, then read first)."""
    for records in candidates.partitions():
        records.sort()
        keys = [record[:32] for record in records]
        values = [record[37:] for record in records]
        if len(set(keys)) == len(keys):
            pairs: list[tuple[bytes, bytes]] | zip[tuple[bytes, bytes]] = zip(keys, values, strict=True)
        else:  # copies in several packs: the first of each chunk's
            pairs = sorted(dict(zip(reversed(keys), reversed(values), strict=True)).items())
        with scratch.env.begin(write=True, db=scratch.chosen) as txn:
            txn.cursor().putmulti(pairs, append=True)
        scratch.touched(streamed=len(records) * _CANDIDATE.size)


def _write_references(scratch: Scratch, refs: Spill, packs: dict[str, PackStat]) -> tuple[int, bool]:
    """Write ``refs`` (distinct, in key order) and count used and unused bytes per pack.  A chunk is
    used in its pack when it is referenced and that pack holds its counted copy: for regular packs,
    from the ``chosen`` entries of each partition's references; the others entry by entry.  Returns
    the distinct references and whether some has no indexed copy (missing data)."""
    by_pid = {bytes.fromhex(pack_id): stat for pack_id, stat in packs.items()}
    referenced, absent = 0, False
    for records in refs.partitions():
        distinct = sorted(set(records))
        referenced += len(distinct)
        with scratch.env.begin(write=True) as txn:
            txn.cursor(db=scratch.refs).putmulti([(chunk_id, b"") for chunk_id in distinct], append=True)
            found = txn.cursor(db=scratch.chosen).getmulti(distinct)
        absent = absent or len(found) < len(distinct)
        for _, value in found:
            pid, length = _CHOSEN.unpack(value)
            stat = by_pid[pid]
            if stat.regular:
                stat.used_blobs += 1
                stat.used_bytes += length
        scratch.touched(streamed=len(distinct) * (32 + _CHOSEN.size) * 2)
    for stat in packs.values():
        if stat.regular:
            stat.unused_bytes = stat.indexed_bytes - stat.used_bytes
    with scratch.env.begin() as txn:
        for pid, stat in by_pid.items():
            if stat.regular:
                continue
            entries = _entries(txn, scratch, pid)
            scratch.touched(1 + 2 * len(entries))
            for chunk_id, _, length, _ in entries:
                if txn.get(chunk_id, db=scratch.refs) is not None \
                        and chosen_pack(txn, chunk_id, scratch.chosen) == pid:
                    stat.used_blobs += 1
                    stat.used_bytes += length
                else:
                    stat.unused_bytes += length
    return referenced, absent


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
        if not _indexed(scratch, snap.items_chunks):
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


def _mark_references(ctx: MaintenanceContext, scratch: Scratch, refs: _References, snap: Snapshot,
                     missing: dict[str, list[str]], read: _ItemChunks | None = None) -> None:
    """Add the snapshot's chunks to ``refs``.  Only the item list is checked against the index here
    (its chunks must be there to be read); missing data chunks are found by ``_write_references``
    and named by ``_find_missing``.  ``read``: the item list as read ahead."""
    listed = _indexed(scratch, snap.items_chunks) if read is None else read.listed
    refs.add(snap.items_chunks)
    if not listed:
        missing.setdefault(snap.id, []).append("(item list)")
        return
    if read is not None:
        for chunks in read.chunks:
            refs.add(chunks)
        if read.error is not None:
            missing.setdefault(snap.id, []).append(f"(item list unreadable: {read.error})")
        return
    try:
        for item in ctx.list_items(snap):
            if item.chunks:
                refs.add(item.chunks)
    except DtstoreError as exc:
        missing.setdefault(snap.id, []).append(f"(item list unreadable: {exc})")


def _indexed(scratch: Scratch, chunks: list[bytes]) -> bool:
    """Every chunk has a copy in ``chosen`` (random lookups: each counts)."""
    with scratch.env.begin(db=scratch.chosen) as txn:
        found = all(txn.get(chunk_id) is not None for chunk_id in chunks)
    scratch.touched(len(chunks))
    return found


def _find_missing(ctx: MaintenanceContext, scratch: Scratch, snap: Snapshot, missing: dict[str, list[str]]) -> None:
    """The snapshot's paths (in item order) with a chunk in no index, ``(item list)`` if its item
    list is not indexed, or why its item list could not be read."""
    if not _indexed(scratch, snap.items_chunks):
        missing.setdefault(snap.id, []).append("(item list)")
        return
    try:
        for item in ctx.list_items(snap):
            if item.chunks and not _indexed(scratch, item.chunks):
                missing.setdefault(snap.id, []).append("/" + item.name)
    except DtstoreError as exc:
        missing.setdefault(snap.id, []).append(f"(item list unreadable: {exc})")
