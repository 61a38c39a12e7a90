"""Schedules and due() through days, driven by a fake clock (spec/agent.md §3).

``due`` is pure, so the clock is simply the ``now`` the tests pass; :class:`Sim` plays the daemon:
it jumps from one wake-up (``next_wakeup``) to the next, starts what is due, records ``Due.fired``
into its state, and skips a due run while the job's previous run is still going.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo

import pytest

from dtstore.agent.config import Job
from dtstore.agent.schedule import (
    Due,
    Schedule,
    ScheduleError,
    due,
    format_duration,
    instant,
    next_runs,
    next_wakeup,
    parse_duration,
    parse_schedule,
    parse_window,
)

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(text: str, tz: dt.tzinfo = UTC) -> dt.datetime:
    """An aware time from ``YYYY-MM-DD HH:MM`` wall time in ``tz`` (first occurrence)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz)


def job(schedules: Mapping[str, str], tz: dt.tzinfo = UTC, *, window: str | None = None, name: str = "shop") -> Job:
    return Job(name=name, kind="backup", repository="main",
               schedules={m: parse_schedule(s, tz) for m, s in schedules.items()},
               window=parse_window(window, tz) if window else None)


@dataclass
class Run:
    mode: str
    scheduled_at: dt.datetime
    started_at: dt.datetime
    missed: int = 0


@dataclass
class Sim:
    """A fake daemon over a fake clock: every run of the job takes ``duration``."""

    job: Job
    now: dt.datetime
    duration: dt.timedelta = dt.timedelta(0)
    catch_up: bool = True
    last_fired: dict[str, dt.datetime] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    skipped: list[Due] = field(default_factory=list)
    busy_until: dt.datetime | None = None
    started: dt.datetime | None = None

    def __post_init__(self) -> None:
        self.started = self.now

    def step(self) -> None:
        for d in due(self.job, self.last_fired, self.now, catch_up=self.catch_up, since=self.started):
            if self.busy_until is not None and self.now < self.busy_until:
                self.skipped.append(d)
            else:
                self.runs.append(Run(d.mode, d.scheduled_at, self.now, d.missed))
                self.busy_until = self.now + self.duration
            self.last_fired.update(d.fired)

    def run_until(self, end: dt.datetime) -> None:
        """Wake at each instant something may become due, like the daemon's timer, until ``end``."""
        while True:
            self.step()
            wake = next_wakeup(self.job, self.last_fired, self.now, since=self.started)
            if wake is None or wake > end:
                self.now = end
                self.step()
                return
            self.now = wake


# --- parsing -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [("every 15m", 900), ("every 6h", 21600), ("every 30s", 30),
                                               ("every 2d", 172800), ("every  1h", 3600)])
def test_intervals(text: str, seconds: int) -> None:
    s = parse_schedule(text)
    assert s.kind == "interval" and s.interval == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0 1 * * 0", "0 1 * * 1-6", "*/5 9-17 * * mon-fri", "@daily", "@hourly"])
def test_cron_expressions(text: str) -> None:
    assert parse_schedule(text).kind == "cron"


@pytest.mark.parametrize("text", ["every 15x", "every 0m", "every m", "0 1 * *", "0 1 * * * *", "61 * * * *",
                                  "", "daily", "0 0 30 2 *"])
def test_bad_schedules_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ScheduleError, match="bad schedule") as info:
        parse_schedule(text)
    assert info.value.exit_code == 2
    if text not in ("0 0 30 2 *", "every 0m"):
        assert "every N{s,m,h,d}" in str(info.value)


def test_durations() -> None:
    assert parse_duration("30m") == dt.timedelta(minutes=30)
    assert parse_duration("1h30m") == dt.timedelta(minutes=90)
    assert parse_duration("7d") == dt.timedelta(days=7)
    assert parse_duration(90) == dt.timedelta(seconds=90)
    assert format_duration(dt.timedelta(minutes=90)) == "1h30m" and format_duration(dt.timedelta(0)) == "0s"
    for bad in ("30", "2x", "h", "", True, -1, 1.5):
        with pytest.raises(ScheduleError, match="bad duration"):
            parse_duration(bad)


