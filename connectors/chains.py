"""Chains of full, differential and log snapshots, and the one planner every connector uses.

A connector turns each of its snapshots into one or more :class:`Link` records (one per
independent log stream: a database, a thread, a timeline), using its own position type
(``dtstore.connectors.positions``).  Everything else is generic and pure:

* :func:`follow` walks the logs that continue a base, refusing forks;
* :func:`plan` picks, for a stop target, the base (the newest full at or before the target, plus
  the newest differential that belongs to it), the contiguous logs up to the one that covers the
  target and nothing after it; a target in a gap or beyond the archive is a :class:`ChainError`
  naming the missing piece;
* :func:`windows` gives a stream's restorable windows and the gaps between them (``dtstore
  restore-points``);
* :func:`dependencies` says which snapshots each snapshot needs to be restorable (retention keeps
  them together).

Rules, in the words of ``spec/connectors.md`` §9: a log continues a chain ending at ``E`` when
``log.start.continues(E)`` and it reaches past ``E`` (``E < log.end``); a differential belongs to
the full whose ``ref`` it names as ``base_ref``; a base with ``log_chain=False`` (SQL Server SIMPLE
recovery, MySQL without binary logs) restores only to its own point.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from dtstore.connectors.base import iso
from dtstore.connectors.positions import Position
from dtstore.errors import ChainError

LinkKind = Literal["full", "diff", "log"]
LINK_KINDS: tuple[LinkKind, ...] = ("full", "diff", "log")


@dataclass(frozen=True)
class Link:
    """One snapshot's part of one log stream.

    ``start``/``end``: for a full or differential, ``start`` is its consistent point and ``end``
    where the next log must start; for a log, where it starts and where the next log must start.
    ``time_until`` is the newest moment the link makes restorable (a full's or differential's
    consistent time; a log's last transaction).  ``taken`` is the snapshot time and breaks ties.
    """

    snapshot_id: str
    short_id: str
    taken: dt.datetime
    kind: LinkKind
    start: Any
    end: Any
    time_until: dt.datetime
    stream: str = ""
    ref: str = ""
    """what a differential names as its base (default: the snapshot id)"""
    base_ref: str | None = None
    log_chain: bool = True
    """False: the application keeps no log chain after this base (it restores only to its own point)"""

    def __post_init__(self) -> None:
        if self.kind not in LINK_KINDS:
            raise ValueError(f"unknown link kind {self.kind!r}")
        if not self.ref:
            object.__setattr__(self, "ref", self.snapshot_id)

    @property
    def is_base(self) -> bool:
        return self.kind != "log"

    def describe(self) -> str:
        return f"{self.kind} {self.short_id} ({iso(self.time_until)})"


@dataclass(frozen=True)
class Target:
    """Where a restore stops: the latest restorable point (neither set), a time, or a position."""

    time: dt.datetime | None = None
    position: Any = None
    snapshot: str | None = None
    """set for ``restore SNAPSHOT``: the time is that snapshot's restore point, and the link that
    covers it is applied whole (its last transactions may share that second with later ones)"""

    @property
    def is_latest(self) -> bool:
        return self.time is None and self.position is None

    def describe(self) -> str:
        if self.snapshot is not None and self.time is not None:
            return f"state of snapshot {self.snapshot[:8]} ({iso(self.time)})"
        if self.time is not None:
            local = self.time.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
            return f"time {iso(self.time)} (local {local})"
        if self.position is not None:
            return f"position {self.position}"
        return "latest restorable point"

    def to_json(self) -> dict[str, Any]:
        return {
            "time": iso(self.time) if self.time else None,
            "position": str(self.position) if self.position is not None else None,
            "snapshot": self.snapshot,
        }


@dataclass(frozen=True)
class Gap:
    """Archived links after ``after`` that no chain reaches."""

    stream: str
    after: Link
    """the newest link a chain reaches"""
    next: Link | None
    """the first archived link after the gap (None: nothing later can be restored)"""
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "from": iso(self.after.time_until),
            "to": iso(self.next.time_until) if self.next else None,
            "after_snapshot": self.after.snapshot_id,
            "next_snapshot": self.next.snapshot_id if self.next else None,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ChainPlan:
    """The links a restore of one stream uses, in order: a full, perhaps a differential, the logs."""

    stream: str
    full: Link
    diff: Link | None
    logs: list[Link]
    target: Target
    gap: Gap | None = None
    """set when ``allow_gap`` let the plan stop at the last reachable point before a gap"""

    @property
    def links(self) -> list[Link]:
        return [self.full, *([self.diff] if self.diff else []), *self.logs]

    @property
    def last(self) -> Link:
        return self.links[-1]

    @property
    def reached_time(self) -> dt.datetime:
        return self.last.time_until

    @property
    def snapshot_ids(self) -> list[str]:
        return list(dict.fromkeys(link.snapshot_id for link in self.links))

    def describe(self) -> list[str]:
        lines = [f"  {link.describe()}" for link in self.links]
        if self.gap:
            lines.append(f"  stops at {iso(self.reached_time)} before a gap: {self.gap.reason}")
        return lines


@dataclass(frozen=True)
class Window:
    """A stretch of time any moment of which can be restored."""

    stream: str
    start: dt.datetime
    end: dt.datetime
    bases: list[Link]
    links: list[Link]

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "from": iso(self.start),
            "to": iso(self.end),
            "bases": [b.snapshot_id for b in self.bases],
            "snapshots": list(dict.fromkeys(link.snapshot_id for link in self.links)),
        }


@dataclass(frozen=True)
class StreamPoints:
    """One stream's restorable windows and the gaps between them (oldest first)."""

    stream: str
    windows: list[Window]
    gaps: list[Gap]
    point_in_time: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def latest(self) -> dt.datetime | None:
        return self.windows[-1].end if self.windows else None

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "windows": [w.to_json() for w in self.windows],
            "gaps": [g.to_json() for g in self.gaps],
            "point_in_time": self.point_in_time,
            "notes": list(self.notes),
        }


