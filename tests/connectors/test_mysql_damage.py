"""Damage costs only what it touches, in a MySQL restore (real MariaDB).

A damaged binlog stops the replay at the end of the binlog before it: the databases come back as of
that point, and the restore exits 16 naming the binlog.  A damaged database dump leaves the other
databases loaded and replayed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import dtstore
from dtstore.errors import IntegrityError
from dtstore.storage import layout
from tests.connectors.test_mysql_server import mysql_pwd, new_repo, restore, seed, snap
from tests.helpers import flip_byte
from tests.servers.mariadb import MariaDBFactory


def damage_item(repo: dtstore.Repository, repo_dir: Path, snapshot: dtstore.Snapshot, path: str) -> None:
    """Flip one byte inside the first chunk of a stored item, in its pack file on disk."""
    item = repo.find_item(snapshot, path)
    location = repo._reader().locate(item.chunks[0])
    pack = repo_dir / layout.pack_name(location.pack_id, meta=False)
    flip_byte(pack, location.offset + location.length // 2)


@pytest.mark.slow
def test_a_damaged_binlog_stops_the_replay_before_it(mariadb_factory: MariaDBFactory, tmp_path: Path) -> None:
    src = mariadb_factory("src", password="src-Secret-1")
    seed(src)
    repo = new_repo(tmp_path)
    snap(repo, src, "full")
    src.sql("INSERT INTO crm.contacts VALUES (300, 'first@example.org', NOW(), NOW())")
    first = snap(repo, src, "log")
    at_first = src.contents()
    src.sql("INSERT INTO crm.contacts VALUES (301, 'second@example.org', NOW(), NOW())")
    second = snap(repo, src, "log")
    assert src.contents() != at_first
    damaged = second.source_metadata["binlogs"][0]["name"]
    last_good = first.source_metadata["binlogs"][-1]["name"]
    damage_item(repo, tmp_path / "repo", second, f"binlog/{damaged}")

    target = mariadb_factory("dst", password="dst-Secret-2", server_id=2)
    with pytest.raises(IntegrityError) as failed:
        restore(repo, target)
    message = str(failed.value)
    assert f"binlog {damaged}" in message and f"replay stopped at the end of {last_good}" in message
    assert failed.value.exit_code == 16
    assert target.contents() == at_first  # everything up to the binlog before the damage


@pytest.mark.slow
def test_a_damaged_dump_costs_only_its_database(mariadb_factory: MariaDBFactory, tmp_path: Path) -> None:
    src = mariadb_factory("src", password="src-Secret-1")
    seed(src)
    repo = new_repo(tmp_path)
    full = snap(repo, src, "full")
    src.sql("INSERT INTO crm.contacts VALUES (302, 'later@example.org', NOW(), NOW())")
    snap(repo, src, "log")
    expected = src.contents()
    damage_item(repo, tmp_path / "repo", full, "mysql/shop.sql")

    target = mariadb_factory("dst", password="dst-Secret-2", server_id=2)
    with mysql_pwd(target.password), pytest.raises(IntegrityError, match=r"not restored .*: shop"):
        restore(repo, target)
    assert "shop" not in target.databases()
    crm = {k: v for k, v in expected.items() if k.startswith("crm.")}
    assert {k: v for k, v in target.contents().items() if k.startswith("crm.")} == crm  # loaded and replayed
