"""Driver variants that break one backup run (the contract suite's "tool faults" for a connector whose
only tools are SQL and file reads): ``driver=tests.sim.oracle.faulty_datafile`` reports a data file
that is not on disk; ``driver=tests.sim.oracle.faulty_log`` reports the newest archived log under a
name that exists but cannot be read as a file (a folder)."""

from __future__ import annotations

import re
from typing import Any

from tests.sim.oracle import driver


def make_connect(fault: str) -> Any:
    def connect(*args: Any, **kwargs: Any) -> driver.Connection:
        conn = driver.connect(*args, **kwargs)
        return _Faulty(conn.tree, conn.privileged, fault)
    return connect


class _FaultyCursor(driver.Cursor):
    def __init__(self, conn: _Faulty) -> None:
        super().__init__(conn)
        self.fault = conn.fault

    def execute(self, statement: str, parameters: Any = None) -> None:
        super().execute(statement, parameters)
        names = [d[0] for d in self.description or []]
        if "NAME" not in names or not self._rows:
            return
        at = names.index("NAME")
        if self.fault == "datafile" and re.search(r"FROM\s+v\$datafile", statement, re.I) and "BYTES" in names:
            last = list(self._rows[-1])
            last[at] = str(last[at]) + ".gone"
            self._rows[-1] = tuple(last)
        if self.fault == "log" and re.search(r"FROM\s+v\$archived_log", statement, re.I):
            last = list(self._rows[-1])
            last[at] = str(last[at]).rsplit("/", 1)[0]  # the archive folder: it exists, it is no file
            self._rows[-1] = tuple(last)


class _Faulty(driver.Connection):
    def __init__(self, tree: Any, privileged: bool, fault: str) -> None:
        super().__init__(tree, privileged)
        self.fault = fault

    def cursor(self) -> driver.Cursor:
        return _FaultyCursor(self)
