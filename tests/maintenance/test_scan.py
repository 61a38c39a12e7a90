"""The repository scan against a brute-force reference in plain Python sets and dicts.

The scan keeps everything per chunk on disk and takes fast paths (one ``putmulti`` per pack; used
bytes from one merge of two sorted tables); these repositories hit each fast path and each fallback:
packs listed by two segments, a chunk stored in two packs, a forgotten snapshot, an index segment
lost (missing data), and the synthetic history of ``bench.maintenance``."""

from __future__ import annotations

import datetime as dt
import gc
import io
import sys
import tempfile
from pathlib import Path

import pytest

import dtstore
from bench.maintenance_synthetic import build
from dtstore import StdinSource
from dtstore.compression import Zstd
from dtstore.content import mapped as mapped_module
from dtstore.content.segments import decode_segment, encode_segment
from dtstore.content.store import ContentStore
from dtstore.errors import IntegrityError
from dtstore.format import BLOB_DATA
from dtstore.maintenance import scan as scan_module
from dtstore.maintenance.scan import RepositoryScan, chosen_pack, scan_repository
from dtstore.storage import layout
from tests.helpers import PASSWORD, mapped_kib, random_bytes
from tests.maintenance.common import make_repo, open_repo


def reference(repo: dtstore.Repository) -> tuple[dict[str, tuple[int, int, int, int, int]], set[bytes],
                                                   dict[str, list[str]]]:
    """pack ID → (blobs, index end, used blobs, used bytes, unused bytes); referenced chunks; missing
    paths per snapshot — the definitions of scan_repository, with nothing on disk."""
    ctx = repo._maintenance()
    listed = {p for p in layout_packs(repo)}
    blobs: dict[tuple[str, int], tuple[bytes, int]] = {}
    stats: dict[str, list[int]] = {}
    chosen: dict[bytes, str] = {}
    for info in sorted(ctx.store.list(layout.INDEX), key=lambda i: i.name):
        records, _ = decode_segment(ctx.sealer, ctx.store.get(info.name), info.name)
        for record in records:
            stat = stats.setdefault(record.pack_id, [0, 0])
            for e in record.entries:
                if (record.pack_id, e.offset) not in blobs:
                    stat[0] += 1
                    stat[1] = max(stat[1], e.offset + e.length)
                blobs[(record.pack_id, e.offset)] = (e.chunk_id, e.length)
                if e.chunk_id not in chosen or (record.pack_id not in listed) < (chosen[e.chunk_id] not in listed):
                    chosen[e.chunk_id] = record.pack_id
    refs: set[bytes] = set()
    missing: dict[str, list[str]] = {}
    for snap in ctx.snapshots.load_all():
        lists = [(snap.items_chunks, "(item list)")]
        if not all(c in chosen for c in snap.items_chunks):
            missing.setdefault(snap.id, []).append("(item list)")
            refs.update(snap.items_chunks)
            continue
        lists += [(item.chunks, "/" + item.name) for item in ctx.list_items(snap) if item.chunks]
        for chunks, path in lists:
            if path != "(item list)" and not all(c in chosen for c in chunks):
                missing.setdefault(snap.id, []).append(path)
            refs.update(chunks)
    used = {pid: [0, 0, 0] for pid in stats}
    for (pid, _), (chunk_id, length) in blobs.items():
        if chunk_id in refs and chosen[chunk_id] == pid:
            used[pid][0] += 1
            used[pid][1] += length
        else:
            used[pid][2] += length
    return {pid: (s[0], s[1], used[pid][0], used[pid][1], used[pid][2]) for pid, s in stats.items()}, refs, missing


def layout_packs(repo: dtstore.Repository) -> list[str]:
    from dtstore.content.segments import list_packs

    return list(list_packs(repo.store))


def scanned(repo: dtstore.Repository) -> RepositoryScan:
    return scan_repository(repo._maintenance(), dt.datetime.now(dt.UTC))