Explain = Callable[[Any, Any], str]
"""``explain(end, next_start)``: why nothing continues ``end`` (a connector names the missing file)."""


def default_explain(end: Any, next_start: Any) -> str:
    if next_start is None:
        return f"no archived log continues {end}"
    return f"nothing archived covers {end} .. {next_start}"


# -- walking a chain ----------------------------------------------------------------------------


def _ordered(links: Iterable[Link]) -> list[Link]:
    return sorted(links, key=lambda link: (link.taken, link.snapshot_id))


def _continuers(logs: Sequence[Link], end: Any, after: dt.datetime) -> list[Link]:
    return [log for log in logs if log.taken >= after and log.start.continues(end) and end < log.end]


class _LogIndex:
    """The logs of one stream, found by where they start, without scanning every later log.

    * Positions with ``start_key``/``successor_key`` (positions.py): a dictionary lookup.
    * Positions with ``STARTS_AT_OR_BEFORE`` (SQL Server LSNs: a log continues a point it spans):
      logs sorted by start, with the running maximum of their ends; the logs that span a point are
      found by bisection, walking back only while an earlier log could still reach past it.
    * Others: a scan of the logs taken after the point.
    """

    def __init__(self, logs: Sequence[Link]) -> None:
        self.logs = _ordered(logs)
        self._taken = [log.taken for log in self.logs]
        starts = [log.start for log in self.logs]
        self._by_key: dict[Any, list[Link]] | None = None
        self._by_start: list[Link] | None = None
        if starts and all(hasattr(p, "start_key") for p in starts):
            self._by_key = defaultdict(list)
            for log in self.logs:
                self._by_key[log.start.start_key()].append(log)
        elif starts and all(getattr(p, "STARTS_AT_OR_BEFORE", False) for p in starts):
            self._by_start = sorted(self.logs, key=lambda log: log.start)
            self._starts = [log.start for log in self._by_start]
            self._reach: list[Any] = []
            for log in self._by_start:
                self._reach.append(log.end if not self._reach or self._reach[-1] < log.end else self._reach[-1])

    def continuers(self, end: Any, after: dt.datetime) -> list[Link]:
        if self._by_key is not None and hasattr(end, "successor_key"):
            return _continuers(self._by_key.get(end.successor_key(), ()), end, after)
        if self._by_start is not None:
            return _continuers(self._spanning(end), end, after)
        return _continuers(self.logs[bisect.bisect_left(self._taken, after):], end, after)

    def _spanning(self, point: Any) -> list[Link]:
        """The logs that start at or before ``point`` and end after it, in the order taken."""
        if self._by_start is None:
            return []
        found = []
        j = bisect.bisect_right(self._starts, point) - 1
        while j >= 0 and point < self._reach[j]:
            if point < self._by_start[j].end:
                found.append(self._by_start[j])
            j -= 1
        return _ordered(found)


