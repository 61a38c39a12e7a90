"""A pyodbc session with a SQL Server, used the way BACKUP and RESTORE need it.

* ``autocommit=True``: BACKUP/RESTORE inside a transaction fail with 3021 (pyodbc's default is a
  transaction, FreeTDS then sends ``SET IMPLICIT_TRANSACTIONS ON``);
* every result set is drained (``nextset()`` until it returns False): a client that closes its
  statement early makes the server abort the BACKUP, silently (pyodbc #471);
* no query timeout (``cnxn.timeout = 0``): a 500 GB BACKUP runs for hours;
* info messages (``cursor.messages``: 3211 "N percent processed", 4035 "Processed N pages", 3014
  "... successfully processed") become progress events;
* errors keep the server's numbers (``MssqlError.numbers``); the password never appears in them.

Identifiers are quoted with :func:`quote_name` and text with :func:`literal`; no statement takes
parameters (BACKUP and RESTORE do not anyway), so no RPC is needed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pyodbc

from dtstore.connectors.mssql.url import MssqlUrl
from dtstore.errors import ConnectorError

PREFERRED_DRIVERS = ("ODBC Driver 18 for SQL Server", "ODBC Driver 17 for SQL Server", "FreeTDS")
Progress = Callable[[str], None]


class MssqlError(ConnectorError):
    """A statement failed; ``numbers`` are the server's error numbers (e.g. ``[4208, 3013]``)."""

    def __init__(self, message: str, numbers: Sequence[int]) -> None:
        super().__init__(message)
        self.numbers = list(numbers)


def quote_name(name: str) -> str:
    """``[name]`` with ``]`` doubled (QUOTENAME)."""
    return "[" + name.replace("]", "]]") + "]"


def literal(text: str) -> str:
    """``N'text'`` with ``'`` doubled."""
    return "N'" + text.replace("'", "''") + "'"


_NUMBER = re.compile(r"\((\d{1,6})\)")
_PREFIX = re.compile(r"^(?:\[[^\]]*\]\s*)+")


def _clean(text: str) -> str:
    """``[01000] [FreeTDS][SQL Server]text (3014)`` → ``text``."""
    text = _PREFIX.sub("", str(text)).strip()
    return re.sub(r"\s*\(\d+\)\s*(\(SQL\w+\))?\s*$", "", text).strip()


def _numbers(text: str) -> list[int]:
    return [int(n) for n in _NUMBER.findall(text) if int(n) > 0]


def choose_driver(wanted: str | None) -> str:
    if wanted:
        return wanted
    installed = pyodbc.drivers()
    for name in PREFERRED_DRIVERS:
        if name in installed:
            return name
    raise ConnectorError(
        "no SQL Server ODBC driver is installed (looked for " + ", ".join(PREFERRED_DRIVERS) + "); install "
        "Microsoft's ODBC Driver 18 or FreeTDS (Debian: apt-get install tdsodbc unixodbc), or name one with &driver="
    )


@dataclass(frozen=True)
class Messages:
    """What a statement printed: (number, text) pairs in order."""

    items: list[tuple[int, str]]

    def numbers(self) -> list[int]:
        return [n for n, _ in self.items]

    def text(self) -> str:
        return " | ".join(t for _, t in self.items)