def assert_matches(repo: dtstore.Repository, scan: RepositoryScan | None = None) -> RepositoryScan:
    expected, refs, missing = reference(repo)
    scan = scan or scanned(repo)
    got = {pid: (s.blobs, s.index_end, s.used_blobs, s.used_bytes, s.unused_bytes)
           for pid, s in scan.packs.items() if s.indexed}
    assert got == expected
    assert scan.referenced_chunks == len(refs)
    assert {k: sorted(v) for k, v in scan.missing.items()} == {k: sorted(v) for k, v in missing.items()}
    for chunk_id in refs:
        assert scan.is_referenced(chunk_id)
    # no placeholder of the missing-data test is left in the chosen table
    with scan.scratch.env.begin(db=scan.scratch.chosen) as txn:
        assert all(len(value) == 36 for _, value in txn.cursor())
    return scan


def backup(repo: dtstore.Repository, data: bytes, name: str = "db.dump") -> dtstore.Snapshot:
    return repo.snapshot([StdinSource(name, io.BytesIO(data))])


def test_scan_of_a_plain_history_matches_the_reference(tmp_path: Path) -> None:
    repo = make_repo(str(tmp_path / "repo"), tmp_path / "cache")
    data = bytearray(random_bytes(600_000, seed=1))
    snaps = []
    for night in range(4):
        data[night * 100_000 : night * 100_000 + 50_000] = random_bytes(50_000, seed=10 + night)
        snaps.append(backup(repo, bytes(data)))
    repo.forget([snaps[0].id])
    scan = assert_matches(repo)
    assert all(s.regular for s in scan.packs.values() if s.indexed)  # the fast path did it all
    assert any(s.unused_bytes for s in scan.packs.values())
    scan.close()
    repo.close()


def test_pack_listed_twice_and_chunk_in_two_packs(tmp_path: Path) -> None:
    repo = make_repo(str(tmp_path / "repo"), tmp_path / "cache")
    data = random_bytes(500_000, seed=2)
    backup(repo, data)
    # the same segment under a second name: every pack is listed twice (the slow path)
    [first] = list(repo.store.list(layout.INDEX))
    repo.store.put(layout.index_name("f" * 32), repo.store.get(first.name))
    # a second copy of some chunks in a new pack, as a concurrent writer would leave it
    scan = scanned(repo)
    pack_id = next(p for p, s in scan.packs.items() if s.indexed and s.kind == BLOB_DATA)
    chunks = [c for c, _, _, _ in scan.blobs_of(pack_id)][:3]
    scan.close()
    ctx = repo._maintenance()
    content = ContentStore(ctx.store, ctx.cache, ctx.sealer, ctx.hasher, compression=Zstd(3), pack_size=1 << 20,
                           excluded_packs=frozenset({pack_id}))
    reader = repo._reader()
    for chunk_id in chunks:
        content.put_with_id(chunk_id, reader.get(chunk_id), BLOB_DATA)
    content.flush()
    content.close()
    scan = assert_matches(repo)
    assert not all(s.regular for s in scan.packs.values() if s.indexed)
    copies = [p for p, s in scan.packs.items() if s.indexed and any(c in chunks for c, _, _, _ in scan.blobs_of(p))]
    assert len(copies) == 2
    with scan.scratch.env.begin(db=scan.scratch.chosen) as txn:
        # both copies are good: the one in the segment read first is counted, the other is garbage
        counted = {chosen_pack(txn, c) for c in chunks}
    assert len(counted) == 1 and counted <= {bytes.fromhex(p) for p in copies}
    scan.close()
    repo.close()


def test_lost_segment_gives_the_same_missing_paths(tmp_path: Path) -> None:
    repo = make_repo(str(tmp_path / "repo"), tmp_path / "cache")
    backup(repo, random_bytes(300_000, seed=3), "a.dump")
    before = {i.name for i in repo.store.list(layout.INDEX)}
    backup(repo, random_bytes(300_000, seed=4), "b.dump")
    for info in list(repo.store.list(layout.INDEX)):
        if info.name not in before:
            repo.store.delete(info.name)
    repo.close()
    repo = open_repo(str(tmp_path / "repo"), tmp_path / "cache2")
    scan = assert_matches(repo)
    assert scan.missing  # the second snapshot's data and item list are in no index
    scan.close()
    repo.close()