def follow(logs: Sequence[Link] | _LogIndex, base: Link, *, until: Callable[[Link], bool] | None = None) -> list[Link]:
    """The logs that continue ``base`` in order, stopping after the first one ``until`` accepts.

    Two logs that continue the same point to different ends are a fork (two runs of one source at
    once, or two servers writing under one source id): ChainError naming both.
    """
    if not base.log_chain:
        return []
    index = logs if isinstance(logs, _LogIndex) else _LogIndex(logs)
    chain: list[Link] = []
    end, after = base.end, base.taken
    while True:
        options = index.continuers(end, after)
        if not options:
            return chain
        ends = {str(o.end) for o in options}
        if len(ends) > 1:
            a, b = options[0], next(o for o in options if str(o.end) != str(options[0].end))
            raise ChainError(
                f"the log chain forks after {end}: log snapshots {a.short_id} and {b.short_id} both continue it "
                "(two runs of one source at once?); forget the wrong one"
            )
        nxt = options[0]
        chain.append(nxt)
        if until is not None and until(nxt):
            return chain
        end, after = nxt.end, nxt.taken


def _covers(target: Target, link: Link) -> bool:
    if target.snapshot is not None:
        return link.snapshot_id == target.snapshot
    if target.time is not None:
        return target.time <= link.time_until
    if target.position is not None:
        return bool(target.position <= link.end)
    return False


def _base_usable(target: Target, base: Link) -> bool:
    if target.snapshot is not None:
        return True  # whichever base's chain holds that snapshot (a log's whole-second time can precede its full's)
    if target.time is not None:
        return base.time_until <= target.time
    if target.position is not None:
        return bool(base.start <= target.position)
    return True


def _diffs_for(links: Sequence[Link], full: Link, target: Target) -> list[Link]:
    """The usable differentials of ``full``, newest first."""
    diffs = [d for d in links if d.kind == "diff" and d.base_ref == full.ref and d.taken >= full.taken]
    usable = [d for d in diffs if _base_usable(target, d)]
    return sorted(usable, key=lambda d: (d.time_until, d.taken), reverse=True)


def _bases(links: Sequence[Link], target: Target) -> list[tuple[Link, Link | None]]:
    """(full, diff) candidates, most preferred first: newer fulls first, each with its differentials
    newest first, then the same full without one (a damaged or missing differential, or one no log
    continues, can be bypassed by an older one or by the logs)."""
    fulls = [f for f in links if f.kind == "full" and _base_usable(target, f)]
    fulls.sort(key=lambda f: (f.time_until, f.taken), reverse=True)
    options: list[tuple[Link, Link | None]] = []
    for full in fulls:
        options.extend((full, diff) for diff in _diffs_for(links, full, target))
        options.append((full, None))
    return options


