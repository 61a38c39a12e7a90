"""SQL Server connector end to end: real pyodbc + unixODBC + FreeTDS against the TDS simulator.

What these tests prove: the connector's T-SQL, its result-set handling and its chain logic agree
with SQL Server's documented behaviour *as the simulator models it* (tests/sim/mssql/__init__.py).
They do not prove agreement with a real SQL Server.

The module's scenario: full, workload, diff, workload, log, a moment T, more workload and an
incident (DROP TABLE), log; then restores as new databases compared with the rows at T and the
final rows.  The other tests break things: a removed log, SIMPLE recovery, foreign backups.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import dtstore
from dtstore.connectors import RestoreRequest, make_source, restore_points, restore_to
from dtstore.connectors.mssql.plan import MssqlRestorePlan
from dtstore.errors import ChainError, ConnectorError
from tests.connectors.contract import environment, run_cli
from tests.helpers import init_repo, missing
from tests.sim.mssql.fixture import Simulator, available, simulator


@pytest.fixture(autouse=True)
def _driver_installed() -> None:
    reason = available()
    if reason is not None:
        missing(reason)


def take(repo: dtstore.Repository, sim: Simulator, mode: str, databases: str = "shop",
         **params: str) -> dtstore.Snapshot:
    with environment(sim.env()):
        return repo.snapshot([make_source(sim.url(databases, **params), repo=repo, mode=mode)])


def kinds(snap: dtstore.Snapshot) -> dict[str, str]:
    return {d["database"]: d["kind"] for d in (snap.source_metadata or {})["databases"]}


def pause_past_second() -> dt.datetime:
    """Wait until the wall clock is in a later second than now; return that second (UTC, whole)."""
    time.sleep(1.05)
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class Scenario:
    sim: Simulator
    base: Path
    repo: dtstore.Repository
    snaps: dict[str, dtstore.Snapshot] = field(default_factory=dict)
    at_t: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    final: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    moment: dt.datetime | None = None


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    base = tmp_path_factory.mktemp("mssql")
    with simulator(base / "sim") as sim:
        sim.sql("CREATE DATABASE shop")
        sim.sql("CREATE TABLE shop.dbo.customers (id INT PRIMARY KEY, name NVARCHAR(50))")
        sim.sql("CREATE TABLE shop.dbo.orders (id INT PRIMARY KEY, customer INT, total INT)")
        sim.sql("INSERT INTO shop.dbo.customers VALUES (1, N'Ada'); INSERT INTO shop.dbo.customers VALUES (2, N'Bob')")
        sim.sql("INSERT INTO shop.dbo.orders VALUES (1, 1, 100)")
        repo = init_repo(str(base / "repo"), base / "cache")
        s = Scenario(sim, base, repo)
        s.snaps["full"] = take(repo, sim, "full")
        sim.sql("INSERT INTO shop.dbo.orders VALUES (2, 2, 250); UPDATE shop.dbo.customers SET name = N'Ada L' "
                "WHERE id = 1")
        s.snaps["diff"] = take(repo, sim, "diff")
        sim.sql("INSERT INTO shop.dbo.customers VALUES (3, N'Cy'); DELETE FROM shop.dbo.orders WHERE id = 1")
        s.snaps["log1"] = take(repo, sim, "log")
        sim.sql("INSERT INTO shop.dbo.orders VALUES (3, 3, 75)")
        s.moment = pause_past_second()
        s.at_t = {t: sim.rows(f"shop.dbo.{t}") for t in ("customers", "orders")}
        time.sleep(1.05)
        sim.sql("INSERT INTO shop.dbo.customers VALUES (4, N'Di'); UPDATE shop.dbo.orders SET total = 0")
        sim.sql("DROP TABLE shop.dbo.orders")  # the incident
        s.final = {"customers": sim.rows("shop.dbo.customers")}
        s.snaps["log2"] = take(repo, sim, "log")
        yield s


def test_the_scenario_took_full_diff_and_logs_of_shop(scenario: Scenario) -> None:
    assert [kinds(scenario.snaps[k]) for k in ("full", "diff", "log1", "log2")] == [
        {"shop": "full"}, {"shop": "diff"}, {"shop": "log"}, {"shop": "log"}]
    full = (scenario.snaps["full"].source_metadata or {})["databases"][0]
    diff = (scenario.snaps["diff"].source_metadata or {})["databases"][0]
    assert diff["differential_base_guid"] == full["backup_set_guid"]
    assert diff["database_backup_lsn"] == full["checkpoint_lsn"]
    assert full["verified"] and full["has_checksums"] and not full["compressed"]
    assert full["time_zone"] in (4, 8)  # Europe/Berlin: +1 h or +2 h, in 15-minute units
    assert list(scenario.sim.stage.iterdir()) == []  # every stage copy removed once stored


def test_restore_until_t_as_a_new_database_equals_the_rows_at_t(scenario: Scenario,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    sim, moment = scenario.sim, scenario.moment
    assert moment is not None
    until = moment.astimezone(dt.timezone(dt.timedelta(hours=-5))).isoformat()  # any zone: converted for the server
    result = run_cli(capsys, scenario.base, "restore", "--to", sim.url(), "--until", until, "--databases", "shop",
                     "--as", "shop_t", env=sim.env())
    assert result.code == 0, result.err
    assert "STOPAT" in result.out and "restore complete" in result.out
    assert {t: sim.rows(f"shop_t.dbo.{t}") for t in ("customers", "orders")} == scenario.at_t


def test_restore_latest_equals_the_final_rows(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    sim = scenario.sim
    result = run_cli(capsys, scenario.base, "restore", "--to", sim.url(), "--databases", "shop", "--as",
                     "shop_latest", "--move-to", str(sim.state / "moved"), env=sim.env())
    assert result.code == 1 and "5133" in result.err  # no such folder on the server: its error, nothing created
    (sim.state / "moved").mkdir()
    result = run_cli(capsys, scenario.base, "restore", "--to", sim.url(), "--databases", "shop", "--as",
                     "shop_latest", "--move-to", str(sim.state / "moved"), env=sim.env())
    assert result.code == 0, result.err
    assert sim.rows("shop_latest.dbo.customers") == scenario.final["customers"]
    with pytest.raises(Exception, match=r"Invalid object name.*\(208\)"):  # dropped by the incident
        sim.sql("SELECT * FROM shop_latest.dbo.orders")
    files = sim.sql("SELECT physical_name FROM sys.master_files WHERE database_id = DB_ID(N'shop_latest')")
    assert sorted(Path(f[0]).name for f in files) == ["shop_latest.mdf", "shop_latest_log.ldf"]
    assert all(Path(f[0]).parent == sim.state / "moved" for f in files)


def test_an_existing_database_is_refused_unless_replace(scenario: Scenario,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    sim = scenario.sim
    sim.sql("CREATE DATABASE shop_x")
    args = ("restore", "--to", sim.url(), "--databases", "shop", "--as", "shop_x")
    refused = run_cli(capsys, scenario.base, *args, env=sim.env())
    assert refused.code == 1 and "shop_x" in refused.err and "--replace" in refused.err
    replaced = run_cli(capsys, scenario.base, *args, "--replace", env=sim.env())
    assert replaced.code == 0, replaced.err
    assert sim.rows("shop_x.dbo.customers") == scenario.final["customers"]


def test_dry_run_prints_the_exact_t_sql_with_stopat_in_server_local_time(scenario: Scenario) -> None:
    moment = scenario.moment
    assert moment is not None
    plan = restore_to(RestoreRequest(scenario.sim.url(), until=moment.isoformat(), scope=("shop",),
                                     options={"as": "shop_dry"}, dry_run=True), repo=scenario.repo)
    assert isinstance(plan, MssqlRestorePlan)
    (r,) = plan.restores
    local = moment.astimezone(dt.timezone(dt.timedelta(minutes=15 * r.logs[-1].backup.time_zone)))
    assert r.stopat == local.strftime("%Y-%m-%dT%H:%M:%S")
    sql = [s for _, s in r.statements("X", replace=False)]
    assert sql[0].startswith("RESTORE DATABASE [shop_dry] FROM DISK = N'X\\shop-000-full.bak' WITH NORECOVERY")
    assert "MOVE N'shop' TO" in sql[0]
    assert sql[1].startswith("RESTORE DATABASE [shop_dry] FROM DISK = N'X\\shop-001-diff.diff.bak' WITH NORECOVERY")
    assert [s.endswith(f"STOPAT = N'{r.stopat}'") for s in sql[2:-1]] == [True, True]  # the same on every log
    assert sql[-1] == "RESTORE DATABASE [shop_dry] WITH RECOVERY"
    assert scenario.sim.sql("SELECT COUNT(*) FROM sys.databases WHERE name = N'shop_dry'") == [(0,)]


def test_restore_points_show_the_window_of_each_database(scenario: Scenario) -> None:
    (points,) = restore_points(scenario.repo.snapshots())
    (shop,) = [s for s in points.streams if s.stream == "shop"]
    assert shop.point_in_time and len(shop.windows) == 1 and not shop.gaps


# --- things that break ----------------------------------------------------------------------------------------


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    with simulator(tmp_path / "sim") as running:
        yield running


def test_a_removed_log_snapshot_is_exit_17_naming_the_missing_log(sim: Simulator, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    sim.sql("CREATE DATABASE shop; CREATE TABLE shop.dbo.t (id INT PRIMARY KEY)")
    repo = init_repo(str(tmp_path / "repo"), tmp_path / "cache")
    take(repo, sim, "full")
    logs = []
    for i in range(3):
        sim.sql(f"INSERT INTO shop.dbo.t VALUES ({i})")
        logs.append(take(repo, sim, "log"))
    middle = (logs[1].source_metadata or {})["databases"][0]
    repo.forget([logs[1].id])
    result = run_cli(capsys, tmp_path, "restore", "--to", sim.url(), "--as", "shop2", env=sim.env())
    assert result.code == 17, result.err
    assert f"the log backup from LSN {middle['first_lsn']} to LSN {middle['last_lsn']} is missing" in result.err
    with environment(sim.env()), pytest.raises(ChainError, match="repository's chain of shop is broken"):
        take(repo, sim, "log")
    healed = take(repo, sim, "auto")
    assert kinds(healed) == {"shop": "diff"}  # our full is still the differential base


def test_simple_recovery_refuses_log_and_auto_takes_full_then_diff(sim: Simulator, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    sim.sql("CREATE DATABASE s; ALTER DATABASE s SET RECOVERY SIMPLE; CREATE TABLE s.dbo.t (id INT)")
    repo = init_repo(str(tmp_path / "repo"), tmp_path / "cache")
    first = take(repo, sim, "auto", "s")
    assert kinds(first) == {"s": "full"}
    sim.sql("INSERT INTO s.dbo.t VALUES (1)")
    result = run_cli(capsys, tmp_path, "snapshot", sim.url("s"), "--mode", "log", env=sim.env())
    assert result.code == 17 and "SIMPLE recovery model" in result.err
    second = take(repo, sim, "auto", "s")
    assert kinds(second) == {"s": "diff"}
    assert "SIMPLE" in (second.source_metadata or {})["auto_reason"]
    (points,) = restore_points(repo.snapshots())
    assert not points.streams[0].point_in_time
    with pytest.raises(Exception, match="4208") as raised:  # and the server itself refuses a log backup
        sim.sql(f"BACKUP LOG s TO DISK = N'{sim.stage}/x.trn' WITH INIT")
    assert "BACKUP LOG is not allowed while the recovery model is SIMPLE" in str(raised.value)


def test_a_foreign_log_backup_is_detected(sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sim.sql("CREATE DATABASE shop; CREATE TABLE shop.dbo.t (id INT PRIMARY KEY)")
    repo = init_repo(str(tmp_path / "repo"), tmp_path / "cache")
    take(repo, sim, "full")
    sim.sql("INSERT INTO shop.dbo.t VALUES (1)")
    take(repo, sim, "log")
    sim.sql("INSERT INTO shop.dbo.t VALUES (2)")
    other = tmp_path / "other"
    other.mkdir()
    sim.sql(f"BACKUP LOG shop TO DISK = N'{other}/shop_1.trn' WITH INIT, NAME = N'Nightly maintenance plan'")
    result = run_cli(capsys, tmp_path, "snapshot", sim.url("shop"), "--mode", "log", env=sim.env())
    assert result.code == 17
    assert "another tool took a log backup of shop" in result.err and "shop_1.trn" in result.err
    healed = take(repo, sim, "auto")
    meta = healed.source_metadata or {}
    assert kinds(healed) == {"shop": "diff"} and "another tool" in meta["auto_reason"]
    assert meta["foreign_backups"][0]["device"].endswith("shop_1.trn")
    # a foreign full (not COPY_ONLY) moves the differential base: the next diff would need it
    sim.sql(f"BACKUP DATABASE shop TO DISK = N'{other}/shop_full.bak' WITH INIT")
    with environment(sim.env()), pytest.raises(ChainError, match="which the repository does not hold"):
        take(repo, sim, "diff")
    assert kinds(take(repo, sim, "auto")) == {"shop": "log"}  # the log chain is still ours
    sim.sql(f"BACKUP DATABASE shop TO DISK = N'{other}/shop_full2.bak' WITH INIT")
    sim.sql(f"BACKUP LOG shop TO DISK = N'{other}/shop_2.trn' WITH INIT")
    assert kinds(take(repo, sim, "auto")) == {"shop": "full"}


def test_copy_only_takes_copy_only_fulls_and_leaves_the_chain_alone(sim: Simulator, tmp_path: Path) -> None:
    sim.sql("CREATE DATABASE shop; CREATE TABLE shop.dbo.t (id INT PRIMARY KEY)")
    other = tmp_path / "other"
    other.mkdir()
    sim.sql(f"BACKUP DATABASE shop TO DISK = N'{other}/theirs.bak' WITH INIT")
    before = sim.sql("SELECT differential_base_guid FROM sys.master_files WHERE database_id = DB_ID(N'shop') "
                     "AND file_id = 1")
    repo = init_repo(str(tmp_path / "repo"), tmp_path / "cache")
    snap = take(repo, sim, "auto", copy_only="1")
    (backup,) = (snap.source_metadata or {})["databases"]
    assert backup["kind"] == "full" and backup["is_copy_only"]
    assert sim.sql("SELECT differential_base_guid FROM sys.master_files WHERE database_id = DB_ID(N'shop') "
                   "AND file_id = 1") == before
    with environment(sim.env()), pytest.raises(ChainError, match="copy_only=1"):
        take(repo, sim, "log", copy_only="1")


def test_the_server_errors_come_back_with_their_numbers(sim: Simulator, tmp_path: Path) -> None:
    import pyodbc

    stage = sim.stage
    sim.sql("CREATE DATABASE e; CREATE TABLE e.dbo.t (id INT)")
    cases = [
        (f"BACKUP LOG e TO DISK = N'{stage}/a.trn' WITH INIT", "(4214)", "no current database backup"),
        (f"BACKUP DATABASE e TO DISK = N'{stage}/a.bak' WITH DIFFERENTIAL, INIT", "(3035)", "differential backup"),
        (f"BACKUP DATABASE e TO DISK = N'{tmp_path}/missing/a.bak' WITH INIT", "(3201)", "Cannot open backup device"),
    ]
    for sql, number, text in cases:
        with pytest.raises(pyodbc.Error) as raised:
            sim.sql(sql)
        assert number in str(raised.value) and text in str(raised.value)
    sim.sql(f"BACKUP DATABASE e TO DISK = N'{stage}/full.bak' WITH INIT")
    sim.sql("INSERT INTO e.dbo.t VALUES (1)")
    sim.sql(f"BACKUP LOG e TO DISK = N'{stage}/l1.trn' WITH INIT")
    sim.sql("INSERT INTO e.dbo.t VALUES (2)")
    sim.sql(f"BACKUP LOG e TO DISK = N'{stage}/l2.trn' WITH INIT")
    sim.sql("INSERT INTO e.dbo.t VALUES (3)")
    with pytest.raises(pyodbc.Error, match=r"\(3159\)"):  # over itself without REPLACE: the tail of the log
        sim.sql(f"RESTORE DATABASE e FROM DISK = N'{stage}/full.bak'")
    sim.sql(f"RESTORE DATABASE e2 FROM DISK = N'{stage}/full.bak' WITH NORECOVERY, MOVE N'e' TO N'{stage}/e2.mdf', "
            f"MOVE N'e_log' TO N'{stage}/e2.ldf'")
    with pytest.raises(pyodbc.Error, match=r"too recent to apply.*\(4305\)"):  # l1 skipped
        sim.sql(f"RESTORE LOG e2 FROM DISK = N'{stage}/l2.trn' WITH NORECOVERY")
    with pytest.raises(pyodbc.Error, match=r"\(1834\)"):  # the original's files are in use
        sim.sql(f"RESTORE DATABASE e3 FROM DISK = N'{stage}/full.bak' WITH NORECOVERY")
    cnxn = pyodbc.connect(f"DRIVER={{FreeTDS}};SERVER=127.0.0.1;PORT={sim.port};UID=sa;PWD={sim.password};"
                          "TDS_Version=7.4;Encrypt=no")  # pyodbc's default: not autocommit
    try:
        cur = cnxn.cursor()
        cur.execute("SELECT COUNT(*) FROM e.dbo.t").fetchall()
        with pytest.raises(pyodbc.Error, match=r"within a transaction.*\(3021\)"):
            cur.execute(f"BACKUP DATABASE e TO DISK = N'{stage}/tx.bak' WITH INIT")
    finally:
        cnxn.close()


def test_a_client_that_does_not_drain_its_results_aborts_the_backup(sim: Simulator) -> None:
    sim.sql("CREATE DATABASE d; CREATE TABLE d.dbo.t (id INT)")
    path = sim.stage / "d.bak"
    cnxn = sim.connect()
    cur = cnxn.cursor()
    cur.execute(f"BACKUP DATABASE d TO DISK = N'{path}' WITH INIT, STATS = 10")
    cur.close()  # pyodbc #471: no nextset() loop, the statement is cancelled
    cnxn.close()
    time.sleep(0.3)
    assert not path.exists()
    assert sim.sql("SELECT COUNT(*) FROM msdb.dbo.backupset WHERE database_name = N'd'") == [(0,)]
    drained = sim.sql(f"BACKUP DATABASE d TO DISK = N'{path}' WITH INIT, STATS = 10")
    assert drained == [] and path.exists()


def test_a_database_that_is_restoring_is_skipped_with_a_warning(sim: Simulator, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    sim.sql("CREATE DATABASE a; CREATE TABLE a.dbo.t (id INT)")
    sim.sql(f"BACKUP DATABASE a TO DISK = N'{sim.stage}/a.bak' WITH INIT")
    sim.sql(f"RESTORE DATABASE b FROM DISK = N'{sim.stage}/a.bak' WITH NORECOVERY, MOVE N'a' TO N'{sim.stage}/b.mdf', "
            f"MOVE N'a_log' TO N'{sim.stage}/b.ldf'")
    (sim.stage / "a.bak").unlink()
    init_repo(str(tmp_path / "repo"), tmp_path / "cache")
    url = sim.url()
    result = run_cli(capsys, tmp_path, "snapshot", url, "--json", env=sim.env())
    assert result.code == 3, result.err
    assert "database b not backed up: state RESTORING" in result.out + result.err
    with environment(sim.env()), pytest.raises(ConnectorError, match="not ONLINE"):
        make_source(sim.url("b"), repo=None, mode="full")


def test_a_log_backup_that_never_reached_the_repository_breaks_the_chain_and_auto_heals(
        sim: Simulator, tmp_path: Path) -> None:
    sim.sql("CREATE DATABASE shop; CREATE TABLE shop.dbo.t (id INT PRIMARY KEY)")
    repo = init_repo(str(tmp_path / "repo"), tmp_path / "cache")
    take(repo, sim, "full")
    sim.sql("INSERT INTO shop.dbo.t VALUES (1)")
    sim.sql("EXEC dtsim_fault N'log:truncated'")  # the server took the log backup, its file is damaged
    with environment(sim.env()), pytest.raises(ConnectorError, match="3241"):
        take(repo, sim, "log")
    assert list(sim.stage.iterdir()) == []
    with environment(sim.env()), pytest.raises(ChainError, match="a run that did not commit"):
        take(repo, sim, "log")
    healed = take(repo, sim, "auto")
    assert kinds(healed) == {"shop": "diff"}
    sim.sql("INSERT INTO shop.dbo.t VALUES (2)")
    assert kinds(take(repo, sim, "log")) == {"shop": "log"}
