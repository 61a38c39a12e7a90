"""MySQL connector against real private MariaDB servers and a real repository.

The shared scenario (module scope) takes a full and two log snapshots around transactions at known
seconds, then each test restores it into a fresh target server and compares every table with what
the source held at that moment.  The other tests break things: purged binlogs, RESET MASTER, failing
dumps, kill -9 in the middle of a snapshot, a server without binary logging.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import dtstore
from dtstore.connectors import RestorePlan, RestoreRequest, make_source, restore_points
from dtstore.connectors import restore_to as restore_request
from dtstore.connectors.mysql.plan import MysqlRestorePlan
from dtstore.errors import ChainError, ConnectorError
from tests.helpers import PASSWORD, init_repo

if TYPE_CHECKING:
    from tests.servers.mariadb import MariaDBFactory, MariaDBServer


Contents = dict[str, list[tuple[str, ...]]]


@contextmanager
def mysql_pwd(password: str | None) -> Iterator[None]:
    old = os.environ.pop("MYSQL_PWD", None)
    if password:
        os.environ["MYSQL_PWD"] = password
    try:
        yield
    finally:
        os.environ.pop("MYSQL_PWD", None)
        if old is not None:
            os.environ["MYSQL_PWD"] = old


def new_repo(base: Path) -> dtstore.Repository:
    return init_repo(str(base / "repo"), base / "cache")


def snap(
    repo: dtstore.Repository,
    server: MariaDBServer,
    mode: str = "full",
    url: str | None = None,
    stage: Path | None = None,
) -> dtstore.Snapshot:
    with mysql_pwd(server.password):
        source = make_source(url or server.url(), repo=repo, mode=mode, stage_dir=stage)
        return repo.snapshot([source])


def restore_to(
    url: str,
    *,
    repo: dtstore.Repository,
    until: str | None = None,
    until_position: str | None = None,
    databases: list[str] | None = None,
    source_id: str | None = None,
    dry_run: bool = False,
    allow_gap: bool = False,
) -> RestorePlan:
    scope = tuple(databases) if databases is not None else None
    request = RestoreRequest(url, until=until, until_position=until_position, scope=scope, source_id=source_id,
                             dry_run=dry_run, allow_gap=allow_gap)
    return restore_request(request, repo=repo)


def restore(
    repo: dtstore.Repository, target: MariaDBServer, url: str | None = None, **options: Any
) -> MysqlRestorePlan:
    args: dict[str, Any] = {
        "until": None,
        "until_position": None,
        "databases": None,
        "source_id": None,
        "dry_run": False,
        **options,
    }
    with mysql_pwd(target.password):
        plan = restore_to(url or target.url(), repo=repo, **args)
    assert isinstance(plan, MysqlRestorePlan)
    return plan


def next_second() -> dt.datetime:
    """Sleep until a new wall-clock second starts; return it.  Events before it have timestamps < it."""
    time.sleep(1.02 - time.time() % 1)
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def seed(server: MariaDBServer) -> None:
    server.sql(
        textwrap.dedent("""
        CREATE DATABASE shop;
        CREATE TABLE shop.items (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(40), price DECIMAL(10,2),
            created TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6), note TEXT, data BLOB) ENGINE=InnoDB;
        CREATE TABLE shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, item INT, qty INT, at DATETIME) ENGINE=InnoDB;
        CREATE TABLE shop.audit (id INT PRIMARY KEY AUTO_INCREMENT, msg VARCHAR(80)) ENGINE=InnoDB;
        CREATE TRIGGER shop.orders_ai AFTER INSERT ON shop.orders FOR EACH ROW
            INSERT INTO shop.audit (msg) VALUES (CONCAT('order ', NEW.id));
        CREATE VIEW shop.expensive AS SELECT id, name FROM shop.items WHERE price > 50;
        CREATE PROCEDURE shop.restock(IN n INT) UPDATE shop.items SET note = CONCAT('restocked ', n);
        USE shop;
        INSERT INTO shop.items (name, price, note, data)
            SELECT CONCAT('item-', seq), seq * 1.25, REPEAT('n', seq % 50), UNHEX(SHA2(seq, 256))
            FROM shop.seq_1_to_400;
        CREATE DATABASE crm;
        CREATE TABLE crm.contacts (id INT PRIMARY KEY, email VARCHAR(80), seen DATETIME, ts TIMESTAMP NULL)
            ENGINE=InnoDB;
        USE crm;
        INSERT INTO crm.contacts SELECT seq, CONCAT('c', seq, '@example.org'), NOW(), NOW() FROM shop.seq_1_to_50;
        CREATE USER app@'%' IDENTIFIED BY 'app-pw';
        GRANT SELECT, INSERT ON shop.* TO app@'%';
    """)
    )


# --- the shared scenario ----------------------------------------------------------------------------------


@dataclass
class Scenario:
    repo: dtstore.Repository
    source: MariaDBServer
    snaps: list[dtstore.Snapshot] = field(default_factory=list)
    states: dict[str, Contents] = field(default_factory=dict)
    times: dict[str, dt.datetime] = field(default_factory=dict)
    position_b: str = ""


@pytest.fixture(scope="module")
def scenario(mariadb_module_factory: MariaDBFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    # the server's own time zone is +05:00, the test machine's is whatever TZ says
    src = mariadb_module_factory(
        "src", password="src-Secret-1", args=["--default-time-zone=+05:00"], max_binlog_size=16384
    )
    seed(src)
    s = Scenario(new_repo(tmp_path_factory.mktemp("pitr")), src)
    s.snaps.append(snap(s.repo, src, "full"))
    src.sql(
        "UPDATE shop.items SET price = price + 1 WHERE id <= 10; INSERT INTO shop.orders (item, qty, at) "
        "VALUES (1, 2, NOW()); UPDATE crm.contacts SET email = 'a-changed@example.org' WHERE id = 1;"
    )
    s.states["A"], s.times["A"] = src.contents(), next_second()
    s.snaps.append(snap(s.repo, src, "log"))  # local binlog directory
    src.sql(
        "INSERT INTO shop.items (name, price, note) SELECT CONCAT('bulk-', seq), 99, REPEAT('x', 200) "
        "FROM shop.seq_1_to_300; INSERT INTO shop.orders (item, qty, at) VALUES (401, 1, NOW());"
    )
    file, pos = src.rows("SHOW MASTER STATUS")[0][:2]
    s.position_b = f"{file}:{pos}"
    s.states["B"], s.times["B"] = src.contents(), next_second()
    src.sql(
        "DELETE FROM shop.items WHERE id BETWEEN 100 AND 150; DELETE FROM crm.contacts WHERE id > 40; "
        "INSERT INTO crm.contacts VALUES (99, 'late@example.org', NOW(), NOW());"
    )
    s.states["C"], s.times["C"] = src.contents(), next_second()
    s.snaps.append(snap(s.repo, src, "log", url=src.url(binlogs="remote")))  # over the replication protocol
    src.sql("DROP TABLE shop.orders; INSERT INTO crm.contacts VALUES (100, 'never-archived@example.org', NOW(), NOW())")
    yield s
    s.repo.close()


def test_snapshots_record_coordinates_and_a_continuous_binlog_chain(scenario: Scenario) -> None:
    full, log1, log2 = (s.source_metadata for s in scenario.snaps)
    assert [m["mode"] for m in (full, log1, log2)] == ["full", "log", "log"]
    assert full["dump"]["exit_status"] == 0 and full["binlog"]["file"] == full["binlog_next"]["file"]
    assert full["gtid"] and full["server"]["flavor"] == "mariadb" and full["server"]["time_zone"] == "+05:00"
    assert [d["name"] for d in full["databases"]] == ["crm", "shop"] and full["grants"]["accounts"] >= 2
    items = {i.path.decode(): i.size for i in scenario.repo.list_items(scenario.snaps[0])}
    assert all(items[d["path"]] == d["bytes"] for d in full["databases"])
    assert log1["binlog_from"] == full["binlog_next"] and log2["binlog_from"] == log1["binlog_next"]
    assert (log1["transfer"], log2["transfer"]) == ("local", "remote") and len(log2["binlogs"]) > 1  # rotated
    archived = [b["name"] for m in (log1, log2) for b in m["binlogs"]]
    assert archived == sorted(archived) and len(set(archived)) == len(archived)
    for meta in (log1, log2):
        assert all(items_of(scenario, meta)[b["path"]] == b["size"] for b in meta["binlogs"])
    manifest = json.dumps([s.to_json() for s in scenario.repo.snapshots()])
    assert "src-Secret-1" not in manifest and "app-pw" not in manifest
    assert {s.source_id for s in scenario.snaps} == {"mysql:" + scenario.source.value("SELECT @@hostname") + "/1"}


def items_of(scenario: Scenario, meta: dict[str, Any]) -> dict[str, int]:
    snap_ = next(s for s in scenario.snaps if s.source_metadata is meta)
    return {i.path.decode(): i.size for i in scenario.repo.list_items(snap_)}


def test_restore_to_a_time_between_two_transactions(scenario: Scenario, mariadb_factory: MariaDBFactory) -> None:
    target = mariadb_factory("dst", password="dst-Secret-2", server_id=2)
    until = scenario.times["B"].astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()  # any offset works
    plan = restore(scenario.repo, target, until=until)
    assert [s.id for s in plan.logs] == [s.id for s in scenario.snaps[1:]]
    assert target.contents() == scenario.states["B"]
    assert target.rows("SELECT COUNT(*) FROM mysql.user WHERE user = 'app'") == [("1",)]  # grants came back
    assert target.rows("SHOW CREATE VIEW shop.expensive") and target.rows("SHOW TRIGGERS FROM shop")


def test_restore_with_a_naive_local_time_in_another_time_zone(
    scenario: Scenario, mariadb_factory: MariaDBFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = mariadb_factory("dst", password="dst-Secret-2", server_id=2)
    defaults = tmp_path / "client.cnf"  # the password from a defaults file this time, not MYSQL_PWD
    defaults.write_text(f"[client]\npassword={target.password}\n")
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        naive = scenario.times["A"].astimezone().replace(tzinfo=None).isoformat(sep=" ")
        with mysql_pwd(None):
            restore_to(
                target.url(defaults_file=str(defaults)),
                repo=scenario.repo,
                until=naive,
                until_position=None,
                databases=None,
                source_id=None,
                dry_run=False,
            )
    finally:
        monkeypatch.undo()
        time.tzset()
    assert target.contents() == scenario.states["A"]


def test_restore_by_position(scenario: Scenario, mariadb_factory: MariaDBFactory) -> None:
    target = mariadb_factory("dst", password="dst-Secret-2", server_id=2)
    plan = restore(scenario.repo, target, until_position=scenario.position_b)
    assert plan.binlogs[-1].name == scenario.position_b.split(":")[0]
    assert target.contents() == scenario.states["B"]


def test_restore_one_database_to_the_latest_archived_state(scenario: Scenario, mariadb_factory: MariaDBFactory) -> None:
    target = mariadb_factory("dst", password="dst-Secret-2", server_id=2)
    plan = restore(scenario.repo, target, databases=["crm"])
    assert plan.replay_databases == ["crm"] and plan.grants_path is None
    assert target.databases() == ["crm"]
    expected = {k: v for k, v in scenario.states["C"].items() if k.startswith("crm.")}
    assert target.contents() == expected  # the never-archived row 100 is not there


def test_restore_refuses_targets_outside_the_archive_and_existing_data(
    scenario: Scenario, mariadb_factory: MariaDBFactory
) -> None:
    nowhere = "mysql://root@localhost/?socket=/nonexistent/sock"
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    with pytest.raises(ChainError, match="beyond the archive"):
        restore_to(
            nowhere, repo=scenario.repo, until=later, until_position=None, databases=None, source_id=None, dry_run=True
        )
    with pytest.raises(ChainError, match="no full snapshot at or before"):
        restore_to(
            nowhere,
            repo=scenario.repo,
            until="2001-01-01T00:00:00Z",
            until_position=None,
            databases=None,
            source_id=None,
            dry_run=True,
        )
    plan = restore_to(
        nowhere, repo=scenario.repo, until=None, until_position=None, databases=None, source_id=None, dry_run=True
    )  # a dry run never connects
    assert any("replay" in line for line in plan.describe()) and plan.to_json()["stop"]["time"] is None
    target = mariadb_factory("dst", password="dst-Secret-2", server_id=2)
    target.sql("CREATE DATABASE crm; CREATE TABLE crm.keep (a INT); INSERT INTO crm.keep VALUES (1)")
    with pytest.raises(ConnectorError, match="already has database 'crm'"):
        restore(scenario.repo, target)
    assert target.rows("SELECT a FROM crm.keep") == [("1",)]


# --- breaking things ----------------------------------------------------------------------------------------


def test_purged_binlogs_and_reset_master_break_the_chain(mariadb_factory: MariaDBFactory, tmp_path: Path) -> None:
    src = mariadb_factory("src", password="src-Secret-1")
    seed(src)
    repo = new_repo(tmp_path)
    snap(repo, src, "full")
    snap(repo, src, "log")
    src.sql("INSERT INTO crm.contacts VALUES (500, 'lost@example.org', NOW(), NOW())")
    lost_at = next_second()
    src.sql("FLUSH BINARY LOGS")
    purge_all_but_current(src)  # the file the archive needs next is gone
    with pytest.raises(ChainError, match=r"purged.*full snapshot is needed"):
        snap(repo, src, "log")
    assert len(repo.snapshots()) == 2  # nothing committed
    auto = snap(repo, src, "auto")
    assert auto.source_metadata["mode"] == "full" and "purged" in auto.source_metadata["auto_reason"]
    assert snap(repo, src, "auto").source_metadata["mode"] == "log"
    with pytest.raises(ChainError, match="gap"):
        restore_to(
            "mysql://root@localhost/?socket=/x",
            repo=repo,
            until=lost_at.isoformat(),
            until_position=None,
            databases=None,
            source_id=None,
            dry_run=True,
        )
    src.sql("RESET MASTER")
    with pytest.raises(ChainError, match="RESET MASTER"):
        snap(repo, src, "log")
    assert len(repo.snapshots()) == 4


def test_failing_dumps_make_no_snapshot(mariadb_factory: MariaDBFactory, tmp_path: Path) -> None:
    src = mariadb_factory("src", password="src-Secret-1")
    seed(src)
    repo = new_repo(tmp_path)
    with mysql_pwd("wrong-password"), pytest.raises(ConnectorError, match="Access denied") as denied:
        make_source(src.url(), repo=repo)
    assert "wrong-password" not in str(denied.value)
    with mysql_pwd(src.password), pytest.raises(ConnectorError, match="nosuchdb"):
        make_source(src.url("shop", "nosuchdb"), repo=repo)
    # a view over a dropped table makes mariadb-dump fail half-way, after shop.sql was streamed
    src.sql(
        "CREATE DATABASE zzz; CREATE TABLE zzz.t (a INT); CREATE VIEW zzz.v AS SELECT a FROM zzz.t; DROP TABLE zzz.t"
    )
    stage = tmp_path / "stage"
    for where in (None, stage):
        with pytest.raises(ConnectorError, match=r"exited with status 2.*zzz\.v"):
            snap(repo, src, "full", stage=where)
    assert repo.snapshots() == []
    assert not any(stage.rglob("*.sql*")), "a failed staged dump leaves no files behind"


def purge_all_but_current(server: MariaDBServer) -> None:
    """PURGE BINARY LOGS is a silent no-op until InnoDB has checkpointed past the old files: retry."""
    current = server.binlogs()[-1]
    deadline = time.monotonic() + 10
    while server.binlogs() != [current]:
        assert time.monotonic() < deadline, f"the server keeps {server.binlogs()}"
        server.sql(f"PURGE BINARY LOGS TO '{current}'")
        time.sleep(0.1)


KILLED_CHILD = """
import os, sys, time
from pathlib import Path
import dtstore
from dtstore.connectors import make_source
repo_url, cache, url, marker, stage = sys.argv[1:6]
repo = dtstore.Repository.open(repo_url, os.environ["DTSTORE_PASSWORD"], cache_dir=Path(cache))
def progress(event):
    Path(marker).touch()
    time.sleep(0.2)  # slow the upload down so the kill lands in the middle
