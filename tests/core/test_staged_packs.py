"""Packs on a local disk: written on the upload thread, fsynced and renamed on another
(``LocalStore.stage_parts``), and still never listed by an index segment before they are durable."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import blake3
import pytest

from dtstore import FilesSource, Repository
from dtstore.chunking import ChunkerParams
from dtstore.content import store as content_store
from dtstore.errors import StorageError
from dtstore.format import BLOB_META
from dtstore.storage import layout
from dtstore.storage.local import LocalStore
from tests.helpers import PASSWORD, init_repo, repo_objects

CHUNKER = ChunkerParams(16 * 1024, 64 * 1024, 256 * 1024)
PACK_SIZE = 512 * 1024


def _path_of(fd: int) -> str:
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))  # Linux: what the descriptor is


def _data(tmp_path: Path, mib: int = 6) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(os.urandom(mib << 20))
    return data


def _id_of(fd: int) -> str:
    """The pack ID of the file behind ``fd``: the BLAKE3 of its bytes (a pack written as it fills
    has no ID in its temporary name)."""
    with open(f"/proc/self/fd/{fd}", "rb") as f:
        return blake3.blake3(f.read()).hexdigest()


def test_a_staged_object_is_invisible_until_committed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    staged = store.stage_parts("data/ab/x", [b"one ", b"two"])
    assert not store.exists("data/ab/x")
    staged.commit()
    assert store.get("data/ab/x") == b"one two"
    store.stage_parts("data/ab/y", [b"gone"]).abort()
    assert not store.exists("data/ab/y")
    assert list(store.list_temporary()) == []


@pytest.mark.parametrize(("pack_size", "mib", "packs"), [(PACK_SIZE, 6, 8), (4 << 20, 24, 5)],
                         ids=["written-whole", "written-as-it-fills"])
def test_no_segment_lists_a_pack_before_it_is_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      pack_size: int, mib: int, packs: int) -> None:
    repo_dir = tmp_path / "repo"
    with init_repo(str(repo_dir), tmp_path / "cache", chunker=CHUNKER, pack_size=pack_size):
        pass
    synced: set[str] = set()
    lock = threading.Lock()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.01)  # the disk lags: packs pile up written but not durable
        real_fsync(fd)
        if _path_of(fd).startswith(".tmp-"):
            with lock:
                synced.add(_id_of(fd))

    real_write_segment = content_store.write_segment
    listed: list[str] = []

    def checked_write_segment(store, sealer, cache, records):  # type: ignore[no-untyped-def]
        for record in records:
            assert record.pack_id in synced, "a segment would list a pack that is not fsynced yet"
            assert store.exists(layout.pack_name(record.pack_id, record.kind == BLOB_META)), "…or not renamed"
            listed.append(record.pack_id)
        return real_write_segment(store, sealer, cache, records)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    monkeypatch.setattr(content_store, "write_segment", checked_write_segment)
    data = _data(tmp_path, mib)
    with Repository.open(str(repo_dir), PASSWORD, cache_dir=tmp_path / "cache") as repo:
        snap = repo.snapshot([FilesSource([str(data)])])
        with repo.open_item(snap, str(data / "big.bin")) as stream:
            assert stream.read() == (data / "big.bin").read_bytes()
    data_packs = {p.name for p in repo_objects(repo_dir, layout.DATA_PACKS)}
    assert len(data_packs) >= packs and data_packs <= set(listed)


def test_a_failed_fsync_fails_the_backup_and_leaves_no_half_pack(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    repo_dir = tmp_path / "repo"
    with init_repo(str(repo_dir), tmp_path / "cache", chunker=CHUNKER, pack_size=PACK_SIZE):
        pass
    calls = {"n": 0}
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        if _path_of(fd).startswith(".tmp-"):
            calls["n"] += 1
            if calls["n"] == 4:  # some packs in: the disk reports an error
                raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    data = _data(tmp_path)
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with Repository.open(str(repo_dir), PASSWORD, cache_dir=tmp_path / "cache") as repo, \
            pytest.raises(StorageError, match="Input/output error"):
        repo.snapshot([FilesSource([str(data)])])
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert repo_objects(repo_dir, layout.SNAPSHOTS) == []
    assert list(LocalStore(repo_dir).list_temporary()) == []  # the pack that failed is not left behind
    with Repository.open(str(repo_dir), PASSWORD, cache_dir=tmp_path / "cache") as repo:
        snap = repo.snapshot([FilesSource([str(data)])])  # the next backup works (and adopts what was stored)
        assert repo.check().ok
        with repo.open_item(snap, str(data / "big.bin")) as stream:
            assert stream.read() == (data / "big.bin").read_bytes()
