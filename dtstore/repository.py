"""The Repository facade: the public API the CLI and the connectors use."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import getpass
import io
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from dtstore import __version__, clock
from dtstore.backup import BackupRun, default_host
from dtstore.chunking import Chunker, ChunkerParams
from dtstore.config import RepoConfig, open_config, seal_config
from dtstore.content.damage import DamageSet, write_damage
from dtstore.content.index import IndexCache
from dtstore.content.journal import RunJournal
from dtstore.content.segments import adopt_left_over_packs, list_packs, refresh_cache
from dtstore.content.store import ContentReader, ContentStore
from dtstore.crypto.aead import Sealer, hkdf
from dtstore.crypto.keyed_hash import ChunkHasher
from dtstore.crypto.keys import (
    BackupKey,
    KeySlotInfo,
    MasterKey,
    ScryptParams,
    calibrate_scrypt,
    unwrap_key,
    wrap_key,
)
from dtstore.crypto.roles import ROLE_ADMIN, ROLE_BACKUP, RoleSealer, data_private_key, data_public_key, shared_secret
from dtstore.errors import (
    AdminKeyRequired,
    DtstoreError,
    IntegrityError,
    ItemNotFound,
    RepositoryExists,
    UnsupportedFormat,
    UsageError,
)
from dtstore.format import AAD_LOCK, AAD_SESSION, INFO_SHARED_ENC
from dtstore.maintenance.locks import (
    LOCK_TIMEOUT,
    LockInfo,
    check_not_exclusively_locked,
    hold_lock,
    hold_source_lock,
    remove_locks,
)
from dtstore.maintenance.state import DEFAULT_GRACE, MARKS, load_times
from dtstore.objects.random_access import RandomAccess
from dtstore.objects.reader import ObjectStream
from dtstore.objects.writer import ObjectWriter
from dtstore.progress import ProgressCallback, no_progress
from dtstore.sessions import SESSION_TIMEOUT, WriterSession, sweep_heartbeats, sweep_temporaries
from dtstore.snapshots import select
from dtstore.snapshots.manifest import Item, Snapshot, clean, decode_items, retagged
from dtstore.snapshots.select import SnapshotFilter
from dtstore.snapshots.store import SnapshotStore
from dtstore.sources.base import Source
from dtstore.storage import layout
from dtstore.storage.base import BlobStore
from dtstore.storage.local import LocalStore
from dtstore.unlocking import Unlocking, connect

if TYPE_CHECKING:
    from dtstore.copy import CopyResult
    from dtstore.maintenance.check import CheckReport
    from dtstore.maintenance.keys import KeyEntry
    from dtstore.maintenance.prune import PrunePlan, PruneRun
    from dtstore.maintenance.rebuild import RebuildReport
    from dtstore.maintenance.repair import PackRepair, SnapshotRepair
    from dtstore.maintenance.scan import MaintenanceContext

# What only restore, copy and maintenance need is imported where they start: a backup's start-up
# does not pay for it (issue 18 §3).
INDEX_REFRESH_SECONDS = 5.0
MAX_EXCLUSIVE_PASSES = 4


def _quiet(message: str) -> None:
    return None


def cache_root() -> Path:
    explicit = os.environ.get("DTSTORE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dtstore"


def _as_bytes(password: str | bytes) -> bytes:
    return password.encode("utf-8") if isinstance(password, str) else password


class Repository:
    """An open repository.  Use ``Repository.init`` or ``Repository.open``; close it (or use ``with``)."""

    def __init__(self, store: BlobStore, master: MasterKey | BackupKey, config: RepoConfig, key: KeySlotInfo,
                 cache_dir: str | os.PathLike[str] | None = None, workers: int | None = None) -> None:
        self.store = store
        self.master: MasterKey | None = master if isinstance(master, MasterKey) else None
        """the master secret; None when opened with a backup key"""
        self._backup_key = master if isinstance(master, BackupKey) else None
        self.config = config
        self.key = key
        self.role = ROLE_BACKUP if self._backup_key is not None else ROLE_ADMIN
        """``admin`` or ``backup`` (feature key-roles: a backup key writes, but reads no stored data)"""
        self.append_only = self.role == ROLE_BACKUP
        """never delete or overwrite (sessions and locks in their append-only form, §13.5); a backup
        key's storage credentials may lack those rights"""
        if self.append_only:
            set_append_only = getattr(store, "set_append_only", None)
            if set_append_only is not None:
                set_append_only()
        if config.retention is not None:
            set_retention = getattr(store, "set_retention", None)
            if set_retention is not None:
                with contextlib.suppress(UsageError):  # a copy of the repository that is not on S3
                    set_retention(config.retention[0], dt.timedelta(seconds=config.retention[1]))
        self._sealer = _sealer_for(master, config)
        if config.chunk_keys is None and self.master is None:
            raise UnsupportedFormat("a backup key needs a key-roles repository (its config holds the chunk keys)")
        self.chunk_keys = config.chunk_keys or master.chunk_keys()  # type: ignore[union-attr]
        """what decides cut points and chunk IDs: derived from the master secret, or the config's own"""
        self._hasher = ChunkHasher(self.chunk_keys.id_key)
        self._cache = IndexCache(Path(cache_dir or cache_root()) / config.repository_id)
        self._workers = workers or max(2, os.cpu_count() or 2)
        manifest_copies = LocalStore(self._cache.path / "manifests", durable=False)
        self._snapshots = SnapshotStore(store, self._sealer, manifest_copies, backup_role=self.role == ROLE_BACKUP)
        self._refreshed = False
        self._reader_pool: ThreadPoolExecutor | None = None
        self._content_reader: ContentReader | None = None
        self._damage_lock = threading.Lock()
        self._recorded = DamageSet()
        """damage this object has written to the repository's records"""

    # lifecycle ------------------------------------------------------------------------------
    @classmethod
    def init(cls, url: str | BlobStore, password: str | bytes, *, kdf: ScryptParams | None = None,
             chunker: ChunkerParams | None = None, zstd_level: int | None = None, pack_size: int | None = None,
             cache_dir: str | os.PathLike[str] | None = None, limit_upload_kib: float | None = None,
             copy_chunker_from: Repository | None = None, key_roles: bool = False,
             retention: tuple[str, dt.timedelta] | None = None) -> Repository:
        """A new repository.  ``key_roles``: with admin and backup keys (repository-format.md §4.4; this
        first key is an admin key).  ``retention``: (``governance`` or ``compliance``, period): S3
        Object Lock set on every pack, segment and manifest any host writes (§17.1); the bucket must
        have Object Lock enabled.  ``copy_chunker_from``: take that repository's chunker parameters and chunk
        keys (chunk-ID key, chunker seed; repository-format.md §4.3), so equal data gets equal chunk IDs
        in both and ``copy_to`` between them moves only the chunks the target lacks."""
        store = connect(url, limit_upload_kib)
        if store.exists(layout.CONFIG) or any(True for _ in store.list(layout.KEYS)):
            raise RepositoryExists(f"{store.describe()} already holds a repository")
        master = MasterKey.generate()
        if copy_chunker_from is not None:
            if chunker is not None:
                raise UsageError("give chunker parameters or a repository to copy them from, not both")
            chunker = copy_chunker_from.config.chunker
        config = RepoConfig.new(chunker=chunker, zstd_level=zstd_level,
                                meta_chunker=copy_chunker_from.config.meta_chunker if copy_chunker_from else None,
                                chunk_keys=copy_chunker_from.chunk_keys if copy_chunker_from else None,
                                **({"pack_size": pack_size} if pack_size else {}))
        if retention is not None:
            mode, period = retention
            if mode.lower() not in ("governance", "compliance") or period <= dt.timedelta(0):
                raise UsageError("--retention needs a positive period and the mode governance or compliance")
            set_retention = getattr(store, "set_retention", None)
            if set_retention is None:
                raise UsageError(f"{store.describe()} does not support Object Lock retention (S3 only)")
            set_retention(mode, period)  # UsageError if it is not S3
            config = dataclasses.replace(config, retention=(mode.upper(), int(period.total_seconds())))
        if key_roles:
            config = config.with_key_roles(master.chunk_keys(), data_public_key(master.secret))
        slot = wrap_key(master, _as_bytes(password), repository_id=config.repository_id,
                        params=kdf or calibrate_scrypt(), label=f"{getpass.getuser()}@{default_host()}")
        slot_id = os.urandom(16).hex()
        store.put(layout.key_name(slot_id), slot)
        store.put(layout.CONFIG, seal_config(config, _sealer_for(master, config)))
        _, info = unwrap_key(slot, _as_bytes(password), slot_id)
        return cls(store, master, config, info, cache_dir)

    @classmethod
    def open(cls, url: str | BlobStore, password: str | bytes, *, cache_dir: str | os.PathLike[str] | None = None,
             limit_upload_kib: float | None = None, workers: int | None = None) -> Repository:
        return cls.opened(Unlocking(url, _as_bytes(password), limit_upload_kib), cache_dir=cache_dir, workers=workers)

    @classmethod
    def opened(cls, unlocking: Unlocking, *, cache_dir: str | os.PathLike[str] | None = None,
               workers: int | None = None) -> Repository:
        """The repository an ``Unlocking`` (``dtstore.unlocking``) started to open: its KDF ran while
        the caller did other work."""
        done = unlocking.result()
        config = _open_config(done.config_blob, done.key)
        return cls(done.store, done.key, config, done.slot, cache_dir, workers)

    def close(self) -> None:
        if self._reader_pool is not None:
            self._reader_pool.shutdown(wait=False, cancel_futures=True)
        self._cache.close()
        self.store.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # reading --------------------------------------------------------------------------------
    def refresh_index(self) -> int:
        """Bring the local cache up to date with the remote index; return segments loaded."""
        loaded = refresh_cache(self.store, self._sealer, self._cache, self.store.capabilities.connections)
        self._refreshed = True
        return loaded

    def _ensure_index(self) -> None:
        if not self._refreshed:
            self.refresh_index()

    def _reader(self) -> ContentReader:
        """One reader per repository and sealer: its pack keys (a header read each) are kept
        between calls, so reading every snapshot's item list does not fetch them again."""
        self._ensure_index()
        reader = self._content_reader
        if reader is None or reader.sealer is not self._sealer:
            reader = self._content_reader = ContentReader(self.store, self._cache, self._sealer, self._hasher,
                                                          on_damage=self._note_damage)
        return reader

    def _note_damage(self, pack_id: str, chunk_id: bytes | None) -> None:
        found = DamageSet(packs={pack_id}) if chunk_id is None else DamageSet(blobs={(pack_id, chunk_id)})
        self.record_damage(found, found_by="read")

    def record_damage(self, damage: DamageSet, *, found_by: str) -> bool:
        """Add what is not yet known to the repository's damage records, so that every host's next
        backup stores those chunks afresh.  Best effort: a failure to write is not an error of the
        read that found the damage.  True if a record was written."""
        with self._damage_lock:
            known = self._cache.damage()
            known.update(self._recorded)
            new = damage.minus(known)
            if not new:
                return False
            try:
                write_damage(self.store, self._sealer, new, host=default_host(), found_by=found_by)
            except DtstoreError:
                return False
            self._recorded.update(new)
            return True

    def _pool(self) -> ThreadPoolExecutor:
        if self._reader_pool is None:
            self._reader_pool = ThreadPoolExecutor(self.store.capabilities.connections * 2,
                                                   thread_name_prefix="dtstore-read")
        return self._reader_pool

    def snapshots(self) -> list[Snapshot]:
        """All snapshots, oldest first."""
        return self._snapshots.load_all()

    def resolve_snapshot_ids(self, refs: Sequence[str]) -> list[str]:
        """Full IDs for ``latest``, IDs or prefixes, with one listing and without reading manifests."""
        return self._snapshots.resolve_ids(refs)

    def load_snapshot(self, snapshot_id: str) -> Snapshot:
        """One snapshot by its full ID (no listing)."""
        return self._snapshots.load(snapshot_id)

    def get_snapshot(self, ref: str, flt: SnapshotFilter | None = None) -> Snapshot:
        """``latest``, a snapshot ID or a unique prefix of one; with a filter, ``latest`` is the newest
        snapshot that passes it, and a snapshot named by ID must pass it (``dtstore.snapshots.select``)."""
        if flt is None or flt.is_empty():
            return self._snapshots.resolve(ref)
        if ref == "latest":
            return select.latest(self.snapshots(), flt)
        return select.check(self._snapshots.resolve(ref), flt)

    def retag(self, snapshots: Sequence[Snapshot], *, add: Sequence[str] = (), remove: Sequence[str] = (),
              set_tags: Sequence[str] | None = None) -> list[tuple[Snapshot, Snapshot]]:
        """Rewrite the manifests of these snapshots with changed tags (restic's ``tag``): new IDs,
        ``original`` set to the first ID; the old manifests are deleted only after every new one is
        written.  Snapshots whose tags do not change are left alone.  Returns (old, new) pairs."""
        if set_tags is not None and (add or remove):
            raise UsageError("--set cannot be combined with --add or --remove")
        if set_tags is None and not add and not remove:
            raise UsageError("nothing to do: give --add, --remove or --set")
        self.require_admin("tag")
        rewritten: list[tuple[Snapshot, Snapshot]] = []
        with WriterSession(self.store, self._sealer, default_host()):
            check_not_exclusively_locked(self.store, self._sealer, default_host())
            for old in snapshots:
                tags = retagged(old.tags, add=add, remove=remove, set_tags=set_tags)
                if tags == old.tags:
                    continue
                new = dataclasses.replace(old, id="", tags=tags, original=old.original or old.id)
                rewritten.append((old, self._snapshots.save(new)))
        for old, _ in rewritten:
            self._snapshots.delete(old.id)
        return rewritten

    def _stream(self, chunks: Sequence[bytes]) -> BinaryIO:
        self.require_admin("reading stored data (ls, dump, find, diff, mount)")
        raw = ObjectStream(self._reader(), chunks, self._pool(), readahead=self.store.capabilities.connections * 2)
        return io.BufferedReader(raw, buffer_size=1 << 20)  # type: ignore[return-value]

    def list_items(self, snapshot: Snapshot) -> Iterator[Item]:
        chunks = snapshot.items_chunks
        if len(chunks) > 1:
            with self._stream(chunks) as stream:
                yield from decode_items(stream)
            return
        # One chunk (most snapshots): read it on this thread.  The stream would hand it to the
        # reader pool and wait for it behind a 1 MiB buffer, ~3x the cost of the read (check and
        # prune read every snapshot's item list).
        self.require_admin("reading stored data (ls, dump, find, diff, mount)")
        data = self._reader().get(chunks[0]) if chunks else b""
        yield from decode_items(io.BytesIO(data))

    def find_item(self, snapshot: Snapshot, path: str | bytes) -> Item:
        from dtstore.restore import normalize_include

        wanted = normalize_include(path)
        for item in self.list_items(snapshot):
            if item.path == wanted:
                return item
        raise ItemNotFound(f"snapshot {snapshot.short_id} has no item {os.fsdecode(wanted)}")

    def open_item(self, snapshot: Snapshot, path: str | bytes) -> BinaryIO:
        """A readable stream of one stored file; every chunk is verified as it is read."""
        return self._stream(self._file_item(snapshot, path).chunks)

    def dump(self, snapshot: Snapshot, path: str | bytes, out: BinaryIO) -> int:
        """Write one stored file to ``out``, each chunk verified and written as it arrives, with no
        buffer between (``dtstore dump``).  Returns the bytes written; a damaged chunk raises after
        everything before it is written."""
        item = self._file_item(snapshot, path)
        self.require_admin("reading stored data (ls, dump, find, diff, mount)")
        with ObjectStream(self._reader(), item.chunks, self._pool(),
                          readahead=self.store.capabilities.connections * 2) as stream:
            return stream.copy_to(out)

    def _file_item(self, snapshot: Snapshot, path: str | bytes) -> Item:
        item = self.find_item(snapshot, path)
        if item.type != "file":
            raise UsageError(f"{item.name} is a {item.type}, not a file")
        return item

    def item_reader(self, item: Item) -> RandomAccess:
        """Random access to a stored file (``read(offset, size)``, for ``mount``); every chunk is
        verified as it is read.  IntegrityError if a chunk is in no index segment."""
        if item.type != "file":
            raise UsageError(f"{item.name} is a {item.type}, not a file")
        self.require_admin("reading stored data (mount)")
        reader = self._reader()
        where = reader.locate_many(item.chunks) if item.chunks else {}
        return RandomAccess(reader, item.chunks, [where[c].raw_length for c in item.chunks], self._pool())

    def restore(self, snapshot: Snapshot, target: str | os.PathLike[str],
                include: Sequence[str | bytes] = (), progress: ProgressCallback = no_progress) -> None:
        """Restore into ``target``.  A damaged or missing chunk costs only the files that contain it:
        everything else is restored, then IntegrityError names those files (``.paths``) and packs."""
        from dtstore.restore import RestoreRun, normalize_include, plan_restore

        self.require_admin("restore")
        reader = self._reader()
        target_b = os.fsencode(os.path.abspath(target))
        plan = plan_restore(self.list_items(snapshot), target_b, reader,
                            [normalize_include(i) for i in include])
        run = RestoreRun(plan, target_b, reader, self.store.capabilities.connections * 2, progress)
        try:
            run.run()
        finally:
            if run.damage:
                self.record_damage(run.damage, found_by="restore")

    # writing --------------------------------------------------------------------------------
    def source_lock(self, source_id: str, *, wait: float = 0.0) -> AbstractContextManager[LockInfo]:
        """Hold the lock that lets one run of ``source_id`` at a time write (RepositoryLocked after ``wait`` s)."""
        return hold_source_lock(self.store, self._sealer, default_host(), source_id, wait=wait,
                                append_only=self.append_only)

    def snapshot(self, sources: Sequence[Source], *, tags: Sequence[str] = (), host: str | None = None,
                 progress: ProgressCallback = no_progress, parent: Snapshot | None = None,
                 lock_wait: float = 0.0) -> Snapshot:
        """Store the sources and commit a snapshot; nothing is committed if any source fails.

        A source with ``exclusive = True`` (a connector with a log chain) is locked for the whole run,
        then its ``prepare()`` reads its history: two runs of it never overlap.
        """
        if not sources:
            raise UsageError("nothing to back up")
        with ExitStack() as locks:
            for source in sources:
                if getattr(source, "exclusive", False):
                    locks.enter_context(self.source_lock(source.source_id, wait=lock_wait))
                    prepare = getattr(source, "prepare", None)
                    if prepare is not None:
                        prepare()
            return self._snapshot(sources, tags=tags, host=host, progress=progress, parent=parent)

    def _snapshot(self, sources: Sequence[Source], *, tags: Sequence[str], host: str | None,
                  progress: ProgressCallback, parent: Snapshot | None) -> Snapshot:
        host = host or default_host()
        started = clock.now()
        with WriterSession(self.store, self._sealer, default_host(), append_only=self.append_only) as session:
            check_not_exclusively_locked(self.store, self._sealer, default_host(), append_only=self.append_only)
            marked = frozenset(load_times(self.store, self._sealer, MARKS).packs)
            self.refresh_index()
            adopt_left_over_packs(self.store, self._sealer, self._cache, skip=marked.__contains__)
            content = ContentStore(self.store, self._cache, self._sealer, self._hasher,
                                   compression=self.config.compression, pack_size=self.config.pack_size,
                                   excluded_packs=marked, journal=RunJournal(self._cache.path))
            writer = ObjectWriter(content, self._workers)
            refresher = _IndexRefresher(self.refresh_index, INDEX_REFRESH_SECONDS)
            try:
                run = BackupRun(content, writer, self._chunker(self.config.chunker),
                                self._chunker(self.config.meta_chunker), self._cache, progress)
                result = run.run(sources)
            finally:
                refresher.stop()
                writer.close()
                content.close()
            source_id, kind, paths, metadata = _describe_sources(sources)
            if parent is None:
                parent = self._latest(source_id, host)
            snapshot = Snapshot(
                id="", time=started, host=host, tags=list(tags), source_kind=kind, source_id=source_id,
                paths=paths, source_metadata=metadata, summary=result.summary,
                parent=parent.id if parent else None, program_version=f"dtstore {__version__}",
                items_chunks=result.items.chunks, items_count=result.item_count,
                username=getpass.getuser(),
            )
            session.ensure_alive()
            self._snapshots.save(snapshot)
        self._cache.put_files(result.file_records)
        for source in sources:
            committed = getattr(source, "committed", None)
            if committed is not None:
                committed(snapshot)
        return snapshot

    def copy_to(self, target: Repository, snapshots: Sequence[Snapshot] | None = None, *,
                progress: ProgressCallback = no_progress,
                on_result: Callable[[CopyResult], None] | None = None) -> list[CopyResult]:
        """Store these snapshots (default: all) in ``target``, re-encrypted with its keys (restic's
        ``copy``; ``dtstore.copy`` says how).  Chunks the target holds are not stored again, and with
        shared chunk keys (``init(copy_chunker_from=…)``) not even read.  A snapshot already copied
        (its ``original``, else its ID, is a target snapshot's ``original`` or ID) is skipped, so a
        second copy adds nothing.  Each copy is committed before the next one starts, inside a writer
        session of the target (refused while it holds an exclusive lock)."""
        from dtstore.copy import CopyResult, SnapshotCopier, copy_key

        if target.config.repository_id == self.config.repository_id:
            raise UsageError("the source and the target are the same repository")
        self.require_admin("copy (reading the source)")
        chosen = sorted(self.snapshots() if snapshots is None else snapshots, key=lambda s: (s.time, s.id))
        keys = {s.id: copy_key(s) for s in chosen}
        results: list[CopyResult] = []
        host = default_host()
        with WriterSession(target.store, target._sealer, host, append_only=target.append_only) as session:
            check_not_exclusively_locked(target.store, target._sealer, host, append_only=target.append_only)
            marked = frozenset(load_times(target.store, target._sealer, MARKS).packs)
            target.refresh_index()
            adopt_left_over_packs(target.store, target._sealer, target._cache, skip=marked.__contains__)
            present: dict[str, Snapshot] = {}
            for existing in target.snapshots():
                present.setdefault(copy_key(existing), existing)
                present.setdefault(existing.id, existing)
            copier = SnapshotCopier(self._reader(), self.list_items,
                                    same_ids=self.chunk_keys.id_key == target.chunk_keys.id_key,
                                    meta_chunker=target._chunker(target.config.meta_chunker),
                                    workers=self.store.capabilities.connections * 2, progress=progress)
            try:
                for snap in chosen:
                    found = present.get(copy_key(snap)) or present.get(snap.id)
                    if found is not None:
                        result = CopyResult(snap, found, skipped=True)
                    else:
                        content = ContentStore(target.store, target._cache, target._sealer, target._hasher,
                                               compression=target.config.compression,
                                               pack_size=target.config.pack_size, excluded_packs=marked,
                                               journal=RunJournal(target._cache.path))
                        parent = present.get(keys.get(snap.parent, snap.parent)) if snap.parent else None
                        try:
                            manifest, read, present_chunks = copier.copy(snap, content, parent.id if parent else None)
                        finally:
                            content.close()
                        session.ensure_alive()
                        saved = target._snapshots.save(manifest)
                        present[copy_key(snap)] = saved
                        stats = content.stats
                        result = CopyResult(snap, saved, skipped=False, chunks_new=stats.chunks_new,
                                            chunks_reused=stats.chunks_reused + present_chunks, bytes_read=read,
                                            bytes_added=stats.bytes_stored)
                    results.append(result)
                    if on_result is not None:
                        on_result(result)
            finally:
                copier.close()
        return results

    def forget(self, snapshot_ids: Sequence[str]) -> None:
        """Delete the manifests of these snapshots (full IDs).  Their data stays until a prune."""
        self.require_admin("forget")
        for snapshot_id in snapshot_ids:
            self._snapshots.delete(snapshot_id)

    # maintenance ------------------------------------------------------------------------------
    def require_admin(self, what: str) -> None:
        """AdminKeyRequired (exit 18) if this repository was opened with a backup key."""
        if self.role != ROLE_ADMIN:
            raise AdminKeyRequired(f"{what} needs an admin key: this repository was opened with a backup key, "
                                   "which writes new backups but cannot read, forget or prune stored ones")

    def _maintenance(self) -> MaintenanceContext:
        from dtstore.maintenance.scan import MaintenanceContext

        self.require_admin("maintenance (check, prune, repair, index rebuild)")
        self._ensure_index()
        # maintenance judges the remote itself: no local copies of manifests
        remote_only = SnapshotStore(self.store, self._sealer)
        return MaintenanceContext(self.store, self._sealer, self._cache, self._hasher, remote_only,
                                  self.list_items, default_host())

    def check(self, *, read_data: bool = False, subset: str | None = None,
              progress: Callable[[str], None] = _quiet) -> CheckReport:
        """Verify structure (and data with ``read_data``/``subset``); problems name snapshots and paths."""
        from dtstore.maintenance.check import CheckRun

        return CheckRun(self._maintenance(), progress, self.store.capabilities.connections).run(
            read_data=read_data, subset=subset)

    def prune(self, *, grace: dt.timedelta = DEFAULT_GRACE, max_unused: float = 0.05, exclusive: bool = False,
              dry_run: bool = False, progress: Callable[[str], None] = _quiet) -> PrunePlan:
        """Mark unreferenced packs, delete packs marked long enough ago, repack sparse packs."""
        from dtstore.maintenance.prune import PruneRun, check_exclusive_options, refuse_live_writers

        check_exclusive_options(grace, exclusive)
        ctx = self._maintenance()
        kind = "exclusive" if exclusive else "prune"
        with hold_lock(self.store, self._sealer, ctx.host, kind):
            if exclusive:
                refuse_live_writers(ctx)
            run = PruneRun(ctx, compression=self.config.compression, pack_size=self.config.pack_size,
                           progress=progress)
            plan = latest = self._prune_once(run, grace, max_unused, dry_run)
            if not dry_run:
                sweep_heartbeats(self.store, self._sealer, layout.SESSIONS, AAD_SESSION, SESSION_TIMEOUT,
                                 lambda doc: True)
                sweep_heartbeats(self.store, self._sealer, layout.LOCKS, AAD_LOCK, LOCK_TIMEOUT, lambda doc: True)
                sweep_temporaries(self.store)
            # With no writers and no grace, what one pass marks or repacks the next deletes; a repack
            # can leave another pass's worth (duplicates stored by concurrent writers), so go on
            # until a pass finds nothing new, a few times at most.
            passes = 1
            while exclusive and grace <= dt.timedelta(0) and not dry_run and (latest.mark or latest.repack) \
                    and passes < MAX_EXCLUSIVE_PASSES:
                self.refresh_index()
                before = latest.bytes_unused
                latest = self._prune_once(run, grace, max_unused, dry_run)
                plan.retained = latest.retained  # held by Object Lock retention (§17.1)
                if latest.bytes_unused >= before and not latest.delete:
                    break  # repacks only trade one duplicate copy for another: stop
                plan.delete += latest.delete
                plan.bytes_delete += latest.bytes_delete
                passes += 1
        self._refreshed = False
        return plan

    @staticmethod
    def _prune_once(run: PruneRun, grace: dt.timedelta, max_unused: float, dry_run: bool) -> PrunePlan:
        plan, scan, marks = run.plan(grace=grace, max_unused=max_unused)
        try:
            if not dry_run:
                run.execute(plan, scan, marks)
        finally:
            scan.close()
        return plan

    def rebuild_index(self, progress: Callable[[str], None] = _quiet, *, dry_run: bool = False,
                      operation: str = "index rebuild") -> RebuildReport:
        """Rewrite the remote index from pack trailers (exclusive: no backups meanwhile)."""
        from dtstore.maintenance.rebuild import rebuild_index

        ctx = self._maintenance()
        with self._exclusive(ctx, operation, dry_run):
            report = rebuild_index(ctx, progress, self.store.capabilities.connections, dry_run=dry_run)
        if not dry_run:
            self.refresh_index()
        return report

    def repair_index(self, *, dry_run: bool = False, progress: Callable[[str], None] = _quiet) -> RebuildReport:
        """``repair index``: ``rebuild_index`` under its repair name."""
        return self.rebuild_index(progress, dry_run=dry_run, operation="repair index")

    def repair_snapshots(self, refs: Sequence[str] = (), *, forget: bool = False, drop_files: bool = False,
                         dry_run: bool = False, progress: Callable[[str], None] = _quiet) -> list[SnapshotRepair]:
        """Write a replacement for each snapshot (of ``refs``, or all) that refers to lost chunks:
        such files truncated before the first lost chunk (``drop_files``: left out), an item list
        that lost a chunk cut there.  Originals stay unless ``forget``.  Returns what needed repair."""
        from dtstore.maintenance.repair import execute_snapshot_repairs, plan_snapshot_repairs
        from dtstore.maintenance.scan import scan_repository

        ctx = self._maintenance()
        with self._exclusive(ctx, "repair snapshots", dry_run):
            scan = scan_repository(ctx, clock.now(), progress=progress)
            try:
                by_id = {s.id: s for s in scan.snapshots}
                if refs:
                    wanted = [by_id.get(i) or self.load_snapshot(i) for i in self.resolve_snapshot_ids(refs)]
                else:
                    wanted = list(scan.snapshots)
                repairs = plan_snapshot_repairs(ctx, scan, wanted, drop_files=drop_files)
                if not dry_run and repairs:
                    execute_snapshot_repairs(ctx, repairs, {s.id: s for s in wanted},
                                             chunker=self._chunker(self.config.meta_chunker),
                                             compression=self.config.compression, pack_size=self.config.pack_size,
                                             forget=forget, progress=progress)
            finally:
                scan.close()
        self._refreshed = False
        return repairs

    def repair_packs(self, pack_ids: Sequence[str] = (), *, dry_run: bool = False,
                     progress: Callable[[str], None] = _quiet) -> list[PackRepair]:
        """Copy every blob that still verifies out of damaged packs (``pack_ids``, or every pack the
        damage records name) into new packs, then record those packs as unusable.  Deletes nothing."""
        from dtstore.maintenance.repair import choose_packs, execute_pack_repairs, plan_pack_repair, survey_pack
        from dtstore.maintenance.scan import scan_repository

        ctx = self._maintenance()
        with self._exclusive(ctx, "repair packs", dry_run):
            scan = scan_repository(ctx, clock.now(), progress=progress)
            try:
                surveys = {}
                for pack_id in choose_packs(scan, pack_ids):
                    progress(f"reading pack {pack_id[:16]}")
                    surveys[pack_id] = survey_pack(ctx, scan, pack_id)
                repairs = [plan_pack_repair(scan, survey) for survey in surveys.values()]
                if not dry_run and repairs:
                    execute_pack_repairs(ctx, scan, repairs, surveys, compression=self.config.compression,
                                         pack_size=self.config.pack_size, progress=progress)
            finally:
                scan.close()
        self._refreshed = False
        return repairs

    def _exclusive(self, ctx: MaintenanceContext, operation: str, dry_run: bool) -> AbstractContextManager[object]:
        """The exclusive lock with no backup running, which every repair needs (none for a dry run)."""
        from dtstore.maintenance.prune import refuse_live_writers

        if dry_run:
            return contextlib.nullcontext()
        stack = ExitStack()
        stack.enter_context(hold_lock(self.store, self._sealer, ctx.host, "exclusive"))
        try:
            refuse_live_writers(ctx, operation)
        except BaseException:
            stack.close()
            raise
        return stack

    def rebuild_cache(self) -> int:
        """Drop the local LMDB cache and load it again from the remote index."""
        self._cache.reset()
        return self.refresh_index()

    def unlock(self, *, all_locks: bool = False) -> list[LockInfo]:
        return remove_locks(self.store, self._sealer, default_host(), all_locks=all_locks)

    def keys(self) -> list[KeyEntry]:
        from dtstore.maintenance.keys import list_keys

        return list_keys(self.store, self.key)

    def add_key(self, password: str | bytes, *, kdf: ScryptParams | None = None, role: str = ROLE_ADMIN) -> str:
        """A new key slot.  ``role="backup"`` (a key-roles repository only, ``convert_to_key_roles``):
        a key that writes new backups and reads the index, but opens no stored data or manifest."""
        from dtstore.maintenance.keys import add_backup_key, add_key

        self.require_admin("key add")
        assert self.master is not None
        label = f"{getpass.getuser()}@{default_host()}"
        if role == ROLE_BACKUP:
            if not self.config.key_roles or self.config.data_public_key is None:
                raise UsageError("this repository has no key roles yet: convert it first with "
                                 "'dtstore key convert' (admin keys keep working; older dtstore versions "
                                 "then refuse it)")
            backup = BackupKey(shared_secret(self.master.secret), self.config.data_public_key)
            return add_backup_key(self.store, backup, self.config.repository_id, _as_bytes(password),
                                  label=label, kdf=kdf)
        if role != ROLE_ADMIN:
            raise UsageError(f"unknown key role {role!r}: admin or backup")
        return add_key(self.store, self.master, self.config.repository_id, _as_bytes(password), label=label, kdf=kdf)

    def remove_key(self, slot_id: str) -> None:
        from dtstore.maintenance.keys import remove_key

        self.require_admin("key remove")
        remove_key(self.store, slot_id, self.key)

    def convert_to_key_roles(self, progress: Callable[[str], None] = _quiet) -> bool:
        """Turn on feature key-roles (repository-format.md §4.4, §15.11): the config gains the chunk keys
        and the data public key, the index, marks and damage records are sealed again under the shared
        key.  Stored packs and manifests stay as they are (admins read them; backup keys cannot).
        Exclusive: no backup may run meanwhile.  False if the repository already had key roles (what a
        crashed conversion left under E is then sealed again)."""
        from dtstore.maintenance.convert import convert_to_key_roles

        self.require_admin("key convert")
        assert self.master is not None
        already = self.config.key_roles
        ctx = self._maintenance()
        with self._exclusive(ctx, "key convert", False):
            config = self.config if already else \
                self.config.with_key_roles(self.chunk_keys, data_public_key(self.master.secret))
            sealer = _sealer_for(self.master, config)
            # again after a crash: what is still under E is sealed again
            convert_to_key_roles(self.store, self.master.sealer(), sealer, seal_config(config, sealer), progress)
        self.config = config
        self._sealer = sealer
        self._snapshots = SnapshotStore(self.store, sealer, LocalStore(self._cache.path / "manifests", durable=False))
        self._cache.reset()
        self._refreshed = False
        return not already

    def change_password(self, password: str | bytes, *, kdf: ScryptParams | None = None) -> str:
        """Add a slot for the new password, then remove the one this repository was opened with.

        The new slot is opened with the new password first (so the old one only goes once the new
        one is known to work), and becomes this repository's current key."""
        from dtstore.maintenance.keys import remove_key

        self.require_admin("key passwd")
        new_slot = self.add_key(password, kdf=kdf)
        _, info = unwrap_key(self.store.get(layout.key_name(new_slot)), _as_bytes(password), new_slot)
        remove_key(self.store, self.key.slot_id, self.key, allow_current=True)
        self.key = info
        return new_slot

    def stats(self) -> dict[str, Any]:
        """Repository size, deduplication ratio and what each snapshot added."""
        packs = list_packs(self.store)
        stored = sum(info.size for info in packs.values())
        snaps = self.snapshots()
        logical = sum(int(s.summary.get("bytes_total", 0)) for s in snaps)
        return {
            "snapshots": len(snaps), "packs": len(packs), "stored_bytes": stored, "logical_bytes": logical,
            "dedup_ratio": round(logical / stored, 3) if stored else None,
            "chunks_indexed": self._maintenance().cache.chunk_count(),
            "per_snapshot": [{"id": s.id, "time": s.to_json()["time"], "bytes_total": s.summary.get("bytes_total", 0),
                              "bytes_added": s.summary.get("bytes_stored", 0)} for s in snaps],
        }

    def _latest(self, source_id: str, host: str) -> Snapshot | None:
        wanted = (clean(source_id), clean(host))
        same = [s for s in self.snapshots() if (s.source_id, s.host) == wanted]
        return same[-1] if same else None

    def _chunker(self, params: ChunkerParams) -> Chunker:
        return Chunker(params, self.chunk_keys.chunker_seed)


