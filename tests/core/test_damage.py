"""Damage costs only what it touches, and the next backup heals it (issue 9).

One small data pack holds the chunks of several files, some shared (a copy, a concatenation).  For
every chunk, one flipped byte inside its blob must cost exactly the files that use that chunk: the
restore writes every other file byte for byte, removes those, exits with IntegrityError naming them
and the pack, and records the bad copy in ``damaged/``.  A snapshot of the (healthy) source then
stores that chunk afresh, after which ``check --read-data`` is clean and everything restores.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

import dtstore
from dtstore import FilesSource
from dtstore.chunking import ChunkerParams
from dtstore.errors import IntegrityError
from dtstore.storage import layout
from tests.helpers import PASSWORD, SMALL_CHUNKER_ARGS, init_repo, repo_objects


@dataclass
class Built:
    url: Path
    src: Path
    base: Path
    snapshot_id: str
    files: dict[str, list[bytes]]
    """'/' + item path → chunk IDs"""
    pack: Path
    blobs: list[tuple[bytes, int, int]]
    """(chunk ID, offset, length) of every blob of the data pack"""

    def open(self, tag: str) -> dtstore.Repository:
        return dtstore.Repository.open(str(self.url), PASSWORD, cache_dir=self.base / f"cache-{tag}")

    def users(self, chunk_id: bytes) -> list[str]:
        return sorted(p for p, chunks in self.files.items() if chunk_id in chunks)

    def rel(self, path: str) -> str:
        """'/' + item path → the path below a restore target's source directory."""
        return os.path.relpath(path, str(self.src.absolute()))


def contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def built(tmp_path: Path) -> Built:
    rng = random.Random(9)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    a, b = rng.randbytes(20_000), rng.randbytes(30_000)
    payload = {"a.bin": a, "b.bin": b, "copy-of-a.bin": a, "a-then-b.bin": a + b, "small.txt": b"tiny\n" * 40,
               "sub/c.bin": rng.randbytes(9_000), "sub/empty": b""}
    for name, data in payload.items():
        (src / name).write_bytes(data)
    url = tmp_path / "repo"
    with init_repo(str(url), tmp_path / "cache-build", chunker=ChunkerParams(*SMALL_CHUNKER_ARGS),
                   pack_size=4 << 20) as repo:
        snap = repo.snapshot([FilesSource([str(src)])])
        files = {"/" + i.name: list(i.chunks) for i in repo.list_items(snap) if i.type == "file"}
        reader = repo._reader()
        where = {c: reader.locate(c) for cs in files.values() for c in cs}
    packs = {loc.pack_id for loc in where.values()}
    assert len(packs) == 1, "the test needs every data chunk in one pack"
    pack_id = packs.pop()
    blobs = sorted({(c, loc.offset, loc.length) for c, loc in where.items()}, key=lambda t: t[1])
    assert len(blobs) >= 8
    pack = next(p for p in repo_objects(url, layout.DATA_PACKS) if p.name == pack_id)
    return Built(url, src, tmp_path, snap.id, files, pack, blobs)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x20
    path.write_bytes(bytes(data))


def damage_records(b: Built) -> list[Path]:
    return repo_objects(b.url, layout.DAMAGED)


