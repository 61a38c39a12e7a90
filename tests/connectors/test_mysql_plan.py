"""MySQL connector: the pure parts (URL, dump splitting, binlog scanning, chain rules, restore plans)."""

from __future__ import annotations

import datetime as dt
import io
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from dtstore.connectors import _proc, chains, is_connector_url, load
from dtstore.connectors.base import SnapshotInfo, parse_until, pick_source_id
from dtstore.connectors.chains import Target
from dtstore.connectors.fetch import run_parallel as _load_in_parallel
from dtstore.connectors.mysql.binlog import scan_binlog
from dtstore.connectors.mysql.chain import NextBinlog, check_log_base, check_server_continuity, links
from dtstore.connectors.mysql.dump import DumpSplitter, DumpTruncated, item_path
from dtstore.connectors.mysql.meta import Coordinates, FullMeta, LogMeta
from dtstore.connectors.mysql.meta import check as check_metadata
from dtstore.connectors.mysql.plan import MysqlRestorePlan, plan_restore
from dtstore.connectors.mysql.restore import replay_commands, select_grant_blocks
from dtstore.connectors.mysql.url import parse_url
from dtstore.connectors.positions import BinlogPosition as LogPosition
from dtstore.connectors.request import RestoreRequest, stop_target
from dtstore.errors import ChainError, ConnectorError, UsageError

T0 = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def iso(seconds: float) -> str:
    return at(seconds).isoformat().replace("+00:00", "Z")


# --- URL ------------------------------------------------------------------------------------------


def test_url_parsing_and_display_never_hold_a_password() -> None:
    url = parse_url("mysql://backup@db.example:3307/shop,crm?socket=/run/m.sock&binlogs=remote")
    assert (url.user, url.host, url.port, url.socket) == ("backup", "db.example", 3307, "/run/m.sock")
    assert url.databases == ("shop", "crm") and url.binlogs == "remote"
    assert url.display() == "mysql://backup@db.example:3307/shop,crm?socket=/run/m.sock&binlogs=remote"
    assert parse_url("mariadb://root@localhost/").databases == ()
    with pytest.raises(UsageError, match="MYSQL_PWD"):
        parse_url("mysql://root:hunter2@localhost/")
    for bad in ("mysql://localhost/", "mysql://u@h/?sockt=x", "mysql://u@h/?binlogs=ftp", "mysql://u@h/mysql",
                "mysql://u@h/?jobs=0", "mysql://u@h/?jobs=two", "mysql://u@h/?jobs=65"):
        with pytest.raises(UsageError):
            parse_url(bad)
    assert url.jobs == 4 and parse_url("mysql://u@h/?jobs=1").jobs == 1
    assert parse_url("mysql://u@h/?jobs=8").display() == "mysql://u@h/?jobs=8"


def test_databases_load_at_once_up_to_jobs_and_every_load_finishes_before_a_failure_is_raised() -> None:
    running, peak, done = [0], [0], []
    lock = threading.Lock()

    def load(name: str, fail: bool = False) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
            done.append(name)
        if fail:
            raise ConnectorError(f"loading {name} failed")

    _load_in_parallel([partial(load, n) for n in "abcde"], workers=2)
    assert sorted(done) == list("abcde") and peak[0] == 2
    done.clear()
    with pytest.raises(ConnectorError, match="loading b failed"):
        _load_in_parallel([partial(load, "a"), partial(load, "b", True), partial(load, "c")], workers=3)
    assert sorted(done) == ["a", "b", "c"]


def test_client_args_and_env_carry_the_password_only_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYSQL_PWD", "s3cr3t")
    url = parse_url("mysql://root@localhost/?socket=/tmp/s")
    assert url.client_args() == ["--user=root", "--socket=/tmp/s"]
    assert url.env()["MYSQL_PWD"] == "s3cr3t" and url.password() == "s3cr3t"
    with_file = parse_url("mysql://root@h:3306/?defaults_file=/etc/dt.cnf")
    assert with_file.client_args() == ["--defaults-file=/etc/dt.cnf", "--user=root", "--host=h", "--port=3306"]
    assert "MYSQL_PWD" not in with_file.env() and with_file.password() is None
    assert not any("s3cr3t" in a for a in url.client_args() + with_file.client_args())


