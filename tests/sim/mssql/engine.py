"""The simulated SQL Server: databases, LSNs, backups, restores, the system views, the errors.

State lives in ``STATE/``: ``catalog.sqlite`` (the system views, msdb's history, every database's
change log) and ``data/`` (one sqlite file per database, at its ``physical_name``).  See
``tests/sim/mssql/__init__.py`` for what is modelled and what is not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import sqlite3
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tests.sim.mssql import sqlmap, tds
from tests.sim.mssql.server import Answer, Cancelled, Flush, Session

LSN_STEP = 100_000  # one "log block" per record: LSNs look like msdb's (VLF, block, slot) decimals
FIRST_LSN = 37_000_000_001_600_001
MAGIC = b"DTSSIMBAK1\n"
SYSTEM_DATABASES = (("master", 1, "SIMPLE"), ("tempdb", 2, "SIMPLE"), ("model", 3, "FULL"), ("msdb", 4, "SIMPLE"))

CATALOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS sys_databases (
    name TEXT PRIMARY KEY COLLATE NOCASE, database_id INTEGER UNIQUE, database_guid TEXT, family_guid TEXT,
    recovery_model INTEGER, recovery_model_desc TEXT, state INTEGER, state_desc TEXT, is_read_only INTEGER,
    is_in_standby INTEGER, source_database_id INTEGER, create_date TEXT, compatibility_level INTEGER,
    user_access_desc TEXT, lsn INTEGER, last_checkpoint_lsn INTEGER, redo_lsn INTEGER, restored_checkpoint_lsn INTEGER,
    stopped INTEGER, chain_fresh INTEGER, log_reuse_wait_desc TEXT);
CREATE TABLE IF NOT EXISTS sys_master_files (
    database_id INTEGER, file_id INTEGER, type INTEGER, type_desc TEXT, name TEXT, physical_name TEXT,
    state_desc TEXT, size INTEGER, differential_base_lsn INTEGER, differential_base_guid TEXT,
    differential_base_time TEXT);
CREATE TABLE IF NOT EXISTS sys_database_recovery_status (
    database_id INTEGER PRIMARY KEY, database_guid TEXT, family_guid TEXT, last_log_backup_lsn INTEGER,
    recovery_fork_guid TEXT, first_recovery_fork_guid TEXT, fork_point_lsn INTEGER);
CREATE TABLE IF NOT EXISTS msdb_backupset (
    backup_set_id INTEGER PRIMARY KEY, backup_set_uuid TEXT, media_set_id INTEGER, name TEXT, description TEXT,
    user_name TEXT, database_name TEXT, server_name TEXT, machine_name TEXT, database_guid TEXT, family_guid TEXT,
    type TEXT, first_lsn INTEGER, last_lsn INTEGER, checkpoint_lsn INTEGER, database_backup_lsn INTEGER,
    differential_base_lsn INTEGER, differential_base_guid TEXT, first_recovery_fork_guid TEXT,
    last_recovery_fork_guid TEXT, fork_point_lsn INTEGER, backup_start_date TEXT, backup_finish_date TEXT,
    time_zone INTEGER, recovery_model TEXT, is_copy_only INTEGER, begins_log_chain INTEGER,
    has_backup_checksums INTEGER, is_damaged INTEGER, has_bulk_logged_data INTEGER, is_snapshot INTEGER,
    has_incomplete_metadata INTEGER, backup_size INTEGER, compressed_backup_size INTEGER,
    last_valid_restore_time TEXT);
CREATE TABLE IF NOT EXISTS msdb_backupmediafamily (
    media_set_id INTEGER PRIMARY KEY, family_sequence_number INTEGER, physical_device_name TEXT, device_type INTEGER);
CREATE TABLE IF NOT EXISTS msdb_restorehistory (
    restore_history_id INTEGER PRIMARY KEY, restore_date TEXT, destination_database_name TEXT, restore_type TEXT,
    backup_set_id INTEGER, stop_at TEXT);
CREATE TABLE IF NOT EXISTS changes (database_id INTEGER, lsn INTEGER, time_utc TEXT, sql TEXT);
CREATE INDEX IF NOT EXISTS changes_by_db ON changes (database_id, lsn);
"""

def _names(text: str) -> set[str]:
    return {name.lower() for name in text.split()}


NUMERIC_COLUMNS = _names(
    "first_lsn last_lsn checkpoint_lsn database_backup_lsn differential_base_lsn fork_point_lsn"
    " last_log_backup_lsn FirstLSN LastLSN CheckpointLSN DatabaseBackupLSN DifferentialBaseLSN ForkPointLSN"
    " CreateLSN DropLSN ReadOnlyLSN ReadWriteLSN backup_size compressed_backup_size BackupSize"
    " CompressedBackupSize Size MaxSize BackupSizeInBytes redo_lsn")
GUID_COLUMNS = _names(
    "database_guid family_guid differential_base_guid first_recovery_fork_guid last_recovery_fork_guid"
    " recovery_fork_guid backup_set_uuid BindingID RecoveryForkID FamilyGUID FirstRecoveryForkID"
    " DifferentialBaseGUID BackupSetGUID UniqueId")
DATETIME_COLUMNS = _names(
    "backup_start_date backup_finish_date create_date differential_base_time BackupStartDate BackupFinishDate"
    " DatabaseCreationDate LastValidRestoreTime ExpirationDate restore_date last_valid_restore_time")
BIT_COLUMNS = _names(
    "is_copy_only begins_log_chain has_backup_checksums is_damaged is_read_only is_in_standby"
    " has_bulk_logged_data is_snapshot has_incomplete_metadata HasBackupChecksums IsCopyOnly BeginsLogChain"
    " IsDamaged HasBulkLoggedData IsSnapshot IsReadOnly IsSingleUser HasIncompleteMetaData IsForceOffline"
    " Compressed IsPresent")


class SqlError(Exception):
    """One or more error messages for the current statement: [(number, text, severity, state)]."""

    def __init__(self, *messages: tuple[int, str]) -> None:
        super().__init__(messages[0][1])
        self.messages = messages


def terminating(verb: str, *first: tuple[int, str]) -> SqlError:
    """An error followed by 3013 '<VERB> is terminating abnormally.', as BACKUP and RESTORE report."""
    return SqlError(*first, (3013, f"{verb} is terminating abnormally."))


@dataclass
class Options:
    flags: set[str] = field(default_factory=set)
    values: dict[str, str] = field(default_factory=dict)
    moves: list[tuple[str, str]] = field(default_factory=list)


OPTION = re.compile(
    r"\s*(?:MOVE\s+(N?'(?:[^']|'')*')\s+TO\s+(N?'(?:[^']|'')*')"
    r"|(\w+)\s*=\s*(N?'(?:[^']|'')*'|[\w.]+)"
    r"|(\w+))\s*(?:,|$)", re.I | re.S)


