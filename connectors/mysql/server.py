"""Talking to the server: metadata queries only (data always goes through the client tools).

Version and flavor, ``server_id``, hostname, binary-log settings and time zone, the databases, the
binary logs and the accounts.  Every driver error becomes a ConnectorError with secrets redacted.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mysql.connector

from dtstore.connectors import _proc
from dtstore.connectors.mysql.chain import KIND
from dtstore.connectors.mysql.url import SYSTEM_SCHEMAS, MysqlUrl
from dtstore.errors import ConnectorError


class Server:
    """A short-lived metadata connection; every driver error becomes a ConnectorError."""

    def __init__(self, url: MysqlUrl) -> None:
        self.url = url
        try:
            self._conn = mysql.connector.connect(**url.connect_kwargs())
        except mysql.connector.Error as exc:
            raise ConnectorError(f"unable to connect to {url.display()}: {self._message(exc)}") from exc

    def _message(self, exc: Exception) -> str:
        return _proc.redact(str(getattr(exc, "msg", None) or exc), [self.url.password() or ""])

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            cur = self._conn.cursor()
            cur.execute(sql, tuple(params))
            rows = cur.fetchall() if cur.description is not None else []
            cur.close()
        except mysql.connector.Error as exc:
            raise ConnectorError(
                f"unable to run {sql.split()[0]} … on {self.url.display()}: {self._message(exc)}"
            ) from exc
        return [tuple(_text(v) for v in row) for row in rows]

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else value


@dataclass(frozen=True)
class ServerInfo:
    """What the manifest records about the server, and what decides the tools and SQL to use."""

    flavor: str  # "mariadb" | "mysql"
    version: str
    server_id: int
    server_uuid: str | None
    hostname: str
    port: int
    log_bin: bool
    binlog_format: str
    log_bin_basename: str | None
    gtid_domain_id: int | None
    time_zone: str
    system_time_zone: str
    utc_offset_seconds: int

    @property
    def source_id(self) -> str:
        if self.server_uuid:
            return f"{KIND}:{self.server_uuid}"
        port = f":{self.port}" if self.port else ""
        return f"{KIND}:{self.hostname}{port}/{self.server_id}"

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", self.version)[:3])

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def probe(server: Server) -> ServerInfo:
    row = server.query(
        "SELECT @@version, @@server_id, @@hostname, @@port, @@log_bin, @@binlog_format, @@log_bin_basename,"
        " @@global.time_zone, @@system_time_zone, TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), NOW())"
    )[0]
    version = str(row[0])
    flavor = "mariadb" if "mariadb" in version.lower() else "mysql"
    uuid_ = str(server.value("SELECT @@server_uuid")) if flavor == "mysql" else None
    domain = int(server.value("SELECT @@gtid_domain_id")) if flavor == "mariadb" else None
    return ServerInfo(
        flavor=flavor,
        version=version,
        server_id=int(row[1]),
        server_uuid=uuid_,
        hostname=str(row[2]),
        port=int(row[3] or 0),
        log_bin=bool(int(row[4] or 0)),
        binlog_format=str(row[5]),
        log_bin_basename=row[6] or None,
        gtid_domain_id=domain,
        time_zone=str(row[7]),
        system_time_zone=str(row[8]),
        utc_offset_seconds=int(row[9]),
    )


def list_databases(server: Server) -> list[str]:
    return sorted(str(r[0]) for r in server.query("SHOW DATABASES") if r[0] not in SYSTEM_SCHEMAS)


def binary_logs(server: Server) -> list[tuple[str, int]]:
    return [(str(r[0]), int(r[1])) for r in server.query("SHOW BINARY LOGS")]


def binlog_start_state(server: Server, file: str) -> str:
    """The GTID state a binlog starts with (MariaDB ``Gtid_list``, MySQL ``Previous_gtids``), as text."""
    for row in server.query("SHOW BINLOG EVENTS IN %s LIMIT 4", (file,)):
        if row[2] in ("Gtid_list", "Previous_gtids"):
            return str(row[5] or "")
    return ""


def server_epoch(server: Server) -> float:
    return float(server.value("SELECT UNIX_TIMESTAMP(NOW(6))"))


def non_transactional_tables(server: Server, databases: Sequence[str]) -> list[str]:
    if not databases:
        return []
    marks = ",".join(["%s"] * len(databases))
    rows = server.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE FROM information_schema.TABLES"
        " WHERE TABLE_TYPE = 'BASE TABLE'"
        f" AND ENGINE <> 'InnoDB' AND TABLE_SCHEMA IN ({marks}) ORDER BY 1, 2",
        databases,
    )
    return [f"{r[0]}.{r[1]} ({r[2]})" for r in rows]


def data_size(server: Server, databases: Sequence[str]) -> int:
    if not databases:
        return 0
    marks = ",".join(["%s"] * len(databases))
    sql = f"SELECT SUM(DATA_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({marks})"
    return int(server.value(sql, databases) or 0)


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def unquote_ident(quoted: str) -> str:
    return quoted[1:-1].replace("``", "`")


def account_key(user: str, host: str, is_role: bool) -> str:
    """How an account is named in ``mysql/_grants.sql`` block headers (roles have no host)."""
    return quote_ident(user) if is_role else f"{quote_ident(user)}@{quote_ident(host)}"


def list_accounts(server: Server, flavor: str) -> list[tuple[str, str, bool]]:
    role_col = "is_role" if flavor == "mariadb" else "'N'"
    rows = server.query(f"SELECT User, Host, {role_col} FROM mysql.user ORDER BY 3 DESC, 1, 2")
    return [(str(r[0]), str(r[1]), r[2] == "Y") for r in rows]


def grants_sql(server: Server, flavor: str) -> tuple[bytes, int]:
    """Users, roles and grants as SQL, one ``-- account:`` block per account (roles first)."""
    blocks = ["-- dtstore: users and grants, one block per account; restore skips accounts that exist\n"]
    accounts = list_accounts(server, flavor)
    for user, host, is_role in accounts:
        key = account_key(user, host, is_role)
        if is_role:
            statements = [f"CREATE ROLE IF NOT EXISTS {key}"]
        else:
            create = str(server.value(f"SHOW CREATE USER {key}"))
            statements = [re.sub(r"^CREATE USER ", "CREATE USER IF NOT EXISTS ", create)]
        statements += [str(r[0]) for r in server.query(f"SHOW GRANTS FOR {key}")]
        blocks.append(f"-- account: {key}\n" + "".join(f"{s};\n" for s in statements))
    return "".join(blocks).encode(), len(accounts)


def server_warnings(info: ServerInfo) -> list[str]:
    """Settings that weaken what the backups can promise (recorded, never fatal)."""
    warnings = []
    if not info.log_bin:
        warnings.append("binary logging is off: only full snapshots, no point-in-time restore")
    elif info.binlog_format.upper() != "ROW":
        warnings.append(f"binlog_format is {info.binlog_format}: replay may not be deterministic; use ROW")
    return warnings
