"""Property tests (hypothesis) for the generic chain planner, ``dtstore.connectors.chains``.

Histories are synthetic: fulls, differentials (naming a full's ``ref`` as their ``base_ref``) and logs
over one stream, each snapshot an hour after the previous one, some links then removed at random (a
forget, a lost upload).  Two position models: ``Scn`` (a log continues a chain only where it ends
exactly) and ``Lsn`` (SQL Server: a log continues a chain whose end lies inside it).  A log usually
starts where the newest snapshot ended (a base or a log, as MySQL archives), sometimes where the
previous log ended (a continuous log stream a base sits inside), sometimes further on (a hole).

The oracle is written independently of the planner: a breadth-first search over every log that
continues a point, with no preference between bases.  Properties:

* ``plan`` succeeds exactly when the oracle says the target is restorable, and a removed link inside a
  chain is detected (ChainError) unless another base covers the target;
* every plan starts at a full at or before the target, takes a differential only if it belongs to
  that full, is contiguous (each log continues the previous end), and stops at the link that covers
  the target;
* ``allow_gap`` returns the latest plan with ``.gap`` set exactly when ``latest`` raises;
* ``windows`` never claims time that ``plan`` refuses, and claims all the time the oracle can restore;
* ``dependencies``: a snapshot together with what it needs is enough to restore its own point.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtstore.connectors.chains import ChainPlan, Link, Target, dependencies, plan, windows
from dtstore.connectors.positions import Lsn, Scn
from dtstore.errors import ChainError

T0 = dt.datetime(2026, 5, 4, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Position = Callable[[int], Any]


@dataclass(frozen=True)
class History:
    links: list[Link]
    """all links ever made, oldest first"""
    removed: frozenset[str]

    @property
    def kept(self) -> list[Link]:
        return [link for link in self.links if link.snapshot_id not in self.removed]


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["full", "diff", "log", "log", "log", "log"]),
        st.sampled_from(["newest", "newest", "newest", "previous log", "hole"]),  # where a log starts
        st.integers(0, 3),  # which full a differential belongs to (0: the newest)
        st.sampled_from([True, True, True, False]),  # log_chain of a full (False: no point-in-time restore)
    ),
    min_size=1,
    max_size=12,
)


def build(steps: Sequence[tuple[str, str, int, bool]], position: Position, removed: set[int]) -> History:
    links: list[Link] = []
    fulls: list[Link] = []
    pos, newest_end, log_end = 0, None, None
    for i, (kind, start_at, which, chained) in enumerate(steps):
        pos += 10
        taken = T0 + i * HOUR
        name = f"{i:02d}{kind[0]}"
        sid = name.ljust(64, "0")
        common: dict[str, Any] = {"snapshot_id": sid, "short_id": name, "taken": taken,
                                  "time_until": taken - dt.timedelta(minutes=1)}
        if kind == "full" or (kind == "diff" and not fulls):
            link = Link(kind="full", start=position(pos), end=position(pos), log_chain=chained,
                        **common)
            fulls.append(link)
        elif kind == "diff":
            base = fulls[max(0, len(fulls) - 1 - which)]
            link = Link(kind="diff", start=position(pos), end=position(pos), base_ref=base.ref, **common)
        else:
            start = {"newest": newest_end, "previous log": log_end, "hole": pos - 5}[start_at]
            link = Link(kind="log", start=position(pos - 10 if start is None else start), end=position(pos),
                        **common)
            log_end = pos
        newest_end = pos
        links.append(link)
    return History(links, frozenset(links[i].snapshot_id for i in removed if i < len(links)))


def histories(position: Position) -> st.SearchStrategy[History]:
    return st.builds(lambda steps, removed: build(steps, position, removed), STEPS,
                     st.sets(st.integers(0, 11), max_size=3))


ANY_HISTORY = st.one_of(histories(Scn), histories(Lsn))


def with_twins(history: History, twins: set[int], position: Position) -> History:
    """A second log for some logs: same start, another end, taken 6 minutes later (a fork)."""
    extra = []
    for i in sorted(twins):
        if i < len(history.links) and history.links[i].kind == "log":
            log = history.links[i]
            extra.append(replace(log, snapshot_id=f"t{log.snapshot_id[1:]}", short_id=f"t{log.short_id}",
                                 end=position(int(str(log.end)) + 3), taken=log.taken + HOUR / 10,
                                 time_until=log.time_until + HOUR / 10))
    return History(sorted([*history.links, *extra], key=lambda link: link.taken), history.removed)


def forked_histories(position: Position) -> st.SearchStrategy[History]:
    return st.builds(lambda h, twins: with_twins(h, twins, position), histories(position),
                     st.sets(st.integers(0, 11), min_size=1, max_size=2))


FORKED_HISTORY = st.one_of(forked_histories(Scn), forked_histories(Lsn))


# --- the oracle ---------------------------------------------------------------------------------------------------


def usable_bases(links: Sequence[Link], target: Target) -> list[Link]:
    fulls = {f.ref: f for f in links if f.kind == "full"}
    found = []
    for b in links:
        if b.kind == "log":
            continue
        if b.kind == "diff" and (b.base_ref not in fulls or fulls[b.base_ref].taken > b.taken):
            continue
        if target.time is not None and b.time_until > target.time:
            continue
        if target.position is not None and target.position < b.start:
            continue
        if b.kind == "diff" and target.time is not None and fulls[str(b.base_ref)].time_until > target.time:
            continue
        found.append(b)
    return found


def reachable(links: Sequence[Link], base: Link) -> list[Link]:
    """Every log any chain from ``base`` reaches (breadth first, all branches)."""
    if not base.log_chain:
        return []
    seen: list[Link] = []
    todo = [base]
    while todo:
        at = todo.pop()
        for log in links:
            if (log.kind == "log" and log not in seen and log.taken >= at.taken and log.start.continues(at.end)
                    and at.end < log.end):
                seen.append(log)
                todo.append(log)
    return seen


def covers(target: Target, link: Link) -> bool:
    if target.time is not None:
        return target.time <= link.time_until
    return bool(target.position <= link.end)


def restorable(links: Sequence[Link], target: Target) -> bool:
    for base in usable_bases(links, target):
        if covers(target, base) or any(covers(target, log) for log in reachable(links, base)):
            return True
    return False


def forks(links: Sequence[Link]) -> bool:
    """Two logs continuing one point to different ends (the planner refuses to choose)."""
    return any(
        a.kind == b.kind == "log" and a.end != b.end and a.start.continues(p.end) and b.start.continues(p.end)
        and p.end < a.end and p.end < b.end and a.taken >= p.taken and b.taken >= p.taken
        for p in links for a in links for b in links
    )


def sample_times(links: Sequence[Link]) -> list[dt.datetime]:
    times = sorted({link.time_until for link in links})
    mids = [a + (b - a) / 2 for a, b in itertools.pairwise(times)]
    edges = [times[0] - HOUR, times[-1] + HOUR] if times else []
    return sorted({*times, *mids, *edges})


def sample_positions(links: Sequence[Link], position: Position) -> list[Any]:
    values = sorted({int(str(link.end)) for link in links} | {int(str(link.start)) for link in links})
    more = {v + d for v in values for d in (-3, 3)}
    return [position(v) for v in sorted(set(values) | more)]


# --- checks on one plan ------------------------------------------------------------------------------------------


def check_plan(p: ChainPlan, links: Sequence[Link], target: Target) -> None:
    ids = {id(link) for link in links}
    assert all(id(link) in ids for link in p.links)
    assert p.full.kind == "full"
    if p.diff is not None:
        assert p.diff.kind == "diff" and p.diff.base_ref == p.full.ref and p.diff.taken >= p.full.taken
    base = p.diff or p.full
    if target.time is not None:
        assert p.full.time_until <= target.time and base.time_until <= target.time
    if target.position is not None:
        assert p.full.start <= target.position and base.start <= target.position
    previous = base
    for log in p.logs:  # contiguous
        assert log.kind == "log"
        assert previous.log_chain and log.start.continues(previous.end) and previous.end < log.end
        assert log.taken >= previous.taken
        previous = log
    if not target.is_latest:  # stops at the link that covers the target, and takes nothing after it
        assert covers(target, p.last)
        assert not any(covers(target, link) for link in p.links[:-1] if link.kind == "log")
        if p.logs:
            assert not covers(target, base)


# --- properties ---------------------------------------------------------------------------------------------------


@PROPS
@given(ANY_HISTORY)
def test_plan_for_a_time_succeeds_exactly_when_the_target_is_restorable(history: History) -> None:
    links = history.kept
    if forks(links):
        return
    for when in sample_times(history.links):
        target = Target(time=when)
        expected = restorable(links, target)
        try:
            p = plan(links, target)
        except ChainError:
            assert not expected, f"plan refused a restorable {when} from {[link.describe() for link in links]}"
            continue
        assert expected, f"plan claims {when}, the oracle does not"
        check_plan(p, links, target)


@PROPS
@given(st.data())
def test_plan_for_a_position(data: st.DataObject) -> None:
    position = data.draw(st.sampled_from([Scn, Lsn]))
    history = data.draw(histories(position))
    links = history.kept
    if forks(links):
        return
    for where in sample_positions(history.links, position):
        target = Target(position=where)
        expected = restorable(links, target)
        try:
            p = plan(links, target)
        except ChainError:
            assert not expected, f"plan refused a restorable {where}"
            continue
        assert expected, f"plan claims {where}, the oracle does not"
        check_plan(p, links, target)


@PROPS
@given(ANY_HISTORY)
def test_latest_and_allow_gap(history: History) -> None:
    links = history.kept
    if forks(links) or not any(link.kind == "full" for link in links):
        return
    reach = [b for b in usable_bases(links, Target())]
    reached = [link for b in reach for link in [b, *reachable(links, b)]]
    newest = max(link.time_until for link in reached)
    stranded = [link for link in links if link.kind != "full" and link.time_until > newest]
    points = windows(links)  # restore-points shows a gap after the last window exactly when a log lies beyond
    assert (len(points.gaps) == len(points.windows)) == any(link.kind == "log" for link in stranded)
    try:
        p = plan(links, Target())
    except ChainError:
        assert stranded, "latest refused although nothing lies beyond the newest restorable point"
        gapped = plan(links, Target(), allow_gap=True)
        assert gapped.gap is not None and gapped.reached_time == newest
        assert gapped.gap.after is gapped.last and gapped.gap.next in stranded
        check_plan(gapped, links, Target())
        return
    assert not stranded
    assert p.gap is None and p.reached_time == newest
    check_plan(p, links, Target())
    assert plan(links, Target(), allow_gap=True) == p


@PROPS
@given(ANY_HISTORY)
def test_windows_claim_exactly_the_restorable_time(history: History) -> None:
    links = history.kept
    if forks(links):
        return
    points = windows(links)
    for w in points.windows:
        assert w.start <= w.end
        for when in {w.start, w.end, *(link.time_until for link in w.links if w.start <= link.time_until <= w.end),
                     w.start + (w.end - w.start) / 2}:
            check_plan(plan(links, Target(time=when)), links, Target(time=when))  # never refused
    for a, b in zip(points.windows, points.windows[1:], strict=False):
        assert a.end < b.start  # merged where they touch
    for when in sample_times(history.links):
        claimed = any(w.start <= when <= w.end for w in points.windows)
        assert claimed == restorable(links, Target(time=when)), when


@PROPS
@given(ANY_HISTORY)
def test_a_snapshot_with_what_it_needs_restores_its_own_point(history: History) -> None:
    links = history.kept
    if forks(links):
        return
    needs = dependencies(links)
    assert set(needs) == {link.snapshot_id for link in links}
    by_id = {link.snapshot_id: link for link in links}
    for link in links:
        assert link.snapshot_id not in needs[link.snapshot_id] and needs[link.snapshot_id] <= by_id.keys()
        target = Target(time=link.time_until)
        if not any(covers(target, x) and x is link for b in usable_bases(links, target)
                   for x in [b, *reachable(links, b)]):
            continue  # the link itself restores nothing (its base is gone, or it starts in a hole)
        subset = [by_id[i] for i in needs[link.snapshot_id] | {link.snapshot_id}]
        p = plan(subset, target)
        check_plan(p, subset, target)


@PROPS
@given(FORKED_HISTORY)
def test_forks_plans_are_sound_and_windows_claim_nothing_plan_refuses(history: History) -> None:
    """With forks the planner refuses to choose a branch; everything it does plan is still right, a fork
    behind one base does not block another, and windows and dependencies stop where plans do."""
    links = history.kept
    for when in sample_times(history.links):
        try:
            p = plan(links, Target(time=when))
        except ChainError:
            continue
        assert restorable(links, Target(time=when))
        check_plan(p, links, Target(time=when))
    for w in windows(links).windows:
        for when in {w.start, w.end, *(link.time_until for link in w.links if w.start <= link.time_until <= w.end)}:
            check_plan(plan(links, Target(time=when)), links, Target(time=when))
    needs = dependencies(links)
    by_id = {link.snapshot_id: link for link in links}
    for w in windows(links).windows:
        for link in w.links:
            subset = [by_id[i] for i in needs[link.snapshot_id] | {link.snapshot_id}]
            check_plan(plan(subset, Target(time=link.time_until)), subset, Target(time=link.time_until))
    try:
        check_plan(plan(links, Target(), allow_gap=True), links, Target())
    except ChainError as exc:
        assert "forks" in str(exc) or "no full snapshot" in str(exc)


# --- examples the properties rest on ------------------------------------------------------------------------------


def chain(*kinds: str, position: Position = Scn) -> list[Link]:
    return build([(k, "newest", 0, True) for k in kinds], position, set()).links


def test_a_removed_log_is_detected_for_every_target_beyond_it() -> None:
    full, log1, log2, log3 = chain("full", "log", "log", "log")
    for target in (Target(time=log2.time_until), Target(time=log3.time_until), Target(position=log3.end)):
        with pytest.raises(ChainError, match="falls in a gap"):
            plan([full, log1, log3], target)
    with pytest.raises(ChainError, match="later snapshots cannot be reached"):
        plan([full, log1, log3], Target())
    gapped = plan([full, log1, log3], Target(), allow_gap=True)
    assert gapped.logs == [log1] and gapped.gap is not None and gapped.gap.next is log3
    assert plan([full, log1, log3], Target(time=log1.time_until)).logs == [log1]


def test_a_later_full_covers_what_a_removed_log_broke() -> None:
    full, log1, log2, full2, log3 = chain("full", "log", "log", "full", "log")
    p = plan([full, log1, full2, log3], Target(time=log3.time_until))
    assert p.full is full2 and p.logs == [log3]
    with pytest.raises(ChainError, match="falls in a gap"):
        plan([full, log1, full2, log3], Target(time=log2.time_until))


def test_a_differential_is_used_only_with_its_own_full() -> None:
    full, diff, log = chain("full", "diff", "log")
    other = replace(full, snapshot_id="x" * 64, short_id="xfull", ref="x" * 64, taken=full.taken + HOUR / 10,
                    time_until=full.time_until + HOUR / 10)
    with pytest.raises(ChainError):
        plan([other, diff, log], Target(time=log.time_until))  # the diff's full is gone: nothing reaches the log
    assert plan([full, other, diff, log], Target(time=log.time_until)).diff is diff


def test_fork_is_refused_and_names_both_logs() -> None:
    full, log1 = chain("full", "log")
    twin = replace(log1, snapshot_id="t" * 64, short_id="twin", end=Scn(99), taken=log1.taken + HOUR / 10)
    with pytest.raises(ChainError, match="forks") as info:
        plan([full, log1, twin], Target())
    assert log1.short_id in str(info.value) and "twin" in str(info.value)


def test_an_old_fork_blocks_neither_a_newer_full_nor_the_logs_before_it() -> None:
    full, log1, log2, full2, log3 = chain("full", "log", "log", "full", "log")
    twin = replace(log2, snapshot_id="t" * 64, short_id="twin", end=Scn(999), taken=log2.taken + HOUR / 10,
                   time_until=log2.time_until + HOUR / 10)
    links = [full, log1, log2, twin, full2, log3]
    assert plan(links, Target()).links == [full2, log3]
    assert plan(links, Target(time=log3.time_until)).links == [full2, log3]
    assert plan(links, Target(time=log1.time_until)).links == [full, log1]
    with pytest.raises(ChainError, match="forks"):
        plan(links, Target(time=log2.time_until))
    points = windows(links)
    assert [(w.start, w.end) for w in points.windows] == [(full.time_until, log1.time_until),
                                                         (full2.time_until, log3.time_until)]
    assert "forks after" in points.gaps[0].reason
    assert dependencies(links)[log1.snapshot_id] == {full.snapshot_id}  # retention keeps log1's full


def test_an_older_differential_bridges_what_the_newest_cannot() -> None:
    # full, diff1, log1 (from diff1), diff2, log2 continuing log1 (not diff2): only diff1 reaches log2
    full, diff1, log1, diff2, log2 = build(
        [("full", "newest", 0, True), ("diff", "newest", 0, True), ("log", "newest", 0, True),
         ("diff", "newest", 0, True), ("log", "previous log", 0, True)], Scn, set()).links
    links = [full, diff1, log1, diff2, log2]
    assert plan(links, Target()).links == [full, diff1, log1, log2]
    assert plan(links, Target(time=log2.time_until)).diff is diff1
    assert plan(links, Target(time=diff2.time_until)).diff is diff2


def test_a_log_timed_before_its_base_never_makes_a_window_end_before_it_starts() -> None:
    # MySQL: a log's last event has whole seconds, the full's consistent point microseconds
    full, log = chain("full", "log")
    log = replace(log, time_until=full.time_until.replace(second=0) - dt.timedelta(microseconds=1))
    full = replace(full, time_until=full.time_until.replace(second=0, microsecond=247772))
    (window,) = windows([full, log]).windows
    assert window.start == window.end == full.time_until and window.links == [full, log]
    assert plan([full, log], Target()).logs == [log]


def same_second(full: Link, *logs: Link) -> list[Link]:
    """The full consistent at .67 of a second, its logs' last events (whole seconds) in that second."""
    second = full.time_until.replace(microsecond=0)
    return [replace(full, time_until=second + dt.timedelta(microseconds=670000)),
            *(replace(log, time_until=second) for log in logs)]


