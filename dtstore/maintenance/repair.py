"""repair snapshots and repair packs: plan from a scan (pure functions), then execute.

``repair snapshots`` writes a new manifest for each snapshot that refers to lost chunks: files with
lost chunks are truncated before the first lost chunk (or dropped), and when the item list itself
lost a chunk, the items before it are kept and the rest are dropped.  The original stays until it
is forgotten (``forget``).  A chunk is *lost* when no index lists it, or every indexed copy is in a
pack that does not exist or is named by the damage set (spec/repository-format.md §13.4).  Like
restic's, it trusts the index and the damage set and reads no file data: run ``check --read-data``
first so that the damage set knows what is bad.

``repair packs`` reads damaged packs blob by blob and stores every blob that verifies, and whose
chunk has no good copy elsewhere, into new packs (and index segments), then records the whole pack
in the damage set: nothing uses it any more, and prune deletes it once no snapshot needs a chunk
only it holds.  Neither deletes anything.

Only the library's return values describe what happened: nothing here prints or exits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from dtstore import __version__
from dtstore.chunking import Chunker
from dtstore.compression import Zstd
from dtstore.content.damage import DamageSet, write_damage
from dtstore.content.pack import BlobEntry, BlobLocation, open_blob, pack_key, parse_pack
from dtstore.content.store import ContentReader, ContentStore
from dtstore.errors import BlobNotFound, DtstoreError, IntegrityError, UsageError
from dtstore.format import BLOB_META
from dtstore.maintenance.scan import MaintenanceContext, RepositoryScan, chosen_pack
from dtstore.maintenance.state import MARKS, load_times
from dtstore.objects.writer import ObjectWriter
from dtstore.snapshots.manifest import Item, Snapshot, encode_item
from dtstore.storage import layout

REPAIRED_TAG = "repaired"


# --- what is lost -----------------------------------------------------------------------------
def lost_chunks(scan: RepositoryScan, chunk_ids: Iterable[bytes]) -> set[bytes]:
    """Pure over the scan: the chunks no good copy of which is indexed.  The scan's counted copy
    (``chosen``) is a good one whenever there is one, so only it needs looking at."""
    lost: set[bytes] = set()
    with scan.scratch.env.begin(db=scan.scratch.chosen) as txn:
        for chunk_id in set(chunk_ids):
            pid = chosen_pack(txn, chunk_id)
            if pid is None:
                lost.add(chunk_id)
                continue
            pack_id = bytes(pid).hex()
            stat = scan.packs.get(pack_id)
            if stat is None or stat.listed_size is None or scan.damage.is_bad(pack_id, chunk_id):
                lost.add(chunk_id)
    return lost


# --- repair snapshots -------------------------------------------------------------------------
@dataclass
class ItemChange:
    path: str
    """"/" + the item's path"""
    action: str
    """"truncated" (kept the chunks before the first lost one) or "dropped" """
    size: int
    new_size: int
    lost_chunks: int

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "action": self.action, "size": self.size, "new_size": self.new_size,
                "lost_chunks": self.lost_chunks}


@dataclass
class SnapshotRepair:
    snapshot_id: str
    changes: list[ItemChange] = field(default_factory=list)
    items_before: int = 0
    items_dropped_with_item_list: int = 0
    """items lost because the item list lost a chunk (everything after it)"""
    items: list[Item] = field(default_factory=list)
    """the repaired item list"""
    unrepairable: str = ""
    """why no replacement can be written (nothing is left, or the item list cannot be read)"""
    new_id: str | None = None
    forgotten: bool = False

    @property
    def needed(self) -> bool:
        return bool(self.changes or self.items_dropped_with_item_list or self.unrepairable)

    def to_json(self) -> dict[str, object]:
        return {"snapshot_id": self.snapshot_id, "new_id": self.new_id, "forgotten": self.forgotten,
                "items_before": self.items_before, "items_after": len(self.items),
                "items_dropped_with_item_list": self.items_dropped_with_item_list,
                "unrepairable": self.unrepairable or None, "changes": [c.to_json() for c in self.changes]}


