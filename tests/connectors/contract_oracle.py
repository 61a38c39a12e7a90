"""The Oracle harness of the connector contract suite: the simulated database (``tests/sim/oracle``),
one file tree per test module, restores into fresh folders through ``&target_dir=`` and the fake sqlplus."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from dtstore.connectors.oracle.url import URL_FORM
from tests.connectors.contract import BadUrl, ConnectorHarness, Endpoint, ToolFault
from tests.sim.oracle.__main__ import bin_dir
from tests.sim.oracle.db import Tree, create
from tests.sim.oracle.sql import execute

SOURCE_SECRET = "Src-oracle-Pw-4711"
TARGET_SECRET = "Dst-oracle-Pw-0815"
WRONG_SECRET = "Wrong-oracle-Pw-666"
URL_SECRET = "In-the-url-Pw-999"
DRIVER = "tests.sim.oracle.driver"


def _url(service: str = "ORCL", driver: str = DRIVER, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"files": "local", "driver": driver, **params}.items())
    return f"oracle://sys@localhost:1521/{service}?{query}"


class OracleHarness(ConnectorHarness):
    id = "oracle"
    kind = "oracle"
    scheme = "oracle"
    url_form = URL_FORM
    tools = ("sqlplus",)

    def __init__(self) -> None:
        self.root: Path | None = None
        self._changes = 0

    @property
    def tree(self) -> Tree:
        if self.root is None:
            raise RuntimeError("the harness was not started")
        return Tree(self.root)

    def _env(self, secret: str) -> dict[str, str]:
        return {"ORACLE_SIM_STATE": str(self.tree.root), "ORACLE_PWD": secret,
                "PATH": f"{bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}"}

    def start(self, request: pytest.FixtureRequest) -> Endpoint:
        factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
        self.root = factory.mktemp("oracle-contract") / "db"
        create(self.root, password=SOURCE_SECRET)
        execute(self.tree, "CREATE TABLE contacts (id NUMBER, email VARCHAR2(80), score NUMBER)")
        for n in range(1, 41):
            execute(self.tree, f"INSERT INTO contacts VALUES ({n}, 'c{n}@example.org', {n % 9})")
        return Endpoint(self.url(), SOURCE_SECRET, self._env(SOURCE_SECRET), self._rows, self.tree)

    def _rows(self, root: Path | None = None) -> object:
        return execute(Tree(root or self.tree.root), "SELECT * FROM contacts ORDER BY id").rows

    def start_target(self, request: pytest.FixtureRequest) -> Endpoint:
        folder: Path = request.getfixturevalue("tmp_path") / "restored"

        def state() -> object:
            return self._rows(folder) if (folder / ".sim" / "instance.json").exists() else None
        return Endpoint(_url(target_dir=str(folder)), TARGET_SECRET, self._env(TARGET_SECRET), state, folder)

    def url(self, **params: str) -> str:
        return _url(**params)

    def bad_urls(self) -> list[BadUrl]:
        return [
            BadUrl("oracle://localhost:1521/ORCL?files=local", "needs a user"),
            BadUrl(f"oracle://sys:{URL_SECRET}@localhost:1521/ORCL", "password in the URL is refused", URL_SECRET),
            BadUrl("oracle://sys@localhost:1521/ORCL?colour=blue", "unknown Oracle URL parameter"),
            BadUrl("oracle://sys@localhost:port/ORCL", "invalid port"),
            BadUrl("oracle://sys@localhost:1521/", "needs one service name"),
            BadUrl("oracle://sys@localhost:1521/ORCL?files=nfs://x", "files= must be"),
            BadUrl(f"oracle://sys@localhost:1521/ORCL?files=sftp://oracle:{URL_SECRET}@db", "password in files=",
                   URL_SECRET),
            BadUrl("oracle://sys@localhost:1521/ORCL?privilege=sysoper", "privilege= must be"),
        ]

    def unreachable_url(self) -> str:
        return _url(service="NOSUCHDB")

    def refused_login(self) -> tuple[Mapping[str, str], str]:
        return {"ORACLE_PWD": WRONG_SECRET}, WRONG_SECRET

    def change(self) -> None:
        self._changes += 1
        n = 10_000 + self._changes
        execute(self.tree, f"INSERT INTO contacts VALUES ({n}, 'c{n}@example.org', 1)")
        execute(self.tree, f"UPDATE contacts SET score = score + 1 WHERE id = {self._changes % 40 + 1}")

    def break_chain(self) -> None:
        """An archived log the repository does not hold yet is deleted from the host's disk."""
        execute(self.tree, "ALTER SYSTEM SWITCH LOGFILE")
        name = execute(self.tree, "SELECT sequence#, name FROM v$archived_log ORDER BY sequence#").rows[-1][1]
        Path(str(name)).unlink()

    def tool_faults(self, tmp_path: Path) -> list[ToolFault]:
        return [
            ToolFault("a data file cannot be read", "full", {}, r"unable to read .*\.gone",
                      url=_url(driver="tests.sim.oracle.faulty_datafile")),
            ToolFault("an archived log cannot be read", "log", {}, r"unable to read",
                      url=_url(driver="tests.sim.oracle.faulty_log")),
        ]


__all__ = ["OracleHarness"]