source = make_source(url, repo=repo, mode="full", stage_dir=Path(stage) if stage != "-" else None)
repo.snapshot([source], progress=progress)
print("finished")
"""


def dumps_running(server: MariaDBServer, wait: float = 10.0) -> bool:
    """Is a mariadb-dump of this server still alive after ``wait`` seconds (it should die of SIGPIPE)?"""
    deadline = time.monotonic() + wait
    while True:
        alive = [p for p in Path("/proc").glob("[0-9]*") if _cmdline_has(p, str(server.socket))]
        if not alive or time.monotonic() > deadline:
            return bool(alive)
        time.sleep(0.05)


def _cmdline_has(proc: Path, text: str) -> bool:
    try:
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(b"mariadb-dump") and any(text.encode() in a for a in argv)


def test_kill_9_during_a_snapshot_then_the_next_one_succeeds(mariadb_factory: MariaDBFactory, tmp_path: Path) -> None:
    src = mariadb_factory("src", password="src-Secret-1")
    seed(src)
    src.sql(
        "CREATE TABLE shop.big (id INT PRIMARY KEY, pad TEXT); "
        "INSERT INTO shop.big SELECT seq, RANDOM_BYTES(1024) FROM shop.seq_1_to_8000;".replace(
            "RANDOM_BYTES(1024)", "REPEAT(MD5(RAND()), 32)"
        )
    )
    repo = new_repo(tmp_path)
    stage = tmp_path / "stage"
    for stage_arg in ("-", str(stage)):
        marker = tmp_path / f"started-{stage_arg != '-'}"
        argv = [
            sys.executable,
            "-c",
            KILLED_CHILD,
            str(tmp_path / "repo"),
            str(tmp_path / "cache2"),
            src.url(),
            str(marker),
            stage_arg,
        ]
        child = subprocess.Popen(
            argv, env={**src.env(), "DTSTORE_PASSWORD": PASSWORD}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 30
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert child.poll() is None, child.communicate()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert not dumps_running(src), "a dump outlived the killed snapshot"
    assert list(stage.glob("dtstore-mysql-*")), "the killed staged run left its directory"
    assert repo.snapshots() == []
    done = snap(repo, src, "full", stage=stage)
    assert not list(stage.glob("dtstore-mysql-*")), "stale staging directories are cleaned up"
    meta = done.source_metadata
    assert meta["dump"]["staged"] and meta["dump"]["exit_status"] == 0
    sizes = {i.path.decode(): i.size for i in repo.list_items(done)}
    assert sizes["mysql/shop.sql"] == next(d["bytes"] for d in meta["databases"] if d["name"] == "shop") > 8_000_000


def test_second_full_deduplicates_and_staged_equals_streamed(mariadb_factory: MariaDBFactory, tmp_path: Path) -> None:
    src = mariadb_factory("src", password="src-Secret-1")
    seed(src)
    repo = new_repo(tmp_path)
    first = snap(repo, src, "full")
    with mysql_pwd(src.password):  # the progress-bar estimate: table data for a full, binlog bytes for a log
        assert make_source(src.url(), repo=repo, mode="full").estimated_size() > 16384
        pending = sum(int(r[1]) for r in src.rows("SHOW BINARY LOGS")[-1:])
        log_source = make_source(src.url(), repo=repo, mode="log")
        log_source.prepare()  # type: ignore[attr-defined]  # the core calls it under the source lock
        assert log_source.estimated_size() == pending
    second = snap(repo, src, "full", stage=tmp_path / "stage")
    for path in ("mysql/shop.sql", "mysql/crm.sql", "mysql/_grants.sql"):
        with repo.open_item(first, path) as a, repo.open_item(second, path) as b:
            assert a.read() == b.read()
    assert second.summary["bytes_new"] < first.summary["bytes_new"] / 10


def test_a_server_without_binary_logging_takes_fulls_only(mariadb_factory: MariaDBFactory, tmp_path: Path) -> None:
    src = mariadb_factory("src", password="src-Secret-1", args=["--skip-log-bin"])
    seed(src)
    repo = new_repo(tmp_path)
    src.sql("CREATE TABLE crm.legacy (a INT) ENGINE=MyISAM")
    full = snap(repo, src, "full")
    assert full.source_metadata["binlog"] is None and full.source_metadata["binlog_next"] is None
    said = [w["message"] for w in full.summary["warnings"]]  # the CLI exits 3 on these
    assert any("binary logging is off" in w for w in said), said
    assert any("crm.legacy (MyISAM)" in w for w in said), said
    with pytest.raises(ConnectorError, match="log mode needs binary logging"):
        snap(repo, src, "log")
    assert snap(repo, src, "auto").source_metadata["mode"] == "full"
    (points,) = restore_points(repo.snapshots())
    assert not points.streams[0].point_in_time
    assert "no point-in-time restore" in " ".join(points.describe())


def test_views_come_back_with_their_database_even_alone(mariadb_factory: MariaDBFactory, tmp_path: Path) -> None:
    """mysqldump defines views for real only after the last database (stand-ins before): each
    database's real views are their own item, loaded after the databases, so restoring one database
    gets its real views and restoring another never touches it."""
    src = mariadb_factory("src", password="src-Secret-1")
    src.sql(
        "CREATE DATABASE a; CREATE DATABASE b; CREATE TABLE a.t (id INT PRIMARY KEY, v INT);"
        " INSERT INTO a.t VALUES (1, 10), (2, 20); CREATE VIEW a.va AS SELECT id, v * 2 AS v2 FROM a.t;"
        " CREATE TABLE b.u (id INT PRIMARY KEY); INSERT INTO b.u VALUES (2);"
        " CREATE VIEW b.vb AS SELECT u.id, t.v FROM b.u JOIN a.t ON t.id = u.id;"
    )
    repo = new_repo(tmp_path)
    streamed = snap(repo, src, url=src.url("a", "b"))
    staged = snap(repo, src, url=src.url("a", "b"), stage=tmp_path / "stage")
    for full in (streamed, staged):
        views = {v["name"]: v["path"] for v in full.source_metadata["views"]}
        assert views == {"a": "mysql/views/a.sql", "b": "mysql/views/b.sql"}
        with repo.open_item(full, "mysql/b.sql") as f:
            assert b"`va`" not in f.read()  # the last database's item holds none of the real views
    for path in ("mysql/views/a.sql", "mysql/views/b.sql", "mysql/a.sql", "mysql/b.sql"):
        with repo.open_item(streamed, path) as one, repo.open_item(staged, path) as other:
            assert one.read() == other.read()

    everything = mariadb_factory("dst", password="dst-Secret-2", server_id=2)
    plan = restore(repo, everything)
    assert [n for n, _ in plan.views] == ["a", "b"]
    assert everything.rows("SELECT id, v2 FROM a.va ORDER BY id") == [("1", "20"), ("2", "40")]
    assert everything.rows("SELECT id, v FROM b.vb") == [("2", "20")]

    alone = mariadb_factory("one", password="dst-Secret-3", server_id=3)
    restore(repo, alone, databases=["a"])
    assert alone.databases() == ["a"]
    assert alone.rows("SELECT id, v2 FROM a.va ORDER BY id") == [("1", "20"), ("2", "40")]  # not the stand-in
