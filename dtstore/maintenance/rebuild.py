"""Rebuild the remote index from pack trailers (when segments are lost or damaged)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dtstore.content.segments import PackRecord, encode_segment, list_packs, new_segment_name, read_pack_record
from dtstore.errors import DtstoreError
from dtstore.maintenance.prune import _batches
from dtstore.maintenance.scan import MaintenanceContext
from dtstore.storage import layout
from dtstore.storage.base import BlobInfo


@dataclass
class RebuildReport:
    packs: int = 0
    entries: int = 0
    segments_written: int = 0
    segments_removed: int = 0
    unreadable: list[str] = field(default_factory=list)


def rebuild_index(ctx: MaintenanceContext, progress: Callable[[str], None], workers: int = 4) -> RebuildReport:
    """Read every pack's trailer, write fresh segments, then remove the old ones.

    The new segments are written before any old one is deleted, so a crash leaves a usable index.
    Packs whose trailer cannot be read are reported and left in place.
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

    records: list[PackRecord] = []
    with ThreadPoolExecutor(workers) as pool:
        for result in pool.map(read, packs.values()):
            if isinstance(result, str):
                report.unreadable.append(result)
            else:
                records.append(result)
    for batch in _batches(records):
        ctx.store.put(new_segment_name(), encode_segment(ctx.sealer, batch, supersedes=sorted(old)))
        report.segments_written += 1
    for name in old:
        ctx.store.delete(name)
    report.segments_removed = len(old)
    report.packs = len(records)
    report.entries = sum(len(r.entries) for r in records)
    ctx.cache.reset()
    return report
