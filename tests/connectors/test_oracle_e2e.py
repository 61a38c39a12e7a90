"""The Oracle connector end to end against the simulator (tests/sim/oracle): the dtstore CLI in this
process, the simulated database in its own file tree, the fake sqlplus run through the command runner."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import dtstore
from tests.connectors.contract import environment, run_cli
from tests.helpers import PASSWORD
from tests.servers.sftp import SFTPServer
from tests.sim.oracle.__main__ import bin_dir
from tests.sim.oracle.db import Tree, create
from tests.sim.oracle.sql import execute

SECRET = "Oracle-sim-Pw-4711"
DRIVER = "tests.sim.oracle.driver"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Db:
    base: Path
    root: Path

    def sql(self, statement: str, root: Path | None = None) -> list[tuple[object, ...]]:
        return execute(Tree(root or self.root), statement).rows

    def url(self, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"files": "local", "driver": DRIVER, **params}.items())
        return f"oracle://sys@localhost:1521/ORCL?{query}"

    def env(self) -> dict[str, str]:
        return {"ORACLE_SIM_STATE": str(self.root), "ORACLE_PWD": SECRET,
                "PATH": f"{bin_dir()}{os.pathsep}{os.environ['PATH']}", "ORACLE_SIM_TZ": "America/New_York"}

    def rows(self, root: Path | None = None) -> list[tuple[object, ...]]:
        return self.sql("SELECT id, name, qty FROM orders ORDER BY id", root)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Db]:
    made = Db(tmp_path, tmp_path / "db")
    with environment(made.env()):
        create(made.root, password=SECRET)
        yield made


def cli(capsys: pytest.CaptureFixture[str], db: Db, *args: str) -> tuple[int, str, str]:
    with environment(db.env()):
        result = run_cli(capsys, db.base, *args)
    return result.code, result.out, result.err


def init(capsys: pytest.CaptureFixture[str], db: Db) -> None:
    code, _, err = cli(capsys, db, "init")
    assert code == 0, err


def snapshot(capsys: pytest.CaptureFixture[str], db: Db, mode: str, expect: int = 0) -> str:
    code, out, err = cli(capsys, db, "snapshot", db.url(), "--mode", mode, "--json")
    assert code == expect, err + out
    return out + err


def workload(db: Db, start: int, count: int) -> None:
    for n in range(start, start + count):
        db.sql(f"INSERT INTO orders VALUES ({n}, 'order {n}', {n % 7})")
    db.sql(f"UPDATE orders SET qty = qty + 10 WHERE id = {start}")


def metas(db: Db, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    code, out, err = cli(capsys, db, "snapshots", "--json")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"id"' in line]


def test_full_logs_then_restore_to_a_moment_and_to_latest(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    init(capsys, db)
    db.sql("CREATE TABLE orders (id NUMBER, name VARCHAR2(40), qty NUMBER)")
    workload(db, 1, 20)
    snapshot(capsys, db, "full")
    workload(db, 100, 5)
    snapshot(capsys, db, "log")
    workload(db, 200, 5)
    snapshot(capsys, db, "log")
    time.sleep(1.2)
    moment = dt.datetime.now(dt.UTC).replace(microsecond=0)
    at_moment = db.rows()
    time.sleep(1.2)
    workload(db, 300, 5)
    db.sql("DELETE FROM orders WHERE qty < 3")  # the incident
    final = db.rows()
    snapshot(capsys, db, "log")

    code, out, err = cli(capsys, db, "restore-points")
    assert code == 0 and "oracle oracle:" in out and "restorable" in out, err

    until = moment.isoformat().replace("+00:00", "Z")
    code, out, err = cli(capsys, db, "restore", "--to", db.url(), "--until", until, "--target-dir",
                         str(db.base / "at-moment"), "--dry-run")
    assert code == 0, err
    local = moment.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York")).strftime("%Y-%m-%d:%H:%M:%S")
    assert f"UNTIL TIME '{local}' USING BACKUP CONTROLFILE" in out  # the server's local time
    assert not (db.base / "at-moment").exists()

    code, out, err = cli(capsys, db, "restore", "--to", db.url(), "--until", until, "--target-dir",
                         str(db.base / "at-moment"))
    assert code == 0, err + out
    assert db.rows(db.base / "at-moment") == at_moment
    assert db.sql("SELECT status FROM v$instance", db.base / "at-moment") == [("OPEN",)]
    incarnations = db.sql("SELECT incarnation#, status FROM v$database_incarnation", db.base / "at-moment")
    assert incarnations[-1] == (2, "CURRENT")  # OPEN RESETLOGS: a new incarnation

    code, out, err = cli(capsys, db, "restore", "--to", db.url(), "--target-dir", str(db.base / "latest"))
    assert code == 0, err + out
    assert db.rows(db.base / "latest") == final
    assert db.rows() == final  # the source is untouched

    code, out, err = cli(capsys, db, "restore", "--to", db.url())
    assert code == 1 and "refusing to overwrite the files of a database" in err
    assert SECRET not in out + err


def test_a_log_missing_on_the_host_is_exit_17_naming_thread_and_sequence(
        db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    init(capsys, db)
    db.sql("CREATE TABLE orders (id NUMBER, name VARCHAR2(40), qty NUMBER)")
    snapshot(capsys, db, "full")
    workload(db, 1, 3)
    execute(Tree(db.root), "ALTER SYSTEM SWITCH LOGFILE")
    seq, name = db.sql("SELECT sequence#, name FROM v$archived_log ORDER BY sequence#")[-1]
    Path(str(name)).unlink()  # an operator deleted it before dtstore copied it
    out = snapshot(capsys, db, "log", expect=17)
    assert f"thread 1 sequence {seq}" in out
    snapshot(capsys, db, "auto")
    assert [m.get("kind") for m in metas(db, capsys)][-1] == "full"


def test_a_forgotten_log_snapshot_is_exit_17_at_restore(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    init(capsys, db)
    db.sql("CREATE TABLE orders (id NUMBER, name VARCHAR2(40), qty NUMBER)")
    snapshot(capsys, db, "full")
    workload(db, 1, 2)
    snapshot(capsys, db, "log")
    workload(db, 10, 2)
    snapshot(capsys, db, "log")
    ids = [m["id"] for m in metas(db, capsys)]
    code, _, err = cli(capsys, db, "forget", str(ids[1]), "--force")
    assert code == 0, err
    code, _, err = cli(capsys, db, "restore", "--to", db.url(), "--target-dir", str(db.base / "r"), "--dry-run")
    assert code == 17 and "thread 1 sequence" in err and "missing" in err, err


def test_noarchivelog_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = Db(tmp_path, tmp_path / "db")
    with environment(db.env()):
        create(db.root, archivelog=False, password=SECRET)
    init(capsys, db)
    out = snapshot(capsys, db, "full", expect=1)
    assert "NOARCHIVELOG" in out and "ALTER DATABASE ARCHIVELOG" in out
    assert db.sql("SELECT file#, status FROM v$backup WHERE status = 'ACTIVE'") == []


def test_a_killed_full_leaves_no_file_in_backup_mode_after_the_next_run(
        db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    init(capsys, db)
    env = {**os.environ, **db.env(), "ORACLE_SIM_KILL_AFTER": "BEGIN BACKUP", "DTSTORE_PASSWORD": PASSWORD,
           "DTSTORE_CACHE_DIR": str(db.base / "cli-cache"), "PYTHONPATH": str(REPO_ROOT)}
    killed = subprocess.run([sys.executable, "-c", "import sys; from dtstore.cli.main import main; sys.exit(main())",
                             "snapshot", db.url(), "--mode", "full", "--repo", str(db.base / "repo")],
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr
    assert len(db.sql("SELECT file# FROM v$backup WHERE status = 'ACTIVE'")) == 4
    # an instance crash now would keep the database from opening
    script = "CONNECT / AS SYSDBA\nSHUTDOWN ABORT\nSTARTUP\nEXIT\n"
    done = subprocess.run([str(bin_dir() / "sqlplus"), "-S", "/nolog"], input=script, env={**os.environ, **db.env()},
                          capture_output=True, text=True, timeout=60, check=False)
    assert "ORA-10873" in done.stdout
    execute(Tree(db.root), "ALTER DATABASE END BACKUP")  # in MOUNT, as the DBA would
    execute(Tree(db.root), "ALTER DATABASE OPEN")
    execute(Tree(db.root), "ALTER DATABASE BEGIN BACKUP")  # and killed again, the database staying up
    snapshot(capsys, db, "full")
    assert db.sql("SELECT file# FROM v$backup WHERE status = 'ACTIVE'") == []
    with environment({"DTSTORE_CACHE_DIR": str(db.base / "cli-cache")}):
        repo = dtstore.Repository.open(str(db.base / "repo"), password=PASSWORD)
        newest = max(repo.snapshots(), key=lambda s: s.time)
    assert newest.source_metadata["ended_stuck_backup"] == [1, 2, 3, 4]


def test_consecutive_fulls_deduplicate(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    init(capsys, db)
    db.sql("CREATE TABLE orders (id NUMBER, name VARCHAR2(40), qty NUMBER)")
    workload(db, 1, 30)
    first = snapshot(capsys, db, "full")
    db.sql("UPDATE orders SET qty = 99 WHERE id = 3")
    second = snapshot(capsys, db, "full")

    def added(text: str) -> int:
        summary = [json.loads(line) for line in text.splitlines() if '"summary"' in line][-1]
        return int(summary["bytes_new"])

    print(f"full 1: {added(first)} bytes new, full 2: {added(second)} bytes new")
    assert added(second) < added(first) / 3, (first[-400:], second[-400:])


@pytest.mark.slow
def test_the_database_host_reached_over_ssh(db: Db, capsys: pytest.CaptureFixture[str],
                                            sftp_server: SFTPServer) -> None:
    """The "different computers" case: SQL through the driver, the host's files over SFTP, SQL*Plus over SSH."""
    files = f"sftp://{sftp_server.user}@{sftp_server.host}:{sftp_server.port}"
    ssh_env = {"DTSTORE_SSH_KNOWN_HOSTS": str(sftp_server.known_hosts), "DTSTORE_SSH_KEY": str(sftp_server.client_key)}
    url = db.url(files=files, sqlplus=str(bin_dir() / "sqlplus"))
    init(capsys, db)
    db.sql("CREATE TABLE orders (id NUMBER, name VARCHAR2(40), qty NUMBER)")
    workload(db, 1, 10)
    with environment(ssh_env):
        code, _, err = cli(capsys, db, "snapshot", url, "--mode", "full")
        assert code == 0, err
        workload(db, 50, 3)
        final = db.rows()
        code, _, err = cli(capsys, db, "snapshot", url, "--mode", "log")
        assert code == 0, err
        code, out, err = cli(capsys, db, "restore", "--to", url, "--target-dir", str(db.base / "over-ssh"))
        assert code == 0, err + out
    assert db.rows(db.base / "over-ssh") == final
    assert SECRET not in out + err


