"""Private MariaDB servers for tests (a pytest plugin).

Each server is a real ``mariadbd`` on a datadir under ``tmp_path``, reachable only through its own
unix socket (``--skip-networking``), with binary logging on (ROW format, ``server_id``, small
``--max-binlog-size`` so tests see rotation).  ``mariadb-install-db`` runs once per session into a
template datadir that each server copies (about 0.1 s instead of 1-3 s).

Fixtures:

* ``mariadb_factory(name="src", password=None, server_id=1, args=())`` -> a started
  :class:`MariaDBServer`; every server it made is shut down cleanly at teardown.
  ``mariadb_module_factory`` is the same with module scope, for scenarios shared by tests.
* ``mariadb_source``: server_id 1, a root password set (so ``MYSQL_PWD`` is exercised).
* ``mariadb_target``: server_id 2, a root password too, a second instance to restore into.

The binaries are required: a machine without them fails these tests (CI installs
``mariadb-server mariadb-client``); nothing is skipped.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BINARIES = ("mariadb-install-db", "mariadbd", "mariadb", "mariadb-dump", "mariadb-binlog")
SMALL = ("--innodb-log-file-size=8M", "--innodb-buffer-pool-size=32M")
START_TIMEOUT = 30.0


def require_binaries() -> None:
    missing = [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        pytest.fail(
            f"MariaDB binaries missing: {', '.join(missing)}; install mariadb-server mariadb-client",
            pytrace=False,
        )


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def install_datadir(datadir: Path) -> None:
    """``mariadb-install-db --no-defaults`` into ``datadir`` (root authenticates with a password)."""
    cmd = [
        _binary("mariadb-install-db"),
        "--no-defaults",
        f"--datadir={datadir}",
        f"--user={getpass.getuser()}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        *SMALL,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"mariadb-install-db failed ({result.returncode}): {result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


@dataclass
class MariaDBServer:
    """One private mariadbd.  ``sql()``/``rows()`` use the ``mariadb`` client with ``MYSQL_PWD``."""

    name: str
    base: Path
    server_id: int = 1
    password: str | None = None
    args: Sequence[str] = ()
    max_binlog_size: int = 1 << 20
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socket(self) -> Path:
        return self.base / "sock"

    @property
    def error_log(self) -> Path:
        return self.base / "error.log"

    @property
    def binlog_basename(self) -> Path:
        return self.datadir / "mysql-bin"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("MYSQL_PWD", None)
        if self.password:
            env["MYSQL_PWD"] = self.password
        return env

    def url(self, *databases: str, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"socket": str(self.socket), **params}.items())
        return f"mysql://root@localhost/{','.join(databases)}?{query}"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        cmd = [
            _binary("mariadbd"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            "--skip-networking",
            f"--user={getpass.getuser()}",
            f"--log-bin={self.binlog_basename}",
            "--binlog-format=ROW",
            f"--server-id={self.server_id}",
            f"--max-binlog-size={self.max_binlog_size}",
            f"--pid-file={self.base / 'mariadbd.pid'}",
            f"--log-error={self.error_log}",
            *SMALL,
            *self.args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd {self.name} exited with {self.proc.returncode}:\n{self._log_tail()}")
            if self.socket.exists() and self._ping():
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mariadbd {self.name} did not answer within {START_TIMEOUT}s:\n{self._log_tail()}")

    def _ping(self) -> bool:
        result = subprocess.run(self._client(["-e", "SELECT 1"]), env=self.env(), capture_output=True, check=False)
        return result.returncode == 0

    def _log_tail(self) -> str:
        return self.error_log.read_text(errors="replace")[-3000:] if self.error_log.exists() else "(no log)"

    def stop(self, timeout: float = 30.0) -> None:
        """Clean shutdown (SIGTERM, wait); SIGKILL only if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def set_root_password(self, password: str) -> None:
        self.sql(f"ALTER USER root@localhost IDENTIFIED BY '{password}'")
        self.password = password

    # -- SQL helpers ----------------------------------------------------------------------------

    def _client(self, extra: Sequence[str]) -> list[str]:
        return [_binary("mariadb"), "--no-defaults", f"--socket={self.socket}", "--user=root", *extra]

    def sql(self, script: str, database: str | None = None) -> str:
        """Run SQL through the client; raise with the client's stderr on failure."""
        cmd = self._client(["--batch", "--skip-column-names", *([database] if database else [])])
        result = subprocess.run(cmd, input=script.encode(), env=self.env(), capture_output=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"SQL failed on {self.name}: {result.stderr.decode(errors='replace')}\n{script[:500]}")
        return result.stdout.decode("utf-8", "surrogateescape")  # BLOBs compare exactly

    def rows(self, query: str, database: str | None = None) -> list[tuple[str, ...]]:
        out = self.sql(query, database)
        return [tuple(line.split("\t")) for line in out.split("\n")[:-1]]  # not splitlines(): BLOBs

    def value(self, query: str) -> str:
        return self.rows(query)[0][0]

    def databases(self) -> list[str]:
        system = {"mysql", "information_schema", "performance_schema", "sys"}
        return sorted(r[0] for r in self.rows("SHOW DATABASES") if r[0] not in system)

    def contents(self, databases: Sequence[str] | None = None) -> dict[str, list[tuple[str, ...]]]:
        """Every row of every table (``db.table`` -> rows sorted), for exact comparisons."""
        result: dict[str, list[tuple[str, ...]]] = {}
        for db in databases if databases is not None else self.databases():
            tables = self.rows(
                "SELECT TABLE_NAME FROM information_schema.TABLES"
                f" WHERE TABLE_SCHEMA = '{db}' AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1"
            )
            for (table,) in tables:
                query = f"SET time_zone = '+00:00'; SELECT * FROM `{db}`.`{table}`"  # TIMESTAMPs as UTC
                result[f"{db}.{table}"] = sorted(self.rows(query))
        return result

    def binlogs(self) -> list[str]:
        return [r[0] for r in self.rows("SHOW BINARY LOGS")]


