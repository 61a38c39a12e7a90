"""Packs on a local disk go to their file as they fill (``ContentStore._spill``, ``LocalStore.open_spool``):
never whole in memory, named by the hash of every byte once complete, and never left behind as a
temporary file when a write fails or the run stops."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

import blake3
import pytest

from dtstore import FilesSource, Repository
from dtstore.compression import Zstd
from dtstore.content import store as content_store
from dtstore.content.store import ContentStore
from dtstore.errors import StorageError
from dtstore.format import BLOB_DATA
from dtstore.storage import layout, local
from dtstore.storage.base import open_spool
from dtstore.storage.local import LocalSpool, LocalStore
from dtstore.storage.memory import MemoryStore
from tests.helpers import PASSWORD, init_repo, repo_objects

PACK_SIZE = 8 << 20


def _data(tmp_path: Path, mib: int = 20) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(os.urandom(mib << 20))  # incompressible: packs fill at full size
    return data


def _repo(tmp_path: Path) -> Path:
    repo_dir = tmp_path / "repo"
    with init_repo(str(repo_dir), tmp_path / "cache", pack_size=PACK_SIZE):
        pass
    return repo_dir


def test_a_pack_is_written_in_pieces_and_named_by_all_its_bytes(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    repo_dir = _repo(tmp_path)
    pieces: list[int] = []
    real_write = LocalSpool.write

    def counted_write(self: LocalSpool, parts: Sequence[bytes]) -> None:
        pieces.append(sum(len(p) for p in parts))
        real_write(self, parts)

    monkeypatch.setattr(LocalSpool, "write", counted_write)
    data = _data(tmp_path)
    with Repository.open(str(repo_dir), PASSWORD, cache_dir=tmp_path / "cache") as repo:
        snap = repo.snapshot([FilesSource([str(data)])])
        with repo.open_item(snap, str(data / "big.bin")) as stream:
            assert stream.read() == (data / "big.bin").read_bytes()
        assert repo.check(read_data=True).ok
    packs = repo_objects(repo_dir, layout.DATA_PACKS)
    assert len(packs) >= 2
    # no piece near a whole pack: at most the spill size and one group of chunks more
    assert len(pieces) >= 2 * len(packs)
    assert max(pieces) <= content_store.SPILL_BYTES + content_store.ADD_GROUP_BYTES + (4 << 20)
    for pack in packs:
        assert blake3.blake3(pack.read_bytes()).hexdigest() == pack.name
    assert list(LocalStore(repo_dir).list_temporary()) == []


def test_no_room_while_a_pack_fills_fails_the_backup_and_leaves_nothing(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    repo_dir = _repo(tmp_path)
    calls = {"n": 0}
    real_write_all = local._write_all

    def full_disk(fd: int, parts: Sequence[bytes]) -> None:
        calls["n"] += 1
        if calls["n"] == 6:  # a few pieces in, in the middle of a pack
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(fd, parts)

    data = _data(tmp_path)
    monkeypatch.setattr(local, "_write_all", full_disk)
    with Repository.open(str(repo_dir), PASSWORD, cache_dir=tmp_path / "cache") as repo, \
            pytest.raises(StorageError, match="no space left"):
        repo.snapshot([FilesSource([str(data)])])
    monkeypatch.setattr(local, "_write_all", real_write_all)
    assert repo_objects(repo_dir, layout.SNAPSHOTS) == []
    assert list(LocalStore(repo_dir).list_temporary()) == []  # neither the failed pack nor the open one
    with Repository.open(str(repo_dir), PASSWORD, cache_dir=tmp_path / "cache") as repo:
        snap = repo.snapshot([FilesSource([str(data)])])  # the next backup works
        assert repo.check(read_data=True).ok
        with repo.open_item(snap, str(data / "big.bin")) as stream:
            assert stream.read() == (data / "big.bin").read_bytes()


def test_a_run_that_stops_removes_its_open_pack_file(tmp_path: Path) -> None:
    repo_dir = _repo(tmp_path)
    with Repository.open(str(repo_dir), PASSWORD, cache_dir=tmp_path / "cache") as repo:
        ctx = repo._maintenance()
        content = ContentStore(ctx.store, ctx.cache, ctx.sealer, ctx.hasher, compression=Zstd(1),
                               pack_size=PACK_SIZE)
        chunks = [os.urandom(256 << 10) for _ in range(24)]  # 6 MiB: spilled, the pack not full
        content.put_many([(ctx.hasher(c), c) for c in chunks], BLOB_DATA)
        content._uploads.submit(lambda: None).result()  # the writer has caught up: the file exists
        assert len(list(LocalStore(repo_dir).list_temporary())) == 1
        content.close()  # no flush: the run failed elsewhere
    assert list(LocalStore(repo_dir).list_temporary()) == []
    assert repo_objects(repo_dir, layout.DATA_PACKS) == []


def test_a_spool_write_made_again_after_a_failure_rewrites_from_the_same_offset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path)
    spool = store.open_spool("data")
    spool.write([b"head "])
    real_writev = os.writev

    def short_then_fail(fd: int, buffers: Sequence[bytes]) -> int:
        real_writev(fd, [bytes(buffers[0])[:3]])  # part of it reached the file
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "writev", short_then_fail)
    with pytest.raises(StorageError, match="Input/output error") as failed:
        spool.write([b"middle ", b"part "])
    assert failed.value.transient
    monkeypatch.setattr(os, "writev", real_writev)
    spool.write([b"middle ", b"part "])
    spool.write([b"tail"])
    staged = spool.stage("data/ab/whole")
    assert not store.exists("data/ab/whole")
    staged.commit()
    assert store.get("data/ab/whole") == b"head middle part tail"
    assert list(store.list_temporary()) == []


def test_a_store_without_a_spool_gets_one_that_puts_at_commit() -> None:
    store = MemoryStore()
    spool = open_spool(store, "data")
    spool.write([b"one ", b"two "])
    spool.write([b"three"])
    staged = spool.stage("data/cd/held")
    assert not store.exists("data/cd/held")
    staged.commit()
    assert store.get("data/cd/held") == b"one two three"
