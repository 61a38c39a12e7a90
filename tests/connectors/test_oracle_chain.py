"""Oracle chains on synthetic metadata: gaps, two threads, duplicate destinations, resetlogs, the plan's script."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dtstore.connectors.base import SnapshotInfo, iso
from dtstore.connectors.chains import Target, windows
from dtstore.connectors.oracle.chain import Frontier, explain, links
from dtstore.connectors.oracle.meta import OracleMeta
from dtstore.connectors.oracle.plan import plan_restore, remap
from dtstore.connectors.oracle.source import HostLog, OracleSource
from dtstore.connectors.positions import Scn
from dtstore.errors import ChainError

T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
RID = 1187462315


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def log(thread: int, seq: int, first: int, nxt: int, rid: int = RID) -> dict[str, Any]:
    return {"thread": thread, "sequence": seq, "resetlogs_id": rid, "first_change": first, "next_change": nxt,
            "first_time": iso(at(first / 100)), "next_time": iso(at(nxt / 100)), "name": f"/arch/{thread}_{seq}.arc",
            "path": f"arch/{thread}_{seq}_{rid}.arc", "size": 10, "sha256": "0" * 64}


def ends(logs: list[dict[str, Any]], before: dict[str, Any] | None = None) -> dict[str, Any]:
    out = dict(before or {})
    for item in logs:
        out[str(item["thread"])] = {"sequence": item["sequence"], "next_change": item["next_change"],
                                    "next_time": item["next_time"]}
    return out


def snap(n: int, mode: str, logs: list[dict[str, Any]], *, continues: dict[str, Any] | None = None,
         rid: int = RID, when: float | None = None) -> SnapshotInfo:
    frontier = ends(logs, continues)
    meta: dict[str, Any] = {
        "format": 1, "mode": mode, "dbid": 42, "name": "ORCL",
        "incarnation": {"resetlogs_change": 1, "resetlogs_time": iso(T0), "resetlogs_id": rid},
        "server_utc_offset": "+01:00", "log_archive_format": "%t_%s_%r.arc", "windows": False,
        "logs": logs, "frontier": frontier, "continues": continues,
        "control_files": ["/u01/oradata/ORCL/control01.ctl", "/u02/fra/ORCL/control02.ctl"],
        "online_logs": [[1, "/u01/oradata/ORCL/redo01.log"]], "spfile": "/u01/app/dbs/spfileORCL.ora",
        "end_scn": min(e["next_change"] for e in frontier.values()),
        "end_time": min(e["next_time"] for e in frontier.values()),
    }
    if mode == "full":
        meta.update(begin_scn=logs[0]["first_change"], pfile_item="pfile/initORCL.ora", datafiles=[
            {"file": 1, "name": "/u01/oradata/ORCL/system01.dbf", "tablespace": "SYSTEM", "bytes": 8192,
             "checkpoint_change": 1, "backup_change": logs[0]["first_change"], "path": "datafiles/1_system01.dbf",
             "size": 8192, "sha256": "1" * 64}])
    OracleMeta.of(meta)
    taken = at(when if when is not None else max(x["next_change"] for x in logs) / 100 + 0.5)
    return SnapshotInfo(f"{n:02d}" + "a" * 62, f"{n:02d}aaaaaa", taken, "oracle:42/ORCL", "oracle", meta)


def chain_one_thread() -> list[SnapshotInfo]:
    full = snap(1, "full", [log(1, 10, 100, 200)])
    l1 = snap(2, "log", [log(1, 11, 200, 300), log(1, 12, 300, 400)], continues=full.meta["frontier"])
    l2 = snap(3, "log", [log(1, 13, 400, 500)], continues=l1.meta["frontier"])
    return [full, l1, l2]


def test_one_thread_chain_plans_the_logs_up_to_the_target() -> None:
    history = chain_one_thread()
    plan = plan_restore(history, target=Target(time=at(3.5)), options={}, source_id="s", target_display="t")
    assert [f.label for f in plan.logs] == [f"1_{s}_{RID}" for s in (10, 11, 12)]
    assert "UNTIL TIME '2026-12-01:11:03:30'" in plan.script  # server local time (+01:00)
    latest = plan_restore(history, target=Target(), options={}, source_id="s", target_display="t")
    assert "UNTIL CHANGE 500" in latest.script and len(latest.logs) == 4
    by_scn = plan_restore(history, target=Target(position=Scn(250)), options={}, source_id="s", target_display="t")
    assert "UNTIL CHANGE 250" in by_scn.script and len(by_scn.logs) == 3


def test_a_missing_log_snapshot_is_a_gap_naming_thread_and_sequence() -> None:
    full, _, l2 = chain_one_thread()
    with pytest.raises(ChainError, match=r"thread 1 sequence 11 \.\. 12 missing"):
        plan_restore([full, l2], target=Target(), options={}, source_id="s", target_display="t")
    points = windows(links([full, l2]), explain=explain)
    assert len(points.windows) == 1 and "thread 1 sequence 11 .. 12 missing" in points.gaps[0].reason
    with pytest.raises(ChainError, match=r"gap|beyond"):
        plan_restore([full, l2], target=Target(time=at(4.5)), options={}, source_id="s", target_display="t")


def test_two_threads_are_restorable_only_where_both_are() -> None:
    full = snap(1, "full", [log(1, 10, 100, 200), log(2, 7, 100, 210)])
    # thread 1 archives far ahead, thread 2 only a little: the window ends at thread 2's end
    l1 = snap(2, "log", [log(1, 11, 200, 400), log(2, 8, 210, 260)], continues=full.meta["frontier"])
    assert links([full, l1])[1].end == Frontier(RID, ((1, 11), (2, 8)), 260)
    points = windows(links([full, l1]), explain=explain)
    assert points.windows[0].end == at(2.6)
    with pytest.raises(ChainError):
        plan_restore([full, l1], target=Target(time=at(3.5)), options={}, source_id="s", target_display="t")
    plan = plan_restore([full, l1], target=Target(time=at(2.5)), options={}, source_id="s", target_display="t")
    expected = sorted(f"{t}_{s}_{RID}" for t, s in ((1, 10), (2, 7), (1, 11), (2, 8)))
    assert sorted(f.label for f in plan.logs) == expected
    # a log snapshot that skipped a thread-2 sequence continues nothing
    bad = snap(3, "log", [log(2, 10, 300, 320)], continues={**l1.meta["frontier"], "2": {
        "sequence": 9, "next_change": 300, "next_time": iso(at(3))}}, when=6)
    assert "thread 2 sequence 9 missing" in windows(links([full, l1, bad]), explain=explain).gaps[0].reason


def test_resetlogs_starts_a_new_stream() -> None:
    history = chain_one_thread()
    new = 2 * RID
    full2 = snap(4, "full", [log(1, 1, 600, 700, rid=new)], rid=new)
    streams = {link.stream for link in links([*history, full2])}
    assert streams == {f"incarnation {RID}", f"incarnation {new}"}
    plan = plan_restore([*history, full2], target=Target(), options={}, source_id="s", target_display="t")
    assert plan.full.id == full2.id
    old = plan_restore([*history, full2], target=Target(time=at(4.5)), options={}, source_id="s", target_display="t")
    assert old.full.id == history[0].id


def test_a_log_archived_to_two_destinations_is_stored_once() -> None:
    class Fake:
        def __init__(self, rows: list[dict[str, Any]], on_disk: set[str]) -> None:
            self._rows, self.on_disk = rows, on_disk

        def rows(self, sql: str) -> list[dict[str, Any]]:
            return self._rows

        def exists(self, path: str) -> bool:
            return path in self.on_disk

    day = dt.datetime(2026, 12, 1, 11, 0)
    rows = [{"THREAD#": 1, "SEQUENCE#": 5, "NAME": f"/{d}/1_5.arc", "DEST_ID": n, "FIRST_CHANGE#": 10,
             "NEXT_CHANGE#": 20, "FIRST_TIME": day, "NEXT_TIME": day, "RESETLOGS_ID": RID}
            for n, d in ((1, "a"), (2, "b"))]
    source = OracleSource.__new__(OracleSource)
    fake = Fake(rows, {"/b/1_5.arc"})  # the first destination lost its copy: the second is read
    source._session, source._runner = fake, fake  # type: ignore[assignment]
    info = type("I", (), {"resetlogs_id": RID, "zone": dt.UTC})()
    found = source._host_logs(info)  # type: ignore[arg-type]
    assert found == [HostLog(1, 5, RID, 10, 20, "2026-12-01T11:00:00Z", "2026-12-01T11:00:00Z", "/b/1_5.arc")]


def test_gap_in_v_archived_log_is_named() -> None:
    logs = [HostLog(1, 11, RID, 200, 300, "", "", "x"), HostLog(1, 13, RID, 400, 500, "", "", "y")]
    from dtstore.connectors.oracle.meta import ThreadEnd

    with pytest.raises(ChainError, match="thread 1 sequence 12 is missing"):
        OracleSource._check_contiguous(logs, {1: ThreadEnd(10, 200, "")})
    with pytest.raises(ChainError, match="starts at SCN 250"):
        OracleSource._check_contiguous([HostLog(1, 11, RID, 250, 300, "", "", "x")], {1: ThreadEnd(10, 200, "")})


def test_target_dir_converts_every_path_and_the_script_renames_them() -> None:
    history = chain_one_thread()
    plan = plan_restore(history, target=Target(), options={"target_dir": "/restore"}, source_id="s",
                        target_display="t")
    assert plan.convert == [("/", "/restore")] or plan.convert[0][1] == "/restore"
    assert remap("/u01/oradata/ORCL/system01.dbf", [("/u01", "/x")], False) == "/x/oradata/ORCL/system01.dbf"
    assert remap(r"D:\oradata\ORCL\SYSTEM01.DBF", [(r"D:\oradata", r"E:\restore")], True) == \
        r"E:\restore\ORCL\SYSTEM01.DBF"
    assert "ALTER DATABASE RENAME FILE '/u01/oradata/ORCL/system01.dbf' TO " in plan.script
    assert plan.script.splitlines()[:3] == ["WHENEVER SQLERROR EXIT FAILURE", "CONNECT / AS SYSDBA",
                                            f"STARTUP MOUNT PFILE='{plan.pfile.dest}'"]
    assert plan.script.rstrip().endswith("ALTER DATABASE OPEN RESETLOGS;\nEXIT")


def test_frontier_text_round_trips_and_compares_with_scn() -> None:
    f = Frontier(RID, ((1, 4), (2, 9)), 1234)
    assert Frontier.parse(str(f)) == f
    assert Scn(1234) <= f and f <= Scn(1234) and not f < Scn(1234) and f < Scn(1235)


def test_the_connector_imports_without_posix_only_modules() -> None:
    """A Windows backup machine: nothing the Oracle package imports needs fcntl, resource, termios, pwd, grp."""
    import subprocess
    import sys

    code = (
        "import sys, asyncio, subprocess, tempfile, shutil, dtstore.connectors, dtstore.ssh\n"
        "for name in [m for m in sys.modules if m.startswith(('dtstore.connectors._proc', 'dtstore.connectors.runner',"
        " 'dtstore.connectors.oracle'))]:\n"
        "    sys.modules.pop(name, None)\n"
        "for name in ('fcntl', 'resource', 'termios', 'pwd', 'grp'):\n"
        "    sys.modules[name] = None\n"
        "sys.platform = 'win32'\n"
        "import dtstore.connectors.oracle.connector, dtstore.connectors.oracle.restore\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_windows_host_paths_name_items_and_convert() -> None:
    from dtstore.connectors.oracle.url import parse_url

    url = parse_url("oracle://sys@db:1521/ORCL?files=sftp://oracle@db&windows=yes")
    assert url.host_path(r"D:\oradata\ORCL\SYSTEM01.DBF").name == "SYSTEM01.DBF"
    assert str(url.host_path(r"D:\oradata\ORCL\SYSTEM01.DBF").parent) == r"D:\oradata\ORCL"
    from dtstore.connectors.oracle.plan import common_root

    assert str(common_root([r"D:\oradata\ORCL\a.dbf", r"d:\ORADATA\orcl\control01.ctl", r"D:\oradata\fra\c2.ctl"],
                           True)) == r"D:\oradata"
