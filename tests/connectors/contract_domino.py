"""The Domino harness of the connector contract suite: the simulated server (``tests/sim/domino``),
direct mode.  Domino's direct mode runs no client tool and needs no credentials, so its "tool faults"
are damaged servers (a running one, a damaged extent header) and it has no refused login."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

from dtstore.connectors.domino.url import URL_FORM
from tests.connectors.contract import BadUrl, ConnectorHarness, Endpoint, ToolFault
from tests.sim.domino.server import DominoSim, tree

NO_SECRET = "Domino-has-no-secret-4711"


class DominoHarness(ConnectorHarness):
    id = "domino"
    kind = "domino"
    scheme = "domino"
    url_form = URL_FORM
    tools = ()

    def __init__(self) -> None:
        self.sim: DominoSim | None = None

    @property
    def server(self) -> DominoSim:
        if self.sim is None:
            raise RuntimeError("the harness was not started")
        return self.sim

    def start(self, request: pytest.FixtureRequest) -> Endpoint:
        base: Path = request.getfixturevalue("tmp_path_factory").mktemp("domino-contract")
        self.sim = DominoSim(base / "srv")
        self.sim.init(extent_size=64 << 10, db_size=32 << 10, mail_users=2)
        self.sim.write(extents=1)
        return Endpoint(self.url(), NO_SECRET, {}, lambda: tree(self.server.root), self.sim)

    def start_target(self, request: pytest.FixtureRequest) -> Endpoint:
        target: Path = request.getfixturevalue("tmp_path") / "target" / "notesdata"
        target.mkdir(parents=True)
        return Endpoint(f"domino://{target}", NO_SECRET, {}, lambda: tree(target), target)

    def url(self, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"domino://{self.server.data}" + (f"?{query}" if query else "")

    def bad_urls(self) -> list[BadUrl]:
        data = self.server.data
        return [
            BadUrl(f"domino://mailhost{data}", "local directory"),
            BadUrl(f"domino://{data}?colour=blue", "unknown Domino URL parameter"),
            BadUrl(f"domino://{data}?snapshot=maybe", "snapshot= must be"),
            BadUrl("domino://", "needs the data directory"),
        ]

    def unreachable_url(self) -> str:
        return "domino:///nonexistent/contract/notesdata"

    def refused_login(self) -> tuple[Mapping[str, str], str] | None:
        return None  # direct mode reads files: there is no login to refuse

    def change(self) -> None:
        self.server.write(extents=0, databases=1)

    def break_chain(self) -> None:
        self.server.recreate_log()  # a new LogID: the archive's extents cannot be continued

    def _copy(self, tmp_path: Path, name: str) -> DominoSim:
        copy = DominoSim(tmp_path / name)
        shutil.copytree(self.server.root, copy.root)
        copy.write_ini(server="CN=sim1/O=Acme")  # Directory= and TRANSLOG_Path= point into the copy
        return copy

    def tool_faults(self, tmp_path: Path) -> list[ToolFault]:
        running = self._copy(tmp_path, "running")
        running.mark_running(os.getpid())
        damaged = self._copy(tmp_path, "damaged")
        current = max(int(p.stem[1:]) for p in damaged.translog.glob("S*.TXN"))
        with open(damaged.extent_path(current), "r+b") as f:
            f.write(b"\0" * 64)
        return [
            ToolFault("a running server, no snapshot=1", "full", {}, r"server is running",
                      url=f"domino://{running.data}"),
            ToolFault("a damaged extent header", "log", {}, r"no valid transaction log header",
                      url=f"domino://{damaged.data}"),
        ]


__all__ = ["DominoHarness"]
