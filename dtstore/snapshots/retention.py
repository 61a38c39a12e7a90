"""Retention policies for ``dtstore forget``: a pure plan of which snapshots to keep, and why.

Nothing here touches storage or the wall clock: :func:`apply_policy` gets the snapshots, the policy,
``now`` and a time zone, and returns one :class:`Decision` per snapshot (restic's ``ApplyPolicy``).
The caller executes the plan, so ``--dry-run`` is the same code without the deletes.

Semantics (restic's, with the choices dtstore makes spelled out):

* The snapshots of one group are ordered newest first (ties by ID).
* ``keep_last N`` keeps the N newest snapshots.
* ``keep_hourly/daily/weekly/monthly/yearly N`` keep the newest snapshot of each of the N most recent
  distinct buckets.  Buckets are calendar periods in local time of the zone ``tz`` (the machine's
  zone when ``None``): the UTC time is converted to the zone first, so a day is a local calendar day
  (23 or 25 hours around a DST change) and a week is an ISO week (Monday to Sunday, ISO year, so the
  last days of December can belong to week 1 of the next year).  An hour bucket also carries the UTC
  offset: the hour a DST change repeats is two real hours, hence two buckets.
* If a bucket rule still has counts left when it reaches the oldest snapshot of the group, that
  snapshot is kept too ("oldest daily snapshot"): the history kept is as long as possible.
* ``N = -1`` means unlimited (every bucket); ``0`` or ``None`` means the rule is off.
* ``keep_within D`` keeps every snapshot newer than *reference − D*, where the reference is the
  newest snapshot of the group that is not in the future (not ``now``), so a group whose backups
  stopped is not emptied by the passing of time.  If every snapshot is in the future, ``now`` is the
  reference.  Years, months and days are subtracted on the local calendar (a month before 31 March
  is the last day of February), hours as real hours.  ``keep_within_daily D`` etc. apply the bucket
  rule without a count, to the snapshots newer than *reference − D*.
* ``keep_tags``: each entry is a tag, or several joined by commas that must all be present.
* A snapshot kept by any rule is kept; the reasons accumulate.  An empty policy is refused.
* ``requires`` (optional; snapshot id → the ids it needs to be restorable, e.g. a log snapshot's
  full and the logs between them) is closed over: a kept snapshot keeps everything it needs,
  transitively, with the reason "needed by <short id> (restore chain)".  The map comes from the
  caller (``dtstore.connectors.points.snapshot_dependencies`` for connector sources): the core
  knows nothing of chains.  :func:`keep_required` does the same across groups, since a chain may
  span groups (``--group-by tags``) or reach snapshots no group considers.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TypeVar

from dtstore.errors import UsageError
from dtstore.snapshots.manifest import Snapshot

GROUP_KEYS = ("host", "source", "tags", "paths")
DEFAULT_GROUP_BY = ("host", "source")

GroupKey = tuple[tuple[str, str], ...]
"""``(("host", "db1"), ("source", "mysql:shop"))``: the values a group's snapshots share."""


