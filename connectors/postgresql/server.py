"""The facts read from the server with ``psql``, and the low-level backup session.

Everything goes through ``psql -X -A -t -q -v ON_ERROR_STOP=1`` with the connection in ``PG*``
environment variables (``url.py``), so the password never appears in argv.  A base backup is a
*non-exclusive* low-level backup (PostgreSQL 15+: ``pg_backup_start``/``pg_backup_stop``, 12–14:
``pg_start_backup``/``pg_stop_backup`` with ``exclusive => false``): the session that started it
must stay open until it is stopped, so :class:`BackupSession` keeps one ``psql`` running as a
co-process and talks to it line by line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtstore.connectors import _proc
from dtstore.connectors.postgresql.url import PgUrl
from dtstore.errors import ConnectorError

MARKER = "__dtstore_done__"


def pg_tool(name: str, bindir: Path | None = None) -> str:
    """A PostgreSQL program: from ``bindir``, else PATH, else the newest ``/usr/lib/postgresql/*/bin``."""
    if bindir is not None and (bindir / name).exists():
        return str(bindir / name)
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                      if p.parent.name.isdigit() else 0)
    for directory in reversed(versions):
        if (directory / name).exists():
            return str(directory / name)
    raise ConnectorError(f"{name} not found: install the PostgreSQL client/server package or set DTSTORE_PG_BINDIR")


def psql_argv(url: PgUrl) -> list[str]:
    return [pg_tool("psql", url.bindir()), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"]


def query(url: PgUrl, sql: str) -> list[list[str]]:
    """Rows of a query, fields split on ``|`` (use only for values without ``|``)."""
    out = _proc.run([*psql_argv(url), "-F", "\x1f", "-c", sql], env=url.env(), secrets=url.secrets(), label="psql")
    return [line.split("\x1f") for line in out.decode().splitlines() if line]


def value(url: PgUrl, sql: str) -> str:
    rows = query(url, sql)
    if not rows:
        raise ConnectorError(f"psql returned no row for: {sql}")
    return rows[0][0]


@dataclass(frozen=True)
class ServerInfo:
    system_identifier: str
    version_num: int
    version: str
    data_directory: str
    timeline: int
    segment_size: int
    archive_mode: str
    archive_command: str
    data_checksums: bool
    tablespaces: list[dict[str, str]]
    timezone: str

    @property
    def source_id(self) -> str:
        return f"postgresql:{self.system_identifier}"

    def to_json(self) -> dict[str, Any]:
        return {
            "system_identifier": self.system_identifier,
            "version_num": self.version_num,
            "version": self.version,
            "data_directory": self.data_directory,
            "timeline": self.timeline,
            "segment_size": self.segment_size,
            "archive_mode": self.archive_mode,
            "data_checksums": self.data_checksums,
            "timezone": self.timezone,
        }


def probe(url: PgUrl) -> ServerInfo:
    sep = "\x1f"
    row = query(url, (
        "SELECT (SELECT system_identifier FROM pg_control_system()), current_setting('server_version_num'), "
        "current_setting('server_version'), current_setting('data_directory'), "
        "(SELECT timeline_id FROM pg_control_checkpoint()), "
        "(SELECT setting::bigint * CASE unit WHEN '8kB' THEN 8192 WHEN 'MB' THEN 1048576 ELSE 1 END "
        "   FROM pg_settings WHERE name = 'wal_segment_size'), "
        "current_setting('archive_mode'), current_setting('archive_command'), "
        "current_setting('data_checksums'), current_setting('TimeZone'), pg_is_in_recovery()"
    ))[0]
    spaces = query(url, "SELECT oid, spcname, pg_tablespace_location(oid) FROM pg_tablespace "
                        "WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid")
    del sep
    if row[10] == "t":
        raise ConnectorError("the server is a standby (in recovery): back up the primary")
    return ServerInfo(
        system_identifier=row[0], version_num=int(row[1]), version=row[2], data_directory=row[3],
        timeline=int(row[4]), segment_size=int(row[5]), archive_mode=row[6], archive_command=row[7],
        data_checksums=row[8] == "on", timezone=row[9],
        tablespaces=[{"oid": r[0], "name": r[1], "location": r[2]} for r in spaces],
    )


@dataclass(frozen=True)
class BackupStop:
    lsn: str
    label: str
    tablespace_map: str
    stopped_at: str
    """the server's clock_timestamp() once the backup stopped (UTC ISO)"""


class BackupSession:
    """One psql session holding a non-exclusive low-level backup open."""

    def __init__(self, url: PgUrl, version_num: int) -> None:
        self.url, self.version_num = url, version_num
        self._env = url.env()
        self._proc = subprocess.Popen(
            psql_argv(url), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self._env, text=True, bufsize=1,
        )

    def ask(self, sql: str) -> list[str]:
        """Send one statement; return its output lines (psql -A -t)."""
        proc = self._proc
        if proc.stdin is None or proc.stdout is None:
            raise ConnectorError("psql co-process has no pipes")
        try:
            proc.stdin.write(f"SET TimeZone = 'UTC';\n{sql}\n\\echo {MARKER}\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        lines: list[str] = []
        for line in proc.stdout:
            if line.rstrip("\n") == MARKER:
                return lines
            lines.append(line.rstrip("\n"))
        err = proc.stderr.read() if proc.stderr else ""
        raise ConnectorError(f"psql (backup session) ended: {_proc.redact(err.strip()[-2000:], self.url.secrets())}")

    def start(self, label: str, fast: bool = True) -> str:
        fn = "pg_backup_start" if self.version_num >= 150000 else "pg_start_backup"
        args = f"'{label}', {'true' if fast else 'false'}" + (", false" if self.version_num < 150000 else "")
        return self.ask(f"SELECT {fn}({args});")[0]

    def stop(self) -> BackupStop:
        if self.version_num >= 150000:
            sql = "SELECT lsn, labelfile, spcmapfile FROM pg_backup_stop(true)"
        else:
            sql = "SELECT lsn, labelfile, spcmapfile FROM pg_stop_backup(false, true)"
        rows = self.ask(
            f"SELECT s.lsn || chr(31) || encode(convert_to(s.labelfile, 'UTF8'), 'hex') || chr(31) || "
            f"encode(convert_to(coalesce(s.spcmapfile, ''), 'UTF8'), 'hex') || chr(31) || "
            f"to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM ({sql}) s;"
        )
        try:
            lsn, label, spc, when = rows[0].split("\x1f")
            return BackupStop(lsn, bytes.fromhex(label).decode(), bytes.fromhex(spc).decode(), when)
        except (IndexError, ValueError) as exc:
            raise ConnectorError(f"pg_backup_stop gave an answer psql did not complete ({len(rows)} line(s)): "
                                 "the backup is not consistent and is not committed") from exc

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                if self._proc.stdin:
                    self._proc.stdin.close()
                self._proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream:
                stream.close()

    def __enter__(self) -> BackupSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_system_identifier(pgdata: str | os.PathLike[str]) -> str:
    """``global/pg_control`` starts with the 64-bit system identifier (little-endian on x86/ARM)."""
    with open(Path(pgdata) / "global" / "pg_control", "rb") as f:
        head = f.read(8)
    if len(head) != 8:
        raise ConnectorError(f"{pgdata}/global/pg_control is too short")
    return str(int.from_bytes(head, "little"))


__all__ = ["BackupSession", "BackupStop", "ServerInfo", "pg_tool", "probe", "query", "read_system_identifier",
           "value"]