def test_windows() -> None:
    night = parse_window("22:00-06:00", BERLIN)
    assert night.contains(at("2026-12-02 23:30", BERLIN)) and night.contains(at("2026-12-03 05:59", BERLIN))
    assert not night.contains(at("2026-12-02 12:00", BERLIN))
    assert night.next_open(at("2026-12-02 12:00", BERLIN)) == at("2026-12-02 22:00", BERLIN)
    day = parse_window("09:00-17:00")
    assert day.next_open(at("2026-12-02 18:00")) == at("2026-12-03 09:00")
    evening = parse_window("18:00-24:00")
    assert evening.contains(at("2026-12-02 23:59")) and not evening.contains(at("2026-12-02 00:00"))
    for bad in ("22-06", "25:00-01:00", "10:00-10:00", "00:00-24:00", 5):
        with pytest.raises(ScheduleError, match="bad window"):
            parse_window(bad)


# --- fire times ----------------------------------------------------------------------------------------

def test_intervals_are_anchored_at_the_epoch_in_utc() -> None:
    s = parse_schedule("every 15m", BERLIN)
    assert s.next_fire(at("2026-12-02 10:07")) == at("2026-12-02 10:15")
    assert s.next_fire(at("2026-12-02 10:15")) == at("2026-12-02 10:30")
    assert s.prev_fire(at("2026-12-02 10:15")) == at("2026-12-02 10:15")
    six = parse_schedule("every 6h", BERLIN)
    assert six.next_fire(at("2026-12-02 01:00", BERLIN)) == at("2026-12-02 06:00")  # UTC, not Berlin


def test_cron_is_read_in_the_zone() -> None:
    s = parse_schedule("0 1 * * 0", BERLIN)
    assert s.next_fire(at("2026-12-02 12:00")) == at("2026-12-06 01:00", BERLIN)
    assert s.prev_fire(at("2026-12-06 01:00", BERLIN)) == at("2026-12-06 01:00", BERLIN)
    assert s.prev_fire(at("2026-12-06 00:59", BERLIN)) == at("2026-11-29 01:00", BERLIN)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        parse_schedule("every 1h").next_fire(dt.datetime(2026, 1, 1))


@pytest.mark.parametrize(("tz", "day", "gap_end"), [
    (BERLIN, "2026-03-29", "2026-03-29 01:00"),      # 02:00 CET → 03:00 CEST
    (NEW_YORK, "2026-03-08", "2026-03-08 07:00"),    # 02:00 EST → 03:00 EDT
])
def test_spring_forward_a_time_in_the_gap_fires_at_its_end(tz: ZoneInfo, day: str, gap_end: str) -> None:
    end = at(gap_end)
    assert instant(dt.datetime.fromisoformat(f"{day} 02:30"), tz) == end
    daily = parse_schedule("30 2 * * *", tz)
    fires = list(daily.fires(at(f"{day} 00:00", tz) - dt.timedelta(days=1), at(f"{day} 00:00", tz)
                             + dt.timedelta(days=2)))
    assert fires[1] == end
    assert [f.astimezone(tz).strftime("%d %H:%M") for f in fires] == [
        f"{int(day[-2:]) - 1:02d} 02:30", f"{day[-2:]} 03:00", f"{int(day[-2:]) + 1:02d} 02:30"]
    assert daily.prev_fire(end + dt.timedelta(minutes=10)) == end


@pytest.mark.parametrize(("tz", "day"), [(BERLIN, "2026-03-29"), (NEW_YORK, "2026-03-08")])
def test_spring_forward_day_quarter_hours(tz: ZoneInfo, day: str) -> None:
    """23 real hours: the four gap times collapse into the 03:00 that exists anyway: 92 runs."""
    start = at(f"{day} 00:00", tz) - dt.timedelta(seconds=1)
    end = at(f"{day} 23:59", tz)
    fires = list(parse_schedule("*/15 * * * *", tz).fires(start, end))
    assert len(fires) == 92 and len(set(fires)) == 92
    assert sorted(fires) == fires


