"""repair packs, repair snapshots, repair index: plans first (a dry run writes nothing), then the
repository is whole again — what could be read is kept, what was lost is named, nothing is deleted
that is not safely elsewhere."""

from __future__ import annotations

import datetime as dt
import os
import random
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

import dtstore
from dtstore import FilesSource
from dtstore.errors import IntegrityError, RepositoryLocked
from dtstore.maintenance.repair import repair_items
from dtstore.sessions import WriterSession
from dtstore.snapshots.manifest import Item
from dtstore.storage import layout
from tests.helpers import repo_objects
from tests.maintenance.common import make_repo, open_repo, tree_digest


@dataclass
class Built:
    url: str
    base: Path
    src: Path
    snapshot_id: str
    files: dict[str, list[bytes]]
    where: dict[bytes, tuple[str, int, int]]

    def repo(self, tag: str) -> dtstore.Repository:
        return open_repo(self.url, self.base / f"cache-{tag}")

    def pack_path(self, pack_id: str) -> Path:
        return next(Path(self.url).glob(f"*/{pack_id[:2]}/{pack_id}"))

    def flip(self, chunk_id: bytes) -> str:
        pack_id, offset, length = self.where[chunk_id]
        path = self.pack_path(pack_id)
        data = bytearray(path.read_bytes())
        data[offset + length // 2] ^= 0x10
        path.write_bytes(bytes(data))
        return pack_id

    def item(self, name: str) -> str:
        return "/" + str((self.src / name).absolute()).lstrip("/")


@pytest.fixture
def built(tmp_path: Path) -> Built:
    rng = random.Random(3)
    src = tmp_path / "src"
    src.mkdir()
    for n in range(6):
        (src / f"f{n}.bin").write_bytes(rng.randbytes(rng.randrange(60_000, 140_000)))
    url = str(tmp_path / "repo")
    with make_repo(url, tmp_path / "cache-build") as repo:
        snap = repo.snapshot([FilesSource([str(src)])])
        files = {"/" + i.name: list(i.chunks) for i in repo.list_items(snap) if i.type == "file"}
        reader = repo._reader()
        where = {}
        for c in {c for cs in files.values() for c in cs} | set(snap.items_chunks):
            loc = reader.locate(c)
            where[c] = (loc.pack_id, loc.offset, loc.length)
    return Built(url, tmp_path, src, snap.id, files, where)


def restored(repo: dtstore.Repository, snap: dtstore.Snapshot, target: Path, src: Path) -> dict[str, bytes]:
    repo.restore(snap, target)
    root = target / str(src.absolute()).lstrip("/")
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def objects(b: Built) -> dict[str, list[Path]]:
    return {kind: repo_objects(Path(b.url), kind)
            for kind in (layout.DATA_PACKS, layout.META_PACKS, layout.INDEX, layout.SNAPSHOTS, layout.DAMAGED)}


def test_repair_items_truncates_or_drops_only_what_lost_data() -> None:
    a, b, c = b"a" * 32, b"b" * 32, b"c" * 32
    items = [Item(b"x", "file", size=30, chunks=[a, b, c]), Item(b"y", "file", size=10, chunks=[a]),
             Item(b"d", "dir"), Item(b"z", "file", size=20, chunks=[b, a])]
    sizes = {a: 10, b: 10, c: 10}
    kept, changes = repair_items(items, {b}, sizes.__getitem__, drop_files=False)
    assert [(i.name, i.size, i.chunks) for i in kept if i.type == "file"] == [("x", 10, [a]), ("y", 10, [a]),
                                                                                ("z", 0, [])]
    assert [(ch.path, ch.action, ch.size, ch.new_size) for ch in changes] == [("/x", "truncated", 30, 10),
                                                                              ("/z", "truncated", 20, 0)]
    kept, changes = repair_items(items, {b}, sizes.__getitem__, drop_files=True)
    assert [i.name for i in kept] == ["y", "d"] and [ch.action for ch in changes] == ["dropped", "dropped"]


def test_repair_packs_then_snapshots_makes_the_repository_whole(built: Built) -> None:
    b = built
    victim = b.item("f2.bin")
    lost_chunk = b.files[victim][1]
    pack_id = b.flip(lost_chunk)
    with b.repo("r") as repo:
        report = repo.check(read_data=True)
        assert [p.kind for p in report.problems] == ["corrupt-pack"] and report.problems[0].paths == [victim]
        # dry runs plan and write nothing
        before = objects(b)
        [plan] = repo.repair_packs(dry_run=True)
        assert plan.pack_id == pack_id and plan.lost == [lost_chunk] and plan.copy and not plan.copied
        assert plan.already_elsewhere == 0
        dry = repo.repair_snapshots(dry_run=True)
        assert [(r.snapshot_id, [(c.path, c.action) for c in r.changes]) for r in dry] == [
            (b.snapshot_id, [(victim, "truncated")])]
        assert objects(b) == before
        # salvage: every readable blob of the damaged pack is copied; the pack is never deleted
        [done] = repo.repair_packs()
        assert done.copied == len(plan.copy) and done.recorded
        assert b.pack_path(pack_id).exists()
        assert len(objects(b)[layout.DATA_PACKS]) == len(before[layout.DATA_PACKS]) + 1
        again = repo.repair_packs()
        assert [r.copy for r in again] == [[]]  # idempotent: nothing more to copy
        report = repo.check(read_data=True)
        assert [p.paths for p in report.problems] == [[victim]]  # only the truly lost chunk is left
        # the snapshot: a replacement with the damaged file truncated before its lost chunk
        [repair] = repo.repair_snapshots()
        assert repair.new_id and not repair.forgotten and repair.changes[0].lost_chunks == 1
        ids = {s.id for s in repo.snapshots()}
        assert ids == {b.snapshot_id, repair.new_id}  # the original stays until it is forgotten
        new = repo.get_snapshot(repair.new_id)
        assert "repaired" in new.tags and new.original == b.snapshot_id
        assert new.summary["repaired"]["files_truncated"] == 1
        got = restored(repo, new, b.base / "t-new", b.src)
        expected = {p.name: p.read_bytes() for p in sorted(b.src.iterdir())}
        assert {k: v for k, v in got.items() if k != "f2.bin"} == {k: v for k, v in expected.items()
                                                                  if k != "f2.bin"}
        first_size = repo._cache.lookup(b.files[victim][0]).raw_length  # type: ignore[union-attr]
        assert got["f2.bin"] == expected["f2.bin"][:first_size]
        # forget the original, prune: the damaged pack goes, and check is clean again
        repo.forget([b.snapshot_id])
        repo.prune(exclusive=True, grace=dt.timedelta(0))
        assert not any(p.name == pack_id for p in objects(b)[layout.DATA_PACKS])
        report = repo.check(read_data=True)
        assert report.ok and not report.healed, [p.to_json() for p in report.problems]
        assert restored(repo, new, b.base / "t-after", b.src) == got


def test_backing_up_again_heals_a_snapshot_before_any_repair(built: Built) -> None:
    """restic's advice, automatic here: the content still exists, so a backup stores it afresh and
    the old snapshot needs no repair at all."""
    b = built
    chunk = b.files[b.item("f4.bin")][0]
    pack_id = b.flip(chunk)
    with b.repo("heal") as repo:
        assert not repo.check(read_data=True).ok
        repo.snapshot([FilesSource([str(b.src)])])
        assert repo.repair_snapshots(dry_run=True) == []
        assert repo.check(read_data=True).ok
        # the pack's bad blob costs nothing any more: repair packs does not call it lost
        [plan] = repo.repair_packs(dry_run=True)
        assert plan.pack_id == pack_id and plan.lost == [] and plan.already_elsewhere >= 1
        old = repo.get_snapshot(b.snapshot_id)
        assert tree_digest(b.src) == tree_digest(_restore(repo, old, b.base / "t"))


def _restore(repo: dtstore.Repository, snap: dtstore.Snapshot, target: Path) -> Path:
    repo.restore(snap, target)
    return next(p for p in target.rglob("f0.bin")).parent


def test_lost_item_list_and_missing_pack(built: Built) -> None:
    b = built
    [meta_chunk] = [c for c, (p, _, _) in b.where.items() if c not in {x for cs in b.files.values() for x in cs}]
    b.flip(meta_chunk)
    with b.repo("meta") as repo:
        assert not repo.check(read_data=True).ok
        [repair] = repo.repair_snapshots()
        assert repair.unrepairable == "nothing of it can be read" and repair.new_id is None
        assert repair.items_dropped_with_item_list == repair.items_before
        assert [s.id for s in repo.snapshots()] == [b.snapshot_id]  # not forgotten without --forget
        [forgotten] = repo.repair_snapshots(forget=True)
        assert forgotten.forgotten and repo.snapshots() == []


def test_repair_snapshots_after_a_pack_vanished(built: Built) -> None:
    b = built
    victim = b.item("f0.bin")
    pack_id = b.where[b.files[victim][-1]][0]
    b.pack_path(pack_id).unlink()
    hit = sorted(p for p, cs in b.files.items() if any(b.where[c][0] == pack_id for c in cs))
    with b.repo("gone") as repo:
        assert [p.kind for p in repo.check().problems] == ["missing-pack"]
        [plan] = repo.repair_packs(dry_run=True)
        assert not plan.exists and plan.copy == []
        [repair] = repo.repair_snapshots(drop_files=True)
        assert sorted(c.path for c in repair.changes) == hit and {c.action for c in repair.changes} == {"dropped"}
        new = repo.get_snapshot(repair.new_id or "")
        names = {"/" + i.name for i in repo.list_items(new) if i.type == "file"}
        assert names == set(b.files) - set(hit)
        repo.restore(new, b.base / "t")  # everything it still lists restores


def test_repairs_refuse_to_run_beside_a_backup(built: Built) -> None:
    b = built
    with b.repo("locked") as repo, WriterSession(repo.store, repo._sealer, os.uname().nodename):
        for call, name in ((lambda: repo.repair_index(), "repair index"),
                           (lambda: repo.rebuild_index(), "index rebuild"),
                           (lambda: repo.repair_snapshots(), "repair snapshots"),
                           (lambda: repo.repair_packs(), "repair packs")):
            with pytest.raises(RepositoryLocked) as refused:
                call()
            assert str(refused.value).startswith(f"{name} needs the repository to itself and does not wait")
            assert "exclusive prune" not in str(refused.value)
        assert repo.repair_index(dry_run=True).packs > 0  # a dry run takes no lock


def test_repair_index_dry_run_writes_nothing(built: Built) -> None:
    b = built
    before = objects(b)
    with b.repo("index") as repo:
        report = repo.repair_index(dry_run=True)
        assert report.segments_removed == len(before[layout.INDEX]) and report.segments_written >= 1
        assert objects(b) == before
        report = repo.repair_index()
        assert objects(b)[layout.INDEX] != before[layout.INDEX]
        assert repo.check(read_data=True).ok


def test_a_restore_during_damage_is_safe_to_run_concurrently(built: Built) -> None:
    """Two threads reading the same damaged chunk record it once, and neither fails for it."""
    b = built
    chunk = b.files[b.item("f1.bin")][0]
    b.flip(chunk)
    with b.repo("threads") as repo:
        snap = repo.get_snapshot(b.snapshot_id)
        errors: list[BaseException] = []

        def read() -> None:
            try:
                with repo.open_item(snap, b.item("f1.bin")) as f:
                    f.read()
            except IntegrityError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(errors) == 4
        assert len(objects(b)[layout.DAMAGED]) == 1
