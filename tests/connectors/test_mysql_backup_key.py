"""A MariaDB host with only a backup key (spec/repository-format.md §4.4): fulls and binlog runs that
deduplicate against what the admin stored, on storage that refuses deletes and overwrites; it cannot
restore; with its cache lost, log fails (17) and auto promotes to a full; the admin restores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import dtstore
from dtstore.chunking import ChunkerParams
from dtstore.connectors import make_source
from dtstore.crypto.keys import CHEAP_KDF
from dtstore.errors import AdminKeyRequired, ChainError
from dtstore.storage.local import LocalStore
from tests.connectors.test_mysql_server import mysql_pwd, restore, seed
from tests.helpers import PASSWORD, SMALL_CHUNKER_ARGS
from tests.maintenance.test_key_roles import AppendOnlyStore

if TYPE_CHECKING:
    from tests.servers.mariadb import MariaDBFactory, MariaDBServer

BACKUP_PASSWORD = "db1 backup key"


def _snap(repo: dtstore.Repository, server: MariaDBServer, mode: str) -> dtstore.Snapshot:
    with mysql_pwd(server.password):
        return repo.snapshot([make_source(server.url(), repo=repo, mode=mode)])


def _backup(tmp_path: Path, cache: str) -> tuple[dtstore.Repository, AppendOnlyStore]:
    store = AppendOnlyStore(LocalStore(tmp_path / "repo"))
    return dtstore.Repository.open(store, BACKUP_PASSWORD, cache_dir=tmp_path / cache), store


@pytest.mark.slow
def test_mysql_fulls_and_logs_with_a_backup_key(mariadb_factory: MariaDBFactory, tmp_path: Path) -> None:
    src = mariadb_factory("src", password="src-Secret-1")
    seed(src)
    with dtstore.Repository.init(str(tmp_path / "repo"), PASSWORD, kdf=CHEAP_KDF, cache_dir=tmp_path / "admin-cache",
                                 chunker=ChunkerParams(*SMALL_CHUNKER_ARGS), key_roles=True) as admin:
        admin_full = _snap(admin, src, "full")
        admin.add_key(BACKUP_PASSWORD, kdf=CHEAP_KDF, role="backup")

    repo, store = _backup(tmp_path, "db1-cache")
    with repo:
        full = _snap(repo, src, "full")
        # the same data as the admin's dump: most of it deduplicates (small dumps: headers, footers
        # and the grants file differ per run, and each costs a chunk)
        assert full.summary["bytes_new"] < admin_full.summary["bytes_new"] / 2
        assert full.summary["chunks_reused"] > full.summary["chunks_new"]
        src.sql("UPDATE shop.items SET price = price + 1 WHERE id <= 10; "
                "INSERT INTO shop.orders (item, qty, at) VALUES (1, 2, NOW());")
        log1 = _snap(repo, src, "log")
        src.sql("DELETE FROM crm.contacts WHERE id > 40;")
        log2 = _snap(repo, src, "log")
        final = src.contents()
        meta = [s.source_metadata for s in (full, log1, log2)]
        assert [m["mode"] for m in meta] == ["full", "log", "log"]
        assert meta[1]["binlog_from"] == meta[0]["binlog_next"] and meta[2]["binlog_from"] == meta[1]["binlog_next"]
        assert store.refused == []
        target = mariadb_factory("stolen", password="dst-Secret-2", server_id=3)
        with pytest.raises(AdminKeyRequired) as refused:
            restore(repo, target)
        assert refused.value.exit_code == 18 and target.databases() == []
        with pytest.raises(AdminKeyRequired):
            repo.load_snapshot(admin_full.id)

    # the host's cache is lost: it no longer sees its chain; log refuses, auto takes a full
    repo, store = _backup(tmp_path, "db1-new-cache")
    with repo:
        assert repo.snapshots() == []
        with pytest.raises(ChainError):
            _snap(repo, src, "log")
        promoted = _snap(repo, src, "auto")
        assert promoted.source_metadata["mode"] == "full" and promoted.source_metadata.get("auto_reason")
        assert promoted.summary["bytes_new"] < admin_full.summary["bytes_new"] / 2
        assert store.refused == []

    with dtstore.Repository.open(str(tmp_path / "repo"), PASSWORD, cache_dir=tmp_path / "admin-cache") as admin:
        assert {admin_full.id, full.id, log1.id, log2.id, promoted.id} <= {s.id for s in admin.snapshots()}
        target = mariadb_factory("dst", password="dst-Secret-2", server_id=2)
        restore(admin, target, source_id=full.source_id)
        assert target.contents() == final
        assert admin.check(read_data=True).ok
