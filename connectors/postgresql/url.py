"""``postgresql://USER@HOST[:PORT]/[DB]?host=SOCKET_DIR`` (backup) and ``postgresql:///?pgdata=DIR`` (restore).

libpq conventions throughout: the URL names only where and who; the password comes from
``PGPASSWORD``, ``PGPASSFILE`` (``~/.pgpass``) or a service file, TLS from ``PGSSLMODE`` and friends,
all read by ``psql`` itself from the environment.  A password inside the URL is refused.  The tools
get the connection through ``PG*`` environment variables, never through argv.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from dtstore.errors import UsageError

SCHEMES = ("postgresql", "postgres")
BACKUP_OPTIONS = {"host", "port", "user", "dbname", "bindir"}
RESTORE_OPTIONS = {"pgdata", "port", "start", "bindir", "dtstore", "socket_dir", "wait", "tablespace_dir", "archive"}


@dataclass(frozen=True)
class PgUrl:
    user: str | None = None
    host: str | None = None
    """a host name, or a directory holding the server's unix socket"""
    port: int | None = None
    dbname: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The ``PG*`` variables for psql; everything else (PGPASSWORD, PGSSLMODE, …) is inherited."""
        env = dict(os.environ)
        for key, value in (("PGHOST", self.host), ("PGPORT", str(self.port) if self.port else None),
                           ("PGUSER", self.user), ("PGDATABASE", self.dbname or "postgres")):
            if value:
                env[key] = value
        env.setdefault("PGAPPNAME", "dtstore")
        env["PGCONNECT_TIMEOUT"] = env.get("PGCONNECT_TIMEOUT", "10")
        return env

    def secrets(self) -> list[str]:
        """What must never appear in a message: libpq's password variable."""
        return [os.environ.get("PGPASSWORD", "")]

    def display(self) -> str:
        who = f"{self.user}@" if self.user else ""
        host = self.host if self.host and not self.host.startswith("/") else "localhost"
        port = f":{self.port}" if self.port else ""
        sock = f"?host={self.host}" if self.host and self.host.startswith("/") else ""
        return f"postgresql://{who}{host}{port}/{self.dbname or ''}{sock}"

    # -- restore targets --------------------------------------------------------------------------

    @property
    def pgdata(self) -> Path:
        value = self.options.get("pgdata")
        if not value:
            raise UsageError("the restore target needs ?pgdata=DIR (an empty or new data directory)")
        return Path(value).absolute()

    @property
    def start(self) -> bool:
        return self.options.get("start", "no").lower() in ("1", "yes", "true", "on")

    def bindir(self) -> Path | None:
        value = self.options.get("bindir") or os.environ.get("DTSTORE_PG_BINDIR")
        return Path(value) if value else None

    def dtstore_command(self) -> str:
        """The dtstore the server's own user runs (``restore_command`` of a manual setup)."""
        return self.options.get("dtstore") or shutil.which("dtstore") or f"{sys.executable} -m dtstore.cli"


URL_FORM = "postgresql://USER@HOST[:PORT]/[DB]?host=SOCKET_DIR[&port=P]"
RESTORE_URL_FORM = "postgresql:///?pgdata=DIR[&port=P][&socket_dir=DIR][&start=yes][&archive=off][&tablespace_dir=DIR]"


def form(restore: bool) -> str:
    return RESTORE_URL_FORM if restore else URL_FORM


def parse_url(text: str, *, restore: bool = False) -> PgUrl:
    parts = urlsplit(text)
    if parts.scheme.lower() not in SCHEMES:
        raise UsageError(f"not a PostgreSQL URL: {text.split('://')[0]!r}; expected {form(restore)}")
    if parts.password is not None:
        raise UsageError("no password in the URL, please: use PGPASSWORD or a PGPASSFILE (~/.pgpass); "
                         f"expected {form(restore)}")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    allowed = RESTORE_OPTIONS if restore else BACKUP_OPTIONS
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)} in {parts.scheme}:// URL; known: "
                         f"{', '.join(sorted(allowed))}; expected {form(restore)}")
    try:
        port = int(query.pop("port", "") or parts.port or 0) or None
    except ValueError:
        raise UsageError(f"invalid port in {text!r}; expected {form(restore)}") from None
    host = query.pop("host", None) or (unquote(parts.hostname) if parts.hostname else None)
    if restore and query.get("socket_dir"):
        host = query["socket_dir"]
    dbname = unquote(parts.path.lstrip("/")) or query.pop("dbname", "") or None
    user = unquote(parts.username) if parts.username else query.pop("user", None)
    return PgUrl(user=user, host=host, port=port, dbname=dbname, options=query)


__all__ = ["RESTORE_URL_FORM", "SCHEMES", "URL_FORM", "PgUrl", "parse_url"]
