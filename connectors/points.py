"""Restore points of every connector source: windows, gaps, and what each snapshot needs.

This is what ``dtstore restore-points`` shows and what retention (``forget``) keeps together.  Each
connector kind names a *chain module* (importable without the connector's extra) with two
functions::

    links(history: Sequence[SnapshotInfo]) -> list[Link]    # its snapshots as chain links
    explain(end, next_start) -> str                          # names the missing piece of a gap
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any

from dtstore.connectors.base import SnapshotInfo
from dtstore.connectors.chains import Link, StreamPoints, by_stream, dependencies, iso, windows

CHAIN_MODULES: MappingProxyType[str, str] = MappingProxyType({"mysql": "dtstore.connectors.mysql.chain"})
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

    def describe(self) -> list[str]:
        lines = []
        for stream in self.streams:
            label = f"{self.kind} {self.source_id}" + (f" {stream.stream}" if stream.stream else "")
            if not stream.windows:
                lines.append(f"{label}: no restorable point")
                continue
            spans = [
                iso(w.start) if w.start == w.end else f"{iso(w.start)} … {iso(w.end)}" for w in stream.windows
            ]
            gaps = [f"gap {iso(g.after.time_until)}–{iso(g.next.time_until) if g.next else 'now'}: {g.reason}"
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


def snapshot_dependencies(snapshots: Iterable[Any]) -> dict[str, set[str]]:
    """Snapshot id → the ids of the snapshots it needs to be restorable (connector sources only)."""
    needs: dict[str, set[str]] = {}
    for links in source_links(snapshots).values():
        needs.update(dependencies(links))
    return needs


__all__ = ["CHAIN_MODULES", "SourcePoints", "chain_module", "restore_points", "snapshot_dependencies", "source_links"]
