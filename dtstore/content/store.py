"""ContentStore: chunk in → chunk ID out, deduplicated, compressed, sealed, packed and uploaded.

Write order (the crash-safety argument of spec/repository-format.md): a pack is uploaded whole
(on a local disk it is written as it fills, to a temporary file renamed once complete); an index
segment listing it is written only after; the local cache learns of it only after the segment.  A
crash anywhere leaves at most packs no segment lists, which the next writer adopts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import blake3

from dtstore.allocator import keep_freed_memory
from dtstore.compression import Zstd, encode
from dtstore.content.index import IndexCache
from dtstore.content.journal import RunJournal
from dtstore.content.pack import (
    HEADER_SIZE,
    BlobLocation,
    FinishedPack,
    PackBuilder,
    header_size,
    open_blob,
    pack_key,
)
from dtstore.content.segments import PackRecord, write_segment
from dtstore.crypto.aead import Sealer, SubKey
from dtstore.crypto.keyed_hash import ChunkHasher
from dtstore.errors import BlobNotFound, DtstoreError, IntegrityError, StorageError
from dtstore.format import BLOB_META
from dtstore.storage import layout
from dtstore.storage.base import BlobStore, Spool, StagedPut, open_spool, put_parts, stage_parts

SEGMENT_EVERY_PACKS = 4
STAGED_PACKS = 3
"""packs on a local disk written but not yet fsynced: the disk catches up while the next are packed"""
SEGMENT_EVERY_SECONDS = 60.0
HEAD_WITH_BLOB = 64 << 10
"""a blob at most this far into a pack whose key is not known yet is read with the pack's header, in one
range read (check and prune read every snapshot's item list, mostly the first blob of a small pack)"""
SPILL_BYTES = 2 << 20
"""on a local disk, an open pack's sealed blobs go to its file once this many wait in memory"""
SPILL_AHEAD_BYTES = 16 << 20
"""the most bytes handed to the local disk's writer and not written yet before adding waits: a
pack's worth, as when packs were written whole (4 MiB: 5-15 % slower first backups, no less RSS)"""
ADD_GROUP_BYTES = 1 << 20
"""a stream's new chunks go into a pack this many bytes at a time (``put_many``): runs that long stay
together, and a group waits in memory, compressed, only until its last chunk is"""
RUN_BYTES = 2 << 20
"""the most a ``ChunkRun`` reads at once: a few chunks, so several runs keep the workers busy"""


@dataclass
class WriteStats:
    chunks_new: int = 0
    chunks_reused: int = 0
    bytes_new_raw: int = 0
    bytes_reused: int = 0
    bytes_stored: int = 0
    packs: int = 0


class ContentStore:
    """Thread-safe ``put``; call ``flush`` before anything refers to the returned IDs durably."""

    def __init__(self, store: BlobStore, cache: IndexCache, sealer: Sealer, hasher: ChunkHasher, *,
                 compression: Zstd, pack_size: int, excluded_packs: frozenset[str] = frozenset(),
                 on_pack: Callable[[str, int], None] | None = None, journal: RunJournal | None = None) -> None:
        """``journal``: this host's write journal, which names each pack before its put starts and
        is cleared once every pack is indexed (so the next writer adopts by name, not by listing)."""
        keep_freed_memory()  # the buffers of every chunk come and go: keep them off the kernel's path
        self._store = store
        self._journal = journal
        self._cache = cache
        self._sealer = sealer
        self.hasher = hasher
        self._compression = compression
        self._pack_size = pack_size
        self._excluded = excluded_packs
        self._on_pack = on_pack
        self._lock = threading.Lock()
        self._pending: set[bytes] = set()
        self._builders: dict[int, PackBuilder] = {}
        self._unindexed: list[PackRecord] = []
        self._last_segment = time.monotonic()
        # a local disk takes a pack in one writev: one pack written while the next fills is enough,
        # and each more in flight is 16 MiB more memory (issue 18: RSS within 1.5x restic's)
        connections = 1 if store.capabilities.local else store.capabilities.connections
        self._uploads = ThreadPoolExecutor(connections, thread_name_prefix="dtstore-upload")
        self._slots = threading.BoundedSemaphore(connections)
        # a local disk: a pack's buffers go as soon as it is written; its fsync and rename follow on
        # another thread, so compression does not stop for the disk (and the memory stays the same)
        self._syncs = ThreadPoolExecutor(1, thread_name_prefix="dtstore-sync") if store.capabilities.local else None
        self._staged = threading.BoundedSemaphore(STAGED_PACKS)
        self._spools: dict[int, _SpooledPack] = {}
        """kind → the file of its open pack, on a local disk (``_spill``)"""
        self._open_spools: set[_SpooledPack] = set()
        """every pack file not staged yet: removed again if this store closes before"""
        self._unwritten = 0
        self._written = threading.Condition(self._lock)
        self._inflight: set[Future[None]] = set()
        self._error: BaseException | None = None
        self._segment_lock = threading.Lock()
        self.stats = WriteStats()

    def has(self, chunk_id: bytes) -> bool:
        return chunk_id in self._pending or self._cached(chunk_id)

    def put(self, data: bytes | memoryview, kind: int) -> bytes:
        chunk_id = self.hasher(data)
        self.put_with_id(chunk_id, data, kind)
        return chunk_id

    def put_with_id(self, chunk_id: bytes, data: bytes | memoryview, kind: int) -> None:
        self.put_many([(chunk_id, data)], kind)

    def put_many(self, chunks: Sequence[tuple[bytes, bytes | memoryview]], kind: int) -> None:
        """``put_with_id`` of each (ID, bytes), in order.  The new ones go into the open pack a group
        of ADD_GROUP_BYTES at a time, so a stream's neighbours stay neighbours in the pack even while
        other threads add theirs: a reader then fetches a run of them with one range read."""
        group: list[tuple[bytes, bytes, int]] = []
        grouped = 0
        for chunk_id, data in chunks:
            self._raise_upload_error()
            if not self._claim(chunk_id, len(data)):
                continue
            group.append((chunk_id, encode(data, self._compression), len(data)))
            grouped += len(data)
            if grouped >= ADD_GROUP_BYTES:
                self._add(group, kind)
                group, grouped = [], 0
        if group:
            self._add(group, kind)

    def _claim(self, chunk_id: bytes, size: int) -> bool:
        """True if this chunk is new and the caller is to store it; otherwise it counts as reused."""
        with self._lock:
            if chunk_id not in self._pending and not self._cached(chunk_id):
                self._pending.add(chunk_id)
                return True
            self.stats.chunks_reused += 1
            self.stats.bytes_reused += size
            return False

    def _add(self, group: list[tuple[bytes, bytes, int]], kind: int) -> None:
        """Seal ``group`` into the open pack of its kind, in order; upload each pack it fills.  On a
        local disk the open pack goes to its file as it grows (``_spill``)."""
        finished: list[FinishedPack] = []
        written: list[Future[None]] = []
        with self._lock:
            for chunk_id, encoded, raw_length in group:
                builder = self._builders.get(kind)
                if builder is None:
                    builder = self._builders[kind] = PackBuilder(self._sealer, kind)
                builder.add(chunk_id, encoded, raw_length)
                self.stats.chunks_new += 1
                self.stats.bytes_new_raw += raw_length
                if builder.size >= self._pack_size:
                    self._finish(kind, finished, written)
            builder = self._builders.get(kind)
            if self._syncs is not None and builder is not None and builder.held >= SPILL_BYTES:
                written.append(self._spill(kind, builder.take_parts(), None))
            while self._unwritten > SPILL_AHEAD_BYTES:
                self._written.wait()  # the disk is behind: memory stays bounded
        self._started(finished, written)

    def _finish(self, kind: int, finished: list[FinishedPack], written: list[Future[None]]) -> None:
        """Close the open pack of ``kind`` (the lock is held): to be uploaded whole, or, if its
        first parts are in its file already, its last parts after them."""
        pack = self._builders.pop(kind).finish()
        if kind in self._spools:
            written.append(self._spill(kind, pack.parts, pack))
        else:
            finished.append(pack)

    def _spill(self, kind: int, parts: list[bytes], last: FinishedPack | None) -> Future[None]:
        """Hand parts of the open pack of ``kind`` to the local disk's one writer thread, which
        writes them in the order handed (the lock is held, so that is the pack's order); with
        ``last``, the pack is complete after them, and is staged."""
        spooled = self._spools.get(kind)
        if spooled is None:
            spooled = self._spools[kind] = _SpooledPack(self._store, kind)
            self._open_spools.add(spooled)
        if last is not None:
            del self._spools[kind]
        size = sum(len(p) for p in parts)
        self._unwritten += size
        future = self._uploads.submit(self._write_spooled, spooled, parts, last, size)
        self._inflight.add(future)
        return future

    def _started(self, finished: list[FinishedPack], written: list[Future[None]]) -> None:
        """After the lock is released: watch the writes handed over, upload the packs closed."""
        for future in written:
            future.add_done_callback(self._settle)
        for pack in finished:
            self._upload(pack)

    def _write_spooled(self, spooled: _SpooledPack, parts: list[bytes], last: FinishedPack | None,
                       size: int) -> None:
        try:
            spooled.write(parts)
            if last is not None and not spooled.failed:
                self._stage_spooled(spooled, last)
        finally:
            with self._lock:
                self._unwritten -= size
                self._written.notify_all()

    def _stage_spooled(self, spooled: _SpooledPack, pack: FinishedPack) -> None:
        """A pack written whole to its file: named (journal first), then fsynced and renamed into
        place on the sync thread, as a staged put is."""
        name = layout.pack_name(spooled.pack_id, pack.kind == BLOB_META)
        record = PackRecord(spooled.pack_id, pack.kind, pack.size, pack.entries)
        self._staged.acquire()
        try:
            if self._journal is not None:
                self._journal.record(name)  # durable before the pack can appear under it
            staged = spooled.stage(name)
        except BaseException:
            self._staged.release()
            spooled.abort()
            raise
        with self._lock:
            self._open_spools.discard(spooled)
        assert self._syncs is not None
        self._track(self._syncs.submit(self._commit, staged, record), self._commit_done)

    def _cached(self, chunk_id: bytes) -> bool:
        # a copy the damage set names is no copy: the chunk is stored afresh (self-healing)
        location = self._cache.lookup_usable(chunk_id)
        return location is not None and location.pack_id not in self._excluded

    def _upload(self, pack: FinishedPack) -> None:
        self._slots.acquire()
        self._track(self._uploads.submit(self._upload_pack, pack), self._upload_done)

    def _upload_pack(self, pack: FinishedPack) -> None:
        name = layout.pack_name(pack.pack_id, pack.kind == BLOB_META)
        if self._journal is not None:
            self._journal.record(name)  # durable before the put starts: a crash leaves it named
        record = PackRecord(pack.pack_id, pack.kind, pack.size, pack.entries)
        if self._syncs is not None:
            self._staged.acquire()
            try:
                staged = stage_parts(self._store, name, pack.parts)
            except BaseException:
                self._staged.release()
                raise
            if staged is not None:
                self._track(self._syncs.submit(self._commit, staged, record), self._commit_done)
                return
            self._staged.release()
        put_parts(self._store, name, pack.parts)
        self._uploaded(record)

    def _commit(self, staged: StagedPut, record: PackRecord) -> None:
        """Make a written pack durable and visible; only then may an index segment list it."""
        staged.commit()
        self._uploaded(record)

    def _commit_done(self, future: Future[None]) -> None:
        self._staged.release()
        self._settle(future)

    def _uploaded(self, record: PackRecord) -> None:
        """A pack is stored: count it, and write the index segment when one is due."""
        with self._lock:
            self.stats.packs += 1
            self.stats.bytes_stored += record.size
            self._unindexed.append(record)
            due = (len(self._unindexed) >= SEGMENT_EVERY_PACKS
                   or time.monotonic() - self._last_segment > SEGMENT_EVERY_SECONDS)
        if self._on_pack is not None:
            self._on_pack(record.pack_id, record.size)
        if due:
            self._write_segment()

    def _track(self, future: Future[None], done: Callable[[Future[None]], None]) -> None:
        with self._lock:
            self._inflight.add(future)
        future.add_done_callback(done)

    def _upload_done(self, future: Future[None]) -> None:
        self._slots.release()
        self._settle(future)

    def _settle(self, future: Future[None]) -> None:
        with self._lock:
            self._inflight.discard(future)
            if not future.cancelled() and future.exception() is not None and self._error is None:
                self._error = future.exception()

    def _raise_upload_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _write_segment(self) -> None:
        with self._segment_lock:
            with self._lock:
                records, self._unindexed = self._unindexed, []
                self._last_segment = time.monotonic()
            if not records:
                return
            write_segment(self._store, self._sealer, self._cache, records)
            with self._lock:
                for record in records:
                    self._pending.difference_update(e.chunk_id for e in record.entries)

    def flush(self) -> None:
        """Upload open packs, wait for every upload, then index them: afterwards all IDs are durable."""
        finished: list[FinishedPack] = []
        written: list[Future[None]] = []
        with self._lock:
            for kind in list(self._builders):
                self._finish(kind, finished, written)
        self._started(finished, written)
        while True:
            with self._lock:
                waiting = list(self._inflight)
            if not waiting:
                break
            for future in waiting:
                future.exception()
        self._raise_upload_error()
        self._write_segment()
        if self._journal is not None:
            with self._lock:
                settled = not self._inflight and not self._unindexed
            if settled:
                self._journal.all_indexed()

    def close(self) -> None:
        self._uploads.shutdown(wait=True, cancel_futures=True)
        if self._syncs is not None:
            self._syncs.shutdown(wait=True)  # a written pack is committed or fails, never left half done
        for spooled in self._open_spools:  # a run that failed, or stopped: no temporary file stays
            spooled.abort()
        self._open_spools.clear()
        if self._journal is not None:
            self._journal.close()


class _SpooledPack:
    """An open pack's file on the local disk, written on the writer thread in order; its ID is
    hashed over the bytes as they go."""

    def __init__(self, store: BlobStore, kind: int) -> None:
        self._store = store
        self._directory = layout.META_PACKS if kind == BLOB_META else layout.DATA_PACKS
        self._spool: Spool | None = None
        self._hasher = blake3.blake3()
        self.failed = False
        """a write failed: the file is gone, and the rest of this pack is not written"""

    def write(self, parts: Sequence[bytes]) -> None:
        if self.failed:
            return
        try:
            if self._spool is None:
                self._spool = open_spool(self._store, self._directory)
            self._spool.write(parts)
        except BaseException:
            self.failed = True
            self.abort()
            raise
        for part in parts:
            self._hasher.update(part)

    @property
    def pack_id(self) -> str:
        return self._hasher.hexdigest()

    def stage(self, name: str) -> StagedPut:
        assert self._spool is not None
        return self._spool.stage(name)

    def abort(self) -> None:
        if self._spool is not None:
            self._spool.abort()


@dataclass(frozen=True)
class ChunkRun:
    """Chunks of a stream that lie back to back in one pack: one range read fetches them all
    (``ContentReader.read_run``).  ``locations`` is None for a chunk that no index lists."""

    chunk_ids: Sequence[bytes]
    locations: Sequence[BlobLocation] | None


DamageCallback = Callable[[str, "bytes | None"], None]
"""(pack ID, chunk ID) of a copy that failed verification; chunk ID None: the whole pack is unusable"""


class ContentReader:
    """Fetches and verifies chunks; pack keys (from pack headers) are cached.

    ``on_damage`` hears of every copy ``get`` finds bad (not of transient storage failures)."""

    def __init__(self, store: BlobStore, cache: IndexCache, sealer: Sealer, hasher: ChunkHasher,
                 on_damage: DamageCallback | None = None) -> None:
        self.store = store
        self.cache = cache
        self.sealer = sealer
        self.hasher = hasher
        self._keys: dict[str, SubKey] = {}
        self._lock = threading.Lock()
        self._on_damage = on_damage

    def locate(self, chunk_id: bytes) -> BlobLocation:
        location = self.cache.lookup(chunk_id)
        if location is None:
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]} is in no index segment: data is missing")
        return location

    def locate_many(self, chunk_ids: Iterable[bytes]) -> dict[bytes, BlobLocation]:
        wanted = set(chunk_ids)
        found = self.cache.lookup_many(wanted)
        missing = wanted - found.keys()
        if missing:
            first = next(iter(missing)).hex()[:16]
            raise IntegrityError(f"{len(missing)} chunk(s) are in no index segment (e.g. {first}): data is missing")
        return found

    def pack_key(self, location: BlobLocation) -> SubKey:
        key = self._known_key(location.pack_id)
        if key is None:
            name = layout.pack_name(location.pack_id, location.kind == BLOB_META)
            try:
                header = self.store.get_range(name, 0, HEADER_SIZE)
                if header_size(header) > HEADER_SIZE:
                    header += self.store.get_range(name, HEADER_SIZE, header_size(header) - HEADER_SIZE)
            except BlobNotFound:
                raise _pack_missing(location.pack_id) from None
            key = self._remember_key(location.pack_id, header)
        return key

    def _known_key(self, pack_id: str) -> SubKey | None:
        with self._lock:
            return self._keys.get(pack_id)

    def _remember_key(self, pack_id: str, header: bytes) -> SubKey:
        key = pack_key(self.sealer, header, pack_id)
        with self._lock:
            if len(self._keys) > 4096:
                self._keys.clear()
            self._keys[pack_id] = key
        return key

    def runs(self, chunk_ids: Sequence[bytes]) -> list[ChunkRun]:
        """The chunks in order, grouped into runs that one range read each fetches: neighbours in the
        stream that are neighbours in a pack (a first backup writes a file's chunks so), up to
        RUN_BYTES."""
        found = self.cache.lookup_many(chunk_ids)
        runs: list[ChunkRun] = []
        ids: list[bytes] = []
        locations: list[BlobLocation] = []
        for chunk_id in chunk_ids:
            location = found.get(chunk_id)
            if locations and (location is None or not _follows(locations, location)):
                runs.append(ChunkRun(ids, locations))
                ids, locations = [], []
            if location is None:
                runs.append(ChunkRun((chunk_id,), None))
                continue
            ids.append(chunk_id)
            locations.append(location)
        if locations:
            runs.append(ChunkRun(ids, locations))
        return runs

    def read_run(self, run: ChunkRun) -> list[bytes | DtstoreError]:
        """Each chunk of ``run``, verified, or the error that chunk's ``get`` raises: a failure is
        reported in its chunk's place, so a reader can first write everything before it.  A range
        read that fails falls back to ``get`` chunk by chunk, which finds and reports damage alike."""
        if run.locations is None:
            return self._each(run.chunk_ids)
        first, last = run.locations[0], run.locations[-1]
        name = layout.pack_name(first.pack_id, first.kind == BLOB_META)
        try:
            key = self.pack_key(first)
            data = memoryview(self.store.get_range(name, first.offset, last.offset + last.length - first.offset))
        except DtstoreError:
            return self._each(run.chunk_ids)
        plain: list[bytes | DtstoreError] = []
        for chunk_id, location in zip(run.chunk_ids, run.locations, strict=True):
            start = location.offset - first.offset
            try:
                plain.append(open_blob(key, data[start : start + location.length], chunk_id, location.raw_length,
                                       location.pack_id, self.hasher))
            except IntegrityError as exc:
                self._damage(location.pack_id, chunk_id)
                plain.append(exc)
        return plain

    def _each(self, chunk_ids: Sequence[bytes]) -> list[bytes | DtstoreError]:
        plain: list[bytes | DtstoreError] = []
        for chunk_id in chunk_ids:
            try:
                plain.append(self.get(chunk_id))
            except DtstoreError as exc:
                plain.append(exc)
        return plain

    def open(self, chunk_id: bytes, location: BlobLocation, sealed: bytes | memoryview) -> bytes:
        return open_blob(self.pack_key(location), sealed, chunk_id, location.raw_length,
                         location.pack_id, self.hasher)

    def get(self, chunk_id: bytes) -> bytes:
        location = self.locate(chunk_id)
        name = layout.pack_name(location.pack_id, location.kind == BLOB_META)
        key = self._known_key(location.pack_id)
        if key is None and HEADER_SIZE <= location.offset <= HEAD_WITH_BLOB:
            # a pack's first blobs (an item list, most often) come with the header in one read
            head = self._read_blob(name, chunk_id, location, 0, location.offset + location.length)
            header = head[:min(header_size(head), location.offset)]
            key = self._key_or_damage(location, lambda: self._remember_key(location.pack_id, header))
            sealed = head[location.offset:]
        else:
            key = key or self._key_or_damage(location, lambda: self.pack_key(location))
            sealed = self._read_blob(name, chunk_id, location, location.offset, location.length)
        try:
            return open_blob(key, sealed, chunk_id, location.raw_length, location.pack_id, self.hasher)
        except IntegrityError:
            self._damage(location.pack_id, chunk_id)
            raise

    def _key_or_damage(self, location: BlobLocation, find: Callable[[], SubKey]) -> SubKey:
        try:
            return find()
        except IntegrityError:
            self._damage(location.pack_id, None)
            raise

    def _read_blob(self, name: str, chunk_id: bytes, location: BlobLocation, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` of the blob's pack, which ``location`` needs; a pack that
        is missing or too short is damage."""
        try:
            return self.store.get_range(name, offset, length)
        except BlobNotFound:
            self._damage(location.pack_id, None)
            raise _pack_missing(location.pack_id) from None
        except StorageError as exc:
            past_end = blob_past_end(self.store, name, location)
            if past_end is None:
                raise
            self._damage(location.pack_id, chunk_id)
            raise IntegrityError(past_end) from exc

    def _damage(self, pack_id: str, chunk_id: bytes | None) -> None:
        if self._on_damage is not None:
            self._on_damage(pack_id, chunk_id)


def _follows(run: list[BlobLocation], location: BlobLocation) -> bool:
    """Whether ``location`` continues ``run`` in its pack, within RUN_BYTES."""
    last = run[-1]
    return (location.pack_id == last.pack_id and location.offset == last.offset + last.length
            and location.offset + location.length - run[0].offset <= RUN_BYTES)


def _pack_missing(pack_id: str) -> IntegrityError:
    return IntegrityError(f"pack {pack_id} is missing: it is in the index, but not in storage")


def blob_past_end(store: BlobStore, name: str, location: BlobLocation) -> str | None:
    """Why a failed range read is damage (the pack is too short for the blob), or None: it is not."""
    try:
        size = store.size(name)
    except StorageError:
        return None
    if location.offset + location.length <= size:
        return None
    return (f"pack {location.pack_id} is truncated: it is {size} bytes, the chunk at offset "
            f"{location.offset} needs {location.offset + location.length}")
