"""Which snapshots a command means: ``--host``, ``--tag``, ``--path``, ``--source`` filters and
``latest``.  Pure functions over a snapshot list, shared by every command that takes a SNAPSHOT.

A snapshot passes a filter when its host is one of ``hosts`` (if any are given), it carries every
tag of ``tags``, its paths include every path of ``paths``, and its source ID is one of ``sources``.
``latest`` is the passing snapshot with the greatest ``(time, ID)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dtstore.errors import SnapshotNotFound, UsageError
from dtstore.snapshots.manifest import Snapshot, clean


@dataclass(frozen=True)
class SnapshotFilter:
    hosts: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.hosts or self.tags or self.paths or self.sources)

    def matches(self, snapshot: Snapshot) -> bool:
        if self.hosts and snapshot.host not in {clean(h) for h in self.hosts}:
            return False
        if not all(clean(t) in snapshot.tags for t in self.tags):
            return False
        if self.paths:
            have = {_norm(p) for p in snapshot.paths}
            if not all(_norm(clean(p)) in have for p in self.paths):
                return False
        return not self.sources or snapshot.source_id in {clean(s) for s in self.sources}

    def describe(self) -> str:
        parts = [f"--host {h}" for h in self.hosts] + [f"--tag {t}" for t in self.tags]
        parts += [f"--path {p}" for p in self.paths] + [f"--source {s}" for s in self.sources]
        return " ".join(parts)


NO_FILTER = SnapshotFilter()


def _norm(path: str) -> str:
    return path if path == "-" or "://" in path else os.path.normpath(path)


def select(snapshots: Iterable[Snapshot], flt: SnapshotFilter = NO_FILTER) -> list[Snapshot]:
    """The snapshots that pass, oldest first."""
    return sorted((s for s in snapshots if flt.matches(s)), key=lambda s: (s.time, s.id))


def latest(snapshots: Iterable[Snapshot], flt: SnapshotFilter = NO_FILTER) -> Snapshot:
    chosen = select(snapshots, flt)
    if not chosen:
        if flt.is_empty():
            raise SnapshotNotFound("the repository has no snapshots yet")
        raise SnapshotNotFound(f"no snapshot matches {flt.describe()}")
    return chosen[-1]


def resolve(snapshots: Sequence[Snapshot], ref: str, flt: SnapshotFilter = NO_FILTER) -> Snapshot:
    """``latest`` or an ID (unique prefix) among ``snapshots``; a named snapshot must pass the filter."""
    if ref == "latest":
        return latest(snapshots, flt)
    matches = [s for s in snapshots if s.id.startswith(ref.lower())]
    if not matches:
        raise SnapshotNotFound(f"no snapshot matches {ref!r}")
    if len(matches) > 1:
        raise UsageError(f"{ref!r} matches {len(matches)} snapshots; give more of the ID")
    return check(matches[0], flt)


def check(snapshot: Snapshot, flt: SnapshotFilter) -> Snapshot:
    """``snapshot``, if it passes; a snapshot named by ID that the filter excludes is not found."""
    if not flt.matches(snapshot):
        raise SnapshotNotFound(f"snapshot {snapshot.short_id} does not match {flt.describe()}")
    return snapshot
