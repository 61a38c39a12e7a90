"""Orphan adoption by the host's write journal: a normal backup lists no packs, a failed one's packs
are still reused by the next backup (spec/repository-format.md §15.3 step 5, §16 "Write journal")."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtstore import FilesSource, Repository
from dtstore.chunking import ChunkerParams
from dtstore.content.journal import WRITES_DIR, RunJournal, left_over
from dtstore.content.segments import decode_segment
from dtstore.content.store import SEGMENT_EVERY_PACKS
from dtstore.errors import StorageError
from dtstore.storage import layout
from dtstore.storage.base import BlobInfo
from dtstore.storage.local import LocalStore
from tests.helpers import PASSWORD, init_repo, repo_objects

CHUNKER = ChunkerParams(16 * 1024, 64 * 1024, 256 * 1024)
PACK_SIZE = 512 * 1024


class CountingStore(LocalStore):
    """Counts ``list`` calls by the prefix's first component."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.lists: Counter[str] = Counter()

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        self.lists[prefix.split("/", 1)[0]] += 1
        return super().list(prefix)

    def pack_lists(self) -> int:
        return self.lists[layout.DATA_PACKS] + self.lists[layout.META_PACKS]


class FailingSegmentsStore(LocalStore):
    def put(self, name: str, data: bytes) -> None:
        if name.startswith(layout.INDEX + "/"):
            raise StorageError(f"simulated failure before writing {name}")
        super().put(name, data)


def _indexed_packs(repo: Repository, repo_dir: Path) -> set[str]:
    sealer = repo.master.sealer()
    packs: set[str] = set()
    for path in repo_objects(repo_dir, "index"):
        records, _ = decode_segment(sealer, path.read_bytes(), path.name)
        packs.update(r.pack_id for r in records)
    return packs


def _journals(cache_root: Path) -> list[Path]:
    return list(cache_root.glob(f"*/{WRITES_DIR}/*"))


def _setup(tmp_path: Path, size: int = 3 << 20) -> tuple[Path, Path, Path, bytes]:
    repo_dir, cache = tmp_path / "repo", tmp_path / "cache"
    data = tmp_path / "data"
    data.mkdir()
    payload = os.urandom(size)
    (data / "big.bin").write_bytes(payload)
    with init_repo(str(repo_dir), cache, chunker=CHUNKER, pack_size=PACK_SIZE):
        pass
    return repo_dir, cache, data, payload


def test_second_backup_lists_no_packs(tmp_path: Path) -> None:
    repo_dir, cache, data, _ = _setup(tmp_path)
    store = CountingStore(repo_dir)
    with Repository.open(store, PASSWORD, cache_dir=cache) as repo:
        repo.snapshot([FilesSource([str(data)])])
        assert store.pack_lists() == 2, store.lists  # init made the cache, but no journal: one listing
        assert _journals(cache) == []  # a clean finish leaves no journal
        store.lists.clear()
        (data / "more.bin").write_bytes(os.urandom(2 << 20))
        second = repo.snapshot([FilesSource([str(data)])])
        assert store.pack_lists() == 0, store.lists
        assert second.summary["bytes_stored"] > 0  # it did upload packs
        assert _journals(cache) == []
    # a new process with the same cache: still no listing
    store2 = CountingStore(repo_dir)
    with Repository.open(store2, PASSWORD, cache_dir=cache) as repo:
        repo.snapshot([FilesSource([str(data)])])
    assert store2.pack_lists() == 0, store2.lists


def test_failed_backup_packs_adopted_by_name_without_listing(tmp_path: Path) -> None:
    repo_dir, cache, data, payload = _setup(tmp_path)
    with Repository.open(FailingSegmentsStore(repo_dir), PASSWORD, cache_dir=cache) as repo, \
            pytest.raises(StorageError, match="simulated failure"):
        repo.snapshot([FilesSource([str(data)])])
    orphans = {p.name for p in repo_objects(repo_dir, "data")}
    orphan_bytes = sum(p.stat().st_size for p in repo_objects(repo_dir, "data"))
    assert len(orphans) >= SEGMENT_EVERY_PACKS
    assert len(_journals(cache)) == 1  # left for the next run

    store = CountingStore(repo_dir)
    with Repository.open(store, PASSWORD, cache_dir=cache) as repo:
        snap = repo.snapshot([FilesSource([str(data)])])
        assert orphans <= _indexed_packs(repo, repo_dir)
        assert snap.summary["bytes_stored"] <= len(payload) - orphan_bytes + PACK_SIZE
        with repo.open_item(snap, str(data / "big.bin")) as stream:
            assert stream.read() == payload
    assert store.pack_lists() == 0, store.lists  # adopted by name
    assert _journals(cache) == []


_KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from dtstore import FilesSource, Repository
    from dtstore.storage.local import LocalStore

    class DieAtSegment(LocalStore):
        def put(self, name, data):
            if name.startswith("index/"):
                os.kill(os.getpid(), signal.SIGKILL)
            super().put(name, data)

    repo_dir, cache, data, password = sys.argv[1:]
    with Repository.open(DieAtSegment(repo_dir), password, cache_dir=cache) as repo:
        repo.snapshot([FilesSource([data])])
