"""The Oracle simulator itself: its command line, the errors it raises as the real server would, recovery."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sim.oracle.__main__ import bin_dir
from tests.sim.oracle.db import OraError, Tree, create
from tests.sim.oracle.sql import execute

REPO_ROOT = Path(__file__).resolve().parents[2]


def sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.sim.oracle", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=60, check=False)


def sqlplus(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir() / "sqlplus"), "-S", "/nolog"], input=script, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60, check=False)


def test_the_command_line(tmp_path: Path) -> None:
    state = str(tmp_path / "db")
    assert sim("--state", state, "init").returncode == 0
    assert sim("--state", state, "sql", "CREATE TABLE t (id NUMBER, name VARCHAR2(9))").returncode == 0
    assert sim("--state", state, "sql", "INSERT INTO t VALUES (1, 'one')").returncode == 0
    assert sim("--state", state, "sql", "INSERT INTO t (id) VALUES (2)").returncode == 0
    assert sim("--state", state, "sql", "SELECT * FROM t ORDER BY id").stdout == "1\tone\n2\t\n"
    assert sim("--state", state, "switch-logfile").returncode == 0
    listed = sim("--state", state, "sql", "SELECT thread#, sequence#, name FROM v$archived_log").stdout
    rid = execute(Tree(Path(state)), "SELECT resetlogs_id FROM v$database_incarnation").rows[0][0]
    assert listed == f"1\t1\t{state}/arch/1_1_{rid}.arc\n"
    assert Path(sim("bin").stdout.strip(), "sqlplus").exists()
    bad = sim("--state", state, "sql", "SELECT * FROM nowhere")
    assert bad.returncode == 1 and "ORA-00942" in bad.stderr


def test_errors_as_the_server_raises_them(tmp_path: Path) -> None:
    tree = create(tmp_path / "db")
    execute(tree, "ALTER DATABASE BEGIN BACKUP")
    with pytest.raises(OraError, match="ORA-01146: cannot start online backup - file 1 is already in backup"):
        execute(tree, "ALTER DATABASE BEGIN BACKUP")
    execute(tree, "ALTER DATABASE END BACKUP")
    with pytest.raises(OraError, match="ORA-01142"):
        execute(tree, "ALTER DATABASE END BACKUP")
    plain = create(tmp_path / "noarch", archivelog=False)
    with pytest.raises(OraError, match="ORA-01123: cannot start online backup; media recovery not enabled"):
        execute(plain, "ALTER DATABASE BEGIN BACKUP")
    assert execute(plain, "SELECT log_mode FROM v$database").rows == [("NOARCHIVELOG",)]


def test_recovery_needs_every_log_and_reports_the_missing_one(tmp_path: Path) -> None:
    tree = create(tmp_path / "db")
    execute(tree, "CREATE TABLE t (id NUMBER)")
    execute(tree, "ALTER DATABASE BEGIN BACKUP")
    execute(tree, "INSERT INTO t VALUES (1)")
    execute(tree, "ALTER DATABASE END BACKUP")
    execute(tree, "ALTER SYSTEM ARCHIVE LOG CURRENT")
    execute(tree, "INSERT INTO t VALUES (2)")
    execute(tree, "ALTER SYSTEM ARCHIVE LOG CURRENT")
    scn = execute(tree, "SELECT current_scn FROM v$database").rows[0][0]
    (tree.root / "arch").joinpath(sorted(p.name for p in (tree.root / "arch").iterdir())[-1]).unlink()
    pfile = tree.root / "dbs" / "initORCL.ora"
    script = (f"WHENEVER SQLERROR EXIT FAILURE\nCONNECT / AS SYSDBA\nSHUTDOWN ABORT\nSTARTUP MOUNT PFILE='{pfile}'\n"
              f"RECOVER AUTOMATIC DATABASE UNTIL CHANGE {scn} USING BACKUP CONTROLFILE\nEXIT\n")
    done = sqlplus(script, {"ORACLE_SIM_STATE": str(tree.root)})
    assert done.returncode == 1 and "ORA-00279" in done.stdout and "ORA-00308: cannot open archived log" in done.stdout



def test_a_file_copied_in_backup_mode_opens_only_after_redo_through_end_backup(tmp_path: Path) -> None:
    import shutil

    tree = create(tmp_path / "db")
    execute(tree, "CREATE TABLE t (id NUMBER)")
    execute(tree, "ALTER SYSTEM ARCHIVE LOG CURRENT")
    execute(tree, "ALTER DATABASE BEGIN BACKUP")
    data = tree.root / "oradata" / "ORCL"
    copies = tmp_path / "copies"
    copies.mkdir()
    for f in data.glob("*.dbf"):
        shutil.copy(f, copies / f.name)
    execute(tree, "INSERT INTO t VALUES (1)")
    before_end = execute(tree, "SELECT current_scn FROM v$database").rows[0][0]
    execute(tree, "ALTER DATABASE END BACKUP")
    execute(tree, "INSERT INTO t VALUES (2)")
    execute(tree, "ALTER SYSTEM ARCHIVE LOG CURRENT")
    execute(tree, f"ALTER DATABASE BACKUP CONTROLFILE TO '{tmp_path / 'control.bkp'}'")
    end = execute(tree, "SELECT current_scn FROM v$database").rows[0][0]
    pfile = tree.root / "dbs" / "initORCL.ora"

    def restore_and_recover(until: int) -> subprocess.CompletedProcess[str]:
        sqlplus("CONNECT / AS SYSDBA\nSHUTDOWN ABORT\n", {"ORACLE_SIM_STATE": str(tree.root)})
        for f in copies.iterdir():
            shutil.copy(f, data / f.name)
        for name in ("control01.ctl", "control02.ctl"):
            shutil.copy(tmp_path / "control.bkp", data / name)
        return sqlplus(f"WHENEVER SQLERROR EXIT FAILURE\nCONNECT / AS SYSDBA\nSTARTUP MOUNT PFILE='{pfile}'\n"
                       f"RECOVER AUTOMATIC DATABASE UNTIL CHANGE {until} USING BACKUP CONTROLFILE\n"
                       "ALTER DATABASE OPEN RESETLOGS;\nEXIT\n")

    early = restore_and_recover(before_end)
    assert early.returncode == 1 and "ORA-01194: file 1 needs more recovery to be consistent" in early.stdout
    done = restore_and_recover(end)
    assert done.returncode == 0, done.stdout
    assert execute(tree, "SELECT id FROM t ORDER BY id").rows == [(1,), (2,)]
    assert execute(tree, "SELECT sequence#, status FROM v$log WHERE status = 'CURRENT'").rows == [(1, "CURRENT")]
