"""Issue 9 against a real MariaDB, through the CLI: full, log, log, then ``forget --keep-daily 7`` (the
README's example) keeps the whole chain, and ``restore --to`` latest restores exactly the final rows.
``forget --keep-last 2`` keeps the only full; forgetting the middle log by ID is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dtstore.cli.main import main
from dtstore.errors import EXIT_USAGE
from tests.helpers import PASSWORD, init_repo

if TYPE_CHECKING:
    from tests.servers.mariadb import MariaDBFactory, MariaDBServer


class Cli:
    def __init__(self, repo: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.repo, self.capsys, self.monkeypatch = repo, capsys, monkeypatch

    def __call__(self, *args: str, mysql_pwd: str | None = None) -> tuple[int, str, str]:
        if mysql_pwd is None:
            self.monkeypatch.delenv("MYSQL_PWD", raising=False)
        else:
            self.monkeypatch.setenv("MYSQL_PWD", mysql_pwd)
        self.capsys.readouterr()
        code = main([args[0], "--repo", self.repo, *args[1:]])
        out, err = self.capsys.readouterr()
        return int(code), out, err


def records(out: str, kind: str) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, out.splitlines()) if r["type"] == kind]


def test_keep_daily_keeps_the_chain_and_latest_restores_exactly(
    mariadb_factory: MariaDBFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src: MariaDBServer = mariadb_factory("src", password="src-Secret-1")
    monkeypatch.setenv("DTSTORE_PASSWORD", PASSWORD)
    monkeypatch.setenv("DTSTORE_CACHE_DIR", str(tmp_path / "cache"))
    init_repo(str(tmp_path / "repo"), tmp_path / "cache").close()
    cli = Cli(str(tmp_path / "repo"), capsys, monkeypatch)

    src.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB;"
            "INSERT INTO shop.t VALUES (1, 'full');")
    ids: list[str] = []
    for mode, row in (("full", None), ("log", "log-1"), ("log", "log-2")):
        if row:
            src.sql(f"INSERT INTO shop.t VALUES ({len(ids) + 1}, '{row}'); UPDATE shop.t SET v = CONCAT(v, '+') "
                    "WHERE id = 1;")
        code, out, err = cli("--json", "snapshot", src.url(), "--mode", mode, mysql_pwd=src.password)
        assert code == 0, err + out
        ids.append(records(out, "summary")[0]["snapshot_id"])
    final = src.contents(["shop"])
    assert len(final["shop.t"]) == 3

    code, out, err = cli("--json", "forget", "--keep-last", "2", "--dry-run")
    assert code == 0, err
    decisions = {d["id"]: d for d in records(out, "decision")}
    assert all(d["keep"] for d in decisions.values())
    assert decisions[ids[0]]["reasons"] == [f"needed by {ids[2][:8]} and 1 more (restore chain)"]

    code, out, err = cli("--json", "forget", "--keep-daily", "7")
    assert code == 0, err
    decisions = {d["id"]: d for d in records(out, "decision")}
    assert all(d["keep"] for d in decisions.values()) and len(decisions) == 3
    assert decisions[ids[1]]["reasons"] == [f"needed by {ids[2][:8]} (restore chain)"]
    (windows,) = records(out, "windows")
    assert windows["kind"] == "mysql" and windows["lost"] == [] and windows["before"] == windows["after"]
    assert len(windows["after"]) == 1

    code, out, err = cli("forget", ids[1])
    assert code == EXIT_USAGE and f"refusing to forget {ids[1][:8]}" in err and f"log {ids[2][:8]}" in err

    code, out, err = cli("--json", "snapshots")
    assert code == 0 and len(records(out, "snapshot")) == 3, out

    dst: MariaDBServer = mariadb_factory("dst", password="dst-Secret-2", server_id=2)
    code, out, err = cli("restore", "--to", dst.url(), "--dry-run", mysql_pwd=dst.password)
    assert code == 0, err + out
    assert ids[1][:8] in out and ids[2][:8] in out, out  # the plan replays both logs
    code, out, err = cli("restore", "--to", dst.url(), mysql_pwd=dst.password)
    assert code == 0, err + out
    assert dst.contents(["shop"]) == final

    # --force takes the middle log; the restore planner then refuses latest (exit 17), naming the gap
    code, out, err = cli("forget", ids[1], "--force")
    assert code == 0 and "--force: mysql " in err and f"log {ids[2][:8]} restores nothing now" in err, err
    code, out, err = cli("restore", "--to", dst.url(), "--dry-run", mysql_pwd=dst.password)
    assert code == 17, out + err
    assert "cannot be reached" in err and "--allow-gap" in err, err
