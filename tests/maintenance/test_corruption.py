"""Damage one object → ``check`` names exactly the snapshots and paths that lost data; ``index
rebuild`` recovers what can be recovered.

Every snapshot backs up its own directory (distinct paths), and snapshot 5 holds a copy of one of
snapshot 1's files, so damage to that file's data must name both.  The truth is measured, not
assumed: after the damage every file of every snapshot is read through a fresh repository, and the
files that fail to read are what check must report — no more, no fewer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest

import dtstore
from dtstore import FilesSource
from dtstore.content.segments import decode_segment
from dtstore.errors import DtstoreError
from dtstore.maintenance.check import CheckReport
from dtstore.storage import layout
from tests.maintenance.common import (
    file_items,
    make_repo,
    open_repo,
    restored_digest,
    run_cli,
    tree_digest,
)

ITEM_LIST = "(item list)"


@dataclass
class Built:
    url: str
    base: Path
    sources: dict[str, Path]
    """snapshot ID → its source directory"""
    files: dict[str, dict[str, list[bytes]]]
    """snapshot ID → '/' + path → chunk IDs"""
    items_chunks: dict[str, list[bytes]]
    where: dict[bytes, tuple[str, int, int]]
    """chunk ID → (pack ID, offset, length)"""
    shared_path: str
    """snapshot 1's file that snapshot 5 holds a copy of"""

    def repo(self, tag: str) -> dtstore.Repository:
        return open_repo(self.url, self.base / f"cache-{tag}")

    def pack_path(self, pack_id: str) -> Path:
        found = [p for p in Path(self.url).glob(f"*/{pack_id[:2]}/{pack_id}")]
        assert len(found) == 1
        return found[0]

    def snap_of(self, path: str) -> str:
        return next(s for s, files in self.files.items() if path in files)


@pytest.fixture
def built(tmp_path: Path) -> Built:
    url = str(tmp_path / "repo")
    rng = random.Random(7)
    shared = rng.randbytes(90_000)
    sources: dict[str, Path] = {}
    with make_repo(url, tmp_path / "cache-build") as repo:
        for n in range(1, 6):
            src = tmp_path / "src" / f"snap{n}"
            src.mkdir(parents=True)
            for k in range(3):
                (src / f"file{k}.bin").write_bytes(rng.randbytes(rng.randrange(40_000, 120_000)))
            if n == 1:
                (src / "shared.bin").write_bytes(shared)
            if n == 5:
                (src / "copy-of-shared.bin").write_bytes(shared)
            sources[repo.snapshot([FilesSource([str(src)])]).id] = src
        files = {s.id: file_items(repo, s) for s in repo.snapshots()}
        items_chunks = {s.id: list(s.items_chunks) for s in repo.snapshots()}
        reader = repo._reader()
        where = {}
        for chunk_id in {c for f in files.values() for cs in f.values() for c in cs} | {
                c for cs in items_chunks.values() for c in cs}:
            loc = reader.locate(chunk_id)
            where[chunk_id] = (loc.pack_id, loc.offset, loc.length)
    shared_path = next(p for p in files[next(iter(sources))] if p.endswith("/shared.bin"))
    return Built(url, tmp_path, sources, files, items_chunks, where, shared_path)


def unreadable(b: Built, tag: str) -> dict[str, set[str]]:
    """What a user actually lost: snapshot → paths that cannot be read back (or the item list)."""
    lost: dict[str, set[str]] = {}
    with b.repo(f"truth-{tag}") as repo:
        for snap_id, files in b.files.items():
            snap = repo.get_snapshot(snap_id)
            try:
                list(repo.list_items(snap))
            except DtstoreError:
                lost[snap_id] = {ITEM_LIST}
                continue
            for path in files:
                try:
                    with repo.open_item(snap, path.lstrip("/")) as f:
                        while f.read(1 << 20):
                            pass
                except DtstoreError:
                    lost.setdefault(snap_id, set()).add(path)
    return lost