""")


def test_killed_backup_packs_reused_by_next(tmp_path: Path) -> None:
    repo_dir, cache, data, payload = _setup(tmp_path)
    run = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(repo_dir), str(cache), str(data), PASSWORD],
                         capture_output=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()
    orphans = {p.name for p in repo_objects(repo_dir, "data")}
    orphan_bytes = sum(p.stat().st_size for p in repo_objects(repo_dir, "data"))
    assert len(orphans) >= SEGMENT_EVERY_PACKS
    assert repo_objects(repo_dir, "index") == []

    store = CountingStore(repo_dir)
    with Repository.open(store, PASSWORD, cache_dir=cache) as repo:
        snap = repo.snapshot([FilesSource([str(data)])])
        assert orphans <= _indexed_packs(repo, repo_dir)
        assert snap.summary["chunks_reused"] > 0
        assert snap.summary["bytes_stored"] <= len(payload) - orphan_bytes + PACK_SIZE
    assert store.pack_lists() == 0, store.lists
    assert _journals(cache) == []


def test_deleted_cache_lists_and_adopts(tmp_path: Path) -> None:
    repo_dir, cache, data, _ = _setup(tmp_path)
    with Repository.open(FailingSegmentsStore(repo_dir), PASSWORD, cache_dir=cache) as repo, \
            pytest.raises(StorageError):
        repo.snapshot([FilesSource([str(data)])])
    orphans = {p.name for p in repo_objects(repo_dir, "data")}
    shutil.rmtree(cache)  # the journal is gone with it: only a listing finds the orphans
    store = CountingStore(repo_dir)
    with Repository.open(store, PASSWORD, cache_dir=cache) as repo:
        repo.snapshot([FilesSource([str(data)])])
        assert orphans <= _indexed_packs(repo, repo_dir)
    assert store.pack_lists() == 2, store.lists  # data/ and meta/, once


def test_live_journal_is_left_alone(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    live = RunJournal(cache)
    name = layout.pack_name("ab" * 32, False)
    live.record(name)
    try:
        found = left_over(cache)
        assert found.pack_names == set() and found.complete  # held by a live writer: skipped
        found.release()
        assert len(list((cache / WRITES_DIR).iterdir())) == 1
    finally:
        live.close()
    found = left_over(cache)
    assert found.pack_names == {name} and found.complete
    found.discard()
    assert list((cache / WRITES_DIR).iterdir()) == []


def test_torn_last_line_is_ignored_and_garbage_forces_listing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    journal = RunJournal(cache)
    name = layout.pack_name("cd" * 32, True)
    journal.record(name)
    journal.close()
    path = next((cache / WRITES_DIR).iterdir())
    with open(path, "ab") as f:
        f.write(b"data/ab/abab")  # an append torn by a crash: that put never started
    found = left_over(cache)
    assert found.pack_names == {name} and found.complete
    found.release()
    with open(path, "ab") as f:
        f.write(b"\nnot a pack\n")
    found = left_over(cache)
    assert not found.complete
    found.release()


def test_copy_target_adopts_a_failed_copy_by_name(tmp_path: Path) -> None:
    src_dir, cache, data, payload = _setup(tmp_path)
    dst_dir, dst_cache = tmp_path / "target", tmp_path / "target-cache"
    with init_repo(str(dst_dir), dst_cache, chunker=CHUNKER, pack_size=PACK_SIZE):
        pass
    with Repository.open(str(src_dir), PASSWORD, cache_dir=cache) as src:
        src.snapshot([FilesSource([str(data)])])
        with Repository.open(FailingSegmentsStore(dst_dir), PASSWORD, cache_dir=dst_cache) as dst, \
                pytest.raises(StorageError, match="simulated failure"):
            src.copy_to(dst)
        orphans = {p.name for p in repo_objects(dst_dir, "data")}
        assert len(orphans) >= SEGMENT_EVERY_PACKS
        assert len(_journals(dst_cache)) == 1
        store = CountingStore(dst_dir)
        with Repository.open(store, PASSWORD, cache_dir=dst_cache) as dst:
            [result] = src.copy_to(dst)
            assert orphans <= _indexed_packs(dst, dst_dir)
            assert result.chunks_reused > 0
            with dst.open_item(dst.get_snapshot("latest"), str(data / "big.bin")) as stream:
                assert stream.read() == payload
        assert store.pack_lists() == 0, store.lists
        assert _journals(dst_cache) == []


def test_without_journal_support_every_writer_lists_and_still_adopts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows keeps no journal: each backup lists the packs, and a failed run's packs are adopted."""
    from dtstore.content import journal
    monkeypatch.setattr(journal, "SUPPORTED", False)
    repo_dir, cache, data, _ = _setup(tmp_path)
    with Repository.open(FailingSegmentsStore(repo_dir), PASSWORD, cache_dir=cache) as repo, \
            pytest.raises(StorageError, match="simulated failure"):
        repo.snapshot([FilesSource([str(data)])])
    orphans = {p.name for p in repo_objects(repo_dir, "data")}
    assert orphans and _journals(cache) == []
    store = CountingStore(repo_dir)
    with Repository.open(store, PASSWORD, cache_dir=cache) as repo:
        repo.snapshot([FilesSource([str(data)])])
        assert orphans <= _indexed_packs(repo, repo_dir)
        assert store.pack_lists() == 2, store.lists
        store.lists.clear()
        repo.snapshot([FilesSource([str(data)])])
        assert store.pack_lists() == 2, store.lists
    assert not (next(cache.iterdir()) / WRITES_DIR).exists()