def test_synthetic_history_is_a_valid_repository(tmp_path: Path) -> None:
    built = build(tmp_path / "repo", PASSWORD, chunks=3000, snapshots=30, blobs_per_pack=16,
                  cache_dir=tmp_path / "cache", progress=False)
    assert built.chunks == 3000 + 100 and built.snapshots == 27 and built.forgotten == 3
    repo = open_repo(str(tmp_path / "repo"), tmp_path / "cache")
    report = repo.check(read_data=True)
    assert report.ok and report.snapshots == 27 and report.packs == built.packs
    scan = assert_matches(repo)
    assert scan.referenced_chunks == built.referenced + built.meta_chunks - 3  # the forgotten item lists
    scan.close()
    plan = repo.prune(grace=dt.timedelta(0), exclusive=True)
    assert plan.delete and repo.check().ok
    assert len(repo.snapshots()) == 27
    repo.close()


@pytest.mark.skipif(sys.platform != "linux", reason="madvise and /proc are Linux's")
@pytest.mark.parametrize("budget", [1, 0])
def test_scratch_pages_are_shed_and_the_results_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    budget: int) -> None:
    build(tmp_path / "repo", PASSWORD, chunks=40_000, snapshots=40, blobs_per_pack=64,
          cache_dir=tmp_path / "cache", progress=False)
    monkeypatch.setattr(scan_module, "RESIDENT_BUDGET", budget)  # 1: shed at every look
    monkeypatch.setattr(mapped_module, "CHECK_EVERY", 1)
    repo = open_repo(str(tmp_path / "repo"), tmp_path / "cache")
    scan = scanned(repo)
    resident = mapped_kib(scan.scratch.path / "data.mdb")
    used_kib = (int(scan.scratch.env.info()["last_pgno"]) + 1) * 4
    if budget:
        assert scan.scratch.sheds > 10
        assert resident < used_kib / 4, (resident, used_kib)
    else:
        assert scan.scratch.sheds == 0
        assert resident > used_kib / 2, (resident, used_kib)
    assert_matches(repo, scan)
    scan.close()
    repo.close()


def test_missing_data_chunk_with_its_item_list_indexed(tmp_path: Path) -> None:
    repo = make_repo(str(tmp_path / "repo"), tmp_path / "cache")
    backup(repo, random_bytes(300_000, seed=5), "a.dump")
    backup(repo, random_bytes(300_000, seed=6), "b.dump")
    # drop one data pack from the index: its chunks are in no index, the item lists still are
    ctx = repo._maintenance()
    names = [i.name for i in ctx.store.list(layout.INDEX)]
    records = [r for name in names for r in decode_segment(ctx.sealer, ctx.store.get(name), name)[0]]
    dropped = next(r for r in records if r.kind == BLOB_DATA)
    ctx.store.put(layout.index_name("e" * 32),
                  encode_segment(ctx.sealer, [r for r in records if r is not dropped], supersedes=names))
    for name in names:
        ctx.store.delete(name)
    repo.close()
    repo = open_repo(str(tmp_path / "repo"), tmp_path / "cache2")
    scan = assert_matches(repo)
    assert [paths for paths in scan.missing.values()] == [["/a.dump"]] or \
        [paths for paths in scan.missing.values()] == [["/b.dump"]]
    scan.close()
    repo.close()


@pytest.mark.parametrize(("refs", "absent"), [
    ([b"\x10"], False), ([b"\x10", b"\x20"], False), ([b"\x20"], False), ([b"\x10", b"\xff"], True),
    ([b"\x00", b"\x10"], True), ([b"\x08"], True), ([b"\x10", b"\x18", b"\x20"], True),
    ([b"\x20", b"\x21"], True), ([b"\x10", b"\x10", b"\x20"], False), ([], False)])