def reported(b: Built, report: CheckReport) -> dict[str, set[str]]:
    """snapshot → paths, from check's problems.  Paths are distinct per snapshot here, so each
    names its snapshot; '(item list …)' entries count as the item list of the problem's snapshot."""
    found: dict[str, set[str]] = {}
    for problem in report.problems:
        assert problem.paths or not problem.snapshots, problem
        for path in problem.paths:
            if path.startswith("(item list"):
                assert len(problem.snapshots) == 1, problem
                found.setdefault(problem.snapshots[0], set()).add(ITEM_LIST)
            else:
                owner = b.snap_of(path)
                assert owner in problem.snapshots, problem
                found.setdefault(owner, set()).add(path)
        for snap_id in problem.snapshots:
            assert snap_id in found, problem
    return found


def expected_from_chunks(b: Built, lost_chunks: set[bytes]) -> dict[str, set[str]]:
    """The model: which snapshot/paths need one of these chunks."""
    expected: dict[str, set[str]] = {}
    for snap_id, files in b.files.items():
        if lost_chunks & set(b.items_chunks[snap_id]):
            expected[snap_id] = {ITEM_LIST}
            continue
        paths = {p for p, chunks in files.items() if lost_chunks & set(chunks)}
        if paths:
            expected[snap_id] = paths
    return expected


def pack_chunks(b: Built, pack_id: str) -> list[tuple[bytes, int, int]]:
    return sorted(((c, o, n) for c, (p, o, n) in b.where.items() if p == pack_id), key=lambda t: t[1])


def check_cli(b: Built, *args: str) -> tuple[int, dict[str, set[str]]]:
    code, lines, err = run_cli(b.url, b.base / "cache-cli", "check", *args)
    assert code in (0, 16), err  # 16: problems found (an integrity error), as the README says
    snaps = {s for line in lines if line.get("type") == "problem" for s in line["snapshots"]}
    assert lines[-1]["type"] == "summary" and lines[-1]["ok"] == (code == 0)
    return code, {s: set() for s in snaps}


def checked_loss(b: Built, tag: str, lost: set[bytes]) -> tuple[dict[str, set[str]], CheckReport]:
    """The loss a user sees, and check's report of it (library and CLI), which must name exactly it."""
    truth = unreadable(b, tag)
    assert truth == expected_from_chunks(b, lost) and truth
    with b.repo(tag) as repo:
        report = repo.check()
    assert reported(b, report) == truth
    code, snaps = check_cli(b)
    assert code == 16 and set(snaps) == set(truth)
    return truth, report