def parse_options(text: str) -> Options:
    opts, pos, text = Options(), 0, text.strip()
    while pos < len(text):
        m = OPTION.match(text, pos)
        if not m or m.end() == pos:
            raise SqlError((102, f"Incorrect syntax near '{text[pos:pos + 20]}'."))
        if m.group(1):
            opts.moves.append((sqlmap.literal_value(m.group(1)), sqlmap.literal_value(m.group(2))))
        elif m.group(3):
            value = m.group(4)
            opts.values[m.group(3).upper()] = sqlmap.literal_value(value) if "'" in value else value
        else:
            opts.flags.add(m.group(5).upper())
        pos = m.end()
    return opts


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Engine:
    def __init__(self, state: Path, *, password: str, user: str = "sa", name: str = "SIMSQL",
                 zone: str = "Europe/Berlin", step_delay: float = 0.01) -> None:
        self.state, self.password, self.user, self.name = state, password, user, name
        self.zone = ZoneInfo(zone)
        self.step_delay = step_delay
        self.version = (16, 0, 4135)
        self.lock = threading.RLock()
        self.data_dir = state / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(state / "catalog.sqlite", check_same_thread=False, isolation_level=None)
        self.db.executescript(CATALOG_SCHEMA)
        self.faults: dict[str, list[str]] = {"full": [], "diff": [], "log": []}
        """armed with ``EXEC dtsim_fault N'<full|diff|log>:<disk-full|truncated|silent>'`` (simulator only)"""
        for db_name, db_id, model in SYSTEM_DATABASES:
            if not self._database(db_name):
                self._create_database(db_name, db_id=db_id, model=model)

    # --- time ---------------------------------------------------------------------------------------------------

    def local(self, moment: dt.datetime) -> dt.datetime:
        return moment.astimezone(self.zone).replace(tzinfo=None)

    def local_text(self, moment: dt.datetime) -> str:
        return self.local(moment).isoformat(sep=" ", timespec="milliseconds")

    def time_zone(self, moment: dt.datetime) -> int:
        offset = moment.astimezone(self.zone).utcoffset() or dt.timedelta(0)
        return int(offset.total_seconds() // 900)

    def from_local(self, text: str) -> dt.datetime:
        value = dt.datetime.fromisoformat(text.strip().replace("T", " "))
        if value.tzinfo is None:
            value = value.replace(tzinfo=self.zone)
        return value.astimezone(dt.UTC)

    # --- catalog helpers ----------------------------------------------------------------------------------------

    def _database(self, name: str) -> dict[str, Any] | None:
        rows = self.db.execute("SELECT * FROM sys_databases WHERE name = ? COLLATE NOCASE", (name,))
        names = [d[0] for d in rows.description]
        row = rows.fetchone()
        return dict(zip(names, row, strict=True)) if row else None

    def _recovery(self, db_id: int) -> dict[str, Any]:
        cur = self.db.execute("SELECT * FROM sys_database_recovery_status WHERE database_id = ?", (db_id,))
        names = [d[0] for d in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))

    def _files(self, db_id: int) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM sys_master_files WHERE database_id = ? ORDER BY file_id", (db_id,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def _data_path(self, db_id: int) -> Path:
        return Path(self._files(db_id)[0]["physical_name"])

    def _set(self, table: str, db_id: int, **values: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in values)
        self.db.execute(f"UPDATE {table} SET {cols} WHERE database_id = ?", (*values.values(), db_id))

    def _next_lsn(self, db: dict[str, Any]) -> int:
        lsn = int(db["lsn"])
        self._set("sys_databases", db["database_id"], lsn=lsn + LSN_STEP)
        db["lsn"] = lsn + LSN_STEP
        return lsn

    def _create_database(self, name: str, *, db_id: int | None = None, model: str = "FULL",
                         guid: str | None = None, family: str | None = None, paths: Sequence[str] | None = None,
                         state: str = "ONLINE", lsn: int = FIRST_LSN) -> dict[str, Any]:
        if db_id is None:
            db_id = max(5, 1 + (self.db.execute("SELECT MAX(database_id) FROM sys_databases").fetchone()[0] or 4))
        data, log = paths or (str(self.data_dir / f"{name}.mdf"), str(self.data_dir / f"{name}_log.ldf"))
        guid = guid or str(uuid.uuid4()).upper()
        self.db.execute(
            "INSERT INTO sys_databases VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, NULL, ?, 160, 'MULTI_USER', ?, ?, ?, "
            "NULL, 0, 0, 'NOTHING')",
            (name, db_id, guid, family or guid, {"FULL": 1, "BULK_LOGGED": 2, "SIMPLE": 3}[model], model,
             0 if state == "ONLINE" else 1, state, self.local_text(_now()), lsn, lsn, lsn))
        fork = str(uuid.uuid4()).upper()
        self.db.execute("INSERT INTO sys_database_recovery_status VALUES (?, ?, ?, NULL, ?, ?, NULL)",
                        (db_id, guid, family or guid, fork, fork))
        for file_id, kind, path, logical in ((1, 0, data, name), (2, 1, log, f"{name}_log")):
            self.db.execute("INSERT INTO sys_master_files VALUES (?, ?, ?, ?, ?, ?, 'ONLINE', 1024, NULL, NULL, NULL)",
                            (db_id, file_id, kind, "ROWS" if kind == 0 else "LOG", logical, path))
        if not Path(data).exists():
            sqlite3.connect(data).close()
            Path(log).write_bytes(b"")
        return self._database(name) or {}

    def _drop_database(self, db: dict[str, Any]) -> None:
        for f in self._files(db["database_id"]):
            Path(f["physical_name"]).unlink(missing_ok=True)
        for table in ("sys_databases", "sys_master_files", "sys_database_recovery_status", "changes"):
            self.db.execute(f"DELETE FROM {table} WHERE database_id = ?", (db["database_id"],))

    # --- login and dispatch -------------------------------------------------------------------------------------

    def login(self, session: Session) -> tuple[bool, bytes]:
        with self.lock:
            return self._login(session)

    def _login(self, session: Session) -> tuple[bool, bytes]:
        login = session.login
        if login.user.lower() != self.user.lower() or login.password != self.password:
            return False, tds.message(18456, f"Login failed for user '{login.user}'.", severity=14, state=1,
                                      server=self.name) + tds.done(tds.DONE_ERROR)
        if login.database and not self._database(login.database):
            return False, tds.message(4060, f'Cannot open database "{login.database}" requested by the login. '
                                      "The login failed.", severity=11, server=self.name) + tds.done(tds.DONE_ERROR)
        version = min(login.tds_version, 0x74000004)
        tokens = (tds.envchange(1, session.database, "master") + tds.envchange_collation()
                  + tds.envchange(2, "us_english") + tds.envchange(4, str(login.packet_size or 4096), "4096")
                  + tds.message(5701, f"Changed database context to '{session.database}'.", severity=0,
                                server=self.name)
                  + tds.loginack(version, "Microsoft SQL Server", self.version) + tds.done())
        return True, tokens

    def transaction(self, session: Session, payload: bytes) -> Answer:
        """Transaction manager requests (FreeTDS's autocommit off): 5 begin, 7 commit, 8 rollback."""
        body = tds.skip_all_headers(payload, session.login.tds_version)
        kind = struct.unpack("<H", body[:2])[0] if len(body) >= 2 else 0
        if kind == 5:
            session.trancount += 1
        elif kind in (7, 8):
            again = len(body) >= 4 and body[2] < len(body) - 3 and body[3 + body[2]] & 0x01
            session.trancount = 1 if again else 0  # fBeginXact: commit/rollback, then begin the next one
        yield tds.done()

    def rpc(self, session: Session, payload: bytes) -> Answer:
        yield tds.message(50000, "the simulator takes no RPC requests: send SQL batches", severity=16,
                          server=self.name)
        yield tds.done(tds.DONE_ERROR)

    def batch(self, session: Session, sql: str) -> Answer:
        statements = sqlmap.split_statements(sql) or [""]
        for i, statement in enumerate(statements):
            more = tds.DONE_MORE if i < len(statements) - 1 else 0
            with self.lock:
                last: Any = None
                try:
                    for piece in self.statement(session, statement):
                        if last is not None:
                            yield last
                        last = piece
                except Cancelled:
                    raise
                except SqlError as exc:
                    if last is not None:
                        yield last
                    for number, text in exc.messages:
                        yield tds.message(number, text, severity=16, server=self.name)
                    if len(exc.messages) > 1 or exc.messages[0][0] in (3013, 3021):
                        yield tds.done(tds.DONE_ERROR)
                        return  # a batch-aborting error: nothing after it runs
                    yield tds.done(tds.DONE_ERROR | more)
                    continue
                if isinstance(last, bytes) and last[:1] == bytes([tds.DONE]) and more:
                    last = bytes([tds.DONE]) + struct.pack("<H", struct.unpack("<H", last[1:3])[0] | more) + last[3:]
                if last is not None:
                    yield last

    # --- statements ---------------------------------------------------------------------------------------------

    def statement(self, session: Session, sql: str) -> Iterator[Any]:
        head = sql.lstrip().split(None, 2)
        verb = head[0].upper() if head else ""
        second = head[1].upper() if len(head) > 1 else ""
        if verb == "SET":
            m = re.match(r"SET\s+IMPLICIT_TRANSACTIONS\s+(ON|OFF)", sql, re.I)
            if m:
                session.implicit_transactions = m.group(1).upper() == "ON"
            yield tds.done()
            return
        if verb.startswith("SP_DATATYPE_INFO"):
            yield tds.done()
            return
        if verb == "USE":
            yield from self._use(session, sqlmap.unquote(sql.split(None, 1)[1]))
            return
        if verb in ("BEGIN", "COMMIT", "ROLLBACK"):
            session.trancount = session.trancount + 1 if verb == "BEGIN" else 0
            yield tds.done()
            return
        if verb == "BACKUP":
            yield from self._backup(session, sql)
            return
        if verb in ("EXEC", "EXECUTE") and second.upper() == "DTSIM_FAULT":
            kind, _, fault = sqlmap.literal_value(sql.split(None, 2)[2].strip()).partition(":")
            if kind not in self.faults or fault not in ("disk-full", "truncated", "silent"):
                raise SqlError((50002, "dtsim_fault takes N'full|diff|log:disk-full|truncated|silent'"))
            self.faults[kind].append(fault)
            yield tds.done()
            return
        if verb == "RESTORE":
            yield from self._restore(session, sql)
            return
        if verb == "CREATE" and second == "DATABASE":
            name = sqlmap.unquote(sql.split(None, 3)[2])
            if self._database(name):
                raise SqlError((1801, f"Database '{name}' already exists. Choose a different database name."))
            self._create_database(name)
            yield tds.done()
            return
        if verb == "DROP" and second == "DATABASE":
            m = re.match(r"DROP\s+DATABASE\s+(IF\s+EXISTS\s+)?(.+)$", sql, re.I | re.S)
            name = sqlmap.unquote(m.group(2)) if m else ""
            db = self._database(name)
            if db is None:
                if m and m.group(1):
                    yield tds.done()
                    return
                raise SqlError((3701, f"Cannot drop the database '{name}', because it does not exist or you do not "
                                      "have permission."))
            if db["database_id"] <= 4:
                raise SqlError((3708, f"Cannot drop the database '{name}' because it is a system database."))
            if session.database.lower() == name.lower():
                session.database = "master"
            self._drop_database(db)
            yield tds.done()
            return
        if verb == "ALTER" and second == "DATABASE":
            yield from self._alter_database(sql)
            return
        if session.implicit_transactions and session.trancount == 0 and verb in (
                "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "TRUNCATE", "WITH"):
            session.trancount = 1
        if verb in ("SELECT", "WITH"):
            yield from self._select(session, sql)
            return
        if verb in ("INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "TRUNCATE", "ALTER"):
            yield from self._write(session, sql)
            return
        raise SqlError((2812, f"Could not find stored procedure '{head[0] if head else ''}'."))

    def _use(self, session: Session, name: str) -> Iterator[Any]:
        db = self._database(name)
        if db is None:
            raise SqlError(_no_database(name))
        if db["state_desc"] != "ONLINE":
            raise SqlError((927, f"Database '{name}' cannot be opened. It is in the middle of a restore."))
        yield tds.envchange(1, db["name"], session.database)
        yield tds.message(5701, f"Changed database context to '{db['name']}'.", severity=0, server=self.name)
        session.database = db["name"]
        yield tds.done()

    def _alter_database(self, sql: str) -> Iterator[Any]:
        m = re.match(r"ALTER\s+DATABASE\s+(\S+)\s+SET\s+(.+)$", sql, re.I | re.S)
        if not m:
            raise SqlError((102, "Incorrect syntax near 'DATABASE'."))
        name, what = sqlmap.unquote(m.group(1)), m.group(2).strip().upper()
        db = self._database(name)
        if db is None:
            raise SqlError((5011, f"User does not have permission to alter database '{name}', the database does not "
                                  "exist, or the database is not in a state that allows access checks."),
                           (5069, "ALTER DATABASE statement failed."))
        rm = re.match(r"RECOVERY\s+(FULL|SIMPLE|BULK_LOGGED)", what)
        if rm:
            model = rm.group(1)
            self._set("sys_databases", db["database_id"], recovery_model_desc=model,
                      recovery_model={"FULL": 1, "BULK_LOGGED": 2, "SIMPLE": 3}[model])
            if model == "SIMPLE":  # the log chain ends here
                self._set("sys_database_recovery_status", db["database_id"], last_log_backup_lsn=None)
        elif what.startswith(("SINGLE_USER", "MULTI_USER", "RESTRICTED_USER")):
            self._set("sys_databases", db["database_id"], user_access_desc=what.split()[0])
        elif what in ("OFFLINE", "ONLINE") or what.startswith(("OFFLINE ", "ONLINE ")):
            state = what.split()[0]
            self._set("sys_databases", db["database_id"], state_desc=state, state=0 if state == "ONLINE" else 6)
        yield tds.done()

    # --- SELECT and writes ----------------------------------------------------------------------------------------

    def _functions(self, conn: sqlite3.Connection, session: Session) -> None:
        props = {
            "servername": self.name, "machinename": self.name, "instancename": None,
            "edition": "Developer Edition (64-bit)", "engineedition": 3, "productversion": "16.0.4135.4",
            "productlevel": "RTM", "collation": "Latin1_General_CI_AS", "ishadrenabled": 0,
            "instancedefaultdatapath": str(self.data_dir) + os.sep,
            "instancedefaultlogpath": str(self.data_dir) + os.sep,
        }
        conn.create_function("serverproperty_", 1, lambda p: props.get(str(p).lower()))
        conn.create_function("servername_", 0, lambda: self.name)
        conn.create_function("version_", 0, lambda: "Microsoft SQL Server 2022 (RTM-CU12) (dtstore TDS simulator) "
                             "16.0.4135.4 (X64) Developer Edition (64-bit)")
        conn.create_function("trancount_", 0, lambda: session.trancount)
        conn.create_function("spid_", 0, lambda: session.spid)

        def db_id(name: Any = None) -> Any:
            db = self._database(str(name) if name is not None else session.database)
            return db["database_id"] if db else None

        def db_name(db_id_: Any = None) -> Any:
            if db_id_ is None:
                return session.database
            row = self.db.execute("SELECT name FROM sys_databases WHERE database_id = ?", (db_id_,)).fetchone()
            return row[0] if row else None

        conn.create_function("db_id_", 1, db_id)
        conn.create_function("db_id_", 0, db_id)
        conn.create_function("db_name_", 1, db_name)
        conn.create_function("db_name_", 0, db_name)
        conn.create_function("tzoffset_", 0, lambda: self.time_zone(_now()) * 15)
        conn.create_function("sysdatetimeoffset_", 0, lambda: _now().astimezone(self.zone).isoformat(sep=" "))
        conn.create_function("localnow_", 0, lambda: self.local_text(_now()))
        conn.create_function("utcnow_", 0,
                             lambda: _now().replace(tzinfo=None).isoformat(sep=" ", timespec="milliseconds"))

    def _connect(self, session: Session, main: str | None, rewritten: sqlmap.Rewritten) -> sqlite3.Connection:
        if main is not None:
            db = self._database(main)
            if db is None:
                raise SqlError(_no_database(main))
            if db["state_desc"] != "ONLINE":
                raise SqlError((927, f"Database '{main}' cannot be opened. It is in the middle of a restore."))
            conn = sqlite3.connect(self._data_path(db["database_id"]), isolation_level=None)
        else:
            conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.execute(f"ATTACH DATABASE ? AS {sqlmap.CATALOG}", (str(self.state / "catalog.sqlite"),))
        for name in rewritten.databases:
            other = self._database(name)
            if other is None:
                raise SqlError(_no_database(name))
            if other["state_desc"] != "ONLINE":
                raise SqlError((927, f"Database '{name}' cannot be opened. It is in the middle of a restore."))
            if main is None or other["name"].lower() != main.lower():
                conn.execute(f'ATTACH DATABASE ? AS "{other["name"]}"', (str(self._data_path(other["database_id"])),))
        self._functions(conn, session)
        return conn

    def _select(self, session: Session, sql: str) -> Iterator[Any]:
        rewritten = sqlmap.rewrite(sql)
        main = None if session.database.lower() in ("master", "msdb", "tempdb", "model") else session.database
        conn = self._connect(session, main, rewritten)
        try:
            cur = conn.execute(rewritten.sql)
            rows = cur.fetchall()
            names = [d[0] for d in cur.description or ()]
        except sqlite3.Error as exc:
            raise _sql_error(exc) from None
        finally:
            conn.close()
        yield from self.result(names, rows)

    def result(self, names: Sequence[str], rows: Sequence[Sequence[Any]], kinds: Sequence[str] | None = None) -> \
            Iterator[bytes]:
        if kinds is None:
            kinds = []
            for i, name in enumerate(names):
                low = name.lower()
                kind = (tds.NUMERIC if low in NUMERIC_COLUMNS else tds.GUID if low in GUID_COLUMNS
                        else tds.DATETIME if low in DATETIME_COLUMNS else tds.BIT if low in BIT_COLUMNS else None)
                if kind is None:
                    kind = next((k for r in rows if (k := tds.kind_of(r[i])) is not None), tds.TEXT)
                kinds.append(kind)
        columns = list(zip(names, kinds, strict=True))
        yield tds.colmetadata(columns)
        for r in rows:
            yield tds.row(columns, [_coerce(k, v) for k, v in zip(kinds, r, strict=True)])
        yield tds.done(tds.DONE_COUNT, len(rows))

    def _write(self, session: Session, sql: str) -> Iterator[Any]:
        first = sqlmap.rewrite(sql)
        m = re.match(r"\s*(?:INSERT\s+(?:INTO\s+)?|UPDATE\s+|DELETE\s+(?:FROM\s+)?|CREATE\s+TABLE\s+|DROP\s+TABLE\s+"
                     r"(?:IF\s+EXISTS\s+)?|TRUNCATE\s+TABLE\s+|ALTER\s+TABLE\s+)"
                     r'(?:"([^"]+)"|(\w+))\.', first.sql, re.I)
        target = (m.group(1) or m.group(2)) if m and (m.group(1) or m.group(2)) in first.databases else session.database
        if target.lower() in ("master", "msdb", "tempdb", "model"):
            raise SqlError((262, f"CREATE TABLE and data changes in system database '{target}' are not simulated."))
        rewritten = sqlmap.rewrite(sql, for_database=target)
        if rewritten.databases or rewritten.catalog:
            raise SqlError((50000, "the simulator does not write with references to other databases"))
        text = re.sub(r"^\s*TRUNCATE\s+TABLE\s+", "DELETE FROM ", rewritten.sql, flags=re.I)
        conn = self._connect(session, target, rewritten)
        try:
            cur = conn.execute(text)
            count = max(cur.rowcount, 0)
        except sqlite3.Error as exc:
            raise _sql_error(exc) from None
        finally:
            conn.close()
        db = self._database(target) or {}
        lsn = self._next_lsn(db)
        self.db.execute("INSERT INTO changes VALUES (?, ?, ?, ?)", (db["database_id"], lsn, _now().isoformat(), text))
        self._set("sys_databases", db["database_id"], log_reuse_wait_desc="LOG_BACKUP"
                  if db["recovery_model_desc"] != "SIMPLE" else "NOTHING")
        verb = text.split(None, 1)[0].upper()
        yield tds.done(tds.DONE_COUNT if verb in ("INSERT", "UPDATE", "DELETE") else 0, count)

    # --- BACKUP -------------------------------------------------------------------------------------------------

    def _backup(self, session: Session, sql: str) -> Iterator[Any]:
        m = re.match(r"BACKUP\s+(DATABASE|LOG)\s+(\S+)\s+TO\s+DISK\s*=\s*(N?'(?:[^']|'')*')(?:\s+WITH\s+(.*))?$",
                     sql.strip(), re.I | re.S)
        if not m:
            raise SqlError((102, "Incorrect syntax near 'BACKUP'."))
        what, name, path = m.group(1).upper(), sqlmap.unquote(m.group(2)), sqlmap.literal_value(m.group(3))
        opts = parse_options(m.group(4) or "")
        diff = "DIFFERENTIAL" in opts.flags
        verb = "BACKUP LOG" if what == "LOG" else "BACKUP DATABASE"
        if session.trancount:
            raise terminating(verb, (3021, "Cannot perform a backup or restore operation within a transaction."))
        db = self._database(name)
        if db is None:
            raise terminating(verb, (911, f"Database '{name}' does not exist. Make sure that the name is entered "
                                          "correctly."))
        if db["name"].lower() == "tempdb":
            raise terminating(verb, (3147, "Backup and restore operations are not allowed on database tempdb."))
        if db["state_desc"] != "ONLINE":
            raise terminating(verb, (927, f"Database '{db['name']}' cannot be opened. It is in the middle of a "
                                          "restore."))
        rec = self._recovery(db["database_id"])
        files = self._files(db["database_id"])
        if what == "LOG":
            if db["name"].lower() == "master":
                raise terminating(verb, (4212, "Cannot back up the log of the master database. Use BACKUP DATABASE "
                                               "instead."))
            if db["recovery_model_desc"] == "SIMPLE":
                raise terminating(verb, (4208, "The statement BACKUP LOG is not allowed while the recovery model is "
                                               "SIMPLE. Use BACKUP DATABASE or change the recovery model using ALTER "
                                               "DATABASE."))
            if rec["last_log_backup_lsn"] is None:
                raise terminating(verb, (4214, "BACKUP LOG cannot be performed because there is no current database "
                                               "backup."))
        if diff and db["name"].lower() == "master":
            raise terminating(verb, (3024, "You can only perform a full backup of the master database. Use BACKUP "
                                           "DATABASE to back up the entire master database."))
        if diff and files[0]["differential_base_lsn"] is None:
            raise terminating(verb, (3035, f'Cannot perform a differential backup for database "{db["name"]}", because '
                                           "a current database backup does not exist. Perform a full database backup "
                                           "by reissuing BACKUP DATABASE, omitting the WITH DIFFERENTIAL option."))
        target = Path(path)
        if not target.parent.is_dir() or (target.exists() and target.is_dir()):
            raise terminating(verb, (3201, f"Cannot open backup device '{path}'. Operating system error 3(The system "
                                           "cannot find the path specified.)."))
        if target.exists() and not ({"INIT", "FORMAT"} & opts.flags):
            raise terminating(verb, (50001, f"The simulator does not append backup sets to '{path}': use WITH INIT."))
        started = _now()
        copy_only = "COPY_ONLY" in opts.flags and not diff
        kind = "L" if what == "LOG" else "I" if diff else "D"
        db_id = db["database_id"]
        if kind == "L":
            first = int(rec["last_log_backup_lsn"])
            last = self._next_lsn(db)  # the log backup's own record ends the backed-up range
            last = int(db["lsn"])
            checkpoint = int(db["last_checkpoint_lsn"])
            changes = self._changes(db_id, first, last)
            payload = json.dumps(changes).encode()
            begins = bool(db["chain_fresh"])
        else:
            checkpoint = self._next_lsn(db)
            first = checkpoint
            self._next_lsn(db)
            last = int(db["lsn"])
            begins = False
            if kind == "I":
                changes = self._changes(db_id, int(files[0]["differential_base_lsn"]), last)
                payload = json.dumps(changes).encode()
            else:
                payload = self._data_path(db_id).read_bytes()
        base_lsn = files[0]["differential_base_lsn"]
        finished = _now()
        header = {
            "BackupName": opts.values.get("NAME"), "BackupDescription": opts.values.get("DESCRIPTION"),
            "BackupType": {"D": 1, "L": 2, "I": 5}[kind], "type": kind, "DatabaseName": db["name"],
            "ServerName": self.name, "MachineName": self.name, "UserName": session.login.user,
            "DatabaseCreationDate": db["create_date"], "BackupSize": len(payload) + 8192,
            "FirstLSN": first, "LastLSN": last, "CheckpointLSN": checkpoint,
            "DatabaseBackupLSN": int(base_lsn) if base_lsn is not None else 0,
            "BackupStartDate": self.local_text(started), "BackupFinishDate": self.local_text(finished),
            "TimeZone": self.time_zone(finished), "BindingID": db["database_guid"],
            "RecoveryForkID": rec["recovery_fork_guid"], "FirstRecoveryForkID": rec["recovery_fork_guid"],
            "ForkPointLSN": rec["fork_point_lsn"], "FamilyGUID": db["family_guid"], "DatabaseGUID": db["database_guid"],
            "RecoveryModel": db["recovery_model_desc"], "IsCopyOnly": copy_only, "BeginsLogChain": begins,
            "HasBackupChecksums": "CHECKSUM" in opts.flags, "Compressed": "COMPRESSION" in opts.flags,
            "DifferentialBaseLSN": int(base_lsn) if kind == "I" else None,
            "DifferentialBaseGUID": files[0]["differential_base_guid"] if kind == "I" else None,
            "BackupSetGUID": str(uuid.uuid4()).upper(),
            "BackupTypeDescription": {"D": "Database", "L": "Transaction Log", "I": "Database Differential"}[kind],
            "LastValidRestoreTime": self.local_text(finished), "CompatibilityLevel": db["compatibility_level"],
            "files": [{"LogicalName": f["name"], "PhysicalName": f["physical_name"], "Type": "D" if f["type"] == 0
                       else "L", "FileId": f["file_id"]} for f in files],
            "recovery_model": db["recovery_model_desc"],
        }
        data = _bak(header, payload)
        fault = self.faults[{"D": "full", "I": "diff", "L": "log"}[kind]]
        fault_now = fault.pop(0) if fault else None
        if fault_now == "disk-full":
            raise terminating(verb, (3202, f'Write on "{path}" failed: 112(There is not enough space on the disk.)'))
        if fault_now == "truncated":
            data = data[: len(data) // 2]
        partial = target.with_name(target.name + ".sim-partial")
        try:
            partial.write_bytes(data)
        except OSError as exc:
            raise terminating(verb, (3201, f"Cannot open backup device '{path}'. Operating system error 5(Access is "
                                           f"denied.). ({exc.strerror})")) from None
        pages = max(1, len(payload) // 8192)
        stats = int(opts.values.get("STATS", "0") or 0)
        try:
            steps = list(range(stats, 101, stats)) if stats else []
            for pct in steps:
                yield tds.message(3211, f"{pct} percent processed.", severity=0, server=self.name)
                yield tds.done(tds.DONE_MORE)
                yield Flush(self.step_delay)
            yield Flush(max(self.step_delay, 0.05))  # still writing: a client that leaves now aborts the backup
        except Cancelled:
            partial.unlink(missing_ok=True)  # nothing recorded in msdb, no file: the backup did not happen
            raise
        if fault_now == "silent":  # as if the client had gone: no file, nothing recorded, no final message
            partial.unlink(missing_ok=True)
            yield tds.done()
            return
        os.replace(partial, target)
        self._record_backup(db, rec, files, header, str(target), kind, copy_only, len(data))
        logical = files[0]["name"]
        if kind != "L":
            yield tds.message(4035, f"Processed {pages} pages for database '{db['name']}', file '{logical}' on file 1.",
                              severity=0, server=self.name)
        yield tds.message(4035, f"Processed 2 pages for database '{db['name']}', file '{files[1]['name']}' on file 1.",
                          severity=0, server=self.name)
        seconds = max((_now() - started).total_seconds(), 0.001)
        label = {"D": "BACKUP DATABASE", "I": "BACKUP DATABASE WITH DIFFERENTIAL", "L": "BACKUP LOG"}[kind]
        yield tds.message(3014, f"{label} successfully processed {pages + 2} pages in {seconds:.3f} seconds "
                                f"({len(data) / seconds / 1e6:.3f} MB/sec).", severity=0, server=self.name)
        yield tds.done()

    def _changes(self, db_id: int, first: int, last: int) -> list[list[Any]]:
        rows = self.db.execute("SELECT lsn, time_utc, sql FROM changes WHERE database_id = ? AND lsn >= ? AND lsn < ? "
                               "ORDER BY lsn", (db_id, first, last)).fetchall()
        return [list(r) for r in rows]

    def _record_backup(self, db: dict[str, Any], rec: dict[str, Any], files: list[dict[str, Any]],
                       header: dict[str, Any], path: str, kind: str, copy_only: bool, size: int) -> None:
        db_id = db["database_id"]
        cur = self.db.execute("INSERT INTO msdb_backupmediafamily (family_sequence_number, physical_device_name, "
                              "device_type) VALUES (1, ?, 2)", (path,))
        media = cur.lastrowid
        self.db.execute(
            "INSERT INTO msdb_backupset (backup_set_uuid, media_set_id, name, description, user_name, database_name, "
            "server_name, machine_name, database_guid, family_guid, type, first_lsn, last_lsn, checkpoint_lsn, "
            "database_backup_lsn, differential_base_lsn, differential_base_guid, first_recovery_fork_guid, "
            "last_recovery_fork_guid, fork_point_lsn, backup_start_date, backup_finish_date, time_zone, "
            "recovery_model, is_copy_only, begins_log_chain, has_backup_checksums, is_damaged, "
            "has_bulk_logged_data, is_snapshot, has_incomplete_metadata, backup_size, compressed_backup_size, "
            "last_valid_restore_time) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, ?, ?, ?)",
            (header["BackupSetGUID"], media, header["BackupName"], header["BackupDescription"], header["UserName"],
             db["name"], self.name, self.name, db["database_guid"], db["family_guid"], kind, header["FirstLSN"],
             header["LastLSN"], header["CheckpointLSN"], header["DatabaseBackupLSN"], header["DifferentialBaseLSN"],
             header["DifferentialBaseGUID"], header["FirstRecoveryForkID"], header["RecoveryForkID"],
             header["ForkPointLSN"], header["BackupStartDate"], header["BackupFinishDate"], header["TimeZone"],
             header["RecoveryModel"], int(copy_only), int(header["BeginsLogChain"]), int(header["HasBackupChecksums"]),
             header["BackupSize"], size, header["LastValidRestoreTime"]))
        if kind == "D" and not copy_only:
            self.db.execute("UPDATE sys_master_files SET differential_base_lsn = ?, differential_base_guid = ?, "
                            "differential_base_time = ? WHERE database_id = ? AND file_id = 1",
                            (header["CheckpointLSN"], header["BackupSetGUID"], header["BackupFinishDate"], db_id))
        self._set("sys_databases", db_id, last_checkpoint_lsn=header["CheckpointLSN"])
        if kind == "L" and not copy_only:
            self._set("sys_database_recovery_status", db_id, last_log_backup_lsn=header["LastLSN"])
            self._set("sys_databases", db_id, chain_fresh=0, log_reuse_wait_desc="NOTHING")
        elif kind in ("D", "I") and not copy_only and rec["last_log_backup_lsn"] is None \
                and db["recovery_model_desc"] != "SIMPLE":
            self._set("sys_database_recovery_status", db_id, last_log_backup_lsn=header["FirstLSN"])
            self._set("sys_databases", db_id, chain_fresh=1)

    # --- RESTORE ------------------------------------------------------------------------------------------------

    def _read_bak(self, verb: str, path: str) -> tuple[dict[str, Any], bytes]:
        try:
            data = Path(path).read_bytes()
        except OSError:
            raise terminating(verb, (3201, f"Cannot open backup device '{path}'. Operating system error 2(The system "
                                           "cannot find the file specified.).")) from None
        parsed = _unbak(data)
        if parsed is None:
            raise terminating(verb, (3241, f"The media family on device '{path}' is incorrectly formed. SQL Server "
                                           "cannot process this media family."))
        return parsed

    def _restore(self, session: Session, sql: str) -> Iterator[Any]:
        text = sql.strip()
        m = re.match(r"RESTORE\s+(HEADERONLY|FILELISTONLY|VERIFYONLY|LABELONLY)\s+FROM\s+DISK\s*=\s*"
                     r"(N?'(?:[^']|'')*')(?:\s+WITH\s+(.*))?$", text, re.I | re.S)
        if m:
            yield from self._restore_info(session, m.group(1).upper(), sqlmap.literal_value(m.group(2)),
                                          parse_options(m.group(3) or ""))
            return
        m = re.match(r"RESTORE\s+(DATABASE|LOG)\s+(\S+)(?:\s+FROM\s+DISK\s*=\s*(N?'(?:[^']|'')*'))?"
                     r"(?:\s+WITH\s+(.*))?$", text, re.I | re.S)
        if not m:
            raise SqlError((102, "Incorrect syntax near 'RESTORE'."))
        what, name = m.group(1).upper(), sqlmap.unquote(m.group(2))
        opts = parse_options(m.group(4) or "")
        verb = f"RESTORE {what}"
        if session.trancount:
            raise terminating(verb, (3021, "Cannot perform a backup or restore operation within a transaction."))
        if m.group(3) is None:
            yield from self._recover_only(name, opts)
            return
        path = sqlmap.literal_value(m.group(3))
        header, payload = self._read_bak(verb, path)
        started = _now()
        db = self._database(name)
        stats = int(opts.values.get("STATS", "0") or 0)
        beyond = False
        if header["type"] == "D":
            if what == "LOG":
                raise terminating(verb, (3117 + 0, "The backup set in file 1 was created by BACKUP DATABASE and "
                                                   "cannot be used for this restore operation."))
            db = self._restore_full(name, db, header, payload, opts, verb)
        else:
            if (what == "LOG") != (header["type"] == "L"):
                raise terminating(verb, (3136 if header["type"] == "I" else 4306, "The backup set cannot be "
                                         "used with this RESTORE statement (wrong backup type)."))
            if db is None or db["state_desc"] != "RESTORING":
                raise terminating(verb, (3117, "The log or differential backup cannot be restored because no files "
                                               "are ready to rollforward."))
            beyond = self._apply(db, header, payload, opts, verb)
            db = self._database(name) or db
        for pct in range(stats, 101, stats) if stats else []:
            yield tds.message(3211, f"{pct} percent processed.", severity=0, server=self.name)
            yield tds.done(tds.DONE_MORE)
            yield Flush(self.step_delay)
        self.db.execute("INSERT INTO msdb_restorehistory (restore_date, destination_database_name, restore_type, "
                        "stop_at) VALUES (?, ?, ?, ?)", (self.local_text(_now()), name, header["type"],
                                                         opts.values.get("STOPAT")))
        recover = "NORECOVERY" not in opts.flags and "STANDBY" not in opts.values
        if beyond:
            yield tds.message(4322, "This log file contains records logged before the designated mark. The database "
                                    "is being left in the Restoring state so you can apply another log file.",
                              severity=0, server=self.name)
        elif recover:
            self._recover(db)
        pages = max(1, len(payload) // 8192)
        seconds = max((_now() - started).total_seconds(), 0.001)
        label = "RESTORE LOG" if header["type"] == "L" else "RESTORE DATABASE"
        yield tds.message(3014, f"{label} successfully processed {pages} pages in {seconds:.3f} seconds "
                                f"({len(payload) / seconds / 1e6:.3f} MB/sec).", severity=0, server=self.name)
        yield tds.done()

    def _restore_info(self, session: Session, what: str, path: str, opts: Options) -> Iterator[Any]:
        verb = "VERIFY DATABASE" if what == "VERIFYONLY" else "RESTORE " + what
        header, _ = self._read_bak(verb, path)
        if what == "VERIFYONLY":
            if "CHECKSUM" in opts.flags and not header["HasBackupChecksums"]:
                raise terminating(verb, (3187, "RESTORE WITH CHECKSUM cannot be specified because the backup set does "
                                               "not contain checksum information."))
            yield tds.message(3262, "The backup set on file 1 is valid.", severity=0, server=self.name)
            yield tds.done()
            return
        if what == "FILELISTONLY":
            names = ["LogicalName", "PhysicalName", "Type", "FileGroupName", "Size", "MaxSize", "FileId",
                     "CreateLSN", "DropLSN", "UniqueId", "BackupSizeInBytes", "IsReadOnly", "IsPresent"]
            rows = [[f["LogicalName"], f["PhysicalName"], f["Type"], "PRIMARY" if f["Type"] == "D" else None,
                     8388608, 35184372080640, f["FileId"], 0, 0, str(uuid.uuid5(uuid.NAMESPACE_OID,
                     header["DatabaseGUID"] + str(f["FileId"]))).upper(), header["BackupSize"], False, True]
                    for f in header["files"]]
            yield from self.result(names, rows)
            return
        names = ["BackupName", "BackupDescription", "BackupType", "ExpirationDate", "Compressed", "Position",
                 "DeviceType", "UserName", "ServerName", "DatabaseName", "DatabaseVersion", "DatabaseCreationDate",
                 "BackupSize", "FirstLSN", "LastLSN", "CheckpointLSN", "DatabaseBackupLSN", "BackupStartDate",
                 "BackupFinishDate", "CompatibilityLevel", "MachineName", "BindingID", "RecoveryForkID", "Collation",
                 "FamilyGUID", "HasBulkLoggedData", "IsSnapshot", "IsReadOnly", "IsSingleUser", "HasBackupChecksums",
                 "IsDamaged", "BeginsLogChain", "HasIncompleteMetaData", "IsForceOffline", "IsCopyOnly",
                 "FirstRecoveryForkID", "ForkPointLSN", "RecoveryModel", "DifferentialBaseLSN",
                 "DifferentialBaseGUID", "BackupTypeDescription", "BackupSetGUID", "CompressedBackupSize",
                 "LastValidRestoreTime", "TimeZone"]
        extra = {"ExpirationDate": None, "Position": 1, "DeviceType": 2, "DatabaseVersion": 957,
                 "Collation": "Latin1_General_CI_AS", "HasBulkLoggedData": False, "IsSnapshot": False,
                 "IsReadOnly": False, "IsSingleUser": False, "IsDamaged": False, "HasIncompleteMetaData": False,
                 "IsForceOffline": False, "CompressedBackupSize": header["BackupSize"]}
        yield from self.result(names, [[extra[n] if n in extra else header.get(n) for n in names]])

    def _restore_full(self, name: str, db: dict[str, Any] | None, header: dict[str, Any], payload: bytes,
                      opts: Options, verb: str) -> dict[str, Any]:
        replace = "REPLACE" in opts.flags
        if db is not None and db["state_desc"] == "ONLINE" and not replace:
            if db["database_guid"] != header["DatabaseGUID"]:
                raise terminating(verb, (3154, f"The backup set holds a backup of a database other than the existing "
                                               f"'{db['name']}' database."))
            rec = self._recovery(db["database_id"])
            if db["recovery_model_desc"] != "SIMPLE" and self._changes(
                    db["database_id"], int(rec["last_log_backup_lsn"] or 0), int(db["lsn"]) + 1) \
                    and "STOPAT" not in opts.values:
                raise terminating(verb, (3159, f'The tail of the log for the database "{db["name"]}" has not been '
                                               "backed up. Use BACKUP LOG WITH NORECOVERY to back up the log if it "
                                               "contains work you do not want to lose. Use the WITH REPLACE or WITH "
                                               "STOPAT clause of the RESTORE statement to just overwrite the contents "
                                               "of the log."))
        moves = {logical.lower(): target for logical, target in opts.moves}
        known = {f["LogicalName"].lower() for f in header["files"]}
        for logical in moves:
            if logical not in known:
                raise terminating(verb, (3234, f"Logical file '{logical}' is not part of database '{name}'. Use "
                                               "RESTORE FILELISTONLY to list the logical file names."))
        paths = [moves.get(f["LogicalName"].lower(), f["PhysicalName"]) for f in header["files"]]
        mine = {f["physical_name"] for f in self._files(db["database_id"])} if db is not None else set()
        for f, path in zip(header["files"], paths, strict=True):
            if not Path(path).parent.is_dir():
                raise terminating(verb, (5133, f'Directory lookup for the file "{path}" failed with the operating '
                                               "system error 3(The system cannot find the path specified.)."),
                                  (3156, f"File '{f['LogicalName']}' cannot be restored to '{path}'. Use WITH MOVE to "
                                         "identify a valid location for the file."))
            owner = self.db.execute("SELECT d.name FROM sys_master_files f JOIN sys_databases d USING (database_id) "
                                    "WHERE f.physical_name = ?", (path,)).fetchone()
            if owner and path not in mine:
                raise terminating(verb, (1834, f"The file '{path}' cannot be overwritten.  It is being used by "
                                               f"database '{owner[0]}'."),
                                  (3156, f"File '{f['LogicalName']}' cannot be restored to '{path}'. Use WITH MOVE to "
                                         "identify a valid location for the file."))
        if db is not None:
            self._drop_database(db)
        created = self._create_database(name, db_id=db["database_id"] if db else None, model=header["recovery_model"],
                                        guid=header["DatabaseGUID"], family=header["FamilyGUID"], paths=paths,
                                        state="RESTORING", lsn=header["LastLSN"])
        Path(paths[0]).write_bytes(payload)
        Path(paths[1]).write_bytes(b"")
        db_id = created["database_id"]
        self._set("sys_databases", db_id, redo_lsn=header["LastLSN"], restored_checkpoint_lsn=header["CheckpointLSN"],
                  last_checkpoint_lsn=header["CheckpointLSN"])
        self._set("sys_database_recovery_status", db_id, recovery_fork_guid=header["RecoveryForkID"],
                  first_recovery_fork_guid=header["FirstRecoveryForkID"])
        if not header["IsCopyOnly"]:
            self.db.execute("UPDATE sys_master_files SET differential_base_lsn = ?, differential_base_guid = ? "
                            "WHERE database_id = ? AND file_id = 1",
                            (header["CheckpointLSN"], header["BackupSetGUID"], db_id))
        return self._database(name) or created

    def _apply(self, db: dict[str, Any], header: dict[str, Any], payload: bytes, opts: Options, verb: str) -> bool:
        """Roll a differential or log forward; True when a STOPAT lies beyond this log (more logs needed)."""
        db_id, redo = db["database_id"], int(db["redo_lsn"])
        rec = self._recovery(db_id)
        if db.get("stopped"):
            raise terminating(verb, (4319, "A previous restore operation was interrupted and did not complete "
                                           "processing on this database: it was stopped at its STOPAT point."))
        if header["type"] == "I":
            if int(header["DifferentialBaseLSN"]) != int(db["restored_checkpoint_lsn"] or -1):
                raise terminating(verb, (3136, "This differential backup cannot be restored because the database has "
                                               "not been restored to the correct earlier state."))
        else:
            if header["RecoveryForkID"] != rec["recovery_fork_guid"] and header["FirstRecoveryForkID"] != \
                    rec["recovery_fork_guid"]:
                raise terminating(verb, (4330, "This backup set cannot be applied because it is on a recovery path "
                                               "that is inconsistent with the database. The recovery path is the "
                                               "sequence of data and log backups that have brought the database to a "
                                               "particular recovery point."))
            if int(header["FirstLSN"]) > redo:
                raise terminating(verb, (4305, f"The log in this backup set begins at LSN {header['FirstLSN']}, which "
                                               f"is too recent to apply to the database. An earlier log backup that "
                                               f"includes LSN {redo} can be restored."))
            if int(header["LastLSN"]) <= redo:
                raise terminating(verb, (4326, f"The log in this backup set terminates at LSN {header['LastLSN']}, "
                                               f"which is too early to apply to the database. A more recent log backup "
                                               f"that includes LSN {redo} can be restored."))
        stop = self.from_local(opts.values["STOPAT"]) if "STOPAT" in opts.values and header["type"] == "L" else None
        mark_text = opts.values.get("STOPATMARK", "") if header["type"] == "L" else ""
        mark = int(mark_text[4:]) if mark_text.lower().startswith("lsn:") and mark_text[4:].isdigit() else None
        changes = [c for c in json.loads(payload) if int(c[0]) >= redo]
        applied = [c for c in changes if (stop is None or dt.datetime.fromisoformat(c[1]) <= stop)
                   and (mark is None or int(c[0]) <= mark)]
        conn = sqlite3.connect(self._data_path(db_id), isolation_level=None)
        try:
            for lsn, when, statement in applied:
                conn.execute(statement)
                self.db.execute("INSERT INTO changes VALUES (?, ?, ?, ?)", (db_id, lsn, when, statement))
        finally:
            conn.close()
        end = int(header["LastLSN"])
        stopped = (stop is not None and (len(applied) < len(changes) or self.from_local(
            header["BackupFinishDate"]) > stop)) or (mark is not None and mark < end)
        if stopped:
            end = int(applied[-1][0]) + 1 if applied else redo
        self._set("sys_databases", db_id, redo_lsn=end, lsn=end, stopped=int(stopped))
        return (stop is not None or mark is not None) and not stopped

    def _recover(self, db: dict[str, Any]) -> None:
        db_id = db["database_id"]
        db = self._database(db["name"]) or db
        redo = int(db["redo_lsn"])
        fork = str(uuid.uuid4()).upper()
        self._set("sys_databases", db_id, state_desc="ONLINE", state=0, lsn=redo + LSN_STEP, stopped=0, chain_fresh=0)
        self._set("sys_database_recovery_status", db_id, recovery_fork_guid=fork, fork_point_lsn=redo,
                  last_log_backup_lsn=redo if db["recovery_model_desc"] != "SIMPLE" else None)
        self.db.execute("DELETE FROM changes WHERE database_id = ? AND lsn >= ?", (db_id, redo))

    def _recover_only(self, name: str, opts: Options) -> Iterator[Any]:
        db = self._database(name)
        if db is None:
            raise terminating("RESTORE DATABASE", (911, f"Database '{name}' does not exist. Make sure that the name is "
                                                        "entered correctly."))
        if db["state_desc"] == "RESTORING":
            if "NORECOVERY" in opts.flags:
                yield tds.done()
                return
            self._recover(db)
        yield tds.message(3014, "RESTORE DATABASE successfully processed 0 pages in 0.001 seconds (0.000 MB/sec).",
                          severity=0, server=self.name)
        yield tds.done()


def _no_database(name: str) -> tuple[int, str]:
    return 911, f"Database '{name}' does not exist. Make sure that the name is entered correctly."


def _coerce(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == tds.DATETIME and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    if kind == tds.BIT:
        return bool(value)
    if kind == tds.NUMERIC and isinstance(value, str):
        return int(value)
    return value


def _sql_error(exc: sqlite3.Error) -> SqlError:
    text = str(exc)
    m = re.match(r"no such table: (?:\w+\.)?(\S+)", text)
    if m:
        return SqlError((208, f"Invalid object name '{m.group(1)}'."))
    m = re.match(r"table (\S+) already exists", text)
    if m:
        return SqlError((2714, f"There is already an object named '{m.group(1).strip(chr(34))}' in the database."))
    if text.startswith("UNIQUE constraint failed"):
        return SqlError((2627, f"Violation of PRIMARY KEY constraint. Cannot insert duplicate key ({text})."))
    m = re.match(r"no such column: (\S+)", text)
    if m:
        return SqlError((207, f"Invalid column name '{m.group(1)}'."))
    return SqlError((102, f"Incorrect syntax or unsupported statement ({text})."))


def _bak(header: dict[str, Any], payload: bytes) -> bytes:
    head = json.dumps(header, sort_keys=True).encode()
    body = MAGIC + struct.pack(">Q", len(head)) + head + payload
    return body + hashlib.blake2b(body, digest_size=32).digest()


def _unbak(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 40:
        return None
    body, digest = data[:-32], data[-32:]
    if hashlib.blake2b(body, digest_size=32).digest() != digest:
        return None
    n = struct.unpack(">Q", body[len(MAGIC) : len(MAGIC) + 8])[0]
    start = len(MAGIC) + 8
    return json.loads(body[start : start + n]), body[start + n :]


def wipe(state: Path) -> None:
    shutil.rmtree(state, ignore_errors=True)


__all__ = ["Engine", "SqlError", "time", "wipe"]
