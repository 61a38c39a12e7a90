"""Types every connector shares: snapshot history records, chain checks, restore plans, the protocols.

A database connector is a :class:`~dtstore.sources.base.Source` (what ``dtstore snapshot`` reads)
plus a restore planner (what ``dtstore restore --to`` runs).  Planning is pure: it looks only at
snapshot metadata and returns a :class:`RestorePlan`; executing the plan is a separate step, so
``--dry-run`` is free.  See ``spec/connectors.md`` for the general contract.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from dtstore.errors import UsageError
from dtstore.progress import ProgressCallback
from dtstore.sources.base import Source

if TYPE_CHECKING:
    from dtstore.snapshots.manifest import Snapshot


@dataclass(frozen=True)
class ChainCheck:
    """Result of a continuity test: ``ok``, or why not (a sentence a user can act on)."""

    ok: bool
    reason: str = ""

    @classmethod
    def good(cls) -> ChainCheck:
        return cls(True)

    @classmethod
    def broken(cls, reason: str) -> ChainCheck:
        return cls(False, reason)


@dataclass(frozen=True)
class SnapshotInfo:
    """What a planner needs from a snapshot: identity, time and the connector's metadata."""

    id: str
    short_id: str
    time: dt.datetime
    source_id: str
    kind: str
    meta: Mapping[str, Any]

    @classmethod
    def of(cls, snap: Any) -> SnapshotInfo:
        """Build from a :class:`dtstore.Snapshot` (duck-typed, so tests can pass plain objects)."""
        return cls(
            id=snap.id,
            short_id=snap.short_id,
            time=snap.time,
            source_id=snap.source_id or "",
            kind=snap.source_kind or "",
            meta=dict(snap.source_metadata or {}),
        )


def snapshots_of(snapshots: Iterable[Any], kind: str, source_id: str | None = None) -> list[SnapshotInfo]:
    """The snapshots of one connector kind (and source id, if given), oldest first."""
    infos = [SnapshotInfo.of(s) for s in snapshots]
    chosen = [s for s in infos if s.kind == kind and (source_id is None or s.source_id == source_id)]
    return sorted(chosen, key=lambda s: s.time)


def pick_source_id(snapshots: Iterable[SnapshotInfo], wanted: str | None, kind: str) -> str:
    """Resolve ``--source``: the given id (or a unique prefix), or the only source of this kind."""
    ids = sorted({s.source_id for s in snapshots})
    if wanted is not None:
        matches = [i for i in ids if i == wanted] or [i for i in ids if i.startswith(wanted)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UsageError(f"no {kind} snapshots with source id {wanted!r}; known: {', '.join(ids) or 'none'}")
        raise UsageError(f"source id {wanted!r} is ambiguous: {', '.join(matches)}")
    if not ids:
        raise UsageError(f"the repository holds no {kind} snapshots")
    if len(ids) > 1:
        raise UsageError(f"the repository holds several {kind} sources; pick one with --source: {', '.join(ids)}")
    return ids[0]


def parse_until(text: str) -> dt.datetime:
    """Parse a ``--until`` time (ISO 8601) into an aware UTC datetime.

    A time without an offset is the local time of the machine running dtstore (``TZ`` applies).
    """
    if not text.strip():
        raise UsageError("--until needs a time (ISO 8601, e.g. 2026-11-29T14:05:00+01:00); it was empty")
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise UsageError(f"invalid time {text!r}: use ISO 8601, e.g. 2026-11-29T14:05:00+01:00") from exc
    if value.tzinfo is None:
        value = value.astimezone()  # naive = local time of this machine
    return value.astimezone(dt.UTC)


def iso(value: dt.datetime) -> str:
    """UTC ISO 8601 with a ``Z``, the form every connector records times in."""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def from_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


@dataclass(frozen=True)
class RestorePlan:
    """What a restore will do, decided before anything is touched.

    Connectors subclass it; ``describe()`` gives lines for humans, ``to_json()`` a dict for
    ``--json`` output.  ``steps`` is the ordered list of actions as short sentences.
    """

    connector: str
    source_id: str
    target: str
    steps: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        return [f"restore {self.connector} source {self.source_id} to {self.target}", *self.steps]

    def to_json(self) -> dict[str, Any]:
        return {
            "connector": self.connector,
            "source_id": self.source_id,
            "target": self.target,
            "steps": list(self.steps),
        }


class RepositoryView(Protocol):
    """The part of :class:`dtstore.Repository` a connector uses: its history and stored items."""

    def snapshots(self) -> list[Snapshot]: ...

    def open_item(self, snapshot: Snapshot, path: str | bytes) -> BinaryIO: ...

    def restore(self, snapshot: Snapshot, target: str, include: Sequence[str | bytes] = (),
                progress: ProgressCallback = ...) -> None:
        """A snapshot's items below a folder (parallel, every chunk verified): a file-tree base backup."""
        ...


class Connector(Protocol):
    """What ``connectors/__init__.py`` loads for a URL scheme (``spec/connectors.md`` §7)."""

    kind: str
    schemes: tuple[str, ...]
    modes: tuple[str, ...]
    """the snapshot modes it supports besides ``auto`` (``full``, ``diff``, ``log``)"""

    def make_source(self, url: str, *, repo: RepositoryView | None, mode: str, stage_dir: Path | None) -> Source:
        """A Source for ``dtstore snapshot URL --mode MODE``."""
        ...

    def plan(self, request: Any, history: Sequence[SnapshotInfo]) -> RestorePlan:
        """Pure: the restore plan for ``request`` (a RestoreRequest) over one source's history."""
        ...

    def execute(self, plan: Any, request: Any, repo: RepositoryView, progress: ProgressCallback) -> None:
        """Run a plan made by :meth:`plan` against the target of ``request``."""
        ...