def assert_restores(b: Built, tag: str, skip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    with b.repo(tag) as repo:
        for number, (snap_id, src) in enumerate(b.sources.items()):
            if snap_id not in skip:
                got = restored_digest(repo, repo.get_snapshot(snap_id), b.base / "restore" / tag / str(number), src)
                assert got == tree_digest(src)


def test_flipped_byte_in_a_data_blob(built: Built) -> None:
    b = built
    chunk = b.files[b.snap_of(b.shared_path)][b.shared_path][1]
    pack_id, offset, length = b.where[chunk]
    path = b.pack_path(pack_id)
    data = bytearray(path.read_bytes())
    data[offset + length // 2] ^= 0x40
    path.write_bytes(bytes(data))

    truth = unreadable(b, "flip")  # the failing read records the bad copy in damaged/
    assert truth == expected_from_chunks(b, {chunk})
    assert len(truth) == 2  # snapshot 1 and snapshot 5 (its copy)
    with b.repo("flip") as repo:
        # trailer and index agree, but the damage a read recorded is known without reading data
        report = repo.check()
        assert [p.kind for p in report.problems] == ["damaged-data"] and reported(b, report) == truth
        report = repo.check(read_data=True)
    assert [p.kind for p in report.problems] == ["corrupt-pack"]
    assert reported(b, report) == truth
    assert check_cli(b)[0] == 16
    code, snaps = check_cli(b, "--read-data")
    assert code == 16 and set(snaps) == set(truth)
    # rebuilding the index cannot repair data; everything else still restores
    code, _, err = run_cli(b.url, b.base / "cache-cli", "index", "rebuild")
    assert code == 0, err
    with b.repo("flip-rebuilt") as repo:
        assert reported(b, repo.check(read_data=True)) == truth
    assert_restores(b, "flip", skip=set(truth))


def test_truncated_pack(built: Built) -> None:
    b = built
    chunk = b.files[b.snap_of(b.shared_path)][b.shared_path][0]
    pack_id = b.where[chunk][0]
    blobs = pack_chunks(b, pack_id)
    assert len(blobs) >= 4
    cut = blobs[len(blobs) // 2][1] + 10  # inside the middle blob
    path = b.pack_path(pack_id)
    path.write_bytes(path.read_bytes()[:cut])

    lost = {c for c, o, n in blobs if o + n > cut}
    truth, report = checked_loss(b, "trunc", lost)
    assert [p.kind for p in report.problems] == ["truncated-pack"]
    # the trailer is gone with the tail: a rebuild cannot list the pack, but must not lose the
    # blobs before the cut, which the old index still locates and which still read back fine
    code, lines, err = run_cli(b.url, b.base / "cache-cli", "index", "rebuild")
    assert code == 1 and len(lines[-1]["unreadable"]) == 1, err
    assert unreadable(b, "trunc-rebuilt") == truth
    with b.repo("trunc-rebuilt") as repo:
        assert reported(b, repo.check()) == truth


def test_deleted_index_segment(built: Built) -> None:
    b = built
    segments = sorted(Path(b.url, layout.INDEX).iterdir())
    # a segment listing data of snapshot 2 (the second backup's packs)
    second = list(b.sources)[1]
    wanted = {b.where[c][0] for cs in b.files[second].values() for c in cs}
    with b.repo("seg") as repo:
        victim = next(s for s in segments
                      if {r.pack_id for r in decode_segment(repo._sealer, s.read_bytes(), s.name)[0]} & wanted)
        listed = {r.pack_id for r in decode_segment(repo._sealer, victim.read_bytes(), victim.name)[0]}
    victim.unlink()

    lost = {c for c, (p, _, _) in b.where.items() if p in listed}
    _, report = checked_loss(b, "seg", lost)
    assert {p.kind for p in report.problems} == {"missing-data"}
    assert report.unindexed_packs == len(listed)
    # every pack is still there: a rebuild from the trailers restores everything
    code, lines, err = run_cli(b.url, b.base / "cache-cli", "index", "rebuild")
    assert code == 0 and lines[-1]["unreadable"] == [], err
    with b.repo("seg-rebuilt") as repo:
        report = repo.check(read_data=True)
        assert report.ok and report.unindexed_packs == 0, [p.to_json() for p in report.problems]
    assert check_cli(b, "--read-data")[0] == 0
    assert_restores(b, "seg-rebuilt")


def test_deleted_pack(built: Built) -> None:
    b = built
    chunk = b.files[b.snap_of(b.shared_path)][b.shared_path][0]
    pack_id = b.where[chunk][0]
    b.pack_path(pack_id).unlink()

    lost = {c for c, _, _ in pack_chunks(b, pack_id)}
    truth, report = checked_loss(b, "gone", lost)
    assert [p.kind for p in report.problems] == ["missing-pack"]
    # after a rebuild the pack is simply not in the index: check still names what was lost
    code, _, err = run_cli(b.url, b.base / "cache-cli", "index", "rebuild")
    assert code == 0, err
    with b.repo("gone-rebuilt") as repo:
        report = repo.check(read_data=True)
    assert {p.kind for p in report.problems} == {"missing-data"}
    assert reported(b, report) == truth
    assert check_cli(b)[0] == 16
    assert_restores(b, "gone-rebuilt", skip=set(truth))


def test_damaged_item_list(built: Built) -> None:
    """A meta pack (item lists) damaged: check names the snapshot with '(item list)'."""
    b = built
    snap_id = list(b.sources)[2]
    chunk = b.items_chunks[snap_id][0]
    pack_id, offset, length = b.where[chunk]
    path = b.pack_path(pack_id)
    data = bytearray(path.read_bytes())
    data[offset + length // 2] ^= 0x01
    path.write_bytes(bytes(data))

    truth = unreadable(b, "meta")
    assert truth == {snap_id: {ITEM_LIST}}
    with b.repo("meta") as repo:
        report = repo.check(read_data=True)
    assert reported(b, report) == truth
    assert check_cli(b, "--read-data")[0] == 16
    assert_restores(b, "meta", skip={snap_id})
