"""SQL through python-oracledb (or any module with its ``connect``), and the runner for the host's files.

python-oracledb's Thin mode is the default (``oracledb.connect(user=, password=, dsn=, mode=)``, with
``AUTH_MODE_SYSDBA`` or ``AUTH_MODE_SYSBACKUP``); a program that called ``oracledb.init_oracle_client()``
gets Thick mode through the same calls.  ``&driver=MODULE`` names another module with the same
``connect`` (the tests' simulator).  Errors become ConnectorError with the server's ORA- text; the
password is never part of a message.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from dtstore.connectors.oracle.url import OracleUrl
from dtstore.connectors.runner import CommandRunner, LocalRunner
from dtstore.errors import ConnectorError, UsageError


def driver_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if name == "oracledb":
            raise UsageError('the oracle connector needs python-oracledb: pip install "dtstore[oracle]"') from exc
        raise UsageError(f"driver={name}: the module cannot be imported ({exc})") from exc


def _ora(exc: BaseException, secret: str) -> str:
    first = exc.args[0] if exc.args else exc
    text = str(getattr(first, "message", first)).strip()
    if secret:
        text = text.replace(secret, "***")
    return text


class Session:
    """One database connection: ``rows(sql)`` gives dicts keyed by upper-case column names."""

    def __init__(self, url: OracleUrl) -> None:
        self.url = url
        self.driver = driver_module(url.driver)
        secret = url.password()
        self._secret = secret
        mode = getattr(self.driver, "AUTH_MODE_SYSBACKUP" if url.privilege == "sysbackup" else "AUTH_MODE_SYSDBA")
        try:
            self.conn = self.driver.connect(user=url.user, password=secret, dsn=url.dsn, mode=mode)
        except Exception as exc:  # the driver's own error classes
            raise ConnectorError(f"cannot connect to {url.dsn} as {url.user} ({url.privilege}): "
                                 f"{_ora(exc, secret)}") from None

    def rows(self, sql: str) -> list[dict[str, Any]]:
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql)
            if not cursor.description:
                return []
            names = [str(d[0]).upper() for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        except Exception as exc:
            raise ConnectorError(f"{sql.split()[0].upper()} failed on {self.url.dsn}: {_ora(exc, self._secret)} "
                                 f"(statement: {sql})") from None
        finally:
            cursor.close()

    def execute(self, sql: str) -> None:
        self.rows(sql)

    def value(self, sql: str) -> Any:
        found = self.rows(sql)
        return next(iter(found[0].values())) if found else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


@contextlib.contextmanager
def session(url: OracleUrl) -> Iterator[Session]:
    s = Session(url)
    try:
        yield s
    finally:
        s.close()


def runner_for(url: OracleUrl) -> CommandRunner:
    """LocalRunner for ``files=local``; an SshRunner (SFTP on the same connection) otherwise."""
    if url.files.local:
        return LocalRunner()
    from dtstore.connectors.runner import SshRunner

    if url.files.user is None or url.files.host is None:
        raise UsageError("files=sftp:// needs OSUSER@DBHOST")
    return SshRunner(url.files.user, url.files.host, url.files.port, windows=url.windows)


__all__ = ["Session", "driver_module", "runner_for", "session"]
