"""The PostgreSQL chain rules on synthetic histories (no server): runs, cuts at a base, gaps, timelines, plans."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest

from dtstore.connectors.base import SnapshotInfo
from dtstore.connectors.chains import Target
from dtstore.connectors.points import restore_points, snapshot_dependencies
from dtstore.connectors.positions import PgLsn, WalSegment
from dtstore.connectors.postgresql.chain import explain, links, wal_archive
from dtstore.connectors.postgresql.plan import plan_restore
from dtstore.errors import ChainError, UsageError

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
SID = "postgresql:42"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def iso(seconds: float) -> str:
    return at(seconds).isoformat().replace("+00:00", "Z")


def seg(timeline: int, number: int) -> str:
    return f"{timeline:08X}{number // 256:08X}{number % 256:08X}"


def wal(ident: str, seconds: float, numbers: list[int], timeline: int = 1, *, salt: str = "",
        extra: list[dict[str, Any]] | None = None, texts: dict[str, str] | None = None) -> SnapshotInfo:
    files = [{"name": seg(timeline, n), "kind": "segment", "size": 16 << 20,
              "sha256": hashlib.sha256(f"{timeline}/{n}{salt}".encode()).hexdigest(),
              "completed_at": iso(seconds - 0.5 + i * 0.01)} for i, n in enumerate(numbers)]
    files += extra or []
    meta = {"format": 1, "mode": "wal", "system_identifier": "42", "segment_size": 16 << 20, "files": files,
            "first": files[0]["name"], "last": files[-1]["name"], "history_text": texts or {}, "pushed_by": "h"}
    return SnapshotInfo(ident, ident[:8], at(seconds), SID, "postgresql", meta)


def full(ident: str, seconds: float, start_seg: int, stop_seg: int, timeline: int = 1) -> SnapshotInfo:
    meta = {"format": 1, "mode": "full", "system_identifier": "42", "segment_size": 16 << 20, "timeline": timeline,
            "start_lsn": str(PgLsn(start_seg * (16 << 20) + 0x28)),
            "stop_lsn": str(PgLsn(stop_seg * (16 << 20) + 0x100)),
            "started_at": iso(seconds), "consistent_at": iso(seconds + 3), "backup_label": "", "tablespace_map": "",
            "tablespaces": [], "server": {"version_num": 150000}}
    return SnapshotInfo(ident, ident[:8], at(seconds), SID, "postgresql", meta)


def history() -> list[SnapshotInfo]:
    return [
        wal("w1aaaaaaaa", 1, [1, 2]),
        full("f1aaaaaaaa", 10, 3, 3),
        wal("w2aaaaaaaa", 12, [3]),            # the base's own WAL
        wal("w3aaaaaaaa", 20, [4, 5, 6]),
        wal("w4aaaaaaaa", 30, [7]),
    ]


def test_links_runs_and_the_base() -> None:
    found = links(history())
    kinds = [(link.kind, str(link.start), str(link.end)) for link in found]
    assert ("full", seg(1, 3), seg(1, 2)) in kinds
    assert ("log", seg(1, 3), seg(1, 3)) in kinds and ("log", seg(1, 4), seg(1, 6)) in kinds
    assert {link.stream for link in found} == {"timeline 1"}


def test_a_batch_spanning_the_base_start_is_cut_there() -> None:
    snaps = [full("f1aaaaaaaa", 10, 3, 3), wal("w2aaaaaaaa", 12, [2, 3, 4])]
    runs = sorted((str(link.start), str(link.end)) for link in links(snaps) if link.kind == "log")
    assert runs == [(seg(1, 2), seg(1, 2)), (seg(1, 3), seg(1, 4))]
    chain = plan_restore(snaps, target=Target(), options={}, source_id=SID, target_display="x")
    assert [w.name for w in chain.wal] == [seg(1, 3), seg(1, 4)]


def test_latest_plan_lists_the_wal_from_the_base_start() -> None:
    chain = plan_restore(history(), target=Target(), options={}, source_id=SID, target_display="x")
    assert [w.name for w in chain.wal] == [seg(1, n) for n in range(3, 8)]
    assert chain.recovery == {"recovery_target_timeline": "1"}


def test_time_target_plans_the_contiguous_wal_after_it() -> None:
    chain = plan_restore(history(), target=Target(time=at(19)), options={}, source_id=SID, target_display="x")
    assert chain.wal[-1].name == seg(1, 7)
    assert chain.recovery["recovery_target_time"] == at(19).strftime("%Y-%m-%d %H:%M:%S+00")
    assert chain.recovery["recovery_target_action"] == "promote"


def test_a_missing_segment_is_a_gap_naming_it() -> None:
    snaps = [s for s in history() if s.id != "w3aaaaaaaa"]
    with pytest.raises(ChainError, match=f"WAL segment {seg(1, 4)} .. {seg(1, 6)} missing"):
        plan_restore(snaps, target=Target(), options={}, source_id=SID, target_display="x")
    allowed = plan_restore(snaps, target=Target(), options={}, source_id=SID, target_display="x", allow_gap=True)
    assert allowed.wal[-1].name == seg(1, 3) and allowed.gap is not None
    (points,) = restore_points(_snaps(snaps))
    assert points.streams[0].gaps and "missing" in points.streams[0].gaps[0].reason


def test_a_base_without_its_wal_is_no_link() -> None:
    snaps = [s for s in history() if s.id != "w2aaaaaaaa"]
    assert not [link for link in links(snaps) if link.kind == "full"]
    with pytest.raises(ChainError):
        plan_restore(snaps, target=Target(), options={}, source_id=SID, target_display="x")


def test_duplicates_count_once_and_a_conflict_is_ignored() -> None:
    snaps = [*history(), wal("w5aaaaaaaa", 40, [7]), wal("w6aaaaaaaa", 41, [6], salt="other")]
    archive = wal_archive(snaps)
    assert archive.conflicts == [seg(1, 6)]
    assert archive.segments[(1, 7)].snapshot.id == "w4aaaaaaaa"
    plan_restore(snaps, target=Target(), options={}, source_id=SID, target_display="x")  # no fork


def test_lsn_target_before_the_consistent_point_is_refused() -> None:
    with pytest.raises(ChainError):
        plan_restore(history(), target=Target(position=PgLsn(3 * (16 << 20) + 0x30)), options={}, source_id=SID,
                     target_display="x")
    chain = plan_restore(history(), target=Target(position=PgLsn(5 * (16 << 20))), options={}, source_id=SID,
                         target_display="x")
    assert chain.recovery["recovery_target_lsn"] == str(PgLsn(5 * (16 << 20)))


def test_name_and_xid_targets() -> None:
    chain = plan_restore(history(), target=Target(), options={"until_name": "before-upgrade"}, source_id=SID,
                         target_display="x")
    assert chain.recovery["recovery_target_name"] == "before-upgrade"
    with pytest.raises(UsageError):
        plan_restore(history(), target=Target(), options={"until_xid": "abc"}, source_id=SID, target_display="x")
    with pytest.raises(UsageError):
        plan_restore(history(), target=Target(time=at(19)), options={"until_name": "x"}, source_id=SID,
                     target_display="x")


def test_timeline_two_inherits_its_parent_before_the_switch() -> None:
    switch = PgLsn(5 * (16 << 20) + 0x1000)
    history2 = {"name": "00000002.history", "kind": "history", "size": 40, "sha256": "h", "completed_at": None}
    snaps = [*history(), wal("x1aaaaaaaa", 50, [5, 6], timeline=2, extra=[history2],
                             texts={"00000002.history": f"1\t{switch}\tno recovery target specified\n"})]
    chain = plan_restore(snaps, target=Target(), options={"timeline": "2"}, source_id=SID, target_display="x")
    assert [w.name for w in chain.wal] == [seg(1, 3), seg(1, 4), seg(2, 5), seg(2, 6), "00000002.history"]
    assert chain.recovery["recovery_target_timeline"] == "2"
    one = plan_restore(snaps, target=Target(), options={"timeline": "1"}, source_id=SID, target_display="x")
    assert one.wal[-1].name == seg(1, 7)


def test_dependencies_keep_a_wal_snapshot_with_its_base() -> None:
    needs = snapshot_dependencies(_snaps(history()))
    assert "f1aaaaaaaa" in needs["w3aaaaaaaa"] and "w2aaaaaaaa" in needs["w3aaaaaaaa"]


def test_explain() -> None:
    assert explain(WalSegment(1, 3), WalSegment(1, 5)) == f"WAL segment {seg(1, 4)} missing"
    assert "not archived" in explain(WalSegment(1, 3), None)


class _Snap:
    def __init__(self, info: SnapshotInfo) -> None:
        self.id, self.short_id, self.time = info.id, info.short_id, info.time
        self.source_id, self.source_kind, self.source_metadata = info.source_id, info.kind, dict(info.meta)


def _snaps(infos: list[SnapshotInfo]) -> list[_Snap]:
    return [_Snap(i) for i in infos]


def test_a_base_needs_the_wal_of_its_own_span() -> None:
    """Retention keeps a base's start..stop WAL with it, even in snapshots no later log needs."""
    snaps = [
        wal("w1aaaaaaaa", 1, [1, 2]),
        full("f1aaaaaaaa", 10, 3, 4),
        wal("w2aaaaaaaa", 12, [3]),
        wal("w3aaaaaaaa", 13, [4]),
    ]
    needs = snapshot_dependencies(_snaps(snaps))
    assert needs["f1aaaaaaaa"] == {"w2aaaaaaaa", "w3aaaaaaaa"}
    assert needs["w1aaaaaaaa"] == set()