def _walk(walker: _Walker, full: Link, diff: Link | None, target: Target) -> ChainPlan:
    """The chain from a candidate base up to the link that covers the target (latest: to its end).

    Raises ChainError for a fork met before the target is covered, as a restore through it would."""
    base = diff or full
    if _covers(target, base) and not target.is_latest:
        return ChainPlan(base.stream, full, diff, [], target)
    chain: list[Link] = []
    nxt = walker.step(base)
    while nxt is not None:
        chain.append(nxt)
        if not target.is_latest and _covers(target, nxt):
            return ChainPlan(base.stream, full, diff, chain, target)
        nxt = walker.step(nxt)
    fork = walker.fork(chain[-1] if chain else base)
    if fork is not None:
        raise ChainError(fork)
    return ChainPlan(base.stream, full, diff, chain, target)


def _might_reach(walker: _Walker, base: Link, target: Target) -> bool:
    """Could the chain from ``base`` cover the target?  (Cheap: the reach of each log is computed once.)"""
    if target.snapshot is not None:
        return True
    first = walker.step(base)
    if first is None:
        return walker.fork(base) is not None or _covers(target, base)
    reach = walker.reach(first)
    if reach.fork is not None:
        return True  # _walk finds out whether the target comes before the fork
    if target.time is not None:
        return target.time <= reach.time
    return target.position is None or bool(target.position <= reach.end)


def _latest_candidates(walker: _Walker, candidates: list[tuple[Link, Link | None]]) -> list[tuple[Link, Link | None]]:
    """For latest: the most preferred candidate, and for every distinct end a chain can have, the most
    preferred candidate that reaches it (later ones would make the same plan, and lose the tie)."""
    kept, ends = [], set()
    for number, (full, diff) in enumerate(candidates):
        first = walker.step(diff or full)
        end = id(walker.reach(first).last) if first is not None else id(diff or full)
        if number == 0 or end not in ends:
            kept.append((full, diff))
            ends.add(end)
    return kept


def _reaches(plan: ChainPlan, target: Target) -> bool:
    return target.is_latest or _covers(target, plan.last)


def _later_unreached(links: Sequence[Link], plan: ChainPlan, *, fulls: bool = False) -> list[Link]:
    """Links newer than the plan's end that it does not use (fulls only when ``fulls``: a newer full
    is a new start, not a gap in this chain, unless a target between them is asked for)."""
    used = {id(link) for link in plan.links}
    last = plan.last
    return [
        link
        for link in links
        if id(link) not in used and link.taken > last.taken
        and (link.kind == "log" or link.time_until > last.time_until)  # a log taken later holds later events
        and (fulls or link.kind != "full")
    ]


def _gap(stream: str, plan: ChainPlan, later: Sequence[Link], explain: Explain) -> Gap:
    nxt = min(later, key=lambda link: (link.taken, link.snapshot_id))
    if not plan.last.log_chain:
        reason = f"{plan.last.describe()} keeps no log chain (no point-in-time restore from it)"
    else:
        reason = explain(plan.last.end, nxt.start if nxt.kind == "log" else None)
    return Gap(stream, plan.last, nxt, reason)


