"""PostgreSQL snapshots as chain links: one stream per timeline, WAL segments as positions.

* A base backup (``mode: full``) on timeline T is a ``full`` link of stream ``T``: ``start`` is the
  segment holding its stop LSN (its consistent point), ``end`` the segment before the one holding
  its start LSN (so the WAL that continues it starts with the backup's first segment), ``time_until``
  the moment ``pg_backup_stop`` returned.  A base whose WAL from its start to its stop segment is not
  all archived can never become consistent: it is no link at all.
* Archived WAL (``mode: wal`` snapshots, batches of pushed files) is merged per timeline into one
  set of segments (a segment stored twice with the same hash counts once, the oldest copy is used;
  the same name with another hash is a conflict and the later copy is ignored), then cut into runs
  of consecutive segments held by the same snapshot, and cut again where a base backup's WAL
  starts.  Each run is a ``log`` link: ``start``/``end`` its first and last segment,
  ``time_until`` the completion time of its last segment.  A missing segment is a gap between runs.
* A timeline T > 1 (``0000000T.history``) inherits from its parent timeline the bases and segments
  before the switch point, so a restore to a time on timeline 2 may start from a base taken on 1.
* Retention: besides the links' dependencies, a base needs the WAL snapshots of its own
  start..stop span (:func:`own_dependencies`), so a kept base keeps them.

This module needs nothing beyond the framework, so retention and ``restore-points`` always work.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dtstore.connectors.base import SnapshotInfo, from_iso
from dtstore.connectors.chains import Link
from dtstore.connectors.positions import PgLsn, WalSegment
from dtstore.connectors.postgresql.meta import FullMeta, WalFile, WalMeta, parse_segment
from dtstore.errors import ConnectorError

KIND = "postgresql"


def mode_of(snap: SnapshotInfo) -> str:
    mode = snap.meta.get("mode")
    if mode not in ("full", "wal"):
        raise ConnectorError(f"PostgreSQL snapshot {snap.short_id} records no mode (full or wal)")
    return str(mode)


def stream_name(timeline: int) -> str:
    return f"timeline {timeline}"


@dataclass(frozen=True)
class StoredWal:
    """One archived WAL file and the snapshot that holds it."""

    file: WalFile
    snapshot: SnapshotInfo

    @property
    def path(self) -> str:
        return self.file.path


@dataclass
class WalArchive:
    """Every archived WAL file of one source, deduplicated (oldest copy first)."""

    segment_size: int
    segments: dict[tuple[int, int], StoredWal]
    """(timeline, segment number) → its stored copy"""
    others: dict[str, StoredWal]
    """``.history``, ``.backup`` and ``.partial`` files by name"""
    conflicts: list[str]

    def history(self, timeline: int) -> list[tuple[int, PgLsn]]:
        """The parent timelines of ``timeline`` with their switch points (from the ``.history`` file)."""
        stored = self.others.get(f"{timeline:08X}.history")
        text = stored.snapshot.meta.get("history_text", {}).get(stored.file.name) if stored else None
        if not text:
            return []
        parents = []
        for line in str(text).splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0].isdigit():
                parents.append((int(fields[0]), PgLsn.parse(fields[1])))
        return parents


def wal_archive(history: Sequence[SnapshotInfo]) -> WalArchive:
    size = 16 << 20
    segments: dict[tuple[int, int], StoredWal] = {}
    others: dict[str, StoredWal] = {}
    conflicts: list[str] = []
    for snap in history:
        if mode_of(snap) != "wal":
            continue
        meta = WalMeta.of(snap.meta, snap.short_id)
        size = meta.segment_size
        for f in meta.files:
            stored = StoredWal(f, snap)
            if f.kind == "segment":
                seg = parse_segment(f.name, size)
                key = (seg.timeline, seg.segment)
                old = segments.get(key)
                if old is None:
                    segments[key] = stored
                elif old.file.sha256 != f.sha256:
                    conflicts.append(f.name)
            else:
                old = others.get(f.name)
                if old is None:
                    others[f.name] = stored
                elif old.file.sha256 != f.sha256:
                    conflicts.append(f.name)
    return WalArchive(size, segments, others, conflicts)


def _segment(archive: WalArchive, timeline: int, number: int) -> WalSegment:
    return WalSegment(timeline, number, 0x100000000 // archive.segment_size)


def _complete(archive: WalArchive, meta: FullMeta, lineage: Mapping[int, int]) -> bool:
    """Is every segment from the base's start to its stop segment archived (on its timeline)?"""
    first, last = meta.start_segment.segment, meta.stop_segment.segment
    return all((meta.timeline, n) in archive.segments for n in range(first, last + 1))


def _time(stored: StoredWal) -> dt.datetime:
    return from_iso(stored.file.completed_at) if stored.file.completed_at else stored.snapshot.time


def timelines(history: Sequence[SnapshotInfo], archive: WalArchive) -> list[int]:
    found = {tl for tl, _ in archive.segments}
    found |= {FullMeta.of(s.meta, s.short_id).timeline for s in history if mode_of(s) == "full"}
    found |= {int(name[:8], 16) for name in archive.others if name.endswith(".history")}
    return sorted(found)


