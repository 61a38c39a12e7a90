"""Restore points of every connector source: windows, gaps, and what each snapshot needs.

This is what ``dtstore restore-points`` shows and what retention (``forget``) keeps together.  Each
connector kind names a *chain module* (importable without the connector's extra) with two
functions::

    links(history: Sequence[SnapshotInfo]) -> list[Link]    # its snapshots as chain links
    explain(end, next_start) -> str                          # names the missing piece of a gap
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any

from dtstore.connectors.base import SnapshotInfo
from dtstore.connectors.chains import Link, StreamPoints, by_stream, dependencies, iso, windows

CHAIN_MODULES: MappingProxyType[str, str] = MappingProxyType(
    {"mysql": "dtstore.connectors.mysql.chain", "postgresql": "dtstore.connectors.postgresql.chain",
     "domino": "dtstore.connectors.domino.chain", "oracle": "dtstore.connectors.oracle.chain",
     "exchange": "dtstore.connectors.exchange.chain", "mssql": "dtstore.connectors.mssql.chain"}
)
"""source kind → the module with its ``links`` and ``explain``"""


def chain_module(kind: str) -> ModuleType | None:
    name = CHAIN_MODULES.get(kind)
    return importlib.import_module(name) if name else None


@dataclass(frozen=True)
class SourcePoints:
    """One connector source: its streams' windows and gaps."""

    kind: str
    source_id: str
    streams: list[StreamPoints]
    snapshots: int

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source_id": self.source_id,
            "snapshots": self.snapshots,
            "streams": [s.to_json() for s in self.streams],
        }

    def describe(self, when: Callable[[dt.datetime], str] = iso) -> list[str]:
        """Text lines; ``when`` formats the times (default UTC ISO 8601, the CLI passes ``Output.when``)."""
        lines = []
        for stream in self.streams:
            label = f"{self.kind} {self.source_id}" + (f" {stream.stream}" if stream.stream else "")
            if not stream.windows:
                lines.append(f"{label}: no restorable point")
                continue
            spans = [
                when(w.start) if w.start == w.end else f"{when(w.start)} … {when(w.end)}" for w in stream.windows
            ]
            gaps = [f"gap {when(g.after.time_until)}–{when(g.next.time_until) if g.next else 'now'}: {g.reason}"
                    for g in stream.gaps]
            kind = "restorable" if stream.point_in_time else "restorable (no point-in-time restore)"
            lines.append(f"{label} {kind} " + ", ".join(spans) + (f" ({'; '.join(gaps)})" if gaps else ""))
            lines.extend(f"  note: {note}" for note in stream.notes)
        return lines


def _grouped(snapshots: Iterable[Any]) -> dict[tuple[str, str], list[SnapshotInfo]]:
    groups: dict[tuple[str, str], list[SnapshotInfo]] = defaultdict(list)
    for snap in snapshots:
        info = SnapshotInfo.of(snap)
        if info.kind in CHAIN_MODULES:
            groups[(info.kind, info.source_id)].append(info)
    return {key: sorted(group, key=lambda s: s.time) for key, group in sorted(groups.items())}


def source_links(snapshots: Iterable[Any]) -> dict[tuple[str, str], list[Link]]:
    """(kind, source id) → that source's links, for every connector source in ``snapshots``."""
    found = {}
    for (kind, source_id), history in _grouped(snapshots).items():
        module = chain_module(kind)
        if module is not None:  # always: _grouped keeps only kinds with a chain module
                found[(kind, source_id)] = list(module.links(history))
    return found


def restore_points(snapshots: Iterable[Any], source_id: str | None = None) -> list[SourcePoints]:
    """The restorable windows of every connector source (or of the one whose id starts with ``source_id``)."""
    result = []
    for (kind, sid), history in _grouped(snapshots).items():
        if source_id is not None and not sid.startswith(source_id):
            continue
        module = chain_module(kind)
        if module is None:
            continue
        links: Sequence[Link] = module.links(history)
        streams = [windows(group, explain=module.explain) for group in by_stream(links).values()]
        result.append(SourcePoints(kind, sid, streams, len(history)))
    return result


@dataclass(frozen=True)
class SnapshotPoint:
    """What one connector snapshot is in its source's chain (``dtstore snapshots``).

    ``window``: for a log that a chain reaches, the restore window it extends, from the window's
    start to the newest moment this log makes restorable (over its streams: the earliest start,
    the latest end); None for a base, or for a log no chain reaches."""

    kind: str
    window: tuple[dt.datetime, dt.datetime] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind,
                "restore_window": {"from": iso(self.window[0]), "to": iso(self.window[1])} if self.window else None}


def snapshot_points(snapshots: Iterable[Any]) -> dict[str, SnapshotPoint]:
    """Snapshot id → its kind (full, diff, log) and, for a log, the window it extends; connector
    sources only (a snapshot of another kind has no entry)."""
    found: dict[str, SnapshotPoint] = {}
    for (kind, _), history in _grouped(snapshots).items():
        module = chain_module(kind)
        if module is None:
            continue
        links: Sequence[Link] = module.links(history)
        reach: dict[str, list[tuple[dt.datetime, dt.datetime]]] = defaultdict(list)
        for group in by_stream(links).values():
            for window in windows(group, explain=module.explain).windows:
                for link in window.links:
                    if link.kind == "log":
                        reach[link.snapshot_id].append((window.start, link.time_until))
        for link in links:
            spans = reach.get(link.snapshot_id)
            span = (min(s for s, _ in spans), max(e for _, e in spans)) if spans and link.kind == "log" else None
            if link.snapshot_id not in found or span is not None:
                found[link.snapshot_id] = SnapshotPoint(link.kind, span)
    return found


def snapshot_dependencies(snapshots: Iterable[Any]) -> dict[str, set[str]]:
    """Snapshot id → the ids of the snapshots it needs to be restorable (connector sources only)."""
    needs: dict[str, set[str]] = {}
    for (kind, _), history in _grouped(snapshots).items():
        module = chain_module(kind)
        if module is None:
            continue
        needs.update(dependencies(module.links(history)))
        # what the links cannot say: e.g. a PostgreSQL base needs the WAL of its own backup's span
        own = getattr(module, "own_dependencies", None)
        for snapshot_id, needed in (own(history) if own else {}).items():
            needs.setdefault(snapshot_id, set()).update(needed - {snapshot_id})
    return needs


__all__ = ["CHAIN_MODULES", "SnapshotPoint", "SourcePoints", "chain_module", "restore_points", "snapshot_dependencies",
           "snapshot_points", "source_links"]