def plan(
    links: Sequence[Link],
    target: Target,
    *,
    allow_gap: bool = False,
    explain: Explain = default_explain,
) -> ChainPlan:
    """The restore plan for one stream (``links`` of one stream, any order).

    ``latest`` is the latest restorable point: the chain of the newest base as far as it reaches.
    If later snapshots exist that it cannot reach, that is a gap: ChainError unless ``allow_gap``
    (then the plan stops at the last reachable point and carries the gap).
    """
    ordered = _ordered(links)
    stream = ordered[0].stream if ordered else ""
    walker = _Walker([link for link in ordered if link.kind == "log"])
    candidates = _bases(ordered, target)
    if not candidates:
        raise ChainError(_no_base_message(ordered, target, stream))
    if target.is_latest:  # only the chains that end last can hold the newest state: walk just those
        candidates = _latest_candidates(walker, candidates)
    outcomes: list[ChainPlan | ChainError] = []  # most preferred first; a fork behind one base blocks only it
    for number, (full, diff) in enumerate(candidates):
        if not target.is_latest and number and not _might_reach(walker, diff or full, target):
            continue  # the first candidate is always walked: its plan explains a failure
        try:
            walked = _walk(walker, full, diff, target)
        except ChainError as exc:
            outcomes.append(exc)
            continue
        if not target.is_latest and _reaches(walked, target):
            return walked
        outcomes.append(walked)
    plans = [o for o in outcomes if isinstance(o, ChainPlan)]
    if isinstance(outcomes[0], ChainError) and (not plans or not target.is_latest):
        raise outcomes[0]
    if target.is_latest:
        # the chain whose last link was taken last holds the newest state: a log's time (its last
        # event, whole seconds for MySQL) can lie before the consistent point of a full taken earlier
        best = max(plans, key=lambda p: (p.last.taken, p.reached_time))
        later = _later_unreached(ordered, best)
        if later:
            gap = _gap(stream, best, later, explain)
            if isinstance(outcomes[0], ChainError) and not allow_gap:
                raise outcomes[0]
            if not allow_gap:
                raise ChainError(
                    f"{_in(stream)}the newest restorable point is {iso(best.reached_time)} "
                    f"({best.last.describe()}), but later snapshots cannot be reached: {gap.reason}; "
                    "restore with --allow-gap to stop at that point, or take a full snapshot"
                )
            return ChainPlan(best.stream, best.full, best.diff, best.logs, target, gap)
        return best
    raise ChainError(_unreached_message(ordered, plans[0], target, explain))


def _in(stream: str) -> str:
    return f"{stream}: " if stream else ""


def _no_base_message(links: Sequence[Link], target: Target, stream: str) -> str:
    fulls = [f for f in links if f.kind == "full"]
    if not fulls:
        return f"{_in(stream)}the repository holds no full snapshot of this source; nothing to restore from"
    oldest = min(fulls, key=lambda f: f.time_until)
    if target.time is not None:
        return (
            f"{_in(stream)}no full snapshot at or before {iso(target.time)} "
            f"(the oldest full is consistent at {iso(oldest.time_until)})"
        )
    return f"{_in(stream)}no full snapshot at or before {target.position} (the oldest full starts at {oldest.start})"


def _unreached_message(links: Sequence[Link], best: ChainPlan, target: Target, explain: Explain) -> str:
    end = iso(best.reached_time) if target.time is not None else str(best.last.end)
    what = target.describe()
    later = _later_unreached(links, best, fulls=True)
    if later:
        gap = _gap(best.stream, best, later, explain)
        return (
            f"{_in(best.stream)}{what} falls in a gap: the chain from full {best.full.short_id} ends at {end} "
            f"({gap.reason}); pick an earlier time or a time after the next full"
        )
    return (
        f"{_in(best.stream)}{what} is beyond the archive: the latest archived point is {end}; "
        "take a log snapshot first (dtstore snapshot … --mode log)"
    )


# -- windows and dependencies -------------------------------------------------------------------


def by_stream(links: Iterable[Link]) -> dict[str, list[Link]]:
    streams: dict[str, list[Link]] = defaultdict(list)
    for link in links:
        streams[link.stream].append(link)
    return {name: _ordered(group) for name, group in sorted(streams.items())}


@dataclass(frozen=True)
class _Reach:
    """Where the chain after a log ends: its last link, the newest time and end it reaches on the
    way, and the fork that stops it (the error a restore through it raises), if one does."""

    last: Link
    time: dt.datetime
    end: Any
    fork: str | None = None


