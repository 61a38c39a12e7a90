"""Forgetting snapshots without breaking restore chains: what a removal does to restore points.

``forget`` (the CLI) and the agent's retention use the same two steps: plan (a retention policy per
group, closed over what kept snapshots need, or snapshots named by ID), then look at the effect on
every connector source's restorable windows before → after.  A policy never strands a snapshot (a
kept snapshot that would restore nothing); a removal by ID that would is refused unless forced.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dtstore import Snapshot
from dtstore.connectors.chains import Link
from dtstore.connectors.points import SourcePoints, restore_points, snapshot_dependencies
from dtstore.errors import DtstoreError, UsageError
from dtstore.snapshots.retention import (
    Decision,
    GroupKey,
    RetentionPolicy,
    TimeRange,
    apply_policy,
    group_snapshots,
    keep_required,
    subtract_ranges,
)

EXPLICIT = "named on the command line"


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class StreamChange:
    """One log stream of one connector source: its restorable windows before and after the removal."""

    kind: str
    source_id: str
    stream: str
    before: list[TimeRange]
    after: list[TimeRange]
    stranded: list[Link]
    """snapshots that stay and were restorable, but would not be: they need a removed one"""

    @property
    def lost(self) -> list[TimeRange]:
        return subtract_ranges(self.before, self.after)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.source_id}" + (f" {self.stream}" if self.stream else "")

    def to_json(self) -> dict[str, Any]:
        def spans(ranges: list[TimeRange]) -> list[dict[str, str]]:
            return [{"from": iso(a), "to": iso(b)} for a, b in ranges]

        return {"type": "windows", "kind": self.kind, "source": self.source_id, "stream": self.stream,
                "before": spans(self.before), "after": spans(self.after), "lost": spans(self.lost),
                "stranded": [link.snapshot_id for link in self.stranded]}

    def describe(self) -> str:
        after = "unchanged" if self.after == self.before else _spans(self.after) or "nothing restorable"
        lost = self.lost
        return f"{self.label}: {_spans(self.before) or 'nothing restorable'} → {after}" + (
            f" (no longer restorable: {_spans(lost)})" if lost else "")

    def describe_loss(self, done: bool = False) -> str:
        who = ", ".join(f"{link.kind} {link.short_id}" for link in self.stranded)
        lost = _spans(self.lost) or "no restorable time"
        if done:
            verb = "restores" if len(self.stranded) == 1 else "restore"
            return f"{self.label} loses {lost}; {who} {verb} nothing now"
        return f"{self.label} would lose {lost}, and {who} would stay but restore nothing"


@dataclass(frozen=True)
class ChainEffect:
    """What removing snapshots does to the connector sources' restore points."""

    streams: list[StreamChange]

    @property
    def stranded(self) -> list[Link]:
        return [link for change in self.streams for link in change.stranded]

    def describe_loss(self, done: bool = False) -> str:
        return "; ".join(change.describe_loss(done) for change in self.streams if change.stranded)


def _spans(ranges: list[TimeRange]) -> str:
    return ", ".join(iso(a) if a == b else f"{iso(a)} … {iso(b)}" for a, b in ranges)


def _by_stream(points: SourcePoints | None) -> dict[str, tuple[list[TimeRange], set[str]]]:
    """stream → (its windows, the ids of the snapshots they reach)"""
    if points is None:
        return {}
    return {s.stream: ([(w.start, w.end) for w in s.windows],
                       {link.snapshot_id for w in s.windows for link in w.links}) for s in points.streams}


def chain_effect(snapshots: Sequence[Snapshot], remove: Collection[str], planned: Collection[str]) -> ChainEffect:
    """Restore-point windows of every connector source with a snapshot in ``planned``, before and
    after ``remove`` goes, and the snapshots that stay but would no longer be restorable."""
    involved = {(s.source_kind, s.source_id) for s in snapshots if s.id in planned}
    sources = [s for s in snapshots if (s.source_kind, s.source_id) in involved]
    before = restore_points(sources)
    after = {(p.kind, p.source_id): p for p in restore_points([s for s in sources if s.id not in remove])}
    streams = []
    for points in before:
        old, new = _by_stream(points), _by_stream(after.get((points.kind, points.source_id)))
        links = {link.snapshot_id: link for s in points.streams for w in s.windows for link in w.links}
        for stream in sorted(old.keys() | new.keys()):
            (was, reached), (now, still) = old.get(stream, ([], set())), new.get(stream, ([], set()))
            stranded = [links[i] for i in sorted(reached - still - set(remove), key=lambda i: (links[i].taken, i))]
            streams.append(StreamChange(points.kind, points.source_id, stream, was, now, stranded))
    return ChainEffect(streams)


@dataclass(frozen=True)
class ForgetPlan:
    """Which snapshots go, why the others stay, and what that does to restore points."""

    decisions: dict[GroupKey, list[Decision]]
    remove: list[str]
    effect: ChainEffect
    damaged: list[str] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return sum(len(group) for group in self.decisions.values()) - len(self.remove) + len(self.damaged)

    def refuse_stranding(self, *, force: bool) -> None:
        """A removal by ID that strands snapshots needs ``force`` (UsageError, exit 2: nothing happened)."""
        if self.effect.stranded and not force:
            raise UsageError(f"refusing to forget {', '.join(i[:8] for i in self.remove)}: "
                             f"{self.effect.describe_loss()}; nothing was removed; name those snapshots "
                             "too, or give --force to lose that time")


def plan_policy(everything: Sequence[Snapshot], chosen: Iterable[Snapshot], policy: RetentionPolicy,
                now: dt.datetime, group_by: Sequence[str]) -> ForgetPlan:
    """A retention policy applied to ``chosen`` (grouped), keeping what every kept snapshot needs
    (snapshots outside ``chosen`` stay, and so does what they need)."""
    picked = list(chosen)
    decisions = {key: apply_policy(group, policy, now) for key, group in group_snapshots(picked, group_by).items()}
    considered = {s.id for s in picked}
    decisions = keep_required(decisions, snapshot_dependencies(everything),
                              staying=[s for s in everything if s.id not in considered])
    plan = _plan(everything, decisions)
    if plan.effect.stranded:  # keep_required rules this out
        raise DtstoreError(f"retention would leave snapshots unrestorable ({plan.effect.describe_loss()}); "
                           "nothing was removed; please report this as a bug")
    return plan


def plan_named(
    everything: Sequence[Snapshot], named: Mapping[str, Snapshot], damaged: Sequence[str] = ()
) -> ForgetPlan:
    """Snapshots named by ID (``damaged``: IDs whose manifests cannot be read, removed as named)."""
    ordered = sorted(named.values(), key=lambda s: (s.time, s.id), reverse=True)
    return _plan(everything, {(): [Decision(s, False, [EXPLICIT]) for s in ordered]}, list(damaged))


def _plan(everything: Sequence[Snapshot], decisions: dict[GroupKey, list[Decision]],
          damaged: list[str] | None = None) -> ForgetPlan:
    remove = [d.snapshot.id for group in decisions.values() for d in group if not d.keep] + list(damaged or [])
    effect = chain_effect(everything, set(remove), {d.snapshot.id for group in decisions.values() for d in group})
    return ForgetPlan(decisions, remove, effect, list(damaged or []))


__all__ = ["EXPLICIT", "ChainEffect", "ForgetPlan", "StreamChange", "chain_effect", "plan_named", "plan_policy"]