@pytest.mark.parametrize(("tz", "day"), [(BERLIN, "2026-10-25"), (NEW_YORK, "2026-11-01")])
def test_fall_back_a_repeated_time_fires_once(tz: ZoneInfo, day: str) -> None:
    daily = parse_schedule("30 1 * * *" if tz is NEW_YORK else "30 2 * * *", tz)
    start = at(f"{day} 00:00", tz).astimezone(UTC)  # real-time arithmetic from here
    fires = list(daily.fires(start, start + dt.timedelta(hours=25)))
    assert len(fires) == 1 and fires[0].astimezone(tz).fold == 0
    assert fires[0].astimezone(tz).utcoffset() == (start + dt.timedelta(hours=1)).astimezone(tz).utcoffset()
    # every quarter hour of the day: 25 real hours, but the repeated hour fires only once
    quarter = list(parse_schedule("*/15 * * * *", tz).fires(start - dt.timedelta(seconds=1),
                                                            start + dt.timedelta(hours=24, minutes=59)))
    assert len(quarter) == 96
    gaps = {b - a for a, b in itertools.pairwise(quarter)}
    assert gaps == {dt.timedelta(minutes=15), dt.timedelta(hours=1, minutes=15)}
    # an interval schedule is UTC: all 100 quarter hours of the 25-hour day
    every = list(parse_schedule("every 15m", tz).fires(start - dt.timedelta(seconds=1),
                                                       start + dt.timedelta(hours=24, minutes=59)))
    assert len(every) == 100


def test_prev_fire_during_the_repeated_hour_sees_the_first_pass() -> None:
    s = parse_schedule("50 2 * * *", BERLIN)
    second_pass = dt.datetime(2026, 10, 25, 1, 10, tzinfo=UTC)  # 02:10 CET, after 02:50 CEST fired
    assert s.prev_fire(second_pass) == dt.datetime(2026, 10, 25, 0, 50, tzinfo=UTC)
    assert s.next_fire(second_pass) == at("2026-10-26 02:50", BERLIN)


def test_max_gap() -> None:
    assert parse_schedule("every 15m").max_gap() == dt.timedelta(minutes=15)
    assert parse_schedule("0 1 * * 1-6").max_gap() == dt.timedelta(days=2)
    assert parse_schedule("0 1 * * 0").max_gap() == dt.timedelta(days=7)
    assert parse_schedule("0 1 1 * *").max_gap() == dt.timedelta(days=31)


# --- due(): days through the fake clock ------------------------------------------------------------------

@pytest.mark.parametrize(("monday", "hours"), [("2026-11-30", 168), ("2026-03-23", 167), ("2026-10-19", 169)],
                         ids=["plain", "spring-forward", "fall-back"])
def test_a_week_of_the_issue_example(monday: str, hours: int) -> None:
    """full on Sunday, diff Monday to Saturday at 01:00, log every 15 minutes: at 01:00 the larger
    mode runs and the log counts as fired.  The weeks with Berlin's DST changes have 167 and 169 hours."""
    shop = job({"full": "0 1 * * 0", "diff": "0 1 * * 1-6", "log": "every 15m"}, BERLIN)
    start = at(f"{monday} 00:00", BERLIN)
    sunday = (start + dt.timedelta(days=6)).date().isoformat()
    sim = Sim(shop, start)
    sim.run_until(at(f"{monday} 00:00", BERLIN) + dt.timedelta(days=7))  # wall-clock arithmetic: next Monday
    by_mode = {m: [r for r in sim.runs if r.mode == m] for m in ("full", "diff", "log")}
    assert [r.started_at for r in by_mode["full"]] == [at(f"{sunday} 01:00", BERLIN)]
    assert len(by_mode["diff"]) == 6 and all(r.started_at.astimezone(BERLIN).hour == 1 for r in by_mode["diff"])
    assert len(sim.runs) == hours * 4  # every quarter hour after the start, up to and including the end
    assert len(by_mode["log"]) == hours * 4 - 7
    assert all(r.started_at == r.scheduled_at and r.missed == 0 for r in sim.runs)
    assert len({r.scheduled_at for r in sim.runs}) == len(sim.runs)
    assert not sim.skipped


