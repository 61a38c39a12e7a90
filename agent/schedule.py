"""Schedules and the decision of what runs when (``spec/agent.md`` §3).  Pure: no wall clock.

A :class:`Schedule` is a cron expression (five fields or an ``@daily``-style alias, read by croniter
in the agent's time zone) or ``every N{s,m,h,d}`` (intervals anchored at the Unix epoch in UTC, so
``every 15m`` fires at :00, :15, :30 and :45).  Every instant here is an aware ``datetime``; what
the functions return is in UTC.

Cron times are wall-clock times in the zone.  The mapping from a wall time to an instant:

* a wall time that exists once is that instant;
* a wall time in a spring-forward gap (02:30 on the day Berlin skips 02:00–03:00) does not exist: it
  fires at the first instant after the gap (03:00 CEST), and every gap time of one schedule collapses
  into that one firing;
* a wall time that exists twice (fall back) fires once, at its first occurrence; during the repeated
  hour nothing fires a second time.

The mapping is monotonic (a later wall time never maps to an earlier instant), which is what lets
:meth:`Schedule.next_fire` and :meth:`Schedule.prev_fire` walk croniter's naive wall times.

:func:`due` takes a job, what was fired last (``state.last_fired``: mode → fire time) and ``now``,
and decides what runs: per mode the newest fire time in ``(last_fired, now]`` (missed fire times
collapse into one run), the largest mode when several are due at once (full > diff > log; the
others count as fired), nothing while the job's window is closed.  The caller records
:attr:`Due.fired` into its state when it starts the run, or when it skips it because the job is
still running (an overlap: spec §3), so the same fire time is never decided twice.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

from dtstore.errors import UsageError

if TYPE_CHECKING:
    from dtstore.agent.config import Job

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)

MODE_ORDER = ("full", "diff", "log")
"""largest first: when several modes of one job are due at once, the first of these runs"""

DEFAULT_GRACE = dt.timedelta(minutes=1)
"""without ``catch_up``, a run that became due longer ago than this (the agent was down) is dropped"""

_EVERY = re.compile(r"^every\s+(\d+)\s*([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)\s*([smhd])")
_CRON_ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
SCHEDULE_HINT = "use cron (5 fields, e.g. \"0 1 * * 0\") or every N{s,m,h,d} (e.g. \"every 15m\")"


class ScheduleError(UsageError):
    """A schedule, duration or window that cannot be read (exit 2)."""


# --- durations -------------------------------------------------------------------------------------

def parse_duration(text: object) -> dt.timedelta:
    """``"30m"``, ``"2h"``, ``"1h30m"``, ``"7d"``, ``"0s"`` (units s, m, h, d); an integer is seconds."""
    if isinstance(text, bool):
        raise ScheduleError(f"bad duration {text!r}: use e.g. \"30s\", \"15m\", \"2h\", \"7d\"")
    if isinstance(text, int):
        if text < 0:
            raise ScheduleError(f"bad duration {text}: must not be negative")
        return dt.timedelta(seconds=text)
    if not isinstance(text, str):
        raise ScheduleError(f"bad duration {text!r}: use a string such as \"30s\", \"15m\", \"2h\", \"7d\"")
    compact = text.strip().replace(" ", "")
    if not compact or _DURATION.sub("", compact):
        raise ScheduleError(f"bad duration {text!r}: use numbers with units s, m, h, d, "
                            "e.g. \"90s\", \"1h30m\", \"7d\"")
    total = sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(compact))
    return dt.timedelta(seconds=total)


def format_duration(delta: dt.timedelta) -> str:
    """The inverse of :func:`parse_duration`: ``1h30m``, ``7d``, ``0s``."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


# --- wall time ↔ instants --------------------------------------------------------------------------

