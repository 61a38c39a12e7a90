"""The MySQL restore plan (pure): which full, which log snapshots, which binlogs, where to stop.

The generic planner (``dtstore.connectors.chains.plan``) picks the full at or before the target and
the contiguous log snapshots up to the one that covers it; this module turns that into what
``mariadb`` and ``mariadb-binlog`` need: the database items to load, the binlog files in order
(contiguous, starting at the full's coordinates file), and the stop option.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dtstore.connectors.base import RestorePlan, SnapshotInfo, iso
from dtstore.connectors.chains import ChainPlan, Gap, Target, plan
from dtstore.connectors.mysql.chain import KIND, explain, is_full, links
from dtstore.connectors.mysql.meta import Coordinates, FullMeta, LogMeta
from dtstore.connectors.positions import BinlogPosition, log_file_seq
from dtstore.errors import ChainError, UsageError


@dataclass(frozen=True)
class PlannedBinlog:
    name: str
    snapshot_id: str
    path: str
    size: int


@dataclass(frozen=True, kw_only=True)
class MysqlRestorePlan(RestorePlan):
    """Load ``databases`` from ``full``, then replay ``binlogs`` from ``start`` to ``stop``."""

    full: SnapshotInfo
    logs: list[SnapshotInfo]
    databases: list[tuple[str, str]]  # (name, item path)
    views: list[tuple[str, str]]  # (name, item path): loaded after every database
    grants_path: str | None
    start: BinlogPosition | None
    binlogs: list[PlannedBinlog]
    stop: Target
    replay_databases: list[str] | None  # None: replay every database; else one filtered replay each
    covered_until: str | None
    flavor: str
    gap: Gap | None = None

    def describe(self) -> list[str]:
        lines = [
            f"restore {self.source_id} to {self.target}, stopping at the {self.stop.describe()}",
            f"  full  {self.full.short_id}  {iso(self.full.time)}  consistent at "
            f"{FullMeta.of(self.full.meta).consistent_at}  binlog {self.start or 'none'}",
            f"        databases: {', '.join(n for n, _ in self.databases) or '(none)'}"
            + (f"  + views of {', '.join(n for n, _ in self.views)}" if self.views else "")
            + ("  + users and grants" if self.grants_path else ""),
        ]
        for log in self.logs:
            meta = LogMeta.of(log.meta)
            lines.append(f"  log   {log.short_id}  {iso(log.time)}  {meta.first} .. {meta.last}")
        if self.binlogs:
            stop = {"time": "--stop-datetime", "position": "--stop-position"}
            how = next((v for k, v in stop.items() if getattr(self.stop, k) is not None), "to the end")
            if self.stop.snapshot is not None:
                how = f"to the end of snapshot {self.stop.snapshot[:8]}"
            lines.append(
                f"  replay {len(self.binlogs)} binlog(s) {self.binlogs[0].name} .. {self.binlogs[-1].name} "
                f"from {self.start} ({how}); archive covers until {self.covered_until}"
            )
        else:
            lines.append("  no binlog replay: the full alone is the requested state")
        if self.gap is not None:
            lines.append(f"  stops at {self.covered_until} before a gap (--allow-gap): {self.gap.reason}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "full": {
                "id": self.full.id,
                "time": iso(self.full.time),
                "consistent_at": FullMeta.of(self.full.meta).consistent_at,
            },
            "logs": [{"id": s.id, "time": iso(s.time)} for s in self.logs],
            "databases": [n for n, _ in self.databases],
            "views": [n for n, _ in self.views],
            "grants": self.grants_path is not None,
            "start": str(self.start) if self.start else None,
            "stop": self.stop.to_json(),
            "binlogs": [{"name": b.name, "snapshot": b.snapshot_id, "size": b.size} for b in self.binlogs],
            "replay_databases": self.replay_databases,
            "covered_until": self.covered_until,
            "gap": self.gap.to_json() if self.gap else None,
        }


def _database_names(snap: SnapshotInfo) -> set[str]:
    return set(FullMeta.of(snap.meta, snap.short_id).database_names)


def check_scope(history: Sequence[SnapshotInfo], databases: Sequence[str]) -> None:
    """``--databases`` must name databases some full holds (a typo is a usage error, exit 2)."""
    known = set().union(*(_database_names(s) for s in history if is_full(s)))
    unknown = sorted(set(databases) - known)
    if unknown:
        raise UsageError(
            f"no full snapshot of this source holds database(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known)) or 'none'}"
        )


def _usable(history: Sequence[SnapshotInfo], databases: Sequence[str] | None) -> list[SnapshotInfo]:
    """The history without the fulls that lack a requested database."""
    if databases is None:
        return list(history)
    wanted = set(databases)
    kept = [s for s in history if not is_full(s) or wanted <= _database_names(s)]
    if not any(is_full(s) for s in kept):
        raise ChainError(f"no full snapshot contains database(s) {', '.join(sorted(wanted))}")
    return kept


def plan_restore(
    history: Sequence[SnapshotInfo],
    *,
    target: Target,
    databases: Sequence[str] | None,
    source_id: str,
    target_display: str,
    allow_gap: bool = False,
) -> MysqlRestorePlan:
    """Choose the full, the log chain and the stop point; raise ChainError if the target is not covered."""
    if databases is not None:
        check_scope(history, databases)
    usable = _usable(history, databases)
    chain = plan(links(usable), target, allow_gap=allow_gap, explain=explain)
    by_id = {s.id: s for s in usable}
    full = by_id[chain.full.snapshot_id]
    logs = [by_id[link.snapshot_id] for link in chain.logs]
    binlogs = chain_binlogs(full, logs)
    if target.position is not None:
        binlogs = _cut_at_position(chain, binlogs, target.position)
    meta = FullMeta.of(full.meta, full.short_id)
    covered = LogMeta.of(logs[-1].meta).covered_until if logs else meta.consistent_at
    names = list(databases) if databases is not None else meta.database_names
    paths = {d.name: d.path for d in meta.databases}
    views = {d.name: d.path for d in meta.views}
    replay_all = databases is None and meta.all_databases
    return MysqlRestorePlan(
        connector=KIND,
        source_id=source_id,
        target=target_display,
        full=full,
        logs=logs,
        databases=[(n, paths[n]) for n in names],
        views=[(n, views[n]) for n in names if n in views],
        grants_path=meta.grants_path if databases is None else None,
        start=coordinates(full.meta) if binlogs else None,
        binlogs=binlogs,
        stop=target,
        replay_databases=None if replay_all else names,
        covered_until=covered,
        flavor=meta.flavor,
        gap=chain.gap,
    )


def coordinates(meta: Mapping[str, Any]) -> BinlogPosition | None:
    """A full's ``binlog`` (the dump's coordinates) as a position; None without binary logging."""
    value = Coordinates.of(meta["binlog"])
    return BinlogPosition(value.file, value.pos) if value else None


def chain_binlogs(full: SnapshotInfo, chain: Sequence[SnapshotInfo]) -> list[PlannedBinlog]:
    """The binlog files of a chain in order; they must be contiguous and start at the full's file."""
    files = [
        PlannedBinlog(b.name, log.id, b.path, b.size)
        for log in chain
        for b in LogMeta.of(log.meta, log.short_id).binlogs
    ]
    start = coordinates(full.meta)
    if files and (start is None or files[0].name != start.file):
        raise ChainError(f"the log chain of full {full.short_id} does not start at its binlog {start}")
    for a, b in itertools.pairwise(files):
        if log_file_seq(b.name) != log_file_seq(a.name) + 1:
            raise ChainError(f"the archived binlogs jump from {a.name} to {b.name}: a file is missing")
    return files


def _cut_at_position(chain: ChainPlan, binlogs: list[PlannedBinlog], position: BinlogPosition) -> list[PlannedBinlog]:
    names = [b.name for b in binlogs]
    if position.file in names:
        cut = binlogs[: names.index(position.file) + 1]
        if position.pos > cut[-1].size:
            raise ChainError(f"{position} is past the end of {position.file} ({cut[-1].size} bytes)")
        return cut
    if not binlogs and position.sort_key() == chain.full.start.sort_key():
        return []
    last = names[-1] if names else f"{chain.full.start} (no log snapshots)"
    raise ChainError(
        f"{position} is beyond the archive from full {chain.full.short_id}: archived binlogs end at {last}"
    )


__all__ = ["MysqlRestorePlan", "PlannedBinlog", "chain_binlogs", "check_scope", "coordinates", "plan_restore"]
