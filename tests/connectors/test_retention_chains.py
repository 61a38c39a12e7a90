"""Property test (hypothesis): retention with the chains' dependency map never strands a restore point.

Random histories of full/diff/log snapshots (the generator of ``test_chain_properties``, some links
already gone), random tags and random retention policies, applied to one group
(``apply_policy(..., requires=)``) or to groups by tags (``keep_required`` across them).  After
the plan, on the kept snapshots alone:

* nothing kept needs something removed;
* every kept snapshot that was restorable before is still restorable: ``plan`` targeting its own
  point succeeds, and a window still contains it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dtstore.connectors.chains import Link, Target, dependencies, plan, windows
from dtstore.connectors.positions import Lsn, Scn
from dtstore.snapshots.manifest import Snapshot
from dtstore.snapshots.retention import RetentionPolicy, apply_policy, group_snapshots, keep_required
from tests.connectors.test_chain_properties import STEPS, build

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
COUNT = st.one_of(st.none(), st.integers(1, 4), st.just(-1))

POLICIES = st.builds(
    RetentionPolicy,
    keep_last=COUNT,
    keep_hourly=COUNT,
    keep_daily=COUNT,
    keep_within=st.one_of(st.none(), st.integers(1, 8).map(lambda h: dt.timedelta(hours=h))),
    keep_tags=st.lists(st.sampled_from(["a", "b", "a,b"]), max_size=2).map(tuple),
)


def snapshot(link: Link, tags: Sequence[str]) -> Snapshot:
    return Snapshot(id=link.snapshot_id, time=link.taken, host="h", tags=list(tags), source_kind="test",
                    source_id="test:db", paths=["-"], source_metadata={}, summary={}, parent=None,
                    program_version="test", items_chunks=[], items_count=0)


def restorable_links(links: Sequence[Link]) -> set[str]:
    return {link.snapshot_id for w in windows(links).windows for link in w.links}


@PROPS
@given(
    steps=STEPS,
    removed=st.sets(st.integers(0, 11), max_size=3),
    position=st.sampled_from([Scn, Lsn]),
    policy=POLICIES,
    tags=st.lists(st.sampled_from([(), ("a",), ("b",), ("a", "b")]), min_size=12, max_size=12),
    by_tags=st.booleans(),
    hours_after=st.integers(0, 30),
)
def test_retention_keeps_every_kept_point_restorable(
    steps: list[tuple[str, str, int, bool]],
    removed: set[int],
    position: type,
    policy: RetentionPolicy,
    tags: list[tuple[str, ...]],
    by_tags: bool,
    hours_after: int,
) -> None:
    assume(not policy.is_empty())
    links = build(steps, position, removed).kept
    assume(links)
    snaps = [snapshot(link, tags[int(link.short_id[:2])]) for link in links]
    needs = dependencies(links)
    now = max(s.time for s in snaps) + dt.timedelta(hours=hours_after)
    if by_tags:
        groups = group_snapshots(snaps, ("tags",))
        decided = keep_required({k: apply_policy(g, policy, now, dt.UTC) for k, g in groups.items()}, needs)
        decisions = [d for group in decided.values() for d in group]
    else:
        decisions = apply_policy(snaps, policy, now, dt.UTC, requires=needs)
    assert sorted(d.snapshot.id for d in decisions) == sorted(s.id for s in snaps)
    kept = {d.snapshot.id for d in decisions if d.keep}
    for snap_id in kept:
        assert needs[snap_id] <= kept, f"{snap_id[:4]} is kept, but {sorted(i[:4] for i in needs[snap_id] - kept)} not"
    for d in decisions:
        if d.keep and not d.reasons[0].startswith("needed by"):
            continue
        if d.keep:  # kept only for another's sake: some kept snapshot needs it
            assert any(d.snapshot.id in needs[k] for k in kept)
    after = [link for link in links if link.snapshot_id in kept]
    before_ok, after_ok = restorable_links(links), restorable_links(after)
    for link in after:
        if link.snapshot_id not in before_ok:
            continue  # restored nothing before either (its base was already gone)
        assert link.snapshot_id in after_ok, f"{link.describe()} was restorable and is not after retention"
        plan(after, Target(time=link.time_until))  # raises ChainError if not restorable