class _Walker:
    """:func:`follow` from every base of one stream, sharing the walk where chains meet.

    In MySQL-like streams the chain of every full runs through all later logs, so walking each
    one afresh is quadratic (a year of 15-minute logs took minutes).  The log that continues a
    log depends on that log alone, so it is found once, and where a chain ends (and what it
    reaches on the way) is computed once per log.  A fork ends a chain before it.
    """

    def __init__(self, logs: Sequence[Link] | _LogIndex) -> None:
        self.index = logs if isinstance(logs, _LogIndex) else _LogIndex(logs)
        self._next: dict[int, Link | None] = {}
        self._fork: dict[int, str] = {}
        self._reach: dict[int, _Reach] = {}

    def step(self, link: Link) -> Link | None:
        """The log that continues ``link`` (None: nothing, or a fork: see ``fork``)."""
        key = id(link)
        if key not in self._next:
            options = self.index.continuers(link.end, link.taken) if link.log_chain else []
            ends = {str(o.end) for o in options}
            if len(ends) > 1:
                other = next(o for o in options if str(o.end) != str(options[0].end))
                self._fork[key] = (
                    f"the log chain forks after {link.end}: log snapshots {options[0].short_id} and "
                    f"{other.short_id} both continue it (two runs of one source at once?); forget the wrong one"
                )
            self._next[key] = options[0] if len(ends) == 1 else None
        return self._next[key]

    def fork(self, link: Link) -> str | None:
        self.step(link)
        return self._fork.get(id(link))

    def reach(self, link: Link) -> _Reach:
        """Where the chain from ``link`` on ends, and the most it reaches (iterative: no recursion)."""
        path = []
        current: Link | None = link
        while current is not None and id(current) not in self._reach:
            path.append(current)
            current = self.step(current)
        after = self._reach[id(current)] if current is not None else None
        for node in reversed(path):
            if after is None:
                after = _Reach(node, node.time_until, node.end, self._fork.get(id(node)))
            else:
                later_end = after.end if node.end < after.end else node.end
                after = _Reach(after.last, max(node.time_until, after.time), later_end, after.fork)
            self._reach[id(node)] = after
        if after is None:  # pragma: no cover - the loop always runs or finds a cached entry
            raise ChainError("internal error: an empty chain")
        return after

    def chain(self, base: Link, *, stop_at: set[int] | None = None) -> list[Link]:
        """The base and the logs that continue it, up to a fork; with ``stop_at``, only up to the first
        link in it (the rest is shared with a chain already walked) and adding what it walks."""
        chain = [base]
        nxt = self.step(base)
        while nxt is not None and (stop_at is None or id(nxt) not in stop_at):
            chain.append(nxt)
            nxt = self.step(nxt)
        if stop_at is not None:
            stop_at.update(id(link) for link in chain)
        return chain


def windows(links: Sequence[Link], *, explain: Explain = default_explain) -> StreamPoints:
    """Restorable windows of one stream, merged where they touch, and the gaps between them."""
    ordered = _ordered(links)
    stream = ordered[0].stream if ordered else ""
    walker = _Walker([link for link in ordered if link.kind == "log"])
    walked: set[int] = set()
    spans: list[tuple[dt.datetime, dt.datetime, list[Link]]] = []
    for base in (link for link in ordered if link.is_base):
        if base.kind == "diff" and not any(f.ref == base.base_ref for f in ordered if f.kind == "full"):
            continue  # a differential whose full is gone restores nothing
        first = walker.step(base)
        # a log's time can be older than its base's (whole seconds against microseconds): never end before the start
        end = max(base.time_until, walker.reach(first).time) if first is not None else base.time_until
        spans.append((base.time_until, end, walker.chain(base, stop_at=walked)))
    spans.sort(key=lambda s: (s[0], s[1]))
    groups: list[tuple[dt.datetime, dt.datetime, list[Link], list[Link]]] = []  # start, end, bases, links
    for start, end, chain in spans:
        if groups and start <= groups[-1][1]:
            g_start, g_end, g_bases, g_links = groups[-1]
            g_bases.append(chain[0])
            g_links.extend(chain)
            groups[-1] = (g_start, max(g_end, end), g_bases, g_links)
        else:
            groups.append((start, end, [chain[0]], list(chain)))
    merged = [Window(stream, start, end, bases, chain_links) for start, end, bases, chain_links in groups]
    gaps = _gaps(ordered, merged, explain)
    bases = [link for link in ordered if link.is_base]
    pitr = any(b.log_chain for b in bases)
    notes = [] if pitr or not bases else ["no point-in-time restore: the application keeps no log chain"]
    return StreamPoints(stream, merged, gaps, pitr, notes)


