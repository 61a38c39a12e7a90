"""The SQL Server harness of the connector contract suite: the TDS simulator (``tests/sim/mssql``)
reached through real pyodbc + unixODBC + FreeTDS.

The connector runs no client tools (BACKUP writes the file on the server), so its "tool faults" are
the server's: the simulator is armed (``EXEC dtsim_fault N'full:disk-full'``, simulator only) to
fail the next BACKUP with 3202 + 3013, to write a damaged file that VERIFYONLY refuses, or to end
without its 3014 message and without a file (what a cancelled backup looks like).  A log backup
that succeeded on the server but did not reach the repository breaks the chain for real (the
server has truncated its log), so the next log run is refused and auto takes a differential: that
is tested in ``test_mssql_server.py``, not here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import pytest

from dtstore.connectors.mssql.url import URL_FORM
from tests.connectors.contract import BadUrl, ConnectorHarness, Endpoint, ToolFault
from tests.helpers import missing
from tests.servers.ports import free_port
from tests.sim.mssql.fixture import Simulator, available, simulator

SOURCE_SECRET = "Src-mssql-Pw-4711"
TARGET_SECRET = "Dst-mssql-Pw-0815"
WRONG_SECRET = "Wrong-mssql-Pw-666"
URL_SECRET = "In-the-url-Pw-999"
URL_FORM_SHOWN = URL_FORM.split("?")[0]


def _start(request: pytest.FixtureRequest, name: str, secret: str) -> Simulator:
    reason = available()
    if reason is not None:
        missing(reason)
    base = request.getfixturevalue("tmp_path_factory").mktemp(name)
    stack = contextlib.ExitStack()
    sim = stack.enter_context(simulator(base, password=secret))
    request.addfinalizer(stack.close)
    return sim


def _state(sim: Simulator) -> object:
    names = [r[0] for r in sim.sql("SELECT name FROM sys.databases WHERE database_id > 4 ORDER BY name")]
    return {name: sim.rows(f"[{name}].dbo.t") if name == "shop" else None for name in names}


class MssqlHarness(ConnectorHarness):
    id = "mssql"
    kind = "mssql"
    scheme = "mssql"
    url_form = URL_FORM_SHOWN
    tools = ()

    def __init__(self) -> None:
        self.sim: Simulator | None = None
        self._changes = 0
        self._foreign = 0

    @property
    def src(self) -> Simulator:
        if self.sim is None:
            raise RuntimeError("the harness was not started")
        return self.sim

    def start(self, request: pytest.FixtureRequest) -> Endpoint:
        self.sim = _start(request, "mssql-contract", SOURCE_SECRET)
        self.sim.sql("CREATE DATABASE shop; CREATE TABLE shop.dbo.t (id INT PRIMARY KEY, v NVARCHAR(40))")
        self.sim.sql("INSERT INTO shop.dbo.t VALUES (1, N'one'); INSERT INTO shop.dbo.t VALUES (2, N'two')")
        return Endpoint(self.url(), SOURCE_SECRET, self.sim.env(), lambda: _state(self.src), self.sim)

    def start_target(self, request: pytest.FixtureRequest) -> Endpoint:
        target = _start(request, "mssql-target", TARGET_SECRET)
        return Endpoint(target.url(), TARGET_SECRET, target.env(), lambda: _state(target), target)

    def url(self, **params: str) -> str:
        return self.src.url("shop", **params)

    def bad_urls(self) -> list[BadUrl]:
        port, stage = self.src.port, self.src.stage
        return [
            BadUrl(f"mssql://127.0.0.1:{port}/shop?stage={stage}", "needs a user"),
            BadUrl(f"mssql://sa:{URL_SECRET}@127.0.0.1:{port}/shop?stage={stage}", "password in the URL is refused",
                   URL_SECRET),
            BadUrl(f"mssql://sa@127.0.0.1:{port}/shop?stage={stage}&colour=blue", "unknown SQL Server URL parameter"),
            BadUrl("mssql://sa@127.0.0.1:port/shop?stage=/x", "invalid port"),
            BadUrl(f"mssql://sa@127.0.0.1:{port}/tempdb?stage={stage}", "tempdb cannot be backed up"),
            BadUrl(f"mssql://sa@127.0.0.1:{port}/shop?stage={stage}&copy_only=maybe", "copy_only= must be"),
            BadUrl(f"mssql://sa@127.0.0.1:{port}/shop", "needs &stage=PATH"),
        ]

    def unreachable_url(self) -> str:
        return f"mssql://sa@127.0.0.1:{free_port()}/?driver=FreeTDS&stage=/nonexistent/mssql-stage"

    def refused_login(self) -> tuple[Mapping[str, str], str]:
        return {"SQLCMDPASSWORD": WRONG_SECRET}, WRONG_SECRET

    def change(self) -> None:
        self._changes += 1
        n = 100 + self._changes
        self.src.sql(f"INSERT INTO shop.dbo.t VALUES ({n}, N'v{n}'); UPDATE shop.dbo.t SET v = N'x{n}' WHERE id = 1")

    def break_chain(self) -> None:
        """Another tool's full (not COPY_ONLY: the differential base moves) and log backup (the chain breaks)."""
        self._foreign += 1
        other = self.src.state / "other-tool"
        other.mkdir(exist_ok=True)
        self.src.sql(f"BACKUP DATABASE shop TO DISK = N'{other}/full{self._foreign}.bak' WITH INIT")
        self.change()
        self.src.sql(f"BACKUP LOG shop TO DISK = N'{other}/log{self._foreign}.trn' WITH INIT")

    def tool_faults(self, tmp_path: Path) -> list[ToolFault]:
        faults = [
            ToolFault("the disk fills during the full", "full", {}, r"3202.*not enough space|3013"),
            ToolFault("the full's file is damaged", "full", {}, r"3241|incorrectly formed"),
            ToolFault("the full ends without 3014 and without a file", "full", {}, r"successfully processed"),
            ToolFault("the disk fills during the full, staged", "full", {}, r"3202", stage=True),
            ToolFault("the disk fills during the log", "log", {}, r"3202"),
        ]  # not "the log's file is damaged": SQL Server has truncated its log by then, the chain is broken for real
        kinds = {"disk": "disk-full", "damaged": "truncated", "without": "silent"}
        for fault in faults:  # armed in the order the contract test runs them (fulls first)
            what = next(v for k, v in kinds.items() if k in fault.name)
            self.src.sql(f"EXEC dtsim_fault N'{fault.mode}:{what}'")
        return faults


__all__ = ["MssqlHarness"]