def _sealer_for(key: MasterKey | BackupKey, config: RepoConfig) -> Sealer:
    """v1: everything under E.  key-roles: the shared key C, the data public key, and for an admin the
    data private key and E (for what was stored before the repository was converted)."""
    if not config.key_roles:
        if not isinstance(key, MasterKey):
            raise UnsupportedFormat("a backup key slot in a repository without the key-roles feature")
        return key.sealer()
    assert config.data_public_key is not None
    if isinstance(key, MasterKey):
        return RoleSealer(shared_secret(key.secret), config.data_public_key, data_private_key(key.secret),
                          legacy=key.sealer())
    return RoleSealer(key.shared, key.data_public)


def _open_config(blob: bytes, key: MasterKey | BackupKey) -> RepoConfig:
    """The config is sealed under E (v1) or under the shared key C (key-roles), which both roles hold."""
    shared = shared_secret(key.secret) if isinstance(key, MasterKey) else key.shared
    role_sealer = Sealer(hkdf(shared, info=INFO_SHARED_ENC))
    if isinstance(key, MasterKey):
        try:
            return open_config(blob, key.sealer())
        except IntegrityError:
            pass
    config = open_config(blob, role_sealer)
    if isinstance(key, BackupKey) and config.data_public_key != key.data_public:
        raise IntegrityError("the backup key's data public key differs from the repository's")
    return config


class _IndexRefresher:
    """Reloads the remote index now and then during a backup, so chunks other hosts uploaded
    meanwhile are not sent again."""

    def __init__(self, refresh: Callable[[], int], interval: float) -> None:
        self._refresh = refresh
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dtstore-index-refresh", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(DtstoreError):
                self._refresh()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _describe_sources(sources: Sequence[Source]) -> tuple[str, str, list[str], dict[str, Any]]:
    if len(sources) == 1:
        s = sources[0]
        return s.source_id, s.kind, list(s.display_paths), s.metadata()
    kinds = {s.kind for s in sources}
    kind = kinds.pop() if len(kinds) == 1 else "mixed"
    paths = [p for s in sources for p in s.display_paths]
    return "+".join(s.source_id for s in sources), kind, paths, {s.source_id: s.metadata() for s in sources}
