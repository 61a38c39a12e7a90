"""``dtstore restore SNAPSHOT --to URL`` restores the state that snapshot captured (real MariaDB)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtstore.connectors import RestoreRequest, restore_to
from dtstore.errors import UsageError
from tests.connectors.test_mysql_server import mysql_pwd, new_repo, seed, snap
from tests.servers.mariadb import MariaDBFactory


def test_a_named_full_or_log_snapshot_is_restored_as_it_was(mariadb_factory: MariaDBFactory, tmp_path: Path) -> None:
    src = mariadb_factory("src", password="src-Secret-1")
    seed(src)
    repo = new_repo(tmp_path)
    full = snap(repo, src, "full")
    at_full = src.contents()
    src.sql("INSERT INTO crm.contacts VALUES (400, 'log1@example.org', NOW(), NOW())")
    first_log = snap(repo, src, "log")
    at_log = src.contents()
    src.sql("INSERT INTO crm.contacts VALUES (401, 'log2@example.org', NOW(), NOW())")
    snap(repo, src, "log")

    for snapshot, expected in ((full, at_full), (first_log, at_log)):
        target = mariadb_factory(f"dst-{snapshot.short_id}", password="dst-Secret-2", server_id=2)
        with mysql_pwd(target.password):
            plan = restore_to(RestoreRequest(target.url(), snapshot_id=snapshot.id), repo=repo)
        assert plan.to_json()["full"]["id"] == full.id
        assert target.contents() == expected, snapshot.short_id
    with pytest.raises(UsageError, match="not both"):
        RestoreRequest("mysql://u@h/", snapshot_id=full.id, until="2026-01-01T00:00:00Z")
