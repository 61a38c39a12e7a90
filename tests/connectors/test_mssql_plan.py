"""SQL Server connector, the pure parts: URL, metadata, chain links and the restore planner.

The planner is tested on synthetic backup histories: dbatools' scenarios (several fulls, a diff on a
foreign full, a missing log, a recovery-fork change, a STOPAT between logs) and a hypothesis property
(every plan is a valid LSN chain ending in the log that contains the target, nothing after it).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtstore.connectors.base import SnapshotInfo
from dtstore.connectors.chains import Target
from dtstore.connectors.mssql.chain import links
from dtstore.connectors.mssql.meta import BackupFile, SnapshotMeta, check
from dtstore.connectors.mssql.plan import MssqlRestorePlan, moved_files, plan_restore, server_local, validate
from dtstore.connectors.mssql.source import backup_sql, header_times, item_path
from dtstore.connectors.mssql.url import parse_url
from dtstore.connectors.points import restore_points
from dtstore.errors import ChainError, ConnectorError, UsageError

T0 = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)
STEP = 100_000


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class History:
    """A synthetic server: an LSN counter, backups as SQL Server would number them."""

    database: str = "shop"
    model: str = "FULL"
    lsn: int = 37_000_000_001_600_001
    fork: str = field(default_factory=lambda: str(uuid.uuid4()).upper())
    chain_from: int | None = None  # last_log_backup_lsn
    base_guid: str | None = None  # differential_base_guid
    base_checkpoint: int = 0
    snaps: list[SnapshotInfo] = field(default_factory=list)

    def _record(self, kind: str, minute: float, first: int, last: int, checkpoint: int, **extra: Any) -> BackupFile:
        value = {
            "database": self.database, "kind": kind, "path": item_path(self.database, kind), "bytes": 1000,
            "first_lsn": str(first), "last_lsn": str(last), "checkpoint_lsn": str(checkpoint),
            "database_backup_lsn": str(self.base_checkpoint), "differential_base_lsn": None,
            "differential_base_guid": None, "backup_set_guid": str(uuid.uuid4()).upper(),
            "first_recovery_fork_guid": self.fork, "last_recovery_fork_guid": self.fork, "fork_point_lsn": None,
            "start": iso(at(minute - 0.1)), "finish": iso(at(minute)), "time_zone": 4,
            "recovery_model": self.model, "database_guid": "DB-GUID", "family_guid": "DB-GUID",
            "is_copy_only": False, "begins_log_chain": False, "has_checksums": True, "verified": True,
            "compressed": False, "files": [{"logical_name": "shop", "physical_name": "D:\\Data\\shop.mdf", "type": "D"},
                                           {"logical_name": "shop_log", "physical_name": "L:\\Logs\\shop_log.ldf",
                                            "type": "L"}],
            **extra,
        }
        return BackupFile.of(value)

    def _snapshot(self, minute: float, backup: BackupFile | None) -> SnapshotInfo:
        n = len(self.snaps)
        sid = f"{n:02d}" + uuid.uuid4().hex[:62]
        meta = {"format": 1, "requested_mode": backup.kind if backup else "full", "mode": backup.kind if backup else
                "full", "url": "mssql://sa@db/", "server": {"name": "DB1"},
                "databases": [backup.to_json()] if backup else [], "skipped": []}
        snap = SnapshotInfo(sid, sid[:8], at(minute + 0.05), "mssql:DB1", "mssql", meta)
        self.snaps.append(snap)
        return snap

    def work(self, n: int = 1) -> None:
        self.lsn += n * STEP

    def full(self, minute: float, *, copy_only: bool = False, keep: bool = True) -> BackupFile:
        checkpoint = self.lsn
        self.lsn += 2 * STEP
        backup = self._record("full", minute, checkpoint, self.lsn, checkpoint, is_copy_only=copy_only)
        if not copy_only:
            self.base_guid, self.base_checkpoint = backup.backup_set_guid, checkpoint
            if self.chain_from is None and self.model != "SIMPLE":
                self.chain_from = checkpoint
        if keep:
            self._snapshot(minute, backup)
        return backup

    def diff(self, minute: float) -> BackupFile:
        checkpoint = self.lsn
        self.lsn += 2 * STEP
        backup = self._record("diff", minute, checkpoint, self.lsn, checkpoint,
                              differential_base_lsn=str(self.base_checkpoint), differential_base_guid=self.base_guid)
        self._snapshot(minute, backup)
        return backup

    def log(self, minute: float, *, keep: bool = True) -> BackupFile:
        if self.chain_from is None:
            raise AssertionError("no log chain")
        first = self.chain_from
        self.lsn += STEP
        backup = self._record("log", minute, first, self.lsn, self.base_checkpoint)
        self.chain_from = self.lsn
        if keep:
            self._snapshot(minute, backup)
        return backup

    def restored(self) -> None:
        """The database was restored and recovered on the server: a new recovery fork."""
        self.fork = str(uuid.uuid4()).upper()

    def plan(self, target: Target | None = None, **options: str) -> MssqlRestorePlan:
        return plan_restore(self.snaps, target=target or Target(), scope=None, options=options, source_id="mssql:DB1",
                            target_display="mssql://sa@db2/", stage="S:\\stage")


def kinds_and_ids(plan: MssqlRestorePlan) -> list[tuple[str, str]]:
    (r,) = plan.restores
    return [(f.backup.kind, f.snapshot_id[:2]) for f in r.files]


# --- dbatools' scenarios --------------------------------------------------------------------------------------


def test_several_fulls_the_latest_full_before_the_target_with_its_diff_and_the_logs_after_it() -> None:
    h = History()
    h.full(0)            # 00
    h.work()
    h.log(10)            # 01
    h.full(20)           # 02
    h.work()
    h.diff(30)           # 03
    h.work()
    h.log(40)            # 04
    h.work()
    h.log(50)            # 05
    assert kinds_and_ids(h.plan()) == [("full", "02"), ("diff", "03"), ("log", "04"), ("log", "05")]
    assert kinds_and_ids(h.plan(Target(time=at(15)))) == [("full", "00"), ("log", "01"), ("log", "04")]
    assert kinds_and_ids(h.plan(Target(time=at(25)))) == [("full", "02"), ("log", "04")]


def test_a_diff_on_a_foreign_full_is_not_used_the_logs_bridge_it() -> None:
    h = History()
    h.full(0)                     # 00 ours
    h.work()
    h.log(10)                     # 01
    h.full(15, keep=False)        # another tool's full: moves the differential base
    h.work()
    h.diff(20)                    # 02: belongs to the foreign full
    h.work()
    h.log(30)                     # 03
    assert kinds_and_ids(h.plan()) == [("full", "00"), ("log", "01"), ("log", "03")]


def test_a_missing_log_is_a_chain_error_naming_its_lsn_range() -> None:
    h = History()
    h.full(0)
    h.work()
    h.log(10)
    h.work()
    lost = h.log(20, keep=False)
    h.work()
    h.log(30)
    with pytest.raises(ChainError, match=f"the log backup from LSN {lost.first_lsn} to LSN {lost.last_lsn} is "
                                         "missing"):
        h.plan()
    with pytest.raises(ChainError, match=r"falls in a gap|missing"):
        h.plan(Target(time=at(25)))
    assert kinds_and_ids(h.plan(Target(time=at(10)))) == [("full", "00"), ("log", "01")]


def test_a_recovery_fork_change_breaks_the_chain() -> None:
    h = History()
    h.full(0)
    h.work()
    h.log(10)
    h.restored()
    h.work()
    h.log(20)
    with pytest.raises(ChainError, match="recovery fork"):
        h.plan()


def test_stopat_between_logs_takes_the_log_that_contains_it_and_nothing_after() -> None:
    h = History()
    h.full(0)
    for minute in (10, 20, 30, 40):
        h.work()
        h.log(minute)
    plan = h.plan(Target(time=at(25)))
    (r,) = plan.restores
    assert [f.snapshot_id[:2] for f in r.files] == ["00", "01", "02", "03"]
    assert r.stopat == "2026-11-29T13:25:00"  # the server's local time: UTC+1 (time_zone 4)
    sql = [s for _, s in r.statements("S:\\stage\\run", replace=False)]
    assert sql[0] == ("RESTORE DATABASE [shop] FROM DISK = N'S:\\stage\\run\\shop-000-full.bak' WITH NORECOVERY, "
                      "CHECKSUM, STATS = 10, MOVE N'shop' TO N'<InstanceDefaultDataPath>shop.mdf', "
                      "MOVE N'shop_log' TO N'<InstanceDefaultLogPath>shop_log.ldf'")
    assert sql[1:4] == [f"RESTORE LOG [shop] FROM DISK = N'S:\\stage\\run\\shop-00{i}-log.trn' WITH NORECOVERY, "
                        "CHECKSUM, STATS = 10, STOPAT = N'2026-11-29T13:25:00'" for i in (1, 2, 3)]
    assert sql[-1] == "RESTORE DATABASE [shop] WITH RECOVERY"
    with pytest.raises(ChainError, match="beyond"):
        h.plan(Target(time=at(45)))
    with pytest.raises(ChainError, match="no full"):
        h.plan(Target(time=at(-1)))


def test_as_a_new_name_moves_the_files_in_the_servers_path_style() -> None:
    h = History()
    h.full(0)
    plan = h.plan(**{"as": "shop_copy"})
    (r,) = plan.restores
    assert r.target == "shop_copy"
    assert r.moves == [("shop", "{data}shop_copy.mdf"), ("shop_log", "{log}shop_copy_log.ldf")]  # dbatools' default
    first = r.statements("R", replace=False, defaults=("D:\\Data\\", "L:\\Logs\\"))[0][1]
    assert first.endswith("MOVE N'shop' TO N'D:\\Data\\shop_copy.mdf', "
                          "MOVE N'shop_log' TO N'L:\\Logs\\shop_copy_log.ldf'")
    moved = h.plan(**{"move_to": "E:\\Restore"}).restores[0].moves
    assert moved == [("shop", "E:\\Restore\\shop.mdf"), ("shop_log", "E:\\Restore\\shop_log.ldf")]
    posix = moved_files(SnapshotMeta.of(h.snaps[0].meta).backups[0], "x", "/var/opt/mssql/data")
    assert posix == [("shop", "/var/opt/mssql/data/x.mdf"), ("shop_log", "/var/opt/mssql/data/x_log.ldf")]
    described = "\n".join(h.plan(**{"as": "n", "replace": "1"}).describe())
    assert "REPLACE, MOVE N'shop' TO N'<InstanceDefaultDataPath>n.mdf'" in described


def test_simple_recovery_restores_only_to_its_fulls_and_diffs() -> None:
    h = History(model="SIMPLE")
    h.full(0)
    h.work()
    h.diff(10)
    assert kinds_and_ids(h.plan()) == [("full", "00"), ("diff", "01")]
    (points,) = restore_points(_Snap.of(h.snaps))
    assert not points.streams[0].point_in_time


def test_validate_refuses_what_dbatools_refuses() -> None:
    h = History()
    full = h.full(0)
    h.work()
    a = h.log(10)
    h.work()
    b = h.log(20)
    validate("shop", full, None, [a, b])
    with pytest.raises(ChainError, match=r"does not continue the full.*4305"):
        validate("shop", full, None, [b])  # "too recent": first_lsn after the full's end
    with pytest.raises(ChainError, match="break in the log chain"):
        validate("shop", full, None, [a, a])
    other = History().full(0)
    diff = h.diff(30)
    with pytest.raises(ChainError, match="belongs to full"):
        validate("shop", other, diff, [])


def test_scope_and_as_are_checked() -> None:
    h = History()
    h.full(0)
    with pytest.raises(UsageError, match="known: shop"):
        plan_restore(h.snaps, target=Target(), scope=["crm"], options={}, source_id="s", target_display="t",
                     stage=None)
    h2 = History(database="crm")
    h2.full(1)
    both = [*h.snaps, *h2.snaps]
    with pytest.raises(UsageError, match="--as NEW_NAME restores one database"):
        plan_restore(both, target=Target(), scope=None, options={"as": "x"}, source_id="s", target_display="t",
                     stage=None)
    plan = plan_restore(both, target=Target(), scope=None, options={}, source_id="s", target_display="t", stage=None)
    assert sorted(r.source for r in plan.restores) == ["crm", "shop"]


# --- properties --------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["full", "diff", "log", "log", "log", "lost"]), min_size=1, max_size=14),
       st.floats(min_value=0, max_value=15))
def test_every_plan_is_a_valid_lsn_chain_ending_in_the_log_that_holds_the_target(steps: list[str],
                                                                                  target_minute: float) -> None:
    h = History()
    h.full(0)
    for i, step in enumerate(steps, start=1):
        h.work()
        if step == "full":
            h.full(i)
        elif step == "diff":
            h.diff(i)
        else:
            h.log(i, keep=step != "lost")
    target = Target(time=at(target_minute).replace(microsecond=0))
    try:
        plan = h.plan(target)
    except ChainError:
        return
    (r,) = plan.restores
    backups = [f.backup for f in r.files]
    validate("shop", backups[0], r.diff.backup if r.diff else None, [f.backup for f in r.logs])
    finish = [dt.datetime.fromisoformat(b.finish.replace("Z", "+00:00")) for b in backups]
    assert finish[0] <= target.time if target.time else True
    if r.logs:
        assert finish[-1] >= target.time  # the last log contains the STOPAT …
        assert all(f < target.time for f in finish[1 + (r.diff is not None):-1])  # … and no later one is taken
        assert r.stopat == server_local(target.time, 4)
    else:
        assert r.stopat is None


# --- URL, metadata, statements ---------------------------------------------------------------------------------


def test_url_parsing_never_holds_a_password() -> None:
    url = parse_url("mssql://backup@db1:1444/shop,crm?driver=FreeTDS&stage=/srv/stage&copy_only=1")
    assert (url.user, url.host, url.port, url.databases, url.copy_only) == ("backup", "db1", 1444, ("shop", "crm"),
                                                                           True)
    assert url.display() == "mssql://backup@db1:1444/shop,crm?driver=FreeTDS&stage=/srv/stage&copy_only=1"
    with pytest.raises(UsageError, match="SQLCMDPASSWORD") as raised:
        parse_url("mssql://sa:Hunter2@db1/")
    assert "Hunter2" not in str(raised.value)
    for bad in ("mssql://db1/", "mssql://u@db1/?stgae=x", "mssql://u@db1/tempdb", "mssql://u@db1/?encrypt=maybe",
                "mssql://u@db1/?copy_only=2"):
        with pytest.raises(UsageError, match="expected mssql://"):
            parse_url(bad)
    with pytest.raises(UsageError, match="stage=PATH"):
        parse_url("mssql://u@db1/").stage_dir()


def test_the_connection_string_quotes_the_password_and_turns_freetds_encryption_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQLCMDPASSWORD", "p;w}d")
    url = parse_url("mssql://sa@db1/?stage=/s")
    assert url.connection_string("FreeTDS") == ("DRIVER={FreeTDS};SERVER=db1;PORT=1433;TDS_Version=7.4;Encrypt=no;"
                                                "UID={sa};PWD={p;w}}d};APP=dtstore")
    assert url.connection_string("ODBC Driver 18 for SQL Server").startswith(
        "DRIVER={ODBC Driver 18 for SQL Server};SERVER=db1,1433;UID={sa}")
    monkeypatch.delenv("SQLCMDPASSWORD")
    with pytest.raises(UsageError, match="SQLCMDPASSWORD"):
        url.password()


def test_backup_statements_and_header_times() -> None:
    assert backup_sql("sh]op", "S:\\st\\a.bak", "full", copy_only=False, compression=False, source_id="mssql:DB1") == (
        "BACKUP DATABASE [sh]]op] TO DISK = N'S:\\st\\a.bak' WITH CHECKSUM, INIT, FORMAT, STATS = 10, "
        "NAME = N'dtstore full sh]op', DESCRIPTION = N'dtstore:mssql:DB1'")
    assert "WITH CHECKSUM, INIT, FORMAT, DIFFERENTIAL, STATS" in backup_sql("a", "p", "diff", copy_only=True,
                                                                           compression=False, source_id="s")
    assert backup_sql("a", "p'q", "log", copy_only=True, compression=True, source_id="s").startswith(
        "BACKUP LOG [a] TO DISK = N'p''q' WITH CHECKSUM, INIT, FORMAT, COPY_ONLY, COMPRESSION, STATS")
    start, finish, zone = header_times({"BackupStartDate": dt.datetime(2026, 7, 1, 14, 0, 0),
                                        "BackupFinishDate": dt.datetime(2026, 7, 1, 14, 5, 0), "TimeZone": 8}, 0)
    assert (start, finish, zone) == ("2026-07-01T12:00:00Z", "2026-07-01T12:05:00Z", 8)
    assert header_times({"BackupStartDate": "2026-01-01 10:00:00", "BackupFinishDate": "2026-01-01 10:00:01",
                         "TimeZone": 127}, -300)[2] == -20


def test_metadata_is_read_strictly() -> None:
    h = History()
    h.full(0)
    meta = dict(h.snaps[0].meta)
    check(meta)
    broken = {**meta, "databases": [{k: v for k, v in meta["databases"][0].items() if k != "last_lsn"}]}
    with pytest.raises(ConnectorError, match="no 'last_lsn'"):
        check(broken)
    assert isinstance(meta["databases"][0]["first_lsn"], str)  # numeric(25,0) as text, never a float
    assert [link.kind for link in links(h.snaps)] == ["full"]


@dataclass
class _Snap:
    """A stand-in for dtstore.Snapshot (restore_points reads these attributes)."""

    id: str
    short_id: str
    time: dt.datetime
    source_id: str
    source_kind: str
    source_metadata: dict[str, Any]

    @classmethod
    def of(cls, snaps: list[SnapshotInfo]) -> list[_Snap]:
        return [cls(s.id, s.short_id, s.time, s.source_id, s.kind, dict(s.meta)) for s in snaps]


def test_the_package_imports_without_posix_only_modules() -> None:
    """dtstore runs on the SQL Server machine, which is often Windows: nothing POSIX-only at import."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('fcntl', 'resource', 'termios', 'pwd', 'grp'):\n"
        "    sys.modules[name] = None\n"
        "sys.platform = 'win32'\n"
        "import dtstore.connectors.mssql.chain, dtstore.connectors.mssql.plan, dtstore.connectors.mssql.meta\n"
        "try:\n"
        "    import pyodbc\n"
        "except ImportError:\n"
        "    print('ok'); raise SystemExit\n"
        "import dtstore.connectors.mssql.connector\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
