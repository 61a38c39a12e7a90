"""The Domino restore plan (pure): which copy of each file, which extents, where they go.

The generic planner picks the base (a full, or a backup-task set) at or before the target and the
log snapshots whose extents the media recovery needs, stopping at the first one that covers the
target.  Then, per file: the newest copy in those snapshots (a database copied again after a DBIID
change replaces the full's copy); per extent sequence: the newest copy (a later snapshot holds more
bytes of the extent that was current).  Domino itself does the media recovery (roll forward to the
latest point or to ``--until``) with these files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dtstore.connectors.base import RestorePlan, SnapshotInfo, iso
from dtstore.connectors.chains import Gap, Target, plan
from dtstore.connectors.domino.chain import KIND, explain, links, mode_of
from dtstore.errors import UsageError


@dataclass(frozen=True)
class PlannedFile:
    snapshot_id: str
    item: str
    dest: str
    """where it goes, relative to its area (``data``, ``daos``, ``translog``, ``ini``)"""
    area: str
    size: int | None = None
    sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot_id, "item": self.item, "dest": self.dest, "area": self.area,
                "size": self.size}


@dataclass(frozen=True, kw_only=True)
class DominoRestorePlan(RestorePlan):
    base_id: str
    snapshot_ids: list[str]
    files: list[PlannedFile]
    stop: Target
    reached: str
    databases: list[str] | None
    gap: Gap | None = None

    def describe(self) -> list[str]:
        by_area: dict[str, int] = {}
        for f in self.files:
            by_area[f.area] = by_area.get(f.area, 0) + 1
        extents = [f.dest for f in self.files if f.area == "translog"]
        lines = [
            f"restore Domino source {self.source_id} to {self.target}, for the {self.stop.describe()}",
            f"  base {self.base_id[:8]}, {len(self.snapshot_ids)} snapshot(s), reaching {self.reached}",
            f"  {by_area.get('data', 0)} data-directory file(s)"
            + (f" (databases: {', '.join(self.databases)})" if self.databases else "")
            + (", NOTES.INI kept aside" if by_area.get("ini") else ""),
        ]
        if extents:
            lines.append(f"  {len(extents)} extent(s) {extents[0]} .. {extents[-1]} for Domino's media recovery")
        if self.gap is not None:
            lines.append(f"  stops before a gap (--allow-gap): {self.gap.reason}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "base": self.base_id, "snapshots": self.snapshot_ids,
                "files": [f.to_json() for f in self.files], "stop": self.stop.to_json(), "reached": self.reached,
                "databases": self.databases, "gap": self.gap.to_json() if self.gap else None}


def _data_files(snap: SnapshotInfo) -> list[tuple[str, int | None]]:
    meta = snap.meta
    found: list[tuple[str, int | None]] = [(str(d["file"]), d.get("size")) for d in meta.get("databases", [])]
    found += [(str(d["file"]), d.get("size")) for d in meta.get("db_copies", [])]
    found += [(str(f[0]), int(f[1])) for f in meta.get("files", [])]
    found += [(str(f[0]), int(f[1])) for f in meta.get("files_new", [])]
    task = meta.get("task", {})
    found += [(str(f["file"]), f.get("size")) for f in task.get("files", [])]
    return found


def plan_restore(history: Sequence[SnapshotInfo], *, target: Target, databases: Sequence[str] | None,
                 source_id: str, target_display: str, allow_gap: bool = False) -> DominoRestorePlan:
    all_links = links(history)
    chain = plan(all_links, target, allow_gap=allow_gap, explain=explain)
    by_id = {s.id: s for s in history}
    chosen = [by_id[i] for i in chain.snapshot_ids]
    full = by_id[chain.full.snapshot_id]
    if mode_of(full).startswith("task"):  # every part of its backup set and later incrementals, up to the end
        parts = {link.snapshot_id for link in all_links if link.kind == "diff" and link.base_ref == chain.full.ref
                 and link.taken <= chain.last.taken and (target.time is None or link.time_until <= target.time)}
        members = [s for s in history if s.id in parts and s.id not in chain.snapshot_ids]
        chosen = sorted([*chosen, *members], key=lambda s: s.time)
    files: dict[tuple[str, str], PlannedFile] = {}
    for snap in chosen:
        for name, size in _data_files(snap):
            files[("data", name)] = PlannedFile(snap.id, f"domino/data/{name}", name, "data", size)
        for name, size in snap.meta.get("daos", []):
            files[("daos", name)] = PlannedFile(snap.id, f"domino/daos/{name}", name, "daos", int(size))
        ini = snap.meta.get("ini")
        if ini:
            files[("ini", "notes.ini")] = PlannedFile(snap.id, str(ini["item"]), "notes.ini", "ini", ini.get("size"))
        extents = list(snap.meta.get("extents", []))
        if "extent" in snap.meta:
            extents.append(snap.meta["extent"])
        for e in extents:
            files[("translog", str(e["name"]))] = PlannedFile(snap.id, str(e["item"]), str(e["name"]), "translog",
                                                              e.get("size"), e.get("sha256"))
    if databases is not None:
        known = {name for area, name in files if area == "data"}
        unknown = sorted(set(databases) - known)
        if unknown:
            dbs = sorted(n for n in known if n.lower().endswith((".nsf", ".ntf", ".box")))
            raise UsageError(f"the chosen snapshots hold no database {', '.join(unknown)}; known: {', '.join(dbs)}")
        wanted = set(databases)
        files = {k: v for k, v in files.items() if k[0] == "translog" or (k[0] == "data" and k[1] in wanted)
                 or (k[0] == "data" and k[1] in {d + ".DELTA" for d in wanted})}
    ordered = sorted(files.values(), key=lambda f: (("ini", "data", "daos", "translog").index(f.area), f.dest))
    return DominoRestorePlan(
        connector=KIND, source_id=source_id, target=target_display, base_id=full.id,
        snapshot_ids=[s.id for s in chosen], files=ordered, stop=target, reached=iso(chain.reached_time),
        databases=list(databases) if databases is not None else None, gap=chain.gap,
    )


__all__ = ["DominoRestorePlan", "PlannedFile", "plan_restore"]