@pytest.fixture(scope="session")
def mariadb_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A datadir made once by mariadb-install-db; servers start from copies of it."""
    require_binaries()
    datadir = tmp_path_factory.mktemp("mariadb-template") / "data"
    install_datadir(datadir)
    return datadir


MariaDBFactory = Callable[..., MariaDBServer]


class ServerPool:
    """Makes servers from the template and shuts every one of them down cleanly at the end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, template: Path) -> None:
        self._tmp = tmp_path_factory
        self._template = template
        self.servers: list[MariaDBServer] = []

    def make(
        self,
        name: str = "src",
        *,
        password: str | None = None,
        server_id: int = 1,
        args: Sequence[str] = (),
        max_binlog_size: int = 1 << 20,
    ) -> MariaDBServer:
        base = self._tmp.mktemp(f"my-{name}", numbered=True)  # short: socket paths must stay < 108 bytes
        shutil.copytree(self._template, base / "data")
        server = MariaDBServer(name, base, server_id=server_id, args=tuple(args), max_binlog_size=max_binlog_size)
        self.servers.append(server)
        server.start()
        if password:
            server.set_root_password(password)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def mariadb_factory(tmp_path_factory: pytest.TempPathFactory, mariadb_template: Path) -> Iterator[MariaDBFactory]:
    """``mariadb_factory(name, password=..., server_id=..., args=[...])`` -> a started server."""
    pool = ServerPool(tmp_path_factory, mariadb_template)
    yield pool.make
    pool.stop_all()


@pytest.fixture(scope="module")
def mariadb_module_factory(
    tmp_path_factory: pytest.TempPathFactory, mariadb_template: Path
) -> Iterator[MariaDBFactory]:
    """Like ``mariadb_factory`` but the servers live for the whole test module (shared scenarios)."""
    pool = ServerPool(tmp_path_factory, mariadb_template)
    yield pool.make
    pool.stop_all()


@pytest.fixture
def mariadb_source(mariadb_factory: MariaDBFactory) -> MariaDBServer:
    return mariadb_factory("src", password="src-Secret-1", server_id=1)


@pytest.fixture
def mariadb_target(mariadb_factory: MariaDBFactory) -> MariaDBServer:
    return mariadb_factory("dst", password="dst-Secret-2", server_id=2)
