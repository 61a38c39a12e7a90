"""The restore request every connector takes, and the one ``restore_to`` that runs it.

``dtstore restore [SNAPSHOT] --to URL [--until TIME | --until-position KIND:POS] [--databases A,B]
[--source ID] [--allow-gap] [--dry-run]`` becomes a :class:`RestoreRequest`.  :func:`run_restore`
does what every connector would otherwise repeat: choose the source, load its history, let the
connector plan (pure), stop there for ``--dry-run``, else let the connector execute the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dtstore.connectors.base import (
    Connector,
    RepositoryView,
    RestorePlan,
    SnapshotInfo,
    parse_until,
    pick_source_id,
    snapshots_of,
)
from dtstore.connectors.chains import Link, Target
from dtstore.errors import UsageError
from dtstore.progress import ProgressCallback, no_progress


@dataclass(frozen=True)
class RestoreRequest:
    """What the user asked for; connectors read their own ``options`` (e.g. ``as``, ``move_to``)."""

    url: str
    until: str | None = None
    until_position: str | None = None
    scope: tuple[str, ...] | None = None
    """databases, mail databases or NSF files to restore (None: everything the snapshot holds)"""
    source_id: str | None = None
    snapshot_id: str | None = None
    """restore the state this snapshot captured (``dtstore restore SNAPSHOT --to …``)"""
    dry_run: bool = False
    allow_gap: bool = False
    options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        given = [name for name, value in (("--until", self.until), ("--until-position", self.until_position),
                                          ("SNAPSHOT", self.snapshot_id)) if value is not None]
        if len(given) > 1:
            raise UsageError(f"give one of {' or '.join(given)}, not both")
        if self.until is not None:
            parse_until(self.until)  # an empty or malformed time is a usage error before anything runs
        if self.scope is not None and not self.scope:
            raise UsageError("--databases needs at least one name")


def parse_position(text: str, kind: str, parse: Callable[[str], Any]) -> Any:
    """``--until-position``: ``KIND:VALUE`` (``lsn:…``, ``scn:…``) or the bare value."""
    value = text[len(kind) + 1 :] if text.lower().startswith(f"{kind}:") else text
    if not value:
        raise UsageError(f"--until-position needs a {kind} position after {kind}:")
    return parse(value)


def stop_target(
    request: RestoreRequest, *, position_kind: str, parse: Callable[[str], Any], links: Sequence[Link] = ()
) -> Target:
    """The stop target of a request; for a SNAPSHOT, the moment that snapshot made restorable."""
    if request.until is not None:
        return Target(time=parse_until(request.until).replace(microsecond=0))
    if request.until_position is not None:
        return Target(position=parse_position(request.until_position, position_kind, parse))
    if request.snapshot_id is not None:
        mine = [link for link in links if link.snapshot_id == request.snapshot_id]
        if not mine:
            raise UsageError(
                f"snapshot {request.snapshot_id[:8]} is not a restore point of this source (not a full, "
                "differential or log snapshot of it)"
            )
        return Target(time=max(link.time_until for link in mine), snapshot=request.snapshot_id)
    return Target()


def source_history(
    connector: Connector, request: RestoreRequest, snapshots: Sequence[Any]
) -> tuple[str, list[SnapshotInfo]]:
    """The source to restore (``--source``, the SNAPSHOT's, or the only one) and its history, oldest first."""
    everything = snapshots_of(snapshots, connector.kind)
    wanted = request.source_id
    if request.snapshot_id is not None:
        match = [s for s in everything if s.id == request.snapshot_id]
        if not match:
            raise UsageError(f"snapshot {request.snapshot_id[:8]} is not a {connector.kind} snapshot")
        if wanted is not None and not match[0].source_id.startswith(wanted):
            raise UsageError(f"snapshot {request.snapshot_id[:8]} belongs to source {match[0].source_id}, not {wanted}")
        wanted = match[0].source_id
    chosen = pick_source_id(everything, wanted, connector.kind)
    return chosen, [s for s in everything if s.source_id == chosen]


def run_restore(
    connector: Connector, request: RestoreRequest, repo: RepositoryView, progress: ProgressCallback = no_progress
) -> RestorePlan:
    """Plan (and unless ``dry_run``, execute) a restore; the plan is returned either way."""
    _, history = source_history(connector, request, repo.snapshots())
    plan = connector.plan(request, history)
    if not request.dry_run:
        connector.execute(plan, request, repo, progress)
    return plan


__all__ = ["RestoreRequest", "parse_position", "run_restore", "source_history", "stop_target"]
