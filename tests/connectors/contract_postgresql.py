"""The PostgreSQL harness of the connector contract suite: a real private PostgreSQL 15
(``tests/servers/postgresql.py``, archiving with ``dtstore wal-push`` into its own repository) and a
fake ``psql`` on PATH that breaks the backup session.

A PostgreSQL snapshot is a base backup only (``full``; ``auto`` = full): the WAL arrives through
``dtstore wal-push``, run by the server into the repository it archives to, never into the fresh
repositories of the contract tests.  So the items that need a log run, or a restore from such a
repository, do not apply (``not_applicable``); ``test_postgresql_server.py`` covers WAL chains, gaps
and restores end to end.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pytest

from dtstore.connectors.postgresql.server import MARKER
from dtstore.connectors.postgresql.url import URL_FORM
from tests.connectors.contract import BadUrl, ConnectorHarness, Endpoint, ToolFault
from tests.servers.postgresql import BINDIR, Cluster, make_cluster

SOURCE_SECRET = "Pg-contract-Pw-4711"
"""PGPASSWORD in every run's environment (the cluster trusts local connections: it is never needed,
but must never be shown)"""
URL_SECRET = "In-the-url-Pw-999"
NO_WAL = ("the contract's repositories hold no WAL (the server archives it with dtstore wal-push into its own "
          "repository), so no restore can be planned from them; see test_postgresql_server.py")


def _real_psql() -> str:
    path = BINDIR / "psql" if (BINDIR / "psql").exists() else shutil.which("psql")
    if path is None:
        pytest.fail("psql is not on PATH", pytrace=False)
    return str(path)


def _tree(root: Path) -> object:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else None


class PostgresqlHarness(ConnectorHarness):
    id = "postgresql"
    kind = "postgresql"
    scheme = "postgresql"
    url_form = URL_FORM
    tools = ("psql",)
    snapshot_modes = ("full",)
    not_applicable: ClassVar[Mapping[str, str]] = {
        "a_log_that_does_not_follow_is_exit_17_in_log_mode_and_a_full_in_auto_mode":
            "no --mode log: WAL arrives through dtstore wal-push (its gaps: test_postgresql_server.py)",
        "two_concurrent_runs_of_one_source_never_fork_the_chain":
            "no --mode log: a base backup continues no chain of snapshots (the WAL chain is wal-push's)",
        "a_dry_run_touches_nothing": NO_WAL,
        "secrets_appear_in_no_argv_metadata_plan_or_error": NO_WAL,
    }

    def __init__(self) -> None:
        self.cluster: Cluster | None = None
        self._changes = 0

    @property
    def src(self) -> Cluster:
        if self.cluster is None:
            raise RuntimeError("the harness was not started")
        return self.cluster

    def start(self, request: pytest.FixtureRequest) -> Endpoint:
        dtstore: Path = request.getfixturevalue("pg_dtstore")  # a missing PostgreSQL: a failure in CI
        stack = contextlib.ExitStack()
        request.addfinalizer(stack.close)
        self.cluster = stack.enter_context(contextlib.contextmanager(make_cluster)(dtstore))
        self.src.psql("CREATE TABLE contract (id int PRIMARY KEY, note text); "
                      "INSERT INTO contract SELECT g, 'row ' || g FROM generate_series(1, 1000) g")
        return Endpoint(self.url(), SOURCE_SECRET, {"PGPASSWORD": SOURCE_SECRET}, self._contents, self.cluster)

    def _contents(self) -> object:
        return self.src.psql("SELECT count(*) || '/' || md5(string_agg(id || ':' || note, ',' ORDER BY id)) "
                             "FROM contract")

    def start_target(self, request: pytest.FixtureRequest) -> Endpoint:
        parent: Path = request.getfixturevalue("tmp_path") / "target"
        url = f"postgresql:///?pgdata={parent / 'data'}&port={self.src.port + 7}"
        return Endpoint(url, SOURCE_SECRET, {"PGPASSWORD": SOURCE_SECRET}, lambda: _tree(parent / "data"), parent)

    def url(self, **params: str) -> str:
        query = "".join(f"&{k}={v}" for k, v in params.items())
        return self.src.url + query

    def bad_urls(self) -> list[BadUrl]:
        sock = f"host={self.src.socket_dir}&port={self.src.port}"
        return [
            BadUrl(f"postgresql://postgres:{URL_SECRET}@/?{sock}", "no password in the URL", URL_SECRET),
            BadUrl(f"postgres://postgres:{URL_SECRET}@localhost/shop", "no password in the URL", URL_SECRET),
            BadUrl(f"postgresql://postgres@/?{sock}&colour=blue", r"unknown option\(s\) colour"),
            BadUrl("postgresql://postgres@localhost:port/", "invalid port"),
            BadUrl("postgresql://postgres@localhost/?port=fivefour", "invalid port"),
        ]

    def unreachable_url(self) -> str:
        return "postgresql://postgres@/?host=/nonexistent/contract&port=5432"

    def refused_login(self) -> tuple[Mapping[str, str], str] | None:
        return None  # make_cluster's server trusts local connections (initdb -A trust): nothing to refuse

    def change(self) -> None:
        self._changes += 1
        n = 10_000 + self._changes
        self.src.psql(f"INSERT INTO contract VALUES ({n}, 'change {n}'); "
                      f"UPDATE contract SET note = note || '+' WHERE id = {self._changes % 1000 + 1}")

    def break_chain(self) -> None:
        raise NotImplementedError("PostgreSQL has no log snapshots: its contract skips the chain items")

    def tool_faults(self, tmp_path: Path) -> list[ToolFault]:
        real = _real_psql()
        # queries (-c: the probe, the size estimate) go to the real psql; the backup session breaks
        head = f"import os, subprocess, sys, threading\nREAL = {real!r}\n" \
               "if '-c' in sys.argv:\n    os.execv(REAL, [REAL, *sys.argv[1:]])\n"
        leak = ("sys.stderr.write('psql: error: connection lost, password ' + os.environ.get('PGPASSWORD', '')"
                " + '\\n')\n")
        relay = (
            "real = subprocess.Popen([REAL, *sys.argv[1:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, "
            "text=True, bufsize=1)\n"
            "stopping = threading.Event()\n"
            "def out():\n"
            "    for line in real.stdout:\n"
            "        if stopping.is_set() and line.strip():\n"
            "            CUT\n"
            "            sys.stdout.flush(); os._exit(0)\n"
            "        sys.stdout.write(line); sys.stdout.flush()\n"
            "threading.Thread(target=out, daemon=True).start()\n"
            "for line in sys.stdin:\n"
            "    if 'pg_backup_stop' in line:\n"
            "        stopping.set()\n"
            "    real.stdin.write(line); real.stdin.flush()\n"
            "real.stdin.close(); real.wait(); sys.exit(0)\n"
        )
        half = "sys.stdout.write(line[: len(line) // 2] + '\\n')"
        return [
            ToolFault("the backup session exits 2 at once", "full",
                      {"psql": head + leak + "sys.exit(2)\n"}, r"backup session\) ended"),
            ToolFault("the backup session ends before pg_backup_stop, exit 0", "full",
                      {"psql": head + relay.replace("if 'pg_backup_stop' in line:\n        stopping.set()\n",
                                                    "if 'pg_backup_stop' in line:\n" + "        " + leak
                                                    + "        real.kill(); os._exit(0)\n").replace("CUT", "pass")},
                      r"backup session\) ended"),
            ToolFault("pg_backup_stop's answer stops half-way, exit 0", "full",
                      {"psql": head + relay.replace("CUT", half)}, r"backup session\) ended"),
            ToolFault("pg_backup_stop answers half a row, exit 0", "full",
                      {"psql": head + relay.replace("CUT", half + f"; sys.stdout.write({MARKER!r} + '\\n')")},
                      r"backup session|pg_backup_stop|incomplete|truncated"),
        ]


__all__ = ["PostgresqlHarness"]