def test_fake_clock_ticking_every_minute_decides_each_fire_time_once() -> None:
    shop = job({"full": "0 1 * * 0", "log": "every 15m"})
    sim = Sim(shop, at("2026-12-05 23:00"))
    end = at("2026-12-06 03:00")
    while sim.now < end:
        sim.step()
        sim.now += dt.timedelta(seconds=37)
    assert [r.mode for r in sim.runs].count("full") == 1
    assert len(sim.runs) == 15  # the quarter hours after 23:00 (the start) and before 03:00; 01:00 is the full
    assert all(dt.timedelta(0) <= r.started_at - r.scheduled_at < dt.timedelta(seconds=37) for r in sim.runs)


@pytest.mark.parametrize(("tz", "spring", "fall"), [(BERLIN, "2026-03-29", "2026-10-25"),
                                                    (NEW_YORK, "2026-03-08", "2026-11-01")])
def test_dst_days_through_the_daemon(tz: ZoneInfo, spring: str, fall: str) -> None:
    for day, quarter_runs in ((spring, 92), (fall, 96)):
        nightly = job({"full": "30 2 * * *"}, tz)
        sim = Sim(nightly, at(f"{day} 00:00", tz) - dt.timedelta(days=1))
        sim.run_until(at(f"{day} 00:00", tz) + dt.timedelta(days=2))
        assert len(sim.runs) == 3, (day, sim.runs)
        quarters = job({"log": "*/15 * * * *"}, tz)
        sim = Sim(quarters, at(f"{day} 00:00", tz) - dt.timedelta(seconds=1))
        sim.run_until(at(f"{day} 23:59", tz))
        assert len(sim.runs) == quarter_runs


def test_missed_runs_after_a_pause_collapse_into_one() -> None:
    shop = job({"full": "0 1 * * *", "log": "every 15m"})
    last = {"full": at("2026-12-01 01:00"), "log": at("2026-12-01 01:00")}
    now = at("2026-12-03 09:07")  # the machine slept two and a half days
    [d] = due(shop, last, now)
    assert (d.mode, d.scheduled_at) == ("full", at("2026-12-03 01:00"))
    assert d.fired == {"full": at("2026-12-03 01:00"), "log": at("2026-12-03 09:00")}
    assert d.missed == 1
    after = {**last, **d.fired}
    assert due(shop, after, now) == []
    [later] = due(shop, after, at("2026-12-03 09:15"))
    assert (later.mode, later.missed) == ("log", 0)


def test_missed_counts_for_intervals_and_cron() -> None:
    t0 = at("2026-12-02 10:00")
    [d] = due(job({"log": "every 15m"}), {"log": t0}, t0 + dt.timedelta(hours=1, minutes=7))
    assert (d.scheduled_at, d.missed) == (at("2026-12-02 11:00"), 3)
    [c] = due(job({"log": "*/15 * * * *"}), {"log": t0}, t0 + dt.timedelta(hours=1, minutes=7))
    assert (c.scheduled_at, c.missed) == (at("2026-12-02 11:00"), 3)
    [y] = due(job({"log": "every 15m"}), {"log": t0}, t0 + dt.timedelta(days=365))
    assert y.missed == 365 * 96 - 1


def test_without_catch_up_a_run_missed_while_down_does_not_run() -> None:
    shop = job({"full": "0 1 * * *"})
    last = {"full": at("2026-12-01 01:00")}
    assert due(shop, last, at("2026-12-03 09:07"), catch_up=False) == []
    [d] = due(shop, last, at("2026-12-03 09:07"), catch_up=True)
    assert d.scheduled_at == at("2026-12-03 01:00")
    # the next fire time runs on time (within the grace), and consumes the stale one
    [nxt] = due(shop, last, at("2026-12-04 01:00:20"), catch_up=False)
    assert nxt.scheduled_at == at("2026-12-04 01:00")


