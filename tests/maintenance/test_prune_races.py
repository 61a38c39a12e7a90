"""Deterministic interleavings of one writer and prune, each at a point the randomized test can only
hit by luck: the two-phase protocol (mark → grace → sweep) and the writer-session rules."""

from __future__ import annotations

import datetime as dt
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import dtstore
from dtstore import StdinSource
from dtstore.maintenance import prune as prune_module
from dtstore.storage import layout
from dtstore.storage.base import BlobInfo, BlobStore
from dtstore.storage.local import LocalStore
from tests.helpers import random_bytes
from tests.maintenance.common import make_repo, open_repo

GRACE = dt.timedelta(seconds=1)
DATA = random_bytes(400_000, seed=11)


class BlockingStream(io.RawIOBase):
    """A source stream whose first read waits for ``go``: the backup is running, its session is
    published and its marks and index are loaded, but it has not committed yet."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.started = threading.Event()
        self.go = threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self.started.set()
        assert self.go.wait(60)
        return self._inner.readinto(buffer)


class PausedWriter:
    """``repo.snapshot`` of DATA in a thread, held just before it reads its source."""

    def __init__(self, repo: dtstore.Repository, data: bytes = DATA) -> None:
        self.stream = BlockingStream(data)
        self.snapshot: dtstore.Snapshot | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(repo,))
        self._thread.start()
        assert self.stream.started.wait(30)

    def _run(self, repo: dtstore.Repository) -> None:
        try:
            self.snapshot = repo.snapshot([StdinSource("db.dump", self.stream)])  # type: ignore[arg-type]
        except BaseException as exc:
            self.error = exc

    def finish(self) -> dtstore.Snapshot:
        self.stream.go.set()
        self._thread.join(60)
        if self.error is not None:
            raise self.error
        assert self.snapshot is not None
        return self.snapshot


def data_packs(repo: dtstore.Repository) -> set[str]:
    return {layout.pack_id_of(b.name) for b in repo.store.list(layout.DATA_PACKS)}


def assert_restores(url: str, cache: Path, snap_id: str) -> None:
    with open_repo(url, cache) as repo:
        with repo.open_item(repo.get_snapshot(snap_id), "db.dump") as f:
            assert f.read() == DATA
        problems = [p.to_json() for p in repo.check(read_data=True).problems]
        assert problems == []


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    url = str(tmp_path / "repo")
    make_repo(url, tmp_path / "init-cache").close()
    yield url


def forgotten_snapshot(url: str, cache: Path) -> set[str]:
    """Store DATA once and forget it: its packs are unreferenced.  Returns those packs."""
    with open_repo(url, cache) as repo:
        snap = repo.snapshot([StdinSource("db.dump", io.BytesIO(DATA))])
        packs = data_packs(repo)
        repo.forget([snap.id])
    return packs


def test_writer_started_before_the_mark_holds_the_packs_it_reuses(url: str, tmp_path: Path) -> None:
    old_packs = forgotten_snapshot(url, tmp_path / "c0")
    writer = PausedWriter(open_repo(url, tmp_path / "cw"))  # deduplicates against old_packs
    with open_repo(url, tmp_path / "cp") as pruner:
        first = pruner.prune(grace=GRACE)
        assert set(first.mark) >= old_packs
        time.sleep(GRACE.total_seconds() + 0.1)
        second = pruner.prune(grace=GRACE)
        assert second.delete == [] and set(second.waiting) >= old_packs  # the writer started before the mark
        snap = writer.finish()
        assert snap.summary["chunks_reused"] > 0
        third = pruner.prune(grace=GRACE)
        assert set(third.unmark) >= old_packs and not set(third.delete) & old_packs
    assert_restores(url, tmp_path / "cv", snap.id)


def test_a_pack_unmarked_partly_used_is_repacked_in_the_same_pass(url: str, tmp_path: Path) -> None:
    """A writer that started before the mark reused part of a marked pack: the pass that unmarks it
    also repacks it, or an exclusive ``--max-unused 0`` prune would leave its garbage behind."""
    tail = random_bytes(300_000, seed=12)
    with open_repo(url, tmp_path / "c0") as repo:
        snap = repo.snapshot([StdinSource("db.dump", io.BytesIO(DATA + tail))])
        old_packs = data_packs(repo)
        repo.forget([snap.id])
    writer = PausedWriter(open_repo(url, tmp_path / "cw"))  # reuses DATA's chunks, not the tail's
    with open_repo(url, tmp_path / "cp") as pruner:
        assert set(pruner.prune(grace=GRACE).mark) >= old_packs
        kept = writer.finish()
        assert kept.summary["chunks_reused"] > 0
        time.sleep(GRACE.total_seconds() + 0.1)
        plan = pruner.prune(grace=GRACE, max_unused=0.0)
        assert set(plan.unmark) & old_packs, plan
        assert set(plan.repack) & set(plan.unmark) & old_packs, plan  # the one DATA shares with the tail
        pruner.prune(grace=dt.timedelta(0), exclusive=True, max_unused=0.0)
        after = pruner.prune(grace=dt.timedelta(0), exclusive=True, max_unused=0.0, dry_run=True)
        assert after.bytes_unused == 0, after
    assert_restores(url, tmp_path / "cv", kept.id)


def test_writer_started_after_the_mark_avoids_marked_packs(url: str, tmp_path: Path) -> None:
    old_packs = forgotten_snapshot(url, tmp_path / "c0")
    with open_repo(url, tmp_path / "cp") as pruner:
        assert set(pruner.prune(grace=GRACE).mark) >= old_packs
        with open_repo(url, tmp_path / "c0") as writer_repo:  # its cache knows the marked packs
            snap = writer_repo.snapshot([StdinSource("db.dump", io.BytesIO(DATA))])
        assert snap.summary["chunks_reused"] == 0
        time.sleep(GRACE.total_seconds() + 0.1)
        plan = pruner.prune(grace=GRACE)
        assert set(plan.delete) >= old_packs
    assert_restores(url, tmp_path / "cv", snap.id)


def test_writer_committing_while_prune_scans_keeps_its_data(url: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer started before the mark and reused marked packs; it commits (snapshot saved,
    session removed) while a later prune is scanning.  Prune must see either the session or the
    snapshot: it reads the sessions before it lists the snapshots."""
    forgotten_snapshot(url, tmp_path / "c0")
    writer = PausedWriter(open_repo(url, tmp_path / "cw"))
    with open_repo(url, tmp_path / "cp") as pruner:
        pruner.prune(grace=GRACE)
        time.sleep(GRACE.total_seconds() + 0.1)
        real_scan = prune_module.scan_repository
        committed: list[dtstore.Snapshot] = []

        def scan_then_commit(*args: object, **kwargs: object) -> prune_module.RepositoryScan:
            scan = real_scan(*args, **kwargs)  # type: ignore[arg-type]
            if not committed:
                committed.append(writer.finish())
            return scan

        monkeypatch.setattr(prune_module, "scan_repository", scan_then_commit)
        pruner.prune(grace=GRACE)
    assert committed
    assert_restores(url, tmp_path / "cv", committed[0].id)


