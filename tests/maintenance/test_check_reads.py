"""What check and the scan read, and how often: a pack's trailer in one or two reads instead of
three or four, item lists and segments read ahead on a remote store, references marked in a few
write transactions — each with the same result as the plain way."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

import dtstore
from dtstore.content.segments import PackRecord, list_packs, read_pack_record
from dtstore.errors import DtstoreError
from dtstore.maintenance import check as check_module
from dtstore.maintenance import scan as scan_module
from dtstore.maintenance.check import read_trailer_of
from dtstore.maintenance.scan import scan_repository
from dtstore.storage import layout
from dtstore.storage.base import BlobInfo, BlobStore
from tests.helpers import random_bytes
from tests.maintenance.common import make_repo, open_repo
from tests.maintenance.test_scan import assert_matches, backup


class Counting:
    """A store that counts the reads made through it."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.gets = 0
        self.ranges = 0

    def get(self, name: str) -> bytes:
        self.gets += 1
        return self.inner.get(name)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        self.ranges += 1
        return self.inner.get_range(name, offset, length)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def history(tmp_path: Path, nights: int = 4) -> dtstore.Repository:
    repo = make_repo(str(tmp_path / "repo"), tmp_path / "cache")
    data = bytearray(random_bytes(600_000, seed=1))
    for night in range(nights):
        data[night * 100_000 : night * 100_000 + 50_000] = random_bytes(50_000, seed=10 + night)
        backup(repo, bytes(data))
    return repo


def index_ends(repo: dtstore.Repository) -> dict[str, int]:
    scan = scan_repository(repo._maintenance(), dt.datetime.now(dt.UTC))
    try:
        return {p: s.index_end for p, s in scan.packs.items() if s.indexed}
    finally:
        scan.close()


def test_trailer_in_fewer_reads_with_the_same_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = history(tmp_path)
    ends = index_ends(repo)
    packs = list_packs(repo.store)
    sealer = repo._maintenance().sealer
    assert len(ends) >= 4

    def reads(info: BlobInfo, expected: PackRecord, index_end: int, whole_below: int) -> tuple[int, int]:
        monkeypatch.setattr(check_module, "WHOLE_PACK_BELOW", whole_below)
        store = Counting(repo.store)
        got = read_trailer_of(store, sealer, info.name, info.size, index_end)  # type: ignore[arg-type]
        assert (got.pack_id, got.kind, got.size, got.entries) == \
            (expected.pack_id, expected.kind, expected.size, expected.entries)
        return store.gets, store.ranges

    for pack_id, end in ends.items():
        info = packs[pack_id]
        expected = read_pack_record(repo.store, sealer, info.name, info.size)
        last = expected.entries[-1]
        assert end == last.offset + last.length  # [P2]: the trailer follows the last blob
        assert reads(info, expected, end, 1 << 30) == (1, 0)  # a small pack: read whole, once
        assert reads(info, expected, end, 0) == (0, 2)  # header, then trailer and its length
        # the index misses the last blob: the trailer is inside the second read still
        assert reads(info, expected, last.offset, 0) == (0, 2)
        # the index says more than the pack holds: the trailer starts before its end, one read more
        assert reads(info, expected, end + 1, 0) == (0, 3)
        assert reads(info, expected, 0, 0) == read_pack_record_reads(repo.store, sealer, info.name, info.size)


def read_pack_record_reads(store: BlobStore, sealer: Any, name: str, size: int) -> tuple[int, int]:
    counting = Counting(store)
    read_pack_record(counting, sealer, name, size)  # type: ignore[arg-type]
    return counting.gets, counting.ranges


@pytest.mark.parametrize("whole_below", [1 << 30, 0])
def test_damaged_or_truncated_trailer_fails_either_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       whole_below: int) -> None:
    monkeypatch.setattr(check_module, "WHOLE_PACK_BELOW", whole_below)
    repo = history(tmp_path, nights=1)
    ends = index_ends(repo)
    sealer = repo._maintenance().sealer
    pack_id, end = next(iter(ends.items()))
    info = list_packs(repo.store)[pack_id]
    path = tmp_path / "repo" / info.name
    raw = bytearray(path.read_bytes())
    raw[end + 2] ^= 0x40  # inside the sealed trailer
    path.write_bytes(bytes(raw))
    with pytest.raises(DtstoreError):
        read_pack_record(repo.store, sealer, info.name, info.size)
    with pytest.raises(DtstoreError):
        read_trailer_of(repo.store, sealer, info.name, info.size, end)
    with pytest.raises(DtstoreError):
        read_trailer_of(repo.store, sealer, info.name, 20, end)  # shorter than a header and a length