def test_item_paths_are_safe_and_distinct_from_the_grants_item() -> None:
    assert item_path("shop") == "mysql/shop.sql"
    assert item_path("a/b") == "mysql/a%2Fb.sql"
    assert item_path("_grants") == "mysql/%5Fgrants.sql"
    assert item_path("..x") == "mysql/%2E.x.sql"
    assert item_path("we`ird db-ü") == "mysql/we`ird db-%C3%BC.sql"


def test_registry_recognises_database_urls_and_hints_at_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_connector_url("mysql://root@localhost/") and is_connector_url("mariadb://u@h/db")
    assert not is_connector_url("/var/backups") and not is_connector_url("s3://bucket/repo")
    with pytest.raises(UsageError, match="no connector"):
        load("db2")
    for name in [m for m in sys.modules if m.startswith("dtstore.connectors.mysql")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mysql", None)  # as if mysql-connector-python were not installed
    with pytest.raises(UsageError, match=r"pip install \"dtstore\[mysql\]\""):
        load("mysql")


# --- positions and times --------------------------------------------------------------------------


def test_log_positions_order_by_file_number_then_offset() -> None:
    a, b = LogPosition.parse("mysql-bin.999999:500"), LogPosition.parse("mysql-bin.1000000:4")
    assert a.sort_key() < b.sort_key() and str(b) == "mysql-bin.1000000:4"
    for bad in ("mysql-bin.000001", "mysql-bin.000001:x", ":5", "binlog:5"):
        with pytest.raises(UsageError):
            LogPosition.parse(bad)


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_until_naive_is_local_time_and_aware_is_converted(tokyo: None) -> None:
    assert parse_until("2026-11-29 21:00:05") == dt.datetime(2026, 11, 29, 12, 0, 5, tzinfo=dt.UTC)
    assert parse_until("2026-11-29T13:00:05+01:00") == dt.datetime(2026, 11, 29, 12, 0, 5, tzinfo=dt.UTC)
    assert parse_until("2026-11-29T12:00:05Z") == dt.datetime(2026, 11, 29, 12, 0, 5, tzinfo=dt.UTC)
    request = RestoreRequest("mysql://u@h/", until="2026-11-29T12:00:05.9Z")
    assert stop_target(request, position_kind="binlog", parse=LogPosition.parse).time == at(5)  # never later
    by_position = RestoreRequest("mysql://u@h/", until_position="binlog:mysql-bin.000001:4")
    assert stop_target(by_position, position_kind="binlog", parse=LogPosition.parse).position == LogPosition(
        "mysql-bin.000001", 4
    )
    with pytest.raises(UsageError):
        parse_until("yesterday")
    with pytest.raises(UsageError, match="empty"):
        RestoreRequest("mysql://u@h/", until="")
    with pytest.raises(UsageError, match="not both"):
        RestoreRequest("mysql://u@h/", until="2026-11-29T12:00:05Z", until_position="mysql-bin.000001:4")


# --- dump splitting -------------------------------------------------------------------------------

HEADER = (
    b"/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19\n/*!40103 SET TIME_ZONE='+00:00' */;\n"
    b"-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000007', MASTER_LOG_POS=1885;\n\n"
)


def section(name: str, body: bytes) -> bytes:
    quoted = name.replace("`", "``").encode()
    return b"--\n-- Current Database: `" + quoted + b"`\n--\n\nCREATE DATABASE x;\n" + body


TRAILER = b"-- SET GLOBAL gtid_slave_pos='0-1-42';\n/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\n-- Dump completed\n"


def split(data: bytes, names: list[str], block: int) -> tuple[dict[str, bytes], DumpSplitter]:
    splitter = DumpSplitter(io.BytesIO(data), names, block_size=block)
    return {n: b"".join(splitter.section(n)) for n in names}, splitter


@pytest.mark.parametrize("block", [1, 7, 31, 1 << 20])
def test_splitter_cuts_one_dump_into_self_contained_sections(block: int) -> None:
    names = ["a", "we`ird", "z"]
    bodies = [b"INSERT INTO t VALUES (1);\n" * 50, b"-- Current Database: `z` (in a comment)\n", b"x\n" * 10]
    data = HEADER + b"".join(section(n, b) for n, b in zip(names, bodies, strict=True)) + TRAILER
    parts, splitter = split(data, names, block)
    for name, body in zip(names, bodies, strict=True):
        assert parts[name].startswith(HEADER + section(name, b"")) and body in parts[name]
    assert HEADER + b"".join(p[len(HEADER) :] for p in parts.values()) == data
    assert splitter.coordinates == LogPosition("mysql-bin.000007", 1885)
    assert splitter.gtid == "0-1-42" and splitter.completed


def views_part(name: str, body: bytes) -> bytes:
    quoted = name.replace("`", "``").encode()
    return b"--\n-- Current Database: `" + quoted + b"`\n--\n\nUSE `" + quoted + b"`;\n" + body


@pytest.mark.parametrize("block", [1, 7, 31, 1 << 20])
def test_splitter_keeps_the_second_pass_of_views_out_of_the_last_database(block: int) -> None:
    """mysqldump defines views for real only after the last database, under a second 'Current
    Database' comment per database: each database's part becomes its own views item."""
    names = ["a", "we`ird", "z"]
    bodies = [b"CREATE VIEW va AS SELECT 1 AS id;\n", b"INSERT INTO t VALUES (2);\n", b"x\n" * 10]
    views = {"a": b"DROP VIEW va;\nCREATE VIEW va AS SELECT id FROM t;\n",
             "we`ird": b"CREATE VIEW vw AS SELECT * FROM a.t;\n"}
    views_pass = b"".join(views_part(n, b) for n, b in views.items())
    data = HEADER + b"".join(section(n, b) for n, b in zip(names, bodies, strict=True)) + views_pass + TRAILER
    parts, splitter = split(data, names, block)
    assert b"CREATE VIEW va AS SELECT id" not in parts["z"] and parts["z"].endswith(b"x\n" * 10)
    assert set(splitter.views) == {"a", "we`ird"}
    for name, body in views.items():
        assert splitter.views[name].startswith(HEADER + views_part(name, b"")) and body in splitter.views[name]
    rebuilt = b"".join(p[len(HEADER) :] for p in [*parts.values(), *splitter.views.values()])
    assert HEADER + rebuilt == data  # nothing lost, nothing twice (the trailer ends the last part)
    assert splitter.gtid == "0-1-42" and splitter.completed


def test_splitter_reports_a_short_or_unfinished_dump() -> None:
    data = HEADER + section("a", b"x;\n")
    splitter = DumpSplitter(io.BytesIO(data), ["a", "b"], block_size=5)
    with pytest.raises(DumpTruncated, match="b"):
        b"".join(splitter.section("a"))
    _parts, unfinished = split(data, ["a"], 5)
    assert not unfinished.completed  # no "-- Dump completed": the caller refuses the snapshot
    with pytest.raises(DumpTruncated):
        split(b"mariadb-dump: Got error: 1045\n", ["a"], 64)
    with pytest.raises(ValueError, match="in order"):
        next(DumpSplitter(io.BytesIO(data), ["a", "b"]).section("b"))


# --- binlog scanning ------------------------------------------------------------------------------


def event(ts: int, etype: int, body: bytes, pos: int, checksum: bool) -> bytes:
    size = 19 + len(body) + (4 if checksum else 0)
    head = struct.pack("<IBIIIH", ts, etype, 1, size, pos + size, 0)
    return head + body + (struct.pack("<I", zlib.crc32(head + body)) if checksum else b"")


def synthetic_binlog(checksum: bool, rotate: bool = True) -> bytes:
    fde_body = struct.pack("<H", 4) + b"10.11.19-MariaDB".ljust(50, b"\0") + struct.pack("<I", 0) + b"\x13"
    fde_body += b"\0" * 20 + (b"\x01" if checksum else b"\x00")
    gtids = struct.pack("<I", 2) + struct.pack("<IIQ", 0, 1, 41) + struct.pack("<IIQ", 5, 2, 7)
    data, events = b"\xfebin", [(1000, 15, fde_body), (1000, 163, gtids), (1003, 2, b"q" * 40)]
    if rotate:
        events.append((1009, 4, struct.pack("<Q", 4) + b"mysql-bin.000008"))
    for ts, etype, body in events:
        data += event(ts, etype, body, len(data), checksum)
    return data


@pytest.mark.parametrize("checksum", [True, False])
def test_scan_binlog_reads_times_gtid_state_and_rotation(tmp_path: Path, checksum: bool) -> None:
    path = tmp_path / "mysql-bin.000007"
    path.write_bytes(synthetic_binlog(checksum))
    scan = scan_binlog(path)
    assert (scan.first_event_time, scan.last_event_time) == (1000, 1009)
    assert scan.closed and scan.rotate_to == "mysql-bin.000008"
    assert scan.start_state == "[0-1-41,5-2-7]" and scan.size == path.stat().st_size
    path.write_bytes(synthetic_binlog(checksum, rotate=False))
    assert not scan_binlog(path).closed


def test_scan_binlog_refuses_truncated_or_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "b"
    path.write_bytes(synthetic_binlog(True)[:-3])
    with pytest.raises(ConnectorError, match="truncated"):
        scan_binlog(path)
    path.write_bytes(b"PK\x03\x04 not a binlog")
    with pytest.raises(ConnectorError, match="magic"):
        scan_binlog(path)


# --- chain rules and planning ---------------------------------------------------------------------


def snap(sid: str, seconds: float, **meta: Any) -> SnapshotInfo:
    return SnapshotInfo(sid * 8, sid, at(seconds), "mysql:h/1", "mysql", meta)


def full(
    sid: str,
    seconds: float,
    file: str,
    pos: int,
    state: str = "[]",
    dbs: tuple[str, ...] = ("a", "b"),
    all_databases: bool = True,
) -> SnapshotInfo:
    return snap(
        sid,
        seconds,
        mode="full",
        binlog={"file": file, "pos": pos},
        consistent_at=iso(seconds + 0.5),
        binlog_next={"file": file, "start_state": state},
        all_databases=all_databases,
        databases=[{"name": d, "path": f"mysql/{d}.sql", "bytes": 10} for d in dbs],
        grants={"path": "mysql/_grants.sql"},
        server={"flavor": "mariadb"},
        format=1,
        requested_mode="full",
        url="mysql://u@h/",
    )


def log(sid: str, seconds: float, first: int, last: int, state: str = "[]", next_state: str = "[]") -> SnapshotInfo:
    names = [f"mysql-bin.{n:06d}" for n in range(first, last + 1)]
    binlogs = [{"name": n, "path": f"binlog/{n}", "size": 1000, "first_event_time": iso(seconds - 1),
                "last_event_time": iso(seconds)} for n in names]
    return snap(
        sid,
        seconds,
        mode="log",
        binlog_from={"file": names[0], "start_state": state},
        binlog_next={"file": f"mysql-bin.{last + 1:06d}", "start_state": next_state},
        binlogs=binlogs,
        binlog_first=names[0],
        binlog_last=names[-1],
        binlog_end={"file": names[-1], "pos": 1000},
        covered_until=iso(seconds),
        format=1,
        requested_mode="log",
        url="mysql://u@h/",
        parent="",
        transfer="local",
    )


HISTORY = [
    full("f1", 0, "mysql-bin.000001", 300),
    log("l1", 60, 1, 2),
    log("l2", 120, 3, 5),
    full("f2", 150, "mysql-bin.000006", 800),
    log("l3", 180, 6, 6),
]


def plan(target: Target, databases: list[str] | None = None, history: list[SnapshotInfo] = HISTORY) -> MysqlRestorePlan:
    return plan_restore(history, target=target, databases=databases, source_id="mysql:h/1", target_display="t")


def names(p: MysqlRestorePlan) -> list[str]:
    return [b.name for b in p.binlogs]


def test_log_base_needs_a_chain_back_to_a_full() -> None:
    assert check_log_base(HISTORY).ok
    assert "no earlier snapshot" in check_log_base([]).reason
    no_binlog = snap("f0", 0, mode="full", binlog=None, binlog_next=None)  # check_log_base reads only these
    assert "binary logging was off" in check_log_base([no_binlog]).reason
    assert "does not continue" in check_log_base([HISTORY[0], log("lx", 60, 4, 4)]).reason


def test_server_continuity_detects_purge_reset_and_other_servers() -> None:
    expected = NextBinlog("mysql-bin.000005", "[0-1-9]")
    logs = [("mysql-bin.000004", 10), ("mysql-bin.000005", 10), ("mysql-bin.000006", 10)]
    assert check_server_continuity(expected, logs, "[0-1-9]").ok
    assert "RESET MASTER" in check_server_continuity(expected, logs, "[]").reason
    assert "purged" in check_server_continuity(expected, [("mysql-bin.000007", 10)], None).reason
    assert "not on the server" in check_server_continuity(expected, [("mysql-bin.000001", 10)], None).reason
    assert "not on the server" in check_server_continuity(expected, [("other.000009", 10)], None).reason


def build_chain(history: list[SnapshotInfo], full: SnapshotInfo) -> list[SnapshotInfo]:
    found = links(history)
    base = next(link for link in found if link.snapshot_id == full.id)
    chained = chains.follow([link for link in found if link.kind == "log"], base)
    return [next(s for s in history if s.id == link.snapshot_id) for link in chained]


def test_chain_continues_across_a_later_full_and_stops_at_a_gap() -> None:
    assert [s.short_id for s in build_chain(HISTORY, HISTORY[0])] == ["l1", "l2", "l3"]
    assert [s.short_id for s in build_chain(HISTORY, HISTORY[3])] == ["l3"]
    broken = [HISTORY[0], HISTORY[1], log("l2", 120, 4, 5)]  # 000003 never archived
    assert [s.short_id for s in build_chain(broken, broken[0])] == ["l1"]
    reset = [HISTORY[0], log("l1", 60, 1, 2, state="[0-1-5]")]  # same name, other history
    assert build_chain(reset, reset[0]) == []


def test_latest_refuses_a_gap_unless_allowed_and_names_the_missing_binlog() -> None:
    broken = [HISTORY[0], HISTORY[1], log("l2", 120, 4, 5)]  # 000003 never archived
    with pytest.raises(ChainError, match=r"mysql-bin\.000003 missing.*--allow-gap"):
        plan(Target(), history=broken)
    p = plan_restore(broken, target=Target(), databases=None, source_id="s", target_display="t", allow_gap=True)
    assert [s.short_id for s in p.logs] == ["l1"] and p.gap is not None
    assert any("before a gap" in line for line in p.describe()) and p.to_json()["gap"]["next_snapshot"]


def test_plan_by_time_uses_the_last_full_before_the_target_and_its_chain() -> None:
    p = plan(Target(time=at(100)))
    assert p.full.short_id == "f1" and [s.short_id for s in p.logs] == ["l1", "l2"]  # nothing after the target's log
    assert names(p)[0] == "mysql-bin.000001" and p.start == LogPosition("mysql-bin.000001", 300)
    assert p.grants_path == "mysql/_grants.sql" and p.replay_databases is None
    later = plan(Target(time=at(170)))
    assert later.full.short_id == "f2" and names(later) == ["mysql-bin.000006"]
    assert any("--stop-datetime" in line for line in later.describe())
    assert later.to_json()["full"]["id"] == "f2" * 8


def test_plan_refuses_targets_outside_the_archive() -> None:
    with pytest.raises(ChainError, match="no full snapshot at or before"):
        plan(Target(time=at(0)))  # the full is consistent at +0.5 s
    with pytest.raises(ChainError, match="beyond the archive"):
        plan(Target(time=at(181)))
    gap = [HISTORY[0], HISTORY[1], full("f2", 150, "mysql-bin.000009", 4)]
    with pytest.raises(ChainError, match="gap"):
        plan(Target(time=at(100)), history=gap)
    assert plan(Target(time=at(60)), history=gap).full.short_id == "f1"


def test_plan_by_position_cuts_the_binlog_list() -> None:
    p = plan(Target(position=LogPosition("mysql-bin.000004", 120)))
    assert p.full.short_id == "f1" and names(p) == [f"mysql-bin.{n:06d}" for n in range(1, 5)]
    assert plan(Target(position=LogPosition("mysql-bin.000006", 900))).full.short_id == "f2"
    with pytest.raises(ChainError, match="past the end"):
        plan(Target(position=LogPosition("mysql-bin.000004", 5000)))
    with pytest.raises(ChainError, match="beyond"):
        plan(Target(position=LogPosition("mysql-bin.000007", 4)))
    with pytest.raises(ChainError, match="no full snapshot"):
        plan(Target(position=LogPosition("mysql-bin.000001", 100)))


def test_plan_for_some_databases_filters_the_replay_and_skips_grants() -> None:
    p = plan(Target(), databases=["b"])
    assert p.databases == [("b", "mysql/b.sql")] and p.replay_databases == ["b"] and p.grants_path is None
    with pytest.raises(UsageError, match="nope; known: a, b"):
        plan(Target(), databases=["nope"])
    partial = [full("f1", 0, "mysql-bin.000001", 300, dbs=("a",), all_databases=False)]
    assert plan(Target(), history=partial).replay_databases == ["a"]  # never replay what was not loaded


def test_latest_without_logs_needs_no_replay() -> None:
    p = plan(Target(), history=[HISTORY[0]])
    assert p.binlogs == [] and p.start is None
    assert any("no binlog replay" in line for line in p.describe())


def test_replay_command_is_one_call_in_utc(tmp_path: Path, tokyo: None) -> None:
    p = plan(Target(time=at(100)))
    files = [tmp_path / b.name for b in p.binlogs]
    (argv,) = replay_commands(p, files)
    assert argv[1:3] == ["--start-position=300", "--stop-datetime=2026-11-29 12:01:40"]
    assert argv[3:] == [str(f) for f in files]
    per_db = replay_commands(plan(Target(), databases=["a", "b"]), files)
    assert [a[2] for a in per_db] == ["--database=a", "--database=b"]


def test_pick_source_id() -> None:
    infos = [HISTORY[0], SnapshotInfo("x" * 8, "x", at(1), "mysql:other/2", "mysql", {})]
    assert pick_source_id(infos, "mysql:other", "mysql") == "mysql:other/2"
    with pytest.raises(UsageError, match="several"):
        pick_source_id(infos, None, "mysql")
    with pytest.raises(UsageError, match="no mysql snapshots"):
        pick_source_id(infos, "mysql:nope", "mysql")


def test_grant_blocks_skip_existing_accounts() -> None:
    sql = (
        "-- dtstore header\n"
        "-- account: `app`@`%`\nCREATE USER IF NOT EXISTS `app`@`%`;\nGRANT SELECT ON *.* TO `app`@`%`;\n"
        "-- account: `root`@`localhost`\nCREATE USER IF NOT EXISTS `root`@`localhost`;\n"
        "-- account: `r`\nCREATE ROLE r;\n"
    )
    kept = select_grant_blocks(sql, {"`root`@`localhost`"})
    assert "`app`@`%`" in kept and "CREATE ROLE r" in kept and "root" not in kept


# --- running tools --------------------------------------------------------------------------------


def test_tools_never_get_secrets_in_argv_and_errors_are_redacted() -> None:
    with pytest.raises(ConnectorError, match="secret would appear"):
        _proc.check_argv(["mariadb", "--password=hunter2"], ["hunter2"])
    env = _proc.tool_env(MYSQL_PWD="hunter2")
    script = 'echo "access denied for $MYSQL_PWD" >&2; exit 3'
    with pytest.raises(ConnectorError) as err:
        _proc.run(["sh", "-c", script], env=env, secrets=["hunter2"], label="tool")
    assert "exited with status 3" in str(err.value) and "***" in str(err.value) and "hunter2" not in str(err.value)


def test_pipe_and_feed_check_both_sides() -> None:
    env = _proc.tool_env()
    _proc.pipe(["printf", "abc"], ["sh", "-c", 'test "$(cat)" = abc'], producer_env=env, consumer_env=env)
    with pytest.raises(ConnectorError, match="status 1"):
        _proc.pipe(["printf", "abc"], ["sh", "-c", "cat >/dev/null; exit 1"], producer_env=env, consumer_env=env)
    with pytest.raises(ConnectorError, match="status 2"):
        _proc.pipe(["sh", "-c", "exit 2"], ["cat"], producer_env=env, consumer_env=env)
    assert _proc.feed(["sh", "-c", "cat >/dev/null"], io.BytesIO(b"x" * 3_000_000), env=env) == 3_000_000
    with pytest.raises(ConnectorError, match="status 4"):
        _proc.feed(["sh", "-c", "exit 4"], io.BytesIO(b"x" * 3_000_000), env=env)


def test_tool_process_kills_the_child_when_the_reader_fails() -> None:
    proc = _proc.ToolProcess(["sleep", "30"], env=_proc.tool_env())
    with pytest.raises(RuntimeError), proc:
        raise RuntimeError("consumer failed")
    assert proc.returncode == -9
    assert subprocess.run(["true"], check=False).returncode == 0


def test_metadata_is_read_through_typed_records_and_a_typo_fails() -> None:
    full_meta = FullMeta.of(HISTORY[0].meta)
    assert full_meta.binlog == Coordinates("mysql-bin.000001", 300) and full_meta.database_names == ["a", "b"]
    assert LogMeta.of(HISTORY[1].meta).first == "mysql-bin.000001"
    typo = {("consistant_at" if k == "consistent_at" else k): v for k, v in HISTORY[0].meta.items()}
    with pytest.raises(ConnectorError, match="no 'consistent_at'"):
        FullMeta.of(typo)
    with pytest.raises(ConnectorError, match="no 'consistent_at'"):
        check_metadata(typo)  # the source checks its own dict before the commit
    with pytest.raises(ConnectorError, match="no 'covered_until'"):
        check_metadata({k: v for k, v in HISTORY[1].meta.items() if k != "covered_until"})
    check_metadata(dict(HISTORY[1].meta))
