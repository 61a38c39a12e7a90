"""The PostgreSQL restore plan (pure): which base backup, which WAL files, which recovery target.

The generic planner picks, in one timeline's stream, the newest base backup that is consistent
before the target and the contiguous WAL runs up to the one that covers it.  The plan then lists
every WAL file recovery will read: the segments from the base's start segment to the end of the
contiguous archive after it (recovery stops at the target by itself, and a time target needs the
first commit *after* it, which may lie in a later segment), plus the ``.history`` files of the
timeline and its parents.  ``--until-name`` and ``--until-xid`` cannot be located without reading
WAL, so they plan like ``latest`` and PostgreSQL stops at them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dtstore.connectors.base import RestorePlan, SnapshotInfo, iso
from dtstore.connectors.chains import Gap, Target, plan
from dtstore.connectors.positions import PgLsn, WalSegment
from dtstore.connectors.postgresql.chain import (
    KIND,
    explain,
    lineage,
    stream_links,
    stream_name,
    stream_segments,
    timelines,
    wal_archive,
)
from dtstore.connectors.postgresql.meta import FullMeta, segment_of
from dtstore.errors import ChainError, UsageError


@dataclass(frozen=True)
class PlannedWal:
    name: str
    snapshot_id: str
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class PostgresRestorePlan(RestorePlan):
    full: SnapshotInfo
    timeline: int
    wal: list[PlannedWal]
    stop: Target
    recovery: dict[str, str]
    """the recovery_target_* settings written to postgresql.auto.conf"""
    covered_until: str
    gap: Gap | None = None

    def describe(self) -> list[str]:
        meta = FullMeta.of(self.full.meta)
        lines = [
            f"restore {self.source_id} to {self.target}, timeline {self.timeline}, stopping at the "
            f"{self._what()}",
            f"  base  {self.full.short_id}  {iso(self.full.time)}  consistent at {meta.consistent_at}  "
            f"lsn {meta.start_lsn} .. {meta.stop_lsn}",
        ]
        segments = [w.name for w in self.wal if len(w.name) == 24]
        if segments:
            size = sum(w.size for w in self.wal) / 2**20
            lines.append(f"  wal   {len(segments)} segment(s) {segments[0]} .. {segments[-1]} "
                         f"({size:.0f} MiB); archive covers until {self.covered_until}")
        lines.append("  recovery: " + ", ".join(f"{k} = '{v}'" for k, v in self.recovery.items()))
        if self.gap is not None:
            lines.append(f"  stops before a gap (--allow-gap): {self.gap.reason}")
        return lines

    def _what(self) -> str:
        for key in ("recovery_target_name", "recovery_target_xid"):
            if key in self.recovery:
                return f"{key.removeprefix('recovery_target_')} {self.recovery[key]}"
        return self.stop.describe()

    def to_json(self) -> dict[str, Any]:
        meta = FullMeta.of(self.full.meta)
        return {
            **super().to_json(),
            "full": {"id": self.full.id, "time": iso(self.full.time), "consistent_at": meta.consistent_at,
                     "start_lsn": str(meta.start_lsn), "stop_lsn": str(meta.stop_lsn)},
            "timeline": self.timeline,
            "wal": [{"name": w.name, "snapshot": w.snapshot_id, "size": w.size} for w in self.wal],
            "stop": self.stop.to_json(),
            "recovery": dict(self.recovery),
            "covered_until": self.covered_until,
            "gap": self.gap.to_json() if self.gap else None,
        }


def _recovery(target: Target, options: Mapping[str, str], timeline: int) -> dict[str, str]:
    settings: dict[str, str] = {}
    if target.time is not None:
        settings["recovery_target_time"] = target.time.strftime("%Y-%m-%d %H:%M:%S+00")
    elif target.position is not None:
        settings["recovery_target_lsn"] = str(target.position)
    elif options.get("until_name"):
        settings["recovery_target_name"] = options["until_name"]
    elif options.get("until_xid"):
        settings["recovery_target_xid"] = options["until_xid"]
    settings["recovery_target_timeline"] = str(timeline)
    if len(settings) > 1:
        settings["recovery_target_action"] = "promote"
    return settings


def plan_restore(history: Sequence[SnapshotInfo], *, target: Target, options: Mapping[str, str], source_id: str,
                 target_display: str, allow_gap: bool = False) -> PostgresRestorePlan:
    """Choose the base, the WAL and the recovery settings; ChainError when the archive does not cover it."""
    if options.get("until_name") and options.get("until_xid"):
        raise UsageError("give one of --until-name or --until-xid, not both")
    if (options.get("until_name") or options.get("until_xid")) and not target.is_latest:
        raise UsageError("--until-name/--until-xid exclude --until, --until-position and SNAPSHOT")
    xid = options.get("until_xid")
    if xid is not None and not xid.isdigit():
        raise UsageError(f"--until-xid needs a transaction id (a number), not {xid!r}")
    archive = wal_archive(history)
    known = timelines(history, archive)
    if not known:
        raise ChainError("the repository holds no PostgreSQL base backup of this source")
    if options.get("timeline"):
        try:
            candidates = [int(options["timeline"], 0)]
        except ValueError:
            raise UsageError(f"--timeline needs a number, not {options['timeline']!r}") from None
        if candidates[0] not in known:
            raise ChainError(f"timeline {candidates[0]} is not in the archive (known: {', '.join(map(str, known))})")
    else:
        candidates = sorted(known, reverse=True)
    first_error: ChainError | None = None
    for timeline in candidates:
        links = stream_links(history, archive, timeline)
        if not any(link.kind == "full" for link in links):
            continue
        chain_target = target
        if isinstance(target.position, PgLsn):
            chain_target = Target(position=segment_of(target.position, timeline, archive.segment_size))
        try:
            chain = plan(links, chain_target, allow_gap=allow_gap, explain=explain)
        except ChainError as exc:
            first_error = first_error or exc
            continue
        by_id = {s.id: s for s in history}
        full = by_id[chain.full.snapshot_id]
        meta = FullMeta.of(full.meta, full.short_id)
        if isinstance(target.position, PgLsn) and target.position < meta.stop_lsn:
            first_error = first_error or ChainError(
                f"lsn {target.position} is before the consistent point {meta.stop_lsn} of base {full.short_id}")
            continue
        last = chain.last.end if chain.logs else chain.full.end
        seen, _ = stream_segments(archive, timeline)
        number = meta.start_segment.segment
        wal: list[PlannedWal] = []
        while number in seen and (number <= last.segment or chain.gap is None):
            stored = seen[number]
            wal.append(PlannedWal(stored.file.name, stored.snapshot.id, stored.path, stored.file.size,
                                  stored.file.sha256))
            number += 1
        if number <= meta.stop_segment.segment:
            reached = WalSegment(timeline, number - 1, last.per_xlogid)
            raise ChainError(f"{stream_name(timeline)}: {explain(reached, None)} (needed for base {full.short_id} "
                             "to become consistent)")
        for tl in sorted(lineage(archive, timeline)):
            stored_history = archive.others.get(f"{tl:08X}.history")
            if stored_history is not None:
                wal.append(PlannedWal(stored_history.file.name, stored_history.snapshot.id, stored_history.path,
                                      stored_history.file.size, stored_history.file.sha256))
        return PostgresRestorePlan(
            connector=KIND, source_id=source_id, target=target_display, full=full, timeline=timeline, wal=wal,
            stop=target, recovery=_recovery(target, options, timeline),
            covered_until=iso(chain.reached_time), gap=chain.gap,
        )
    raise first_error or ChainError("no timeline of this source has a base backup to restore from")


__all__ = ["PlannedWal", "PostgresRestorePlan", "plan_restore"]