def test_every_flipped_chunk_costs_exactly_its_files_and_heals(built: Built) -> None:
    """One flip per chunk, one chunk after the other, each healed before the next: the pack ends up
    with every blob damaged, and still everything restores from the copies the backups stored."""
    b = built
    expected_all = contents(b.src)
    for number, (chunk_id, offset, length) in enumerate(b.blobs):
        flip(b.pack, offset + length // 2)
        target = b.base / "restore" / str(number)
        with b.open(f"flip{number}") as repo, pytest.raises(IntegrityError) as failed:
            repo.restore(repo.get_snapshot(b.snapshot_id), target)
        users = b.users(chunk_id)
        assert failed.value.paths == users, chunk_id.hex()
        assert failed.value.packs == [b.pack.name]
        message = str(failed.value)
        assert b.pack.name in message and all(u in message for u in users) and "not restored" in message
        got = contents(target / str(b.src.absolute()).lstrip("/"))
        assert set(got) == set(expected_all) - {b.rel(u) for u in users}
        assert all(got[p] == expected_all[p] for p in got)  # every other file, byte for byte
        # the restore recorded exactly that copy as damaged; a snapshot of the (healthy) source
        # stores it afresh, after which check --read-data is clean and everything restores
        with b.open("host") as repo:
            repo.refresh_index()
            assert (b.pack.name, chunk_id) in repo._cache.damage().blobs
            assert len(repo._cache.damage().blobs) == number + 1
            healed = repo.snapshot([FilesSource([str(b.src)])])
            assert healed.summary["chunks_new"] >= 1
            report = repo.check(read_data=True)
            assert report.ok, [p.to_json() for p in report.problems]
            assert [h.where for h in report.healed] == [f"pack {b.pack.name}"]
            for snap in (healed, repo.get_snapshot(b.snapshot_id)):
                again = b.base / "healed" / f"{number}-{snap.short_id}"
                repo.restore(snap, again)
                assert contents(again / str(b.src.absolute()).lstrip("/")) == expected_all


def test_include_only_pays_for_the_included_files(built: Built) -> None:
    b = built
    victim = next(c for c, _, _ in b.blobs if b.users(c) == sorted(["/" + str(b.src.absolute() / n).lstrip("/")
                                                                     for n in ("a.bin", "copy-of-a.bin",
                                                                               "a-then-b.bin")]))
    offset, length = next((o, n) for c, o, n in b.blobs if c == victim)
    flip(b.pack, offset + length // 2)
    a, bb = str(b.src / "a.bin"), str(b.src / "b.bin")
    with b.open("include") as repo:
        snap = repo.get_snapshot(b.snapshot_id)
        repo.restore(snap, b.base / "only-b", include=[bb])  # the damage is not in b.bin: no error
        with pytest.raises(IntegrityError) as failed:
            repo.restore(snap, b.base / "a-and-b", include=[a, bb])
        assert failed.value.paths == ["/" + a.lstrip("/")]
        restored_b = b.base / "a-and-b" / bb.lstrip("/")
        assert restored_b.read_bytes() == Path(bb).read_bytes()
        assert not (b.base / "a-and-b" / a.lstrip("/")).exists()
        with repo.open_item(snap, bb) as f:
            assert f.read() == Path(bb).read_bytes()
        with pytest.raises(IntegrityError, match=b.pack.name), repo.open_item(snap, a) as f:
            f.read()


def test_dump_records_damage_and_the_next_snapshot_heals_it(built: Built) -> None:
    b = built
    chunk_id, offset, length = b.blobs[len(b.blobs) // 2]
    flip(b.pack, offset + length // 2)
    victim = b.users(chunk_id)[0]
    with b.open("heal") as repo:
        snap = repo.get_snapshot(b.snapshot_id)
        with pytest.raises(IntegrityError), repo.open_item(snap, victim) as f:
            f.read()
        assert len(damage_records(b)) == 1  # the read recorded it: every host learns
        report = repo.check(read_data=True)
        assert [p.kind for p in report.problems] == ["corrupt-pack"]
        assert len(damage_records(b)) == 1  # nothing new to record
        # the same data again (the file cache says "unchanged", but its chunk is known bad)
        healed = repo.snapshot([FilesSource([str(b.src)])])
        assert healed.summary["chunks_new"] >= 1 and healed.summary["bytes_stored"] > 0
        report = repo.check(read_data=True)
        assert report.ok, [p.to_json() for p in report.problems]
        assert [h.where for h in report.healed] == [f"pack {b.pack.name}"]
        for number, snapshot in enumerate([healed, snap]):  # the old snapshot restores too
            target = b.base / "healed" / str(number)
            repo.restore(snapshot, target)
            assert contents(target / str(b.src.absolute()).lstrip("/")) == contents(b.src)
    # another host (its own cache) sees the good copy, not the damaged one
    with b.open("other-host") as repo:
        repo.restore(repo.get_snapshot(b.snapshot_id), b.base / "other")
        assert contents(b.base / "other" / str(b.src.absolute()).lstrip("/")) == contents(b.src)
        # prune deletes the damaged pack (repacking its good blobs) and never the good copy
        repo.prune(exclusive=True, grace=__import__("datetime").timedelta(0))
        assert not b.pack.exists()
        report = repo.check(read_data=True)
        assert report.ok and not report.healed, [p.to_json() for p in report.problems]
        assert damage_records(b) == []  # the sweep dropped records of deleted packs
        target = b.base / "after-prune"
        repo.restore(repo.get_snapshot(b.snapshot_id), target)
        assert contents(target / str(b.src.absolute()).lstrip("/")) == contents(b.src)


def test_missing_pack_costs_its_files_and_is_recorded(built: Built, tmp_path: Path) -> None:
    b = built
    shutil.move(b.pack, tmp_path / "away")
    with b.open("gone") as repo:
        with pytest.raises(IntegrityError) as failed:
            repo.restore(repo.get_snapshot(b.snapshot_id), tmp_path / "t")
        assert failed.value.paths == sorted(p for p, cs in b.files.items() if cs)
        assert "is missing" in str(failed.value)
        repo.refresh_index()
        assert repo._cache.damage().packs == {b.pack.name}
    # the empty file needs no pack and is restored
    assert (tmp_path / "t" / str(b.src.absolute()).lstrip("/") / "sub" / "empty").read_bytes() == b""


def test_another_host_with_a_warm_cache_learns_of_the_damage(built: Built) -> None:
    """Host B loaded the index before host A found the damage: B's next backup still stores the
    chunk afresh (its cache reloads when the damage records change) instead of building on it."""
    b = built
    chunk_id, offset, length = b.blobs[1]
    with b.open("host-b") as host_b:
        host_b.refresh_index()
        assert host_b._cache.lookup_usable(chunk_id) is not None
        flip(b.pack, offset + length // 2)
        with b.open("host-a") as host_a:
            assert not host_a.check(read_data=True).ok  # records the bad copy
        snap = host_b.snapshot([FilesSource([str(b.src)])])
        assert snap.summary["chunks_new"] == 1  # that chunk, and nothing else
        assert host_b.check(read_data=True).ok


def test_truncated_pack_costs_only_the_blobs_past_the_cut(built: Built, tmp_path: Path) -> None:
    b = built
    cut = b.blobs[len(b.blobs) // 2][1] + 5
    b.pack.write_bytes(b.pack.read_bytes()[:cut])
    lost_chunks = {c for c, o, n in b.blobs if o + n > cut}
    lost = sorted({p for p, cs in b.files.items() if lost_chunks & set(cs)})
    with b.open("trunc") as repo:
        with pytest.raises(IntegrityError) as failed:
            repo.restore(repo.get_snapshot(b.snapshot_id), tmp_path / "t")
        assert failed.value.paths == lost and "truncated" in str(failed.value)
        repo.refresh_index()
        assert repo._cache.damage().blobs == {(b.pack.name, c) for c in lost_chunks}
    got = contents(tmp_path / "t" / str(b.src.absolute()).lstrip("/"))
    expected = contents(b.src)
    assert got == {p: v for p, v in expected.items() if p not in {b.rel(x) for x in lost}}