@dataclass(frozen=True)
class Duration:
    """A calendar duration as restic writes it: ``1y2m3d4h`` (years, months, days, hours)."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def is_zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def __str__(self) -> str:
        parts = [f"{n}{unit}" for n, unit in ((self.years, "y"), (self.months, "m"), (self.days, "d"),
                                               (self.hours, "h")) if n]
        return "".join(parts) or "0h"


Span = Duration | dt.timedelta

_DURATION_PART = re.compile(r"(\d+)([a-zA-Z]?)")
_UNIT_FIELDS = {"y": "years", "m": "months", "d": "days", "h": "hours"}


def parse_duration(text: str) -> Duration:
    """``"1y2m3d4h"`` → ``Duration(1, 2, 3, 4)``; any subset of the units, each at most once."""
    hint = "use numbers with units y (years), m (months), d (days), h (hours), e.g. 1y2m3d4h or 36h"
    if not text:
        raise UsageError(f"empty duration: {hint}")
    values: dict[str, int] = {}
    pos = 0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise UsageError(f"invalid duration {text!r}: expected a number at {text[pos:]!r}; {hint}")
        number, unit = match.groups()
        if not unit:
            raise UsageError(f"invalid duration {text!r}: {number} has no unit; {hint}")
        if unit not in _UNIT_FIELDS:
            raise UsageError(f"invalid duration {text!r}: unknown unit {unit!r}; {hint}")
        if _UNIT_FIELDS[unit] in values:
            raise UsageError(f"invalid duration {text!r}: unit {unit!r} given twice")
        values[_UNIT_FIELDS[unit]] = int(number)
        pos = match.end()
    return Duration(**values)


def format_span(span: Span) -> str:
    if isinstance(span, Duration):
        return str(span)
    seconds = int(span.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}min"
    return f"{seconds}s"


def _span_is_zero(span: Span | None) -> bool:
    if span is None:
        return True
    return span.is_zero() if isinstance(span, Duration) else span <= dt.timedelta(0)


@dataclass(frozen=True)
class RetentionPolicy:
    """What to keep; every rule is off by default.  Counts: ``None``/``0`` off, ``-1`` unlimited."""

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: Span | None = None
    keep_within_hourly: Span | None = None
    keep_within_daily: Span | None = None
    keep_within_weekly: Span | None = None
    keep_within_monthly: Span | None = None
    keep_within_yearly: Span | None = None
    keep_tags: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("keep_within"):
                if value is not None and not isinstance(value, Duration | dt.timedelta):
                    raise UsageError(f"{_flag(f.name)} must be a duration, not {value!r}")
                if isinstance(value, dt.timedelta) and value < dt.timedelta(0):
                    raise UsageError(f"{_flag(f.name)} must not be negative")
            elif f.name == "keep_tags":
                if isinstance(value, str):
                    raise UsageError("keep_tags must be a sequence of tags, not a single string")
                object.__setattr__(self, "keep_tags", tuple(value))
                for entry in self.keep_tags:
                    if not [t for t in entry.split(",") if t.strip()]:
                        raise UsageError("--keep-tag needs a tag: an empty one would keep everything")
            elif value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < -1):
                raise UsageError(f"{_flag(f.name)} must be a number ≥ 0, or -1 for unlimited, not {value!r}")

    def is_empty(self) -> bool:
        """True when no rule would keep anything: applying it would remove every snapshot."""
        counts = (self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly, self.keep_monthly,
                  self.keep_yearly)
        spans = (self.keep_within, self.keep_within_hourly, self.keep_within_daily, self.keep_within_weekly,
                 self.keep_within_monthly, self.keep_within_yearly)
        return all(not c for c in counts) and all(_span_is_zero(s) for s in spans) and not self.keep_tags

    def __str__(self) -> str:
        parts: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "keep_tags":
                parts += [f"--keep-tag {t}" for t in value]
            elif f.name.startswith("keep_within"):
                if not _span_is_zero(value):
                    parts.append(f"{_flag(f.name)} {format_span(value)}")
            elif value:
                parts.append(f"{_flag(f.name)} {'unlimited' if value == -1 else value}")
        return " ".join(parts) or "(empty policy)"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Decision:
    """The plan for one snapshot: kept if any rule matched; ``reasons`` names the rules."""

    snapshot: Snapshot
    keep: bool
    reasons: list[str]


# --- buckets -----------------------------------------------------------------------------------

Bucketer = Callable[[dt.datetime, int], Hashable]


def _hour(local: dt.datetime, _nr: int) -> Hashable:
    return (local.date(), local.hour, local.utcoffset())


def _day(local: dt.datetime, _nr: int) -> Hashable:
    return local.date()


def _week(local: dt.datetime, _nr: int) -> Hashable:
    iso = local.isocalendar()
    return (iso.year, iso.week)


def _month(local: dt.datetime, _nr: int) -> Hashable:
    return (local.year, local.month)


def _year(local: dt.datetime, _nr: int) -> Hashable:
    return local.year


def _every(_local: dt.datetime, nr: int) -> Hashable:
    return nr


_NO_BUCKET = object()


@dataclass
class _CountRule:
    remaining: int
    bucket: Bucketer
    reason: str
    last: Hashable = _NO_BUCKET


@dataclass
class _WithinRule:
    cutoff: dt.datetime
    bucket: Bucketer
    reason: str
    last: Hashable = _NO_BUCKET


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def _local(t: dt.datetime, tz: dt.tzinfo | None) -> dt.datetime:
    """``t`` in the zone ``tz``, or in the machine's zone (with that instant's offset) when ``None``."""
    return _aware(t).astimezone(tz) if tz is not None else _aware(t).astimezone()


def _cutoff(reference: dt.datetime, span: Span, tz: dt.tzinfo | None) -> dt.datetime:
    """``reference − span``: years, months and days on the local calendar, hours as real time."""
    reference = _aware(reference)
    if isinstance(span, dt.timedelta):
        return reference - span
    if span.years or span.months or span.days:
        wall = _local(reference, tz).replace(tzinfo=None)
        months = wall.year * 12 + (wall.month - 1) - span.years * 12 - span.months
        year, month = divmod(months, 12)
        month += 1
        day = min(wall.day, calendar.monthrange(year, month)[1])
        wall = wall.replace(year=year, month=month, day=day, fold=0) - dt.timedelta(days=span.days)
        reference = wall.replace(tzinfo=tz) if tz is not None else wall.astimezone()
    return reference.astimezone(dt.UTC) - dt.timedelta(hours=span.hours)


def _reference_time(snapshots: Sequence[Snapshot], now: dt.datetime) -> dt.datetime:
    """The newest snapshot time that is not in the future (restic's choice); ``now`` if none is."""
    now = _aware(now)
    past = [_aware(s.time) for s in snapshots if _aware(s.time) <= now]
    return max(past) if past else now


def apply_policy(snapshots: Iterable[Snapshot], policy: RetentionPolicy, now: dt.datetime,
                 tz: dt.tzinfo | None = None, requires: Mapping[str, Collection[str]] | None = None) -> list[Decision]:
    """One decision per snapshot of one group, newest first.  Pure: reads neither storage nor clock.

    ``now`` only bounds the keep-within reference (see the module docstring); ``tz`` is the zone whose
    calendar defines hours, days, weeks, months and years (``None``: the machine's zone).
    ``requires`` (snapshot id → ids it needs): a kept snapshot keeps what it needs among ``snapshots``
    (see :func:`keep_required` for needs that cross groups)."""
    decisions = _apply_rules(snapshots, policy, now, tz)
    if requires:
        decisions = keep_required({(): decisions}, requires)[()]
    return decisions


def _apply_rules(snapshots: Iterable[Snapshot], policy: RetentionPolicy, now: dt.datetime,
                 tz: dt.tzinfo | None) -> list[Decision]:
    if policy.is_empty():
        raise UsageError("refusing to apply an empty retention policy: it would remove every snapshot; "
                         "give at least one --keep-* option")
    ordered = sorted(snapshots, key=lambda s: (_aware(s.time), s.id), reverse=True)
    if not ordered:
        return []
    reference = _reference_time(ordered, now)
    counts = [_CountRule(n, bucket, reason) for n, bucket, reason in (
        (policy.keep_last, _every, "last snapshot"),
        (policy.keep_hourly, _hour, "hourly snapshot"),
        (policy.keep_daily, _day, "daily snapshot"),
        (policy.keep_weekly, _week, "weekly snapshot"),
        (policy.keep_monthly, _month, "monthly snapshot"),
        (policy.keep_yearly, _year, "yearly snapshot"),
    ) if n]
    withins = [_WithinRule(_cutoff(reference, span, tz), bucket, f"{reason} {format_span(span)}")
               for span, bucket, reason in (
                   (policy.keep_within_hourly, _hour, "hourly within"),
                   (policy.keep_within_daily, _day, "daily within"),
                   (policy.keep_within_weekly, _week, "weekly within"),
                   (policy.keep_within_monthly, _month, "monthly within"),
                   (policy.keep_within_yearly, _year, "yearly within"),
               ) if span is not None and not _span_is_zero(span)]
    within = policy.keep_within
    within_cutoff = _cutoff(reference, within, tz) if within is not None and not _span_is_zero(within) else None
    tag_sets = [(entry, {t.strip() for t in entry.split(",") if t.strip()}) for entry in policy.keep_tags]

    decisions: list[Decision] = []
    oldest = len(ordered) - 1
    for nr, snap in enumerate(ordered):
        when = _aware(snap.time)
        local = _local(when, tz)
        reasons = [f"tag {entry}" for entry, wanted in tag_sets if wanted <= set(snap.tags)]
        if within is not None and within_cutoff is not None and when > within_cutoff:
            reasons.append(f"within {format_span(within)}")
        for rule in counts:
            if rule.remaining == 0:
                continue
            value = rule.bucket(local, nr)
            if value != rule.last or nr == oldest:
                reasons.append(("oldest " if value == rule.last else "") + rule.reason)
                rule.last = value
                if rule.remaining > 0:
                    rule.remaining -= 1
        for wrule in withins:
            if when > wrule.cutoff:
                value = wrule.bucket(local, nr)
                if value != wrule.last or nr == oldest:
                    reasons.append(("oldest " if value == wrule.last else "") + wrule.reason)
                    wrule.last = value
        decisions.append(Decision(snap, bool(reasons), reasons))
    return decisions


# --- dependencies ------------------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)

NEEDED = "restore chain"
"""what the reason of a snapshot kept for another's sake says it is part of"""


def needed_reason(by: Sequence[Snapshot]) -> str:
    """``needed by 1a2b3c4d (restore chain)``, naming the newest dependant (and how many more)."""
    if not by:
        return f"needed ({NEEDED})"
    newest = max(by, key=lambda s: (_aware(s.time), s.id))
    more = f" and {len(by) - 1} more" if len(by) > 1 else ""
    return f"needed by {newest.short_id}{more} ({NEEDED})"


def required_closure(kept: Iterable[str], requires: Mapping[str, Collection[str]]) -> set[str]:
    """``kept`` and everything it needs, transitively (ids)."""
    closure = set(kept)
    todo = list(closure)
    while todo:
        for needed in requires.get(todo.pop(), ()):
            if needed not in closure:
                closure.add(needed)
                todo.append(needed)
    return closure


def keep_required(plan: Mapping[K, Sequence[Decision]], requires: Mapping[str, Collection[str]],
                  staying: Iterable[Snapshot] = ()) -> dict[K, list[Decision]]:
    """``plan`` with every snapshot that a kept one needs (by ``requires``, transitively) kept too.

    Needs are by ID, across all groups of ``plan``; ``staying`` are snapshots outside the plan that
    stay whatever it says (those a ``--host``/``--tag``/``--source`` filter left out): what they need
    is kept as well.  A snapshot kept only for another's sake gets the reason "needed by <short id>
    (restore chain)" naming its newest kept dependant; decisions otherwise keep order and reasons."""
    decisions = [d for group in plan.values() for d in group]
    staying = list(staying)
    survivors = {d.snapshot.id for d in decisions if d.keep} | {s.id for s in staying}
    closure = required_closure(survivors, requires)
    pulled = {d.snapshot.id for d in decisions if not d.keep and d.snapshot.id in closure}
    if not pulled:
        return {key: list(group) for key, group in plan.items()}
    known = {d.snapshot.id: d.snapshot for d in decisions} | {s.id: s for s in staying}
    dependants: dict[str, list[Snapshot]] = {}
    for snap_id in closure & known.keys():
        for needed in requires.get(snap_id, ()):
            if needed in pulled and needed != snap_id:
                dependants.setdefault(needed, []).append(known[snap_id])
    return {
        key: [Decision(d.snapshot, True, [needed_reason(dependants.get(d.snapshot.id, []))])
              if d.snapshot.id in pulled else d for d in group]
        for key, group in plan.items()
    }


# --- restorable time ---------------------------------------------------------------------------

TimeRange = tuple[dt.datetime, dt.datetime]
"""A closed stretch of time ``(start, end)``; ``start == end`` is a single restorable point."""


def subtract_ranges(before: Iterable[TimeRange], after: Iterable[TimeRange]) -> list[TimeRange]:
    """The parts of ``before`` that ``after`` does not cover, merged and oldest first.

    Used to say what restorable time a removal loses (restore-point windows before and after).
    End points are not tracked as open or closed: ``[0, 10]`` minus ``[0, 5]`` is ``(5, 10)``.  A range
    given end first is read as the same stretch."""
    covers = sorted((min(a, b), max(a, b)) for a, b in after)
    pieces: list[TimeRange] = []
    for start, end in sorted((min(a, b), max(a, b)) for a, b in before):
        remaining = [(start, end)]
        for c_start, c_end in covers:
            cut: list[TimeRange] = []
            for x, y in remaining:
                if c_end < x or c_start > y:
                    cut.append((x, y))
                    continue
                if x < c_start:
                    cut.append((x, c_start))
                if c_end < y:
                    cut.append((c_end, y))
            remaining = cut
        pieces.extend(remaining)
    merged: list[TimeRange] = []
    for start, end in sorted(pieces):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


# --- groups ------------------------------------------------------------------------------------

def parse_group_by(text: str) -> tuple[str, ...]:
    """``"host,source"`` → ``("host", "source")``; ``""`` → no grouping (one group)."""
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in keys if k not in GROUP_KEYS]
    if unknown:
        raise UsageError(f"cannot group by {', '.join(unknown)}: choose from {', '.join(GROUP_KEYS)}")
    if len(set(keys)) != len(keys):
        raise UsageError(f"--group-by {text!r} names a key twice")
    return keys