def _aware(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: the agent works with aware datetimes only")
    return moment.astimezone(UTC)  # same-zone arithmetic and comparison would be wall-clock


def wall(moment: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The naive wall-clock time of ``moment`` in ``tz`` (through UTC: ``astimezone`` to the zone a
    datetime already has would not normalize a time inside a gap)."""
    return _aware(moment).astimezone(UTC).astimezone(tz).replace(tzinfo=None)


def _exists(naive: dt.datetime, tz: dt.tzinfo) -> bool:
    return wall(naive.replace(tzinfo=tz), tz) == naive


def instant(naive: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The instant (UTC) a wall-clock time of ``tz`` fires at: its first occurrence, or for a time
    inside a spring-forward gap the first instant after the gap."""
    first = naive.replace(tzinfo=tz, fold=0)
    if _exists(naive, tz):
        return first.astimezone(UTC)
    # In a gap, fold=0 reads the time with the offset before the change and fold=1 with the offset
    # after it: the change lies between the two instants.  Find it to the second.
    a = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    b = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = min(a, b), max(a, b)
    offset_after = hi.astimezone(tz).utcoffset()
    while hi - lo > dt.timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid <= lo:
            break
        if mid.astimezone(tz).utcoffset() == offset_after:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0)


# --- schedules ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    """A cron expression (``cron``) read in ``tz``, or an interval (``interval``) anchored at the epoch."""

    text: str
    cron: str | None = None
    interval: dt.timedelta | None = None
    tz: dt.tzinfo = field(default=UTC, compare=False)

    @property
    def kind(self) -> str:
        return "cron" if self.cron is not None else "interval"

    def __str__(self) -> str:
        return self.text

    def next_fire(self, after: dt.datetime) -> dt.datetime:
        """The first fire time strictly after ``after`` (UTC)."""
        after = _aware(after)
        if self.interval is not None:
            step = _seconds(self.interval)
            elapsed = (after - EPOCH) // dt.timedelta(seconds=1)
            return EPOCH + dt.timedelta(seconds=(elapsed // step + 1) * step)
        for moment in self._walk(after, forward=True):
            if moment > after:
                return moment
        raise AssertionError("unreachable: croniter yields forever")  # pragma: no cover

    def prev_fire(self, at: dt.datetime) -> dt.datetime:
        """The newest fire time at or before ``at`` (UTC)."""
        at = _aware(at)
        if self.interval is not None:
            step = _seconds(self.interval)
            elapsed = (at - EPOCH) // dt.timedelta(seconds=1)
            return EPOCH + dt.timedelta(seconds=(elapsed // step) * step)
        for moment in self._walk(at, forward=False):
            if moment <= at:
                return moment
        raise AssertionError("unreachable: croniter yields forever")  # pragma: no cover

    def fires(self, start: dt.datetime, end: dt.datetime, limit: int = 100_000) -> Iterator[dt.datetime]:
        """Every fire time in ``(start, end]``, oldest first (at most ``limit``)."""
        moment = start
        for _ in range(limit):
            moment = self.next_fire(moment)
            if moment > end:
                return
            yield moment

    def _walk(self, around: dt.datetime, *, forward: bool) -> Iterator[dt.datetime]:
        """Instants of croniter's wall times, walking from the wall time of ``around``.  Backwards,
        the walk starts later by the size of any fall-back overlap just passed, since a later wall
        time (02:50 CEST) may have fired before ``around`` (02:10 CET)."""
        from croniter import croniter

        start = wall(around, self.tz)
        if not forward:
            before = around - dt.timedelta(days=1)
            overlap = (before.astimezone(self.tz).utcoffset() or dt.timedelta(0)) - (
                around.astimezone(self.tz).utcoffset() or dt.timedelta(0))
            start += max(overlap, dt.timedelta(0)) + dt.timedelta(minutes=1)
        it = croniter(self.cron, start)
        step = it.get_next if forward else it.get_prev
        while True:
            yield instant(step(dt.datetime), self.tz)

    def max_gap(self) -> dt.timedelta:
        """The longest time between two consecutive fire times (for a derived RPO): see :func:`max_gap`."""
        return max_gap([self])


def _seconds(interval: dt.timedelta) -> int:
    return int(interval.total_seconds())


_GAP_START = dt.datetime(2026, 1, 5)  # a Monday, naive UTC: the sample has no DST
_GAP_LIMIT = 60_000


def _horizon(schedule: Schedule) -> dt.timedelta:
    """How long a sample must be to hold every gap: the schedule repeats daily, weekly or yearly."""
    if schedule.interval is not None:
        return max(dt.timedelta(days=2), 3 * schedule.interval)
    from croniter import croniter

    _, _, dom, month, dow = croniter(schedule.cron).expanded
    if dom == ["*"] and month == ["*"]:
        return dt.timedelta(days=2 if dow == ["*"] else 15)
    return dt.timedelta(days=400)


def _sample(schedule: Schedule, end: dt.datetime) -> Iterator[dt.datetime]:
    """Fire times (naive UTC) from ``_GAP_START`` to ``end``, from one croniter (fast)."""
    if schedule.interval is not None:
        step = dt.timedelta(seconds=_seconds(schedule.interval))
        moment = dt.datetime(1970, 1, 1) + step * -(-(_GAP_START - dt.datetime(1970, 1, 1)) // step)
        while moment <= end:
            yield moment
            moment += step
        return
    from croniter import croniter

    it = croniter(schedule.cron, _GAP_START - dt.timedelta(seconds=1))
    while True:
        moment = it.get_next(dt.datetime)
        if moment > end:
            return
        yield moment


def max_gap(schedules: Iterable[Schedule]) -> dt.timedelta:
    """The longest time between consecutive fire times of the union of ``schedules`` (one job's modes),
    read in UTC over two days, 15 days or 400 days (as the cron fields repeat daily, weekly or
    yearly; at most 60 000 fire times).  A job's derived RPO is twice this."""
    return _max_gap(tuple(sorted({s.text for s in schedules})))


@lru_cache(maxsize=256)
def _max_gap(texts: tuple[str, ...]) -> dt.timedelta:
    import heapq
    import itertools

    schedules = [parse_schedule(t) for t in texts]
    intervals = [s.interval for s in schedules if s.interval is not None]
    if intervals and len(intervals) == len(schedules):
        return min(intervals)  # epoch-anchored: every interval fires at each multiple of the shortest's period start
    gap = dt.timedelta(0)
    previous: dt.datetime | None = None
    end = _GAP_START + max(_horizon(s) for s in schedules)
    for moment in itertools.islice(heapq.merge(*(_sample(s, end) for s in schedules)), _GAP_LIMIT):
        if previous is not None:
            gap = max(gap, moment - previous)
        previous = moment
    if intervals:
        gap = min(gap, min(intervals)) if gap else min(intervals)
    return gap


def parse_schedule(text: object, tz: dt.tzinfo = UTC) -> Schedule:
    """``"0 1 * * 0"``, ``"@daily"`` or ``"every 15m"``; :class:`ScheduleError` naming the forms."""
    if not isinstance(text, str):
        raise ScheduleError(f"bad schedule {text!r}: {SCHEDULE_HINT}")
    clean = " ".join(text.split())
    match = _EVERY.match(clean)
    if match:
        n, unit = int(match.group(1)), match.group(2)
        if n <= 0:
            raise ScheduleError(f"bad schedule \"{text}\": the interval must be at least 1{unit}")
        return Schedule(clean, interval=dt.timedelta(seconds=n * _UNIT_SECONDS[unit]), tz=tz)
    if clean.startswith("every"):
        raise ScheduleError(f"bad schedule \"{text}\": {SCHEDULE_HINT}")
    fields = clean.split(" ")
    if not (len(fields) == 5 or (len(fields) == 1 and clean.lower() in _CRON_ALIASES)):
        raise ScheduleError(f"bad schedule \"{text}\": {SCHEDULE_HINT}")
    from croniter import croniter

    if not croniter.is_valid(clean):
        raise ScheduleError(f"bad schedule \"{text}\": not a valid cron expression; {SCHEDULE_HINT}")
    try:  # croniter accepts some impossible dates (30 February) only to fail when iterating
        Schedule(clean, cron=clean, tz=UTC).next_fire(dt.datetime(2026, 1, 1, tzinfo=UTC))
    except Exception as exc:  # croniter raises its own error types
        raise ScheduleError(f"bad schedule \"{text}\": it never fires ({exc})") from None
    return Schedule(clean, cron=clean, tz=tz)


# --- windows ---------------------------------------------------------------------------------------

_WINDOW = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")


@dataclass(frozen=True)
class Window:
    """Daily hours in which a job's runs may start, read in ``tz``; ``start > end`` spans midnight."""

    text: str
    start: dt.time
    end: dt.time
    tz: dt.tzinfo = field(default=UTC, compare=False)

    def __str__(self) -> str:
        return self.text

    def contains(self, moment: dt.datetime) -> bool:
        t = wall(moment, self.tz).time()
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def next_open(self, moment: dt.datetime) -> dt.datetime:
        """``moment`` if the window is open then, else the instant it opens next (UTC)."""
        if self.contains(moment):
            return _aware(moment).astimezone(UTC)
        day = wall(moment, self.tz).date()
        for offset in range(3):
            opens = instant(dt.datetime.combine(day + dt.timedelta(days=offset), self.start), self.tz)
            if opens > moment:
                return opens
        raise AssertionError("unreachable: a window opens every day")  # pragma: no cover


def parse_window(text: object, tz: dt.tzinfo = UTC) -> Window:
    """``"22:00-06:00"``: start and end as HH:MM in the agent's zone."""
    hint = "use HH:MM-HH:MM, e.g. \"22:00-06:00\""
    if not isinstance(text, str):
        raise ScheduleError(f"bad window {text!r}: {hint}")
    match = _WINDOW.match(text.strip())
    if not match:
        raise ScheduleError(f"bad window \"{text}\": {hint}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise ScheduleError(f"bad window \"{text}\": hours 0-23, minutes 0-59")
    start, end = dt.time(h1, m1), dt.time(0, 0) if h2 == 24 else dt.time(h2, m2)
    if start == end:
        raise ScheduleError(f"bad window \"{text}\": it starts when it ends; leave window out to allow any time")
    return Window(text.strip(), start, end, tz)


# --- what is due -----------------------------------------------------------------------------------

class FireState(Protocol):
    """What :func:`due` needs of a job's state (``agent/state.py``): mode → the last fire time recorded."""

    @property
    def last_fired(self) -> Mapping[str, dt.datetime]: ...


@dataclass(frozen=True)
class Due:
    """One run to start now: ``mode`` for the fire time ``scheduled_at`` (UTC).  ``fired`` holds
    every mode this decision consumes (the mode that runs and any smaller ones due at the same
    time) with its fire time: record it into ``last_fired`` when the run starts or is skipped."""

    job: str
    mode: str
    scheduled_at: dt.datetime
    fired: Mapping[str, dt.datetime]
    missed: int = 0
    """fire times before ``scheduled_at`` that were collapsed into this run (downtime, sleep)"""


def _last(state: FireState | Mapping[str, dt.datetime]) -> Mapping[str, dt.datetime]:
    if isinstance(state, Mapping):
        return state
    return state.last_fired


def _order(mode: str) -> int:
    return MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER)


def _count(schedule: Schedule, begin: dt.datetime, fire: dt.datetime) -> int:
    """Fire times in ``(begin, fire)`` (at most 10 000 counted for cron)."""
    if schedule.interval is not None:
        step = _seconds(schedule.interval)
        first = schedule.next_fire(begin)
        return max(0, int((fire - first).total_seconds()) // step) if first < fire else 0
    return sum(1 for _ in schedule.fires(begin, fire - dt.timedelta(microseconds=1), limit=10_000))


def due(job: Job, state: FireState | Mapping[str, dt.datetime], now: dt.datetime, *,
        catch_up: bool = True, since: dt.datetime | None = None,
        grace: dt.timedelta = DEFAULT_GRACE) -> list[Due]:
    """What of ``job`` to start at ``now``: at most one :class:`Due` (a job runs one mode at a time).

    A mode never fired (not in ``last_fired``) counts from ``since`` (the agent's start), or, without
    it, is not due: nothing runs until the first fire time after the agent starts.  Without
    ``catch_up``, a run that could have started more than ``grace`` ago (the agent was down at its
    time) is dropped; it still appears in ``fired`` of the next decision, so it is never run late.
    While the job's window is closed nothing is due; the run waits for the window to open.
    """
    now = _aware(now)
    last = _last(state)
    pending: dict[str, tuple[dt.datetime, dt.datetime]] = {}  # mode → (fire time, since)
    for mode, schedule in job.schedules.items():
        begin = last.get(mode, since)
        if begin is None or begin >= now:
            continue
        newest = schedule.prev_fire(now)
        if newest > begin:
            pending[mode] = (newest, begin)
    if not pending:
        return []
    if job.window is not None and not job.window.contains(now):
        return []
    runnable = list(pending)
    if not catch_up:
        def fresh(fire: dt.datetime) -> bool:
            startable = job.window.next_open(fire) if job.window is not None else fire
            return now - startable <= grace
        runnable = [m for m in runnable if fresh(pending[m][0])]
        if not runnable:
            return []
    mode = min(runnable, key=_order)
    fire, begin = pending[mode]
    missed = _count(job.schedules[mode], begin, fire)
    return [Due(job=job.name, mode=mode, scheduled_at=fire, fired={m: v[0] for m, v in pending.items()},
                missed=missed)]


def next_runs(job: Job, state: FireState | Mapping[str, dt.datetime], now: dt.datetime, *,
              since: dt.datetime | None = None) -> dict[str, dt.datetime]:
    """Per mode, when its next run may start (UTC): its next fire time after ``now`` (or a pending
    one), moved to the window's opening when it falls outside the window."""
    now = _aware(now)
    last = _last(state)
    found: dict[str, dt.datetime] = {}
    for mode, schedule in job.schedules.items():
        begin = last.get(mode, since)
        fire = schedule.prev_fire(now)
        if begin is None or fire <= begin:
            fire = schedule.next_fire(now)
        found[mode] = job.window.next_open(fire) if job.window is not None else fire
    return found


def next_wakeup(job: Job, state: FireState | Mapping[str, dt.datetime], now: dt.datetime, *,
                since: dt.datetime | None = None) -> dt.datetime | None:
    """The earliest instant after ``now`` at which :func:`due` may decide something new for ``job``."""
    times = [t if t > now else now for t in next_runs(job, state, now, since=since).values()]
    future = [t for t in times if t > now]
    return min(future) if future else None


__all__ = ["DEFAULT_GRACE", "MODE_ORDER", "Due", "FireState", "Schedule", "ScheduleError", "Window", "due",
           "format_duration", "instant", "max_gap", "next_runs", "next_wakeup", "parse_duration", "parse_schedule",
           "parse_window", "wall"]
