"""Rebuild the remote index from pack trailers (when segments are lost or damaged)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dtstore.content.segments import (
    PackRecord,
    decode_segment,
    encode_segment,
    list_packs,
    new_segment_name,
    read_pack_record,
)
from dtstore.errors import DtstoreError
from dtstore.maintenance.prune import _batches
from dtstore.maintenance.scan import MaintenanceContext
from dtstore.storage import layout
from dtstore.storage.base import BlobInfo

WINDOW = 256
"""packs whose trailers are read at a time"""


@dataclass
class RebuildReport:
    packs: int = 0
    entries: int = 0
    segments_written: int = 0
    segments_removed: int = 0
    unreadable: list[str] = field(default_factory=list)
    salvaged: int = 0
    """entries of unreadable packs kept from the old index (they still lie inside the pack)"""


def rebuild_index(ctx: MaintenanceContext, progress: Callable[[str], None], workers: int = 4, *,
                  dry_run: bool = False) -> RebuildReport:
    """Read every pack's trailer, write fresh segments, then remove the old ones.

    The new segments are written before any old one is deleted, so a crash leaves a usable index.
    Packs whose trailer cannot be read are reported and left in place; what the old segments say
    about them is kept where it still lies inside the pack (a truncated pack keeps the blobs before
    the cut: every read verifies a blob, so a stale entry can fail but never return wrong data).
    ``dry_run`` reads and counts the same, and writes and deletes nothing.
    """
    report = RebuildReport()
    old = [info.name for info in ctx.store.list(layout.INDEX)]
    packs = list_packs(ctx.store)
    progress(f"reading {len(packs)} pack trailer(s)")

    def read(info: BlobInfo) -> PackRecord | str:
        try:
            return read_pack_record(ctx.store, ctx.sealer, info.name, info.size)
        except DtstoreError as exc:
            return f"{info.name}: {exc}"

    damaged: dict[str, int] = {}

    def records() -> Iterator[PackRecord]:
        """Trailers in windows of packs, then what can be salvaged: memory bounded by the window
        and one segment, not by the repository."""
        infos = list(packs.items())
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(infos), WINDOW):
                window = infos[start : start + WINDOW]
                for (pack_id, info), result in zip(window, pool.map(read, [i for _, i in window]), strict=True):
                    if isinstance(result, str):
                        report.unreadable.append(result)
                        damaged[pack_id] = info.size
                    else:
                        report.packs += 1
                        report.entries += len(result.entries)
                        yield result
        salvaged = _salvage(ctx, old, damaged)
        report.salvaged = sum(len(r.entries) for r in salvaged)
        yield from salvaged

    for batch in _batches(records()):
        if not dry_run:
            ctx.store.put(new_segment_name(), encode_segment(ctx.sealer, batch, supersedes=sorted(old)))
        report.segments_written += 1
    report.segments_removed = len(old)
    if dry_run:
        return report
    for name in old:
        ctx.store.delete(name)
    ctx.cache.reset()
    return report


def _salvage(ctx: MaintenanceContext, segments: list[str], damaged: dict[str, int]) -> list[PackRecord]:
    """The old index's entries for packs whose trailer is unreadable, where they fit in the pack."""
    if not damaged:
        return []
    found: dict[str, PackRecord] = {}
    for name in segments:
        try:
            records, _ = decode_segment(ctx.sealer, ctx.store.get(name), name)
        except DtstoreError:
            continue
        for record in records:
            size = damaged.get(record.pack_id)
            if size is None:
                continue
            kept = found.setdefault(record.pack_id, PackRecord(record.pack_id, record.kind, size))
            known = {e.offset for e in kept.entries}
            kept.entries += [e for e in record.entries if e.offset + e.length <= size and e.offset not in known]
    return [r for r in found.values() if r.entries]