def test_a_removed_log_is_detected_when_the_next_one_ends_in_the_fulls_second() -> None:
    # the issue: full, log, log in one second; the middle log removed; latest must not be the full alone
    full, log1, log2 = same_second(*chain("full", "log", "log"))
    assert plan([full, log1, log2], Target()).logs == [log1, log2]
    with pytest.raises(ChainError, match="later snapshots cannot be reached"):
        plan([full, log2], Target())
    gapped = plan([full, log2], Target(), allow_gap=True)
    assert gapped.links == [full] and gapped.gap is not None and gapped.gap.next is log2
    (gap,) = windows([full, log2]).gaps  # restore-points says so too
    assert gap.after is full and gap.next is log2


def test_latest_is_the_chain_taken_last_not_the_one_timed_last() -> None:
    # log2 continues log1, not full2 (taken between them); its last event's whole second lies before
    # full2's consistent point, yet it was taken after full2 and holds the newer state
    full, log1, full2, log2 = build([("full", "newest", 0, True), ("log", "newest", 0, True),
                                     ("full", "newest", 0, True), ("log", "previous log", 0, True)], Scn, set()).links
    second = full2.time_until.replace(microsecond=0)
    full2 = replace(full2, time_until=second + dt.timedelta(microseconds=670000))
    log2 = replace(log2, time_until=second)
    assert plan([full, log1, full2, log2], Target()).links == [full, log1, log2]