class Server:
    """``with Server(url) as server: server.rows(sql)``; one connection, autocommit, no timeout."""

    def __init__(self, url: MssqlUrl, *, login_timeout: int = 20) -> None:
        self.url = url
        self.driver = choose_driver(url.driver)
        secret = "" if url.trusted else url.password()
        try:
            self.cnxn = pyodbc.connect(url.connection_string(self.driver), autocommit=True, timeout=login_timeout)
        except pyodbc.Error as exc:
            text = _redact(_error_text(exc), secret)
            raise MssqlError(f"cannot connect to SQL Server at {url.host}:{url.port or 1433} as {url.user or 'Windows'}"
                             f" (driver {self.driver}): {text}", _numbers(text)) from None
        self.cnxn.timeout = 0  # BACKUP and RESTORE take as long as they take

    def close(self) -> None:
        with contextlib.suppress(pyodbc.Error):
            self.cnxn.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def execute(self, sql: str, progress: Progress | None = None) -> tuple[list[list[Any]], Messages]:
        """Run one statement; drain every result set; return the first result set's rows and all messages."""
        cursor = self.cnxn.cursor()
        messages: list[tuple[int, str]] = []
        rows: list[list[Any]] | None = None

        def collect() -> None:
            for state, text in cursor.messages or []:
                numbers = _numbers(str(state)) or _numbers(str(text))
                item = (numbers[0] if numbers else 0, _clean(str(text)))
                messages.append(item)
                if progress is not None:
                    progress(item[1])

        try:
            cursor.execute(sql)
            while True:
                collect()
                if cursor.description is not None:
                    fetched = [list(r) for r in cursor.fetchall()]
                    if rows is None:
                        rows = fetched
                if not cursor.nextset():
                    break
            collect()
        except pyodbc.Error as exc:
            collect()
            text = _error_text(exc)
            numbers = [n for n, _ in messages if n] + _numbers(text)
            first_line = sql.strip().splitlines()[0][:160]
            raise MssqlError(f"SQL Server error {', '.join(map(str, _unique(numbers))) or '?'}: {_clean(text)} "
                             f"(in: {first_line})", _unique(numbers)) from None
        finally:
            cursor.close()
        return rows or [], Messages(messages)

    def rows(self, sql: str) -> list[list[Any]]:
        return self.execute(sql)[0]

    def records(self, sql: str) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name."""
        cursor = self.cnxn.cursor()
        try:
            cursor.execute(sql)
            names = [d[0] for d in cursor.description or ()]
            result = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
            while cursor.nextset():
                pass
        except pyodbc.Error as exc:
            text = _error_text(exc)
            raise MssqlError(f"SQL Server error: {_clean(text)} (in: {sql.strip()[:160]})", _numbers(text)) from None
        finally:
            cursor.close()
        return result

    def value(self, sql: str) -> Any:
        found = self.rows(sql)
        return found[0][0] if found else None


def _unique(numbers: Sequence[int]) -> list[int]:
    seen: list[int] = []
    for n in numbers:
        if n not in seen:
            seen.append(n)
    return seen


def _error_text(exc: pyodbc.Error) -> str:
    return " ".join(str(a) for a in exc.args[1:]) if len(exc.args) > 1 else str(exc)


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


@dataclass(frozen=True)
class ServerInfo:
    name: str
    version: str
    edition: str
    product_version: str
    tz_offset_minutes: int
    default_data_path: str | None

    @property
    def source_id(self) -> str:
        return f"mssql:{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "edition": self.edition,
                "product_version": self.product_version, "tz_offset_minutes": self.tz_offset_minutes,
                "default_data_path": self.default_data_path}


def probe(server: Server) -> ServerInfo:
    row = server.rows(
        "SELECT @@SERVERNAME, @@VERSION, SERVERPROPERTY('Edition'), SERVERPROPERTY('ProductVersion'), "
        "DATEPART(TZOFFSET, SYSDATETIMEOFFSET()), SERVERPROPERTY('InstanceDefaultDataPath')")[0]
    return ServerInfo(name=str(row[0] or server.url.host), version=str(row[1]).splitlines()[0], edition=str(row[2]),
                      product_version=str(row[3]), tz_offset_minutes=int(row[4] or 0),
                      default_data_path=str(row[5]) if row[5] else None)


@dataclass(frozen=True)
class DatabaseState:
    """One row of sys.databases with what the chain check needs (Ola Hallengren reads the same)."""

    name: str
    database_id: int
    recovery_model: str
    state: str
    is_snapshot: bool
    is_read_only: bool
    database_guid: str
    family_guid: str
    differential_base_lsn: int | None
    differential_base_guid: str | None
    last_log_backup_lsn: int | None
    recovery_fork_guid: str | None


DATABASES_SQL = (
    "SELECT d.name, d.database_id, d.recovery_model_desc, d.state_desc, d.source_database_id, d.is_read_only, "
    "r.database_guid, r.family_guid, f.differential_base_lsn, f.differential_base_guid, r.last_log_backup_lsn, "
    "r.recovery_fork_guid "
    "FROM sys.databases d "
    "LEFT JOIN sys.database_recovery_status r ON r.database_id = d.database_id "
    "LEFT JOIN sys.master_files f ON f.database_id = d.database_id AND f.type = 0 AND f.file_id = 1 "
    "WHERE d.name <> N'tempdb' ORDER BY d.name")


def _guid(value: Any) -> str | None:
    return str(value).upper() if value is not None else None


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def databases(server: Server) -> list[DatabaseState]:
    return [DatabaseState(name=str(r[0]), database_id=int(r[1]), recovery_model=str(r[2]), state=str(r[3]),
                          is_snapshot=r[4] is not None, is_read_only=bool(r[5]), database_guid=_guid(r[6]) or "",
                          family_guid=_guid(r[7]) or "", differential_base_lsn=_int(r[8]),
                          differential_base_guid=_guid(r[9]), last_log_backup_lsn=_int(r[10]),
                          recovery_fork_guid=_guid(r[11]))
            for r in server.rows(DATABASES_SQL)]


@dataclass(frozen=True)
class HistoryRow:
    """A row of msdb.dbo.backupset (another tool's backups are found here)."""

    backup_set_guid: str
    type: str
    is_copy_only: bool
    first_lsn: int
    last_lsn: int
    finish: dt.datetime | None
    name: str | None
    description: str | None
    device: str | None


def backups_after(server: Server, database: str, database_guid: str, lsn: int) -> list[HistoryRow]:
    """msdb's backups of ``database`` whose range ends after ``lsn`` (ours and foreign ones)."""
    sql = ("SELECT b.backup_set_uuid, b.type, b.is_copy_only, b.first_lsn, b.last_lsn, b.backup_finish_date, b.name, "
           "b.description, m.physical_device_name FROM msdb.dbo.backupset b "
           "LEFT JOIN msdb.dbo.backupmediafamily m ON m.media_set_id = b.media_set_id "
           f"WHERE b.database_name = {literal(database)} AND b.database_guid = '{database_guid}' "
           f"AND b.last_lsn > {int(lsn)} ORDER BY b.backup_set_id")
    return [HistoryRow(str(r[0]).upper(), str(r[1]).strip(), bool(r[2]), int(r[3]), int(r[4]), r[5], r[6], r[7],
                       r[8]) for r in server.rows(sql)]


__all__ = ["DatabaseState", "HistoryRow", "Messages", "MssqlError", "Server", "ServerInfo", "backups_after",
           "choose_driver", "databases", "literal", "probe", "quote_name"]
