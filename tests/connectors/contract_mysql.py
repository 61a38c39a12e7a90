"""The MySQL/MariaDB harness of the connector contract suite: real private MariaDB servers
(``tests/servers/mariadb.py``), fake ``mariadb-dump``/``mariadb-binlog`` scripts on PATH."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dtstore.connectors.mysql.url import URL_FORM
from tests.connectors.contract import BadUrl, ConnectorHarness, Endpoint, ToolFault
from tests.connectors.test_mysql_server import seed

if TYPE_CHECKING:
    from tests.servers.mariadb import MariaDBFactory, MariaDBServer

SOURCE_SECRET = "Src-contract-Pw-4711"
TARGET_SECRET = "Dst-contract-Pw-0815"
WRONG_SECRET = "Wrong-contract-Pw-666"
URL_SECRET = "In-the-url-Pw-999"


def _real(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not on PATH", pytrace=False)
    return path


def _target_state(server: MariaDBServer) -> object:
    users = server.rows("SELECT User, Host FROM mysql.user ORDER BY 1, 2")
    return server.databases(), server.contents(), users


class MysqlHarness(ConnectorHarness):
    id = "mysql"
    kind = "mysql"
    scheme = "mysql"
    url_form = URL_FORM
    tools = ("mariadb-dump", "mariadb-binlog", "mariadb")

    def __init__(self) -> None:
        self.server: MariaDBServer | None = None
        self._changes = 0

    @property
    def src(self) -> MariaDBServer:
        if self.server is None:
            raise RuntimeError("the harness was not started")
        return self.server

    def start(self, request: pytest.FixtureRequest) -> Endpoint:
        factory: MariaDBFactory = request.getfixturevalue("mariadb_module_factory")
        self.server = factory("contract", password=SOURCE_SECRET, max_binlog_size=16384)
        seed(self.server)
        return Endpoint(self.url(), SOURCE_SECRET, {"MYSQL_PWD": SOURCE_SECRET}, self.server.contents, self.server)

    def start_target(self, request: pytest.FixtureRequest) -> Endpoint:
        factory: MariaDBFactory = request.getfixturevalue("mariadb_factory")
        target = factory("ctarget", password=TARGET_SECRET, server_id=2)
        return Endpoint(target.url(), TARGET_SECRET, {"MYSQL_PWD": TARGET_SECRET},
                        lambda: _target_state(target), target)

    def url(self, **params: str) -> str:
        return self.src.url(**params)

    def log_urls(self) -> list[str]:
        return [self.url(), self.url(binlogs="remote")]  # the binlog directory, and the replication protocol

    def bad_urls(self) -> list[BadUrl]:
        sock = f"socket={self.src.socket}"
        return [
            BadUrl(f"mysql://localhost/shop?{sock}", "needs a user"),
            BadUrl(f"mysql://root:{URL_SECRET}@localhost/shop?{sock}", "password in the URL is refused", URL_SECRET),
            BadUrl(f"mysql://root@localhost/shop?{sock}&colour=blue", "unknown MySQL URL parameter"),
            BadUrl("mysql://root@localhost:port/shop", "invalid port"),
            BadUrl(f"mysql://root@localhost/mysql?{sock}", "cannot be backed up by name"),
            BadUrl(f"mysql://root@localhost/shop?{sock}&binlogs=sometimes", "binlogs= must be"),
            BadUrl(f"mysql://root@localhost/shop?{sock}&jobs=0", "jobs= must be"),
        ]

    def unreachable_url(self) -> str:
        return "mysql://root@localhost/?socket=/nonexistent/contract.sock"

    def refused_login(self) -> tuple[Mapping[str, str], str]:
        return {"MYSQL_PWD": WRONG_SECRET}, WRONG_SECRET

    def change(self) -> None:
        self._changes += 1
        n = 10_000 + self._changes
        self.src.sql(f"INSERT INTO crm.contacts VALUES ({n}, 'c{n}@example.org', NOW(), NOW()); "
                     f"UPDATE shop.items SET price = price + 1 WHERE id = {self._changes % 400 + 1}")

    def break_chain(self) -> None:
        self.src.sql("RESET MASTER")  # the binlog the archive needs next now starts another history

    def tool_faults(self, tmp_path: Path) -> list[ToolFault]:
        dump, binlog = _real("mariadb-dump"), _real("mariadb-binlog")
        run_dump = f"import os, subprocess, sys\nout = subprocess.run([{dump!r}, *sys.argv[1:]], " \
                   "stdout=subprocess.PIPE, check=True).stdout\n"
        leak = "sys.stderr.write('fatal: lost connection, password ' + os.environ.get('MYSQL_PWD', '') + '\\n')\n"
        no_trailer = "sys.stdout.buffer.write(out[: out.rindex(b'\\n-- Dump completed')])\n"
        remote = self.url(binlogs="remote")
        fetch_then = (
            f"import os, subprocess, sys\nsubprocess.run([{binlog!r}, *sys.argv[1:]], check=True)\n"
            "folder = next(a for a in sys.argv if a.startswith('--result-file=')).split('=', 1)[1]\n"
            "path = os.path.join(folder, sys.argv[-1])\n"
        )
        return [
            ToolFault("dump exits 2 at once", "full",
                      {"mariadb-dump": "import os, sys\nprint('-- MariaDB dump', flush=True)\n" + leak
                       + "sys.exit(2)\n"}, r"exited with status 2"),
            ToolFault("dump dies half-way", "full",
                      {"mariadb-dump": run_dump + "sys.stdout.buffer.write(out[: len(out) // 2])\n"
                       "sys.stdout.flush()\n" + leak + "sys.exit(2)\n"}, r"exited with status 2"),
            ToolFault("dump stops half-way and exits 0", "full",
                      {"mariadb-dump": run_dump + "sys.stdout.buffer.write(out[: len(out) // 2])\n"},
                      r"incomplete|trailer|ends before"),
            ToolFault("dump stops half-way and exits 0, staged", "full",
                      {"mariadb-dump": run_dump + "sys.stdout.buffer.write(out[: len(out) // 2])\n"},
                      r"incomplete|trailer|ends before", stage=True),
            ToolFault("dump without its trailer", "full",
                      {"mariadb-dump": run_dump + no_trailer},
                      r"trailer"),
            ToolFault("binlog fetch exits 2", "log",
                      {"mariadb-binlog": "import os, sys\n" + leak + "sys.exit(2)\n"},
                      r"exited with status 2", url=remote),
            ToolFault("binlog fetched short", "log",
                      {"mariadb-binlog": fetch_then + "os.truncate(path, os.path.getsize(path) // 2)\n"},
                      r"truncated|corrupt|not the closed file", url=remote),
        ]


__all__ = ["MysqlHarness"]