def repair_items(items: Iterable[Item], lost: set[bytes], raw_length: Callable[[bytes], int], *,
                 drop_files: bool) -> tuple[list[Item], list[ItemChange]]:
    """Pure: the items with lost chunks truncated before the first lost chunk (or dropped)."""
    kept: list[Item] = []
    changes: list[ItemChange] = []
    for item in items:
        hit = [n for n, c in enumerate(item.chunks) if c in lost] if item.type == "file" else []
        if not hit:
            kept.append(item)
            continue
        if drop_files:
            changes.append(ItemChange("/" + item.name, "dropped", item.size, 0, len(hit)))
            continue
        chunks = item.chunks[: hit[0]]
        size = sum(raw_length(c) for c in chunks)
        kept.append(dataclasses.replace(item, chunks=chunks, size=size))
        changes.append(ItemChange("/" + item.name, "truncated", item.size, size, len(hit)))
    return kept, changes


def plan_snapshot_repairs(ctx: MaintenanceContext, scan: RepositoryScan, snapshots: Sequence[Snapshot], *,
                          drop_files: bool) -> list[SnapshotRepair]:
    """Which snapshots need a replacement, and what it holds (reads item lists, writes nothing)."""
    reader = ContentReader(ctx.store, ctx.cache, ctx.sealer, ctx.hasher)
    repairs: list[SnapshotRepair] = []
    for snap in snapshots:
        repair = SnapshotRepair(snap.id, items_before=snap.items_count)
        meta_lost = lost_chunks(scan, snap.items_chunks)
        cut = next((n for n, c in enumerate(snap.items_chunks) if c in meta_lost), None)
        try:
            items = _readable_items(ctx, reader, snap, cut)
        except DtstoreError as exc:
            repair.unrepairable = f"its item list cannot be read: {exc}"
            repairs.append(repair)
            continue
        if len(items) < snap.items_count:
            repair.items_dropped_with_item_list = snap.items_count - len(items)
        file_chunks = {c for item in items if item.type == "file" for c in item.chunks}
        lost = lost_chunks(scan, file_chunks)

        def raw_length(chunk_id: bytes) -> int:
            location = ctx.cache.lookup(chunk_id)
            if location is None:  # kept chunks are indexed: only a concurrent rebuild gets here
                raise IntegrityError(f"chunk {chunk_id.hex()[:16]} is in no index segment")
            return location.raw_length

        repair.items, repair.changes = repair_items(items, lost, raw_length, drop_files=drop_files)
        if repair.needed and not repair.items:
            repair.unrepairable = "nothing of it can be read"
        repairs.append(repair)
    return [r for r in repairs if r.needed]


def _readable_items(ctx: MaintenanceContext, reader: ContentReader, snap: Snapshot, cut: int | None) -> list[Item]:
    """The items of the readable start of the item list: all of them, or those wholly before the
    first lost chunk.  A chunk that fails on reading (damage not yet recorded) moves the cut to it."""
    if cut is None:
        try:
            return list(ctx.list_items(snap))
        except IntegrityError:
            cut = _first_unreadable(reader, snap.items_chunks)
            if cut is None:
                raise
    if cut == 0:
        return []
    # the item stream is msgpack maps back to back: a map cut short at the end is left out
    prefix = dataclasses.replace(snap, items_chunks=snap.items_chunks[:cut])
    return list(ctx.list_items(prefix))


def _first_unreadable(reader: ContentReader, chunks: Sequence[bytes]) -> int | None:
    for number, chunk_id in enumerate(chunks):
        try:
            reader.get(chunk_id)
        except IntegrityError:
            return number
    return None


def execute_snapshot_repairs(ctx: MaintenanceContext, repairs: list[SnapshotRepair], snapshots: dict[str, Snapshot],
                             *, chunker: Chunker, compression: Zstd, pack_size: int, forget: bool,
                             progress: Callable[[str], None]) -> None:
    """Store each replacement's item list, then commit its manifest; with ``forget``, delete the
    original once its replacement exists (or when nothing of it can be read)."""
    writable = [r for r in repairs if not r.unrepairable]
    refs: dict[str, tuple[list[bytes], int]] = {}
    if writable:
        marked = frozenset(load_times(ctx.store, ctx.sealer, MARKS).packs)
        content = ContentStore(ctx.store, ctx.cache, ctx.sealer, ctx.hasher, compression=compression,
                               pack_size=pack_size, excluded_packs=marked)
        writer = ObjectWriter(content, 2)
        try:
            for repair in writable:
                progress(f"writing the item list of the repaired snapshot {repair.snapshot_id[:8]}")
                stream = b"".join(encode_item(item) for item in repair.items)
                ref = writer.write(iter(list(chunker.chunks_of(stream))), BLOB_META)
                refs[repair.snapshot_id] = (ref.chunks, len(repair.items))
            content.flush()  # every chunk a new manifest reaches is indexed before it is written
        finally:
            writer.close()
            content.close()
    for repair in repairs:
        original = snapshots[repair.snapshot_id]
        if repair.snapshot_id in refs:
            chunks, count = refs[repair.snapshot_id]
            summary = dict(original.summary)
            summary["repaired"] = {"from": original.id, "files_truncated": sum(c.action == "truncated"
                                                                              for c in repair.changes),
                                   "files_dropped": sum(c.action == "dropped" for c in repair.changes),
                                   "items_dropped_with_item_list": repair.items_dropped_with_item_list}
            tags = list(original.tags) + ([] if REPAIRED_TAG in original.tags else [REPAIRED_TAG])
            replacement = dataclasses.replace(
                original, id="", tags=tags, items_chunks=chunks, items_count=count, summary=summary,
                program_version=f"dtstore {__version__}", original=original.original or original.id)
            repair.new_id = ctx.snapshots.save(replacement).id
        if forget:
            ctx.snapshots.delete(original.id)
            repair.forgotten = True