def test_write_references_tells_references_in_no_index(refs: list[bytes], absent: bool) -> None:
    scratch = scan_module.Scratch()
    pid = b"\x01" * 32
    with scratch.env.begin(write=True) as txn:
        for chunk in (b"\x10", b"\x20"):
            txn.put(chunk * 32, scan_module._CHOSEN.pack(pid, 100), db=scratch.chosen)
    spill = scan_module.Spill(scratch.path, "refs", 32)
    spill.add([ref * 32 for ref in refs])
    stat = scan_module.PackStat(pid.hex(), indexed=True, indexed_bytes=200)
    assert scan_module._write_references(scratch, spill, {pid.hex(): stat}) == (len(set(refs)), absent)
    used = 100 * sum(1 for c in (b"\x10", b"\x20") if c in refs)
    assert (stat.used_bytes, stat.unused_bytes) == (used, 200 - used)
    with scratch.env.begin(db=scratch.refs) as txn:
        assert [key for key, _ in txn.cursor()] == sorted({ref * 32 for ref in refs})
    scratch.close()


@pytest.mark.parametrize("buffer", [1 << 30, 100])
def test_spill_gives_every_record_back_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, buffer: int) -> None:
    monkeypatch.setattr(scan_module, "SPILL_BUFFER", buffer)  # 100: to the files after every add
    spill = scan_module.Spill(tmp_path, "t", 8)
    records = [bytes([n % 256, n // 256]) + b"abcdef" for n in range(3000)]
    for start in range(0, len(records), 70):
        spill.add(records[start : start + 70])
    assert spill.records == 3000
    assert any(tmp_path.iterdir()) is (buffer == 100)
    out = [record for part in spill.partitions() for record in sorted(part)]
    assert out == sorted(records)
    assert not any(tmp_path.iterdir())  # the files go as they are read


def repo_with_own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> tuple[dtstore.Repository, Path]:
    """A repository with one backup, and a temporary directory of its own for the scans' scratch."""
    repo = make_repo(str(tmp_path / "repo"), tmp_path / "cache")
    backup(repo, random_bytes(300_000, seed=seed))
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    return repo, scratch_root


def test_a_failed_scan_leaves_no_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, scratch_root = repo_with_own_tmp(tmp_path, monkeypatch, seed=7)

    def corrupt(*args: object) -> None:
        raise IntegrityError("index segment x is damaged")

    monkeypatch.setattr(scan_module, "_write_references", corrupt)  # after the index was spilled
    with pytest.raises(IntegrityError):
        scanned(repo)
    assert list(scratch_root.iterdir()) == []
    repo.close()


def test_a_scan_dropped_without_close_leaves_no_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo, scratch_root = repo_with_own_tmp(tmp_path, monkeypatch, seed=8)
    scan = scanned(repo)
    assert [p.name[:13] for p in scratch_root.iterdir()] == ["dtstore-scan-"]
    del scan
    gc.collect()
    assert list(scratch_root.iterdir()) == []
    closed = scanned(repo)
    closed.close()
    closed.close()  # a second close is harmless
    assert list(scratch_root.iterdir()) == []
    repo.close()


def test_a_prune_that_fails_after_its_scan_leaves_no_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dtstore.maintenance import prune as prune_module

    repo, scratch_root = repo_with_own_tmp(tmp_path, monkeypatch, seed=9)
    kept: list[RepositoryScan] = []  # held here, the scratch can only go by close()

    def keep(*args: object, **kwargs: object) -> RepositoryScan:
        kept.append(scan_repository(*args, **kwargs))  # type: ignore[arg-type]
        return kept[-1]

    def refuse(*args: object, **kwargs: object) -> None:
        raise IntegrityError("retention could not be read")

    monkeypatch.setattr(prune_module, "scan_repository", keep)
    monkeypatch.setattr(prune_module, "hold_retained", refuse)
    with pytest.raises(IntegrityError, match="retention"):
        repo.prune(dry_run=True)
    assert len(kept) == 1
    assert list(scratch_root.iterdir()) == []
    repo.close()