def test_check_reads_each_small_pack_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = history(tmp_path)
    packs = list_packs(repo.store)
    seen: list[str] = []
    real = read_trailer_of

    def counted(store: BlobStore, sealer: Any, name: str, size: int, index_end: int) -> Any:
        counting = Counting(store)
        record = real(counting, sealer, name, size, index_end)  # type: ignore[arg-type]
        assert (counting.gets, counting.ranges) == ((1, 0) if size < check_module.WHOLE_PACK_BELOW else (0, 2))
        seen.append(name)
        return record

    monkeypatch.setattr(check_module, "read_trailer_of", counted)
    report = repo.check()
    assert report.ok and sorted(seen) == sorted(info.name for info in packs.values())


def remote(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan as on a remote store: three requests in flight, a small byte window for segments,
    spills written to their files at every addition."""
    monkeypatch.setattr(scan_module, "_workers", lambda store: 3)
    monkeypatch.setattr(scan_module, "FETCH_AHEAD_BYTES", 1)
    monkeypatch.setattr(scan_module, "SPILL_BUFFER", 1)


def test_read_ahead_scan_matches_the_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = history(tmp_path, nights=6)
    remote(monkeypatch)
    fetched: list[str] = []
    real_fetch = scan_module._fetch_ahead

    def fetch(store: BlobStore, infos: list[Any]) -> Any:
        for name, data in real_fetch(store, infos):
            fetched.append(name)
            yield name, data

    monkeypatch.setattr(scan_module, "_fetch_ahead", fetch)
    scan = assert_matches(repo)
    assert fetched == sorted(i.name for i in repo.store.list(layout.INDEX)) and len(fetched) >= 6
    scan.close()
    repo.close()


def test_read_ahead_names_the_same_missing_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(str(tmp_path / "repo"), tmp_path / "cache")
    backup(repo, random_bytes(300_000, seed=3), "a.dump")
    before = {i.name for i in repo.store.list(layout.INDEX)}
    backup(repo, random_bytes(300_000, seed=4), "b.dump")
    backup(repo, random_bytes(300_000, seed=5), "c.dump")
    for info in list(repo.store.list(layout.INDEX)):
        if info.name not in before:
            repo.store.delete(info.name)
    repo.close()
    repo = open_repo(str(tmp_path / "repo"), tmp_path / "cache2")
    plain = scan_repository(repo._maintenance(), dt.datetime.now(dt.UTC))
    remote(monkeypatch)
    ahead = assert_matches(repo)
    assert ahead.missing == plain.missing and len(ahead.missing) == 2
    plain.close()
    ahead.close()
    repo.close()


def test_read_ahead_reports_an_unreadable_item_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = history(tmp_path, nights=3)
    snaps = repo.snapshots()
    target = snaps[1]
    loc = repo._cache.lookup(target.items_chunks[0])
    assert loc is not None
    path = tmp_path / "repo" / layout.pack_name(loc.pack_id, True)
    raw = bytearray(path.read_bytes())
    raw[loc.offset + loc.length // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    remote(monkeypatch)
    report = repo.check()
    [problem] = [p for p in report.problems if p.where == f"snapshots/{target.id}"]
    assert problem.kind == "missing-data" and len(problem.paths) == 1
    assert problem.paths[0].startswith("(item list unreadable: ")
    repo.close()


def test_read_ahead_gives_each_snapshot_its_own_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(str(tmp_path / "repo"), tmp_path / "cache")
    for night in range(7):
        backup(repo, random_bytes(40_000 + 10_000 * night, seed=20 + night), f"night{night}.dump")
    remote(monkeypatch)
    ctx = repo._maintenance()
    scan = scan_repository(ctx, dt.datetime.now(dt.UTC))
    snaps = ctx.snapshots.load_all()
    pairs = list(scan_module._read_ahead(ctx, scan.scratch, snaps))
    assert [s.id for s, _ in pairs] == [s.id for s in snaps]
    for snap, read in pairs:
        assert read is not None and read.listed and read.error is None
        assert read.chunks == [item.chunks for item in ctx.list_items(snap) if item.chunks]
    scan.close()
    repo.close()