def test_first_start_without_state_waits_for_the_first_fire_after_start() -> None:
    shop = job({"full": "0 1 * * *"})
    start = at("2026-12-03 09:00")
    assert due(shop, {}, start) == []
    assert due(shop, {}, at("2026-12-04 02:00")) == []  # no since: never
    assert due(shop, {}, start, since=start) == []
    [d] = due(shop, {}, at("2026-12-04 01:00"), since=start)
    assert d.scheduled_at == at("2026-12-04 01:00")


def test_overlaps_are_decided_once_and_skipped_by_the_daemon() -> None:
    """Runs take 40 minutes: of the quarter-hour logs, two of every three come while one is going."""
    logs = job({"log": "every 15m"})
    sim = Sim(logs, at("2026-12-02 00:00"), duration=dt.timedelta(minutes=40))
    sim.run_until(at("2026-12-02 06:00"))
    assert len(sim.runs) + len(sim.skipped) == 24
    assert len(sim.runs) == 8 and len(sim.skipped) == 16
    decided = [r.scheduled_at for r in sim.runs] + [d.scheduled_at for d in sim.skipped]
    assert len(set(decided)) == len(decided)


def test_a_window_holds_a_due_run_until_it_opens() -> None:
    files = job({"full": "0 12 * * *"}, BERLIN, window="22:00-06:00")
    sim = Sim(files, at("2026-12-02 11:00", BERLIN))
    sim.run_until(at("2026-12-04 11:00", BERLIN))
    assert [(r.started_at, r.scheduled_at) for r in sim.runs] == [
        (at("2026-12-02 22:00", BERLIN), at("2026-12-02 12:00", BERLIN)),
        (at("2026-12-03 22:00", BERLIN), at("2026-12-03 12:00", BERLIN))]
    last = {"full": at("2026-12-01 12:00", BERLIN)}
    assert due(files, last, at("2026-12-02 13:00", BERLIN)) == []
    assert next_runs(files, last, at("2026-12-02 13:00", BERLIN)) == {"full": at("2026-12-02 22:00", BERLIN)}
    # without catch-up, a window that opened while the agent was down drops the run
    assert due(files, last, at("2026-12-02 23:30", BERLIN), catch_up=False) == []
    assert due(files, last, at("2026-12-02 22:00:30", BERLIN), catch_up=False) != []


def test_next_runs_and_wakeup() -> None:
    shop = job({"full": "0 1 * * 0", "log": "every 15m"})
    now = at("2026-12-02 10:07")
    last = {"full": at("2026-11-29 01:00"), "log": at("2026-12-02 10:00")}
    assert next_runs(shop, last, now) == {"full": at("2026-12-06 01:00"), "log": at("2026-12-02 10:15")}
    assert next_wakeup(shop, last, now) == at("2026-12-02 10:15")


def test_due_never_reads_the_wall_clock() -> None:
    time_machine = pytest.importorskip("time_machine")
    shop = job({"full": "0 1 * * *", "log": "every 15m"})
    last = {"full": at("2026-12-01 01:00"), "log": at("2026-12-01 01:00")}
    expected = due(shop, last, at("2026-12-01 01:15"))
    with time_machine.travel(dt.datetime(1999, 6, 1, tzinfo=UTC), tick=False):
        assert due(shop, last, at("2026-12-01 01:15")) == expected
    assert expected[0].mode == "log"


def test_the_state_can_be_an_object_with_last_fired() -> None:
    @dataclass
    class State:
        last_fired: Mapping[str, dt.datetime]

    shop = job({"full": "every 1h"})
    [d] = due(shop, State({"full": at("2026-12-02 09:00")}), at("2026-12-02 10:00"))
    assert d == Due("shop", "full", at("2026-12-02 10:00"), {"full": at("2026-12-02 10:00")})
    assert replace(d, missed=0) == d
    assert isinstance(shop.schedules["full"], Schedule)