def lineage(archive: WalArchive, timeline: int) -> dict[int, int]:
    """timeline → the first segment number NOT inherited from it by ``timeline`` (own timeline: no limit)."""
    limits = {timeline: 1 << 62}
    for parent, switch in archive.history(timeline):
        limits.setdefault(parent, switch.value // archive.segment_size)
    return limits


def stream_segments(archive: WalArchive, timeline: int) -> tuple[dict[int, StoredWal], dict[int, int]]:
    """The segments a timeline sees: per number, the copy of the newest timeline whose switch point allows it."""
    limits = lineage(archive, timeline)
    seen: dict[int, StoredWal] = {}
    owner: dict[int, int] = {}
    for (tl, number), stored in sorted(archive.segments.items()):
        if tl in limits and number < limits[tl] and tl >= owner.get(number, 0):
            seen[number], owner[number] = stored, tl
    return seen, owner


def stream_links(history: Sequence[SnapshotInfo], archive: WalArchive, timeline: int) -> list[Link]:
    """The links of one timeline's stream (with what it inherits from its parents)."""
    limits = lineage(archive, timeline)
    stream = stream_name(timeline)
    bases: list[tuple[int, Link]] = []
    for snap in history:
        if mode_of(snap) != "full":
            continue
        meta = FullMeta.of(snap.meta, snap.short_id)
        if meta.timeline not in limits or meta.stop_segment.segment >= limits[meta.timeline]:
            continue
        if not _complete(archive, meta, limits):
            continue
        start = meta.start_segment.segment
        bases.append((start, Link(
            snapshot_id=snap.id, short_id=snap.short_id, taken=snap.time, kind="full",
            start=_segment(archive, meta.timeline, meta.stop_segment.segment),
            end=_segment(archive, meta.timeline, start - 1),
            time_until=from_iso(meta.consistent_at), stream=stream,
        )))
    seen, owner = stream_segments(archive, timeline)
    cuts = {start for start, _ in bases}
    runs: list[tuple[int, int, StoredWal]] = []  # (first, last, last stored)
    for number in sorted(seen):
        stored = seen[number]
        if (runs and runs[-1][1] == number - 1 and runs[-1][2].snapshot.id == stored.snapshot.id
                and number not in cuts and owner[number] == owner[number - 1]):
            runs[-1] = (runs[-1][0], number, stored)
        else:
            runs.append((number, number, stored))
    links = [link for _, link in bases]
    events = sorted([(start, 0, link) for start, link in bases], key=lambda e: (e[0], e[1]))
    taken = dt.datetime.min.replace(tzinfo=dt.UTC)
    ei = 0
    for first, last, stored in runs:
        while ei < len(events) and events[ei][0] <= first:
            taken = max(taken, events[ei][2].taken)
            ei += 1
        taken = max(taken, stored.snapshot.time)
        links.append(Link(
            snapshot_id=stored.snapshot.id, short_id=stored.snapshot.short_id, taken=taken, kind="log",
            start=_segment(archive, owner[first], first), end=_segment(archive, owner[last], last),
            time_until=_time(stored), stream=stream,
        ))
    return links


def links(history: Sequence[SnapshotInfo]) -> list[Link]:
    """Every snapshot of one source as links, one stream per timeline."""
    archive = wal_archive(history)
    found: list[Link] = []
    for timeline in timelines(history, archive):
        found.extend(stream_links(history, archive, timeline))
    return found


def own_dependencies(history: Sequence[SnapshotInfo]) -> dict[str, set[str]]:
    """A base backup needs the WAL snapshots holding its start..stop segments (without them it never
    becomes consistent and is no link at all): retention that keeps a base keeps those too."""
    archive = wal_archive(history)
    needs: dict[str, set[str]] = {}
    for snap in history:
        if mode_of(snap) != "full":
            continue
        meta = FullMeta.of(snap.meta, snap.short_id)
        span = range(meta.start_segment.segment, meta.stop_segment.segment + 1)
        held = (archive.segments.get((meta.timeline, n)) for n in span)
        needs[snap.id] = {stored.snapshot.id for stored in held if stored is not None}
    return needs


def explain(end: WalSegment, next_start: WalSegment | None) -> str:
    """Name the WAL segments a gap lacks (``000000010000000000000042 missing``)."""
    first = WalSegment(end.timeline, end.segment + 1, end.per_xlogid)
    if next_start is None:
        return f"WAL segment {first} is not archived (nothing after {end})"
    last = WalSegment(next_start.timeline, next_start.segment - 1, next_start.per_xlogid)
    if last.segment < first.segment:
        return f"the archived WAL jumps from {end} to {next_start}"
    missing = str(first) if last.segment == first.segment else f"{first} .. {last}"
    return f"WAL segment {missing} missing"


__all__ = [
    "KIND",
    "StoredWal",
    "WalArchive",
    "explain",
    "links",
    "mode_of",
    "own_dependencies",
    "stream_links",
    "stream_name",
    "stream_segments",
    "timelines",
    "wal_archive",
]
