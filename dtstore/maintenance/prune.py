"""Prune: remove data no snapshot needs, while backups keep running.

Two phases, so that a backup which started before a prune can never lose a chunk it relies on:

1. *Mark*: packs with no referenced chunk (and packs just emptied by repacking) are recorded in
   ``maintenance/marks`` with the time.  New writers never deduplicate against marked packs.
2. *Sweep* (a later prune): a marked pack is deleted when the grace period has passed since its
   mark, no live writer session started before the mark, and it is still unreferenced.  A marked
   pack that became referenced again (by a writer that started before the mark) is unmarked.

Deletion order, crash-safe at every step: write compacted index segments without the doomed
packs → delete the old segments → delete the packs → rewrite the marks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from dtstore import clock
from dtstore.compression import Zstd
from dtstore.content.damage import compact_damage
from dtstore.content.pack import BlobLocation
from dtstore.content.segments import PackRecord, encode_segment, new_segment_name
from dtstore.content.store import ContentReader, ContentStore
from dtstore.errors import IntegrityError, RepositoryLocked, UsageError
from dtstore.format import BLOB_META, INDEX_SEGMENT_MAX_ENTRIES
from dtstore.maintenance.scan import MaintenanceContext, PackStat, RepositoryScan, scan_repository
from dtstore.maintenance.state import MARKS, PackTimes, load_times, save_times
from dtstore.sessions import SessionInfo, read_sessions
from dtstore.storage import layout
from dtstore.storage.base import BlobStore

CLOCK_SKEW = dt.timedelta(minutes=5)
ORPHAN_MIN_AGE = dt.timedelta(hours=1)


@dataclass
class PrunePlan:
    delete: list[str] = field(default_factory=list)
    """marked packs whose grace has passed: deleted now"""
    mark: list[str] = field(default_factory=list)
    """unreferenced packs marked now (deleted by a later prune)"""
    unmark: list[str] = field(default_factory=list)
    repack: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    """marked packs still inside the grace period or held by an older live writer"""
    retained: list[str] = field(default_factory=list)
    """marked packs whose grace has passed, but whose S3 Object Lock retention has not (spec §17.1):
    also in ``waiting``"""
    bytes_delete: int = 0
    bytes_mark: int = 0
    bytes_repack_used: int = 0
    bytes_total: int = 0
    bytes_unused: int = 0

    def to_json(self) -> dict[str, object]:
        return {"delete_packs": len(self.delete), "delete_bytes": self.bytes_delete,
                "mark_packs": len(self.mark), "mark_bytes": self.bytes_mark,
                "unmark_packs": len(self.unmark), "repack_packs": len(self.repack),
                "repack_live_bytes": self.bytes_repack_used, "waiting_packs": len(self.waiting),
                "retained_packs": len(self.retained),
                "repository_bytes": self.bytes_total, "unused_bytes": self.bytes_unused}


def plan_prune(scan: RepositoryScan, marks: PackTimes, sessions: list[SessionInfo], now: dt.datetime,
               *, grace: dt.timedelta, max_unused: float, host: str) -> PrunePlan:
    """Pure: decide what to delete, mark, unmark and repack."""
    plan = PrunePlan()
    live = [s for s in sessions if s.is_alive(now, host)]
    for stat in scan.packs.values():
        plan.bytes_total += stat.size
        plan.bytes_unused += stat.unused_bytes if stat.indexed else stat.size
    for pack_id, stat in sorted(scan.packs.items()):
        unused = stat.used_blobs == 0
        marked_at = marks.packs.get(pack_id)
        if marked_at is not None:
            if not unused:
                plan.unmark.append(pack_id)
            elif now - marked_at >= grace and not any(s.started <= marked_at + CLOCK_SKEW for s in live):
                plan.delete.append(pack_id)
                plan.bytes_delete += stat.size
            else:
                plan.waiting.append(pack_id)
        elif unused and _old_enough(stat, now, grace):
            plan.mark.append(pack_id)
            plan.bytes_mark += stat.size
    _choose_repacks(scan, marks, plan, max_unused)
    return plan


def hold_retained(store: BlobStore, scan: RepositoryScan, plan: PrunePlan, now: dt.datetime) -> None:
    """Object Lock: a pack whose retention has not passed cannot be deleted yet; it waits, marked."""
    retained_until = getattr(store, "retained_until", None)
    if retained_until is None or not plan.delete:
        return
    keep = []
    for pack_id in plan.delete:
        stat = scan.packs[pack_id]
        until = retained_until(stat.name or layout.pack_name(pack_id, stat.kind == BLOB_META))
        if until is not None and until > now:
            keep.append(pack_id)
            plan.bytes_delete -= stat.size
    plan.retained = keep
    plan.waiting += keep
    plan.delete = [p for p in plan.delete if p not in set(keep)]


def _old_enough(stat: PackStat, now: dt.datetime, grace: dt.timedelta) -> bool:
    """Unindexed packs may belong to a backup still running: leave them alone for a grace period."""
    if stat.indexed:
        return True
    return stat.modified is not None and now - stat.modified >= max(grace, ORPHAN_MIN_AGE)


def _choose_repacks(scan: RepositoryScan, marks: PackTimes, plan: PrunePlan, max_unused: float) -> None:
    """Repack the emptiest partly-used packs until the unused share is at most ``max_unused``; a
    pack holding a damaged copy that is no longer used (its chunk was stored again) is repacked
    whatever the share, so the damage leaves the repository.  A marked pack a writer reused (it is
    unmarked in this pass) is a candidate like any other: its garbage must not wait for another pass."""
    budget = plan.bytes_unused - plan.bytes_mark - plan.bytes_delete - max_unused * plan.bytes_total
    unmarked = set(plan.unmark)
    candidates = sorted(
        (s for s in scan.packs.values()
         if s.indexed and s.used_blobs and s.unused_bytes and (s.pack_id not in marks.packs or s.pack_id in unmarked)
         and not damaged_in_use(scan, s.pack_id)),
        key=lambda s: s.used_bytes / max(1, s.used_bytes + s.unused_bytes),
    )
    damaged = scan.damage.pack_ids()
    for stat in [s for s in candidates if s.pack_id in damaged]:
        plan.repack.append(stat.pack_id)
        plan.bytes_repack_used += stat.used_bytes
        budget -= stat.unused_bytes
    candidates = [s for s in candidates if s.pack_id not in damaged]
    for stat in candidates:
        if budget <= 0:
            break
        plan.repack.append(stat.pack_id)
        plan.bytes_repack_used += stat.used_bytes
        budget -= stat.unused_bytes


def damaged_in_use(scan: RepositoryScan, pack_id: str) -> bool:
    """A copy the damage set names is still the one counted as used: repacking would fail on it
    (``repair packs`` salvages such packs; ``repair snapshots`` drops what is lost)."""
    if pack_id in scan.damage.packs:
        return scan.packs[pack_id].used_blobs > 0
    return any(p == pack_id and scan.is_used_in(c, p) for p, c in scan.damage.blobs)


class PruneRun:
    def __init__(self, ctx: MaintenanceContext, *, compression: Zstd, pack_size: int,
                 progress: Callable[[str], None]) -> None:
        self._ctx = ctx
        self._compression = compression
        self._pack_size = pack_size
        self._progress = progress

    def plan(self, *, grace: dt.timedelta, max_unused: float) -> tuple[PrunePlan, RepositoryScan, PackTimes]:
        ctx = self._ctx
        now = clock.now()
        marks = load_times(ctx.store, ctx.sealer, MARKS)
        # Sessions before snapshots: a writer saves its snapshot, then removes its session, so one
        # that finishes during the scan is seen one way or the other.  Read after the scan, a writer
        # committing meanwhile would be in neither, and packs only it refers to would be deleted.
        sessions = read_sessions(ctx.store, ctx.sealer)
        scan = scan_repository(ctx, now, set(marks.packs), self._progress)
        try:
            if ctx.snapshots.unreadable:
                ids = ", ".join(sorted(i[:8] for i in ctx.snapshots.unreadable))
                raise IntegrityError(f"prune refuses to run: snapshot manifest(s) {ids} cannot be read, so the "
                                     "data they refer to cannot be told apart from garbage; run 'dtstore check', "
                                     "then 'dtstore forget ID' for each one you give up")
            plan = plan_prune(scan, marks, sessions, now, grace=grace, max_unused=max_unused, host=ctx.host)
            hold_retained(ctx.store, scan, plan, now)
        except BaseException:
            scan.close()  # the caller gets no scan to close
            raise
        return plan, scan, marks

    def execute(self, plan: PrunePlan, scan: RepositoryScan, marks: PackTimes) -> None:
        ctx = self._ctx
        if plan.repack:
            self._progress(f"repacking {len(plan.repack)} pack(s)")
            self._repack(plan, scan, marks)
        # The mark time is taken just before the marks become visible: a writer that started after
        # it loads the new marks (and avoids these packs); one that started before is waited for.
        # Taken before a long repack, a writer starting during the repack would be neither.
        now = clock.now()
        for pack_id in plan.unmark:
            marks.packs.pop(pack_id, None)
        for pack_id in [*plan.mark, *plan.repack]:
            marks.packs[pack_id] = now
        save_times(ctx.store, ctx.sealer, MARKS, marks)
        if plan.delete:
            self._progress(f"deleting {len(plan.delete)} pack(s)")
            self._sweep(plan, scan)
            for pack_id in plan.delete:
                marks.packs.pop(pack_id, None)
            save_times(ctx.store, ctx.sealer, MARKS, marks)

    def _repack(self, plan: PrunePlan, scan: RepositoryScan, marks: PackTimes) -> None:
        ctx = self._ctx
        reader = ContentReader(ctx.store, ctx.cache, ctx.sealer, ctx.hasher)
        # never deduplicate against a pack that is going away (repacked now, marked or being deleted)
        content = ContentStore(ctx.store, ctx.cache, ctx.sealer, ctx.hasher, compression=self._compression,
                               pack_size=self._pack_size,
                               excluded_packs=frozenset(plan.repack) | frozenset(marks.packs))
        try:
            for pack_id in plan.repack:
                stat = scan.packs[pack_id]
                name = layout.pack_name(pack_id, stat.kind == BLOB_META)
                data = memoryview(ctx.store.get(name))
                for chunk_id, offset, length, raw in scan.blobs_of(pack_id):
                    # only the copy counted as used here; copying a chunk whose counted copy lives in
                    # another pack would only make a new duplicate (and a new partly-used pack)
                    if not scan.is_used_in(chunk_id, pack_id):
                        continue
                    location = BlobLocation(pack_id, stat.kind, offset, length, raw)
                    plain = reader.open(chunk_id, location, data[offset : offset + length])
                    content.put_with_id(chunk_id, plain, stat.kind)
            content.flush()
        finally:
            content.close()

    def _sweep(self, plan: PrunePlan, scan: RepositoryScan) -> None:
        ctx = self._ctx
        doomed = set(plan.delete)
        # a generator: one segment's worth of entries in memory at a time, however large the index
        survivors = (PackRecord(pack_id, stat.kind, stat.size,
                                scan.entries_of(pack_id))
                     for pack_id, stat in sorted(scan.packs.items()) if stat.indexed and pack_id not in doomed)
        old = set(scan.segments)
        for batch in _batches(survivors):
            ctx.store.put(new_segment_name(), encode_segment(ctx.sealer, batch, supersedes=sorted(old)))
        for name in sorted(old):
            ctx.store.delete(name)
        for pack_id in plan.delete:
            stat = scan.packs[pack_id]
            ctx.store.delete(stat.name or layout.pack_name(pack_id, stat.kind == BLOB_META))
        # damage records about deleted packs say nothing any more: one record of the rest replaces them
        remaining = {pid for pid, stat in scan.packs.items()
                     if (stat.indexed or stat.listed_size is not None) and pid not in doomed}
        compact_damage(ctx.store, ctx.sealer, scan.damage_records, remaining, host=ctx.host)
        ctx.cache.reset()


def _batches(records: Iterable[PackRecord]) -> Iterator[list[PackRecord]]:
    """Group records into segments of at most INDEX_SEGMENT_MAX_ENTRIES entries (a record is never split),
    lazily: only the batch being filled is held."""
    batch: list[PackRecord] = []
    count = 0
    for record in records:
        if count + len(record.entries) > INDEX_SEGMENT_MAX_ENTRIES and batch:
            yield batch
            batch, count = [], 0
        batch.append(record)
        count += len(record.entries)
    if batch:
        yield batch


def check_exclusive_options(grace: dt.timedelta, exclusive: bool) -> None:
    if grace <= dt.timedelta(0) and not exclusive:
        raise UsageError("--grace 0 deletes without a safety period; it needs --exclusive")


def refuse_live_writers(ctx: MaintenanceContext, operation: str = "prune --exclusive") -> None:
    now = clock.now()
    live = [s for s in read_sessions(ctx.store, ctx.sealer) if s.is_alive(now, ctx.host)]
    if live:
        s = live[0]
        raise RepositoryLocked(f"{operation} needs the repository to itself and does not wait: {len(live)} "
                               f"backup(s) are running (pid {s.pid} on {s.host} since "
                               f"{s.started:%Y-%m-%d %H:%M:%S}Z); run it again when they have finished")
