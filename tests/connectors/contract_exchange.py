"""The Exchange harness of the connector contract suite: the simulated server (``tests/sim/exchange``) in
server mode, its fake PowerShell, ``diskshadow`` and ``eseutil`` first on PATH for the module.  Exchange
runs as the Windows account dtstore runs under: there is no login to refuse and no secret to leak, so
the secret checked is a marker that must appear nowhere.  Its "tool faults" are a diskshadow that fails
at once, one that claims an exposure it never made, and one whose shadow copy holds a damaged log."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from dtstore.connectors.exchange.url import URL_FORM
from tests.connectors.contract import BadUrl, ConnectorHarness, Endpoint, ToolFault
from tests.sim.exchange.store import SimServer
from tests.sim.exchange.tools import write_bin

NO_SECRET = "Exchange-has-no-secret-4711"
REPO = str(Path(__file__).resolve().parents[2])


def _tree(root: Path) -> object:
    if not root.exists():
        return []
    return sorted((p.relative_to(root).as_posix(), p.stat().st_size) for p in root.rglob("*") if p.is_file())


class ExchangeHarness(ConnectorHarness):
    id = "exchange"
    kind = "exchange"
    scheme = "exchange"
    url_form = URL_FORM
    tools = ("powershell", "diskshadow", "eseutil")

    def __init__(self) -> None:
        self.sim: SimServer | None = None
        self.stage: Path | None = None

    @property
    def server(self) -> SimServer:
        if self.sim is None:
            raise RuntimeError("the harness was not started")
        return SimServer(self.sim.root)

    def start(self, request: pytest.FixtureRequest) -> Endpoint:
        base: Path = request.getfixturevalue("tmp_path_factory").mktemp("exchange-contract")
        self.sim = SimServer.init(base / "sim", databases=["DB1"], log_size=32 * 1024, page_size=8192)
        self.sim.write(3)
        self.stage = base / "stage"
        saved = os.environ.get("PATH", "")
        os.environ["PATH"] = f"{write_bin((base / 'sim').resolve())}{os.pathsep}{saved}"
        request.addfinalizer(lambda: os.environ.__setitem__("PATH", saved))
        return Endpoint(self.url(), NO_SECRET, {}, lambda: _tree(Path(self.server.state["volume"])), self.sim)

    def start_target(self, request: pytest.FixtureRequest) -> Endpoint:
        target: Path = request.getfixturevalue("tmp_path") / "restored"
        url = f"exchange:///?edb={target / 'DB1.edb'}&logs={target / 'logs'}"
        return Endpoint(url, NO_SECRET, {}, lambda: _tree(target), target)

    def url(self, **params: str) -> str:
        query = "&".join([f"stage={self.stage}", *(f"{k}={v}" for k, v in params.items())])
        return f"exchange://localhost/?{query}"

    def bad_urls(self) -> list[BadUrl]:
        return [
            BadUrl("exchange://server7/DB1", "runs on the Exchange server itself"),
            BadUrl(f"exchange://admin:{NO_SECRET}@localhost/", "no user or password", NO_SECRET),
            BadUrl("exchange:///?edb=/x/DB1.edb", "needs edb=PATH and logs=DIR"),
            BadUrl("exchange:///?edb=/x/DB1.txt&logs=/x", "must name an .edb"),
            BadUrl("exchange://localhost/?vss=sometimes", "vss= must be full"),
            BadUrl("exchange://localhost/?colour=blue", "unknown Exchange URL parameter"),
            BadUrl("exchange:///?edb=/x/a.edb&logs=/x&prefix=X1", "prefix= must be"),
        ]

    def unreachable_url(self) -> str:
        return "exchange:///?edb=/nonexistent/contract/DB1.edb&logs=/nonexistent/contract/logs"

    def refused_login(self) -> tuple[Mapping[str, str], str] | None:
        return None  # the Windows account dtstore runs as: nothing to refuse

    def change(self) -> None:
        self.server.write(1)

    def break_chain(self) -> None:
        self.server.reset_logs("DB1")  # a new log signature: the archive's generations cannot be continued

    def tool_faults(self, tmp_path: Path) -> list[ToolFault]:
        root = str(self.server.root)
        fails = "import sys\nprint('Writer verify failed: VSS_E_WRITERERROR_RETRYABLE', flush=True)\nsys.exit(1)\n"
        pretends = ("import sys\nfor line in sys.stdin:\n    w = line.split()\n"
                    "    if w and w[0] == 'expose':\n"
                    "        print('The shadow copy was successfully exposed as ' + ' '.join(w[2:]).strip('\"') + '.',"
                    " flush=True)\n")
        damages = (f"import sys\nsys.path.insert(0, {REPO!r})\nimport pathlib, shutil\n"
                   "from tests.sim.exchange import tools\nreal = shutil.copytree\n"
                   "def copy(src, dst, *args, **kw):\n    shutil.copytree = real\n"
                   "    try:\n        real(src, dst, *args, **kw)\n    finally:\n        shutil.copytree = copy\n"
                   "    logs = sorted(p for p in pathlib.Path(dst).rglob('E00*.log') if len(p.name) > 7)\n"
                   "    data = bytearray(logs[-1].read_bytes()); data[100] ^= 1; logs[-1].write_bytes(bytes(data))\n"
                   "tools.shutil.copytree = copy\n"
                   f"sys.exit(tools.main(pathlib.Path({root!r}), 'diskshadow', sys.argv[1:]))\n")
        return [
            ToolFault("diskshadow fails at once", "full", {"diskshadow": fails}, r"did not expose"),
            ToolFault("diskshadow claims an exposure it never made", "full", {"diskshadow": pretends},
                      r"unable to list|unable to read"),
            ToolFault("a damaged log generation in the shadow copy", "log", {"diskshadow": damages}, r"damaged"),
        ]


__all__ = ["ExchangeHarness"]
