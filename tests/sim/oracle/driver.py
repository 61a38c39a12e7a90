"""A DB-API stand-in for python-oracledb, selected with ``driver=tests.sim.oracle.driver`` in the URL.

``connect(user=, password=, dsn=, mode=)`` opens the database in ``ORACLE_SIM_STATE``: the password
is checked against the tree's password file (``ORA-01017``), the service of ``HOST:PORT/SERVICE``
must be the database's name (``ORA-12514``), the instance must be up (``ORA-01034``).  Errors are
``DatabaseError`` whose ``args[0]`` has ``code``, ``full_code`` and ``message``, as oracledb's.

Test hook: ``ORACLE_SIM_KILL_AFTER=REGEX`` kills this process (SIGKILL) right after a statement that
matches, the way a backup run dies between two statements.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
from typing import Any

from tests.sim.oracle.db import OraError, Tree, running, state_root
from tests.sim.oracle.sql import execute

AUTH_MODE_DEFAULT = 0
AUTH_MODE_SYSDBA = 2
AUTH_MODE_SYSOPER = 4
AUTH_MODE_SYSBACKUP = 0x20000
DB_TYPE_DATE = "DATE"


class _Error:
    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message
        self.full_code = f"ORA-{code:05d}" if code < 20000000 else f"DPY-{code - 20000000}"

    def __str__(self) -> str:
        return self.message


class Error(Exception):
    pass


class DatabaseError(Error):
    pass


class OperationalError(DatabaseError):
    pass


class InterfaceError(Error):
    pass


def _wrap(exc: OraError) -> DatabaseError:
    cls = OperationalError if exc.code in (1034, 1017, 12514, 12541) else DatabaseError
    return cls(_Error(exc.code, exc.message))


class Cursor:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.description: list[tuple[Any, ...]] | None = None
        self.rowcount = 0
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, statement: str, parameters: Any = None) -> None:
        if parameters:
            raise InterfaceError(_Error(20000000 + 2000, "DPY-2000: the simulator takes no bind variables"))
        if self.conn.closed:
            raise InterfaceError(_Error(20001001, "DPY-1001: not connected to database"))
        try:
            result = execute(self.conn.tree, statement, privileged=self.conn.privileged)
        except OraError as exc:
            raise _wrap(exc) from None
        self.description = [(c, None, None, None, None, None, True) for c in result.columns] or None
        self._rows = list(result.rows) if result.columns else []
        self.rowcount = result.rows[0][0] if result.rows and not result.columns else len(self._rows)
        pattern = os.environ.get("ORACLE_SIM_KILL_AFTER")
        if pattern and re.search(pattern, statement, re.IGNORECASE):
            os.kill(os.getpid(), signal.SIGKILL)

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    def close(self) -> None:
        self._rows = []

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Connection:
    def __init__(self, tree: Tree, privileged: bool) -> None:
        self.tree, self.privileged, self.closed = tree, privileged, False

    def cursor(self) -> Cursor:
        return Cursor(self)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(user: str | None = None, password: str | None = None, dsn: str | None = None,
            mode: int = AUTH_MODE_DEFAULT, **_: Any) -> Connection:
    try:
        root = state_root()
        tree = Tree(root)
        stored = next(iter(sorted((root / "dbs").glob("orapw*"))), None) if (root / "dbs").is_dir() else None
        if stored is None:
            raise OraError(12541, f"TNS:no listener (no database at {root})")
        if hashlib.sha256((password or "").encode()).hexdigest() != stored.read_text().strip():
            raise OraError(1017, "invalid username/password; logon denied")
        db = running(tree)
        service = (dsn or "").rpartition("/")[2].split(".")[0].upper()
        if service and service != db.ctl["name"].upper():
            raise OraError(12514, "TNS:listener does not currently know of service requested in connect descriptor")
    except OraError as exc:
        raise _wrap(exc) from None
    return Connection(tree, mode in (AUTH_MODE_SYSDBA, AUTH_MODE_SYSBACKUP))