# --- repair packs -----------------------------------------------------------------------------
@dataclass
class PackRepair:
    pack_id: str
    kind: int = 0
    exists: bool = True
    copy: list[bytes] = field(default_factory=list)
    """chunks that verify here and have no good copy elsewhere: copied into a new pack"""
    bytes_copy: int = 0
    already_elsewhere: int = 0
    """chunks that already have a good copy in another pack (whether or not they verify here)"""
    lost: list[bytes] = field(default_factory=list)
    """chunks that fail verification here (or lie past its end) and have no good copy elsewhere"""
    trailer: str = "ok"
    """"ok", or why the pack's own trailer is unreadable"""
    error: str = ""
    copied: int = 0
    recorded: bool = False

    def to_json(self) -> dict[str, object]:
        return {"pack_id": self.pack_id, "exists": self.exists, "salvage_chunks": len(self.copy),
                "salvage_bytes": self.bytes_copy, "already_elsewhere": self.already_elsewhere,
                "lost_chunks": len(self.lost), "trailer": self.trailer, "error": self.error or None,
                "copied": self.copied, "recorded": self.recorded}


@dataclass
class BlobSurvey:
    """What reading one damaged pack found: the entries that verify, those that do not."""

    pack_id: str
    kind: int
    exists: bool = True
    good: list[BlobEntry] = field(default_factory=list)
    bad: list[bytes] = field(default_factory=list)
    trailer: str = "ok"
    error: str = ""


def choose_packs(scan: RepositoryScan, refs: Sequence[str]) -> list[str]:
    """The packs ``refs`` name (full IDs or unique prefixes), or every pack the damage set names."""
    if not refs:
        return sorted(p for p in scan.damage.pack_ids() if p in scan.packs)
    chosen = []
    for ref in refs:
        matches = [p for p in scan.packs if p.startswith(ref.lower())]
        if not matches:
            raise UsageError(f"no pack matches {ref!r}")
        if len(matches) > 1:
            raise UsageError(f"{ref!r} matches {len(matches)} packs; give more of the ID")
        chosen.append(matches[0])
    return sorted(set(chosen))


def survey_pack(ctx: MaintenanceContext, scan: RepositoryScan, pack_id: str) -> BlobSurvey:
    """Download one pack and verify every blob that its index entries or its own trailer list."""
    stat = scan.packs[pack_id]
    kind = stat.kind if stat.kind >= 0 else 0
    survey = BlobSurvey(pack_id, kind)
    entries = {e.offset: e for e in scan.entries_of(pack_id)}
    name = stat.name or layout.pack_name(pack_id, kind == BLOB_META)
    try:
        data = ctx.store.get(name)
    except BlobNotFound:
        survey.exists = False
        survey.error = "the pack does not exist"
        survey.bad = sorted({e.chunk_id for e in entries.values()})
        return survey
    try:
        key = pack_key(ctx.sealer, data, pack_id)
    except IntegrityError as exc:
        survey.error = str(exc)
        survey.bad = sorted({e.chunk_id for e in entries.values()})
        return survey
    try:
        trailer_kind, listed = parse_pack(ctx.sealer, data, pack_id)
        if stat.kind < 0:
            survey.kind = trailer_kind
        for e in listed:
            entries.setdefault(e.offset, e)
    except DtstoreError as exc:
        survey.trailer = str(exc)
    good: dict[bytes, BlobEntry] = {}
    bad: set[bytes] = set()
    for entry in sorted(entries.values(), key=lambda e: e.offset):
        try:
            open_blob(key, memoryview(data)[entry.offset : entry.offset + entry.length], entry.chunk_id,
                      entry.raw_length, pack_id, ctx.hasher)
        except DtstoreError:
            bad.add(entry.chunk_id)
            continue
        good.setdefault(entry.chunk_id, entry)
    survey.good = list(good.values())
    survey.bad = sorted(bad - good.keys())
    return survey