def _group_value(snap: Snapshot, key: str) -> str:
    if key == "host":
        return snap.host
    if key == "source":
        return snap.source_id
    if key == "tags":
        return ",".join(sorted(set(snap.tags)))
    if key == "paths":
        return ",".join(sorted(set(snap.paths)))
    raise UsageError(f"cannot group by {key}: choose from {', '.join(GROUP_KEYS)}")


def group_snapshots(snapshots: Iterable[Snapshot],
                    group_by: Sequence[str] = DEFAULT_GROUP_BY) -> dict[GroupKey, list[Snapshot]]:
    """Snapshots by the values of ``group_by`` (from :data:`GROUP_KEYS`), groups in key order.

    Tags and paths compare as sets: ``a,b`` and ``b,a`` are one group.  ``()`` makes one group."""
    for key in group_by:
        if key not in GROUP_KEYS:
            raise UsageError(f"cannot group by {key}: choose from {', '.join(GROUP_KEYS)}")
    groups: dict[GroupKey, list[Snapshot]] = {}
    for snap in snapshots:
        gkey = tuple((key, _group_value(snap, key)) for key in group_by)
        groups.setdefault(gkey, []).append(snap)
    return {k: groups[k] for k in sorted(groups)}


def describe_group(key: GroupKey) -> str:
    return " ".join(f"{name}={value or '(none)'}" for name, value in key) or "all snapshots"


__all__ = [
    "DEFAULT_GROUP_BY",
    "GROUP_KEYS",
    "NEEDED",
    "Decision",
    "Duration",
    "GroupKey",
    "RetentionPolicy",
    "TimeRange",
    "apply_policy",
    "describe_group",
    "format_span",
    "group_snapshots",
    "keep_required",
    "needed_reason",
    "parse_duration",
    "parse_group_by",
    "required_closure",
    "subtract_ranges",
]