def test_after_open_resetlogs_a_new_incarnation_starts_a_new_chain(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    init(capsys, db)
    db.sql("CREATE TABLE orders (id NUMBER, name VARCHAR2(40), qty NUMBER)")
    workload(db, 1, 5)
    snapshot(capsys, db, "full")
    workload(db, 10, 2)
    snapshot(capsys, db, "log")
    code, out, err = cli(capsys, db, "restore", "--to", db.url(), "--target-dir", str(db.base / "reborn"))
    assert code == 0, err + out
    reborn = Db(db.base, db.base / "reborn")  # the restored copy is the database now (same DBID, new incarnation)
    for orapw in (db.root / "dbs").glob("orapw*"):  # the password file is the DBA's to copy (not backed up)
        (reborn.root / "dbs" / orapw.name).write_bytes(orapw.read_bytes())
    reborn.sql("INSERT INTO orders VALUES (500, 'after resetlogs', 1)")
    out = snapshot(capsys, reborn, "log", expect=17)
    assert "RESETLOGS" in out
    snapshot(capsys, reborn, "auto")
    reborn.sql("INSERT INTO orders VALUES (501, 'later', 2)")
    snapshot(capsys, reborn, "log")
    code, out, err = cli(capsys, reborn, "restore-points")
    assert code == 0 and out.count("incarnation") == 2, out
    code, out, err = cli(capsys, reborn, "restore", "--to", reborn.url(), "--target-dir", str(db.base / "third"))
    assert code == 0, err + out
    assert reborn.rows(db.base / "third") == reborn.rows()


def test_a_log_archived_to_two_destinations_is_stored_once(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    init(capsys, db)
    (db.base / "arch2").mkdir()
    db.sql(f"ALTER SYSTEM SET log_archive_dest_2='LOCATION={db.base / 'arch2'}' SCOPE=BOTH")
    db.sql("CREATE TABLE orders (id NUMBER, name VARCHAR2(40), qty NUMBER)")
    snapshot(capsys, db, "full")
    workload(db, 1, 3)
    snapshot(capsys, db, "log")
    rows = db.sql("SELECT thread#, sequence#, dest_id FROM v$archived_log")
    assert {r[2] for r in rows} == {1, 2}  # every log is listed twice
    with environment({"DTSTORE_CACHE_DIR": str(db.base / "cli-cache")}):
        repo = dtstore.Repository.open(str(db.base / "repo"), password=PASSWORD)
        stored = [(lg["thread"], lg["sequence"]) for s in repo.snapshots() for lg in s.source_metadata["logs"]]
    assert len(stored) == len(set(stored)), stored
    code, out, err = cli(capsys, db, "restore", "--to", db.url(), "--target-dir", str(db.base / "r"))
    assert code == 0, err + out
    assert db.rows(db.base / "r") == db.rows()