def _gaps(links: Sequence[Link], merged: Sequence[Window], explain: Explain) -> list[Gap]:
    """Between two windows, and after the last one when later logs reach nothing."""
    reached = {id(link) for window in merged for link in window.links}
    unreached = _ordered(link for link in links if link.kind == "log" and id(link) not in reached)
    taken = [link.taken for link in unreached]
    gaps = []
    for i, window in enumerate(merged):
        # by when snapshots were taken, as plan does: a log's whole-second time can precede its full's
        last = max(window.links, key=lambda link: (link.taken, link.time_until))
        following = merged[i + 1] if i + 1 < len(merged) else None
        lo = bisect.bisect_right(taken, last.taken)
        hi = bisect.bisect_left(taken, following.bases[0].taken) if following is not None else len(taken)
        stranded = unreached[lo:hi]
        if following is None and not stranded:
            continue
        first = min(stranded, key=lambda link: (link.taken, link.snapshot_id)) if stranded else None
        if first is not None and last.log_chain and first.start.continues(last.end) and last.end < first.end:
            reason = f"the log chain forks after {last.end} (two log snapshots continue it; forget the wrong one)"
        elif last.log_chain:
            reason = explain(last.end, first.start if first is not None else None)
        else:
            reason = f"{last.describe()} keeps no log chain"
        nxt = following.bases[0] if following is not None else first
        gaps.append(Gap(window.stream, last, nxt, reason))
    return gaps


def dependencies(links: Sequence[Link]) -> dict[str, set[str]]:
    """For each snapshot, the other snapshots it needs to be restorable (over all streams).

    A full needs nothing; a differential its full; a log every link from the newest base that
    reaches it (the shortest chain).  A log no base reaches needs nothing: it restores nothing.
    """
    needs: dict[str, set[str]] = defaultdict(set)
    for group in by_stream(links).values():
        walker = _Walker([link for link in group if link.kind == "log"])
        fulls = {f.ref: f for f in group if f.kind == "full"}
        bases = sorted((b for b in group if b.is_base), key=lambda b: (b.time_until, b.taken), reverse=True)
        for link in group:
            needs[link.snapshot_id]  # every snapshot has an entry
            if link.kind == "diff" and link.base_ref in fulls:
                needs[link.snapshot_id].add(fulls[link.base_ref].snapshot_id)
        reached: set[int] = set()
        for base in bases:  # newest first: a log needs the chain from the newest base that reaches it
            if base.kind == "diff" and base.base_ref not in fulls:
                continue
            path = [fulls[base.base_ref].snapshot_id] if base.kind == "diff" and base.base_ref else []
            path.append(base.snapshot_id)
            # past the first log a newer base reached, the chain is that base's (its suffix is shared)
            for log in walker.chain(base, stop_at=reached)[1:]:
                needs[log.snapshot_id].update(path)
                path.append(log.snapshot_id)
    for snapshot_id, needed in needs.items():
        needed.discard(snapshot_id)
    return dict(needs)


__all__ = [
    "LINK_KINDS",
    "ChainPlan",
    "Explain",
    "Gap",
    "Link",
    "LinkKind",
    "Position",
    "StreamPoints",
    "Target",
    "Window",
    "by_stream",
    "default_explain",
    "dependencies",
    "follow",
    "iso",
    "plan",
    "windows",
]