class CompactingStore:
    """A LocalStore whose first listing of index/ is followed by a prune that compacts the index
    (deletes the segments just listed), as a prune running beside a starting backup would."""

    def __init__(self, root: Path, compact: object) -> None:
        self._inner = LocalStore(root)
        self._compact = compact
        self.capabilities = self._inner.capabilities
        self.compacted = False

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        listed = list(self._inner.list(prefix))
        if prefix == layout.INDEX and not self.compacted:
            self.compacted = True
            self._compact()  # type: ignore[operator]
        return iter(listed)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_backup_starting_while_prune_compacts_the_index(url: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment listed by a starting backup vanishes before it is read (prune compacted it)."""
    monkeypatch.setattr(prune_module, "CLOCK_SKEW", dt.timedelta(seconds=0.5))  # one host, one clock
    forgotten_snapshot(url, tmp_path / "c0")
    with open_repo(url, tmp_path / "c1") as repo:
        keep = repo.snapshot([StdinSource("keep", io.BytesIO(random_bytes(300_000, seed=5)))])
    with open_repo(url, tmp_path / "cp") as pruner:
        pruner.prune(grace=GRACE)
        time.sleep(GRACE.total_seconds() + 0.6)
        before = {b.name for b in pruner.store.list(layout.INDEX)}

        def compact() -> None:
            assert pruner.prune(grace=GRACE).delete

        store: BlobStore = CompactingStore(Path(url), compact)  # type: ignore[assignment]
        with dtstore.Repository.open(store, "correct horse battery staple", cache_dir=tmp_path / "cw") as writer:
            snap = writer.snapshot([StdinSource("db.dump", io.BytesIO(DATA))])
        assert not before & {b.name for b in pruner.store.list(layout.INDEX)}
    assert_restores(url, tmp_path / "cv", snap.id)
    with open_repo(url, tmp_path / "cv2") as repo, repo.open_item(repo.get_snapshot(keep.id), "keep") as f:
        assert f.read() == random_bytes(300_000, seed=5)