def plan_pack_repair(scan: RepositoryScan, survey: BlobSurvey) -> PackRepair:
    """Pure: what of a surveyed pack must be copied (its good blobs with no good copy elsewhere)."""
    repair = PackRepair(survey.pack_id, survey.kind, survey.exists, lost=list(survey.bad), trailer=survey.trailer,
                        error=survey.error)
    pid = bytes.fromhex(survey.pack_id)
    here = [e.chunk_id for e in survey.good] + list(survey.bad)
    with scan.scratch.env.begin(db=scan.scratch.chosen) as txn:
        elsewhere = {c for c in here if chosen_pack(txn, c) not in (None, pid)}
    elsewhere -= lost_chunks(scan, elsewhere)  # the counted copy elsewhere must be a good one
    for entry in survey.good:
        if entry.chunk_id in elsewhere:
            repair.already_elsewhere += 1
        else:
            repair.copy.append(entry.chunk_id)
            repair.bytes_copy += entry.raw_length
    # a bad blob whose chunk has a good copy elsewhere (healed by a backup) costs nothing
    repair.already_elsewhere += sum(1 for c in survey.bad if c in elsewhere)
    repair.lost = [c for c in survey.bad if c not in elsewhere]
    return repair


def execute_pack_repairs(ctx: MaintenanceContext, scan: RepositoryScan, repairs: list[PackRepair],
                         surveys: dict[str, BlobSurvey], *, compression: Zstd, pack_size: int,
                         progress: Callable[[str], None]) -> None:
    """Copy the planned blobs into new packs and index them, then record every repaired pack as a
    whole in the damage set (after the copies are indexed, so no reader is left without one)."""
    present = [r for r in repairs if r.exists and not r.error]
    if any(r.copy for r in present):
        marked = frozenset(load_times(ctx.store, ctx.sealer, MARKS).packs)
        # never deduplicate against the packs being repaired: their chunks must land elsewhere
        avoid = frozenset(r.pack_id for r in repairs) | marked
        content = ContentStore(ctx.store, ctx.cache, ctx.sealer, ctx.hasher, compression=compression,
                               pack_size=pack_size, excluded_packs=avoid)
        reader = ContentReader(ctx.store, ctx.cache, ctx.sealer, ctx.hasher)
        try:
            for repair in present:
                if not repair.copy:
                    continue
                progress(f"salvaging {len(repair.copy)} chunk(s) of pack {repair.pack_id[:16]}")
                stat = scan.packs[repair.pack_id]
                data = memoryview(ctx.store.get(stat.name or layout.pack_name(repair.pack_id,
                                                                                 repair.kind == BLOB_META)))
                by_chunk = {e.chunk_id: e for e in surveys[repair.pack_id].good}
                for chunk_id in repair.copy:
                    e = by_chunk[chunk_id]
                    location = BlobLocation(repair.pack_id, repair.kind, e.offset, e.length, e.raw_length)
                    plain = reader.open(chunk_id, location, data[e.offset : e.offset + e.length])
                    content.put_with_id(chunk_id, plain, repair.kind)
                    repair.copied += 1
            content.flush()
        finally:
            content.close()
    damage = DamageSet()
    for repair in repairs:
        damage.packs.add(repair.pack_id)
        damage.blobs.update((repair.pack_id, c) for c in surveys[repair.pack_id].bad)
    new = damage.minus(scan.damage)
    if new:
        write_damage(ctx.store, ctx.sealer, new, host=ctx.host, found_by="repair packs")
    for repair in repairs:
        repair.recorded = True


__all__ = [
    "ItemChange", "PackRepair", "SnapshotRepair", "choose_packs", "execute_pack_repairs",
    "execute_snapshot_repairs", "lost_chunks", "plan_pack_repair", "plan_snapshot_repairs", "repair_items",
    "survey_pack",
]
