"""Corrupted, truncated or missing objects: every read fails loudly and no wrong byte is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import dtstore
from dtstore import FilesSource, Repository
from dtstore.chunking import ChunkerParams
from dtstore.content.pack import HEADER_SIZE, parse_pack
from dtstore.errors import DtstoreError, IntegrityError
from dtstore.storage import layout
from dtstore.storage.local import LocalStore
from tests.helpers import (
    PASSWORD,
    SMALL_CHUNKER_ARGS,
    SMALL_PACK,
    flip_byte,
    init_repo,
    random_bytes,
    repo_objects,
    restored,
)

FILES = {f"file{n}": random_bytes(40_000, seed=100 + n) for n in range(6)}
VICTIM = "file3"


def _make_source(root: Path, files: dict[str, bytes] = FILES) -> Path:
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def _where(repo: Repository, repo_dir: Path, chunk_id: bytes) -> tuple[Path, int, int]:
    """(pack file, offset, sealed length) of one chunk, read from the packs' own trailers."""
    sealer = repo.master.sealer()
    for prefix in (layout.DATA_PACKS, layout.META_PACKS):
        for path in repo_objects(repo_dir, prefix):
            _, entries = parse_pack(sealer, path.read_bytes(), path.name)
            for e in entries:
                if e.chunk_id == chunk_id:
                    return path, e.offset, e.length
    raise AssertionError("chunk not found in any pack")


def _files_written(target: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file() and not p.is_symlink()}


def _assert_nothing_wrong_written(target: Path, source: dict[str, bytes], victims: set[str]) -> None:
    written = _files_written(target)
    for name in victims:
        assert name not in written, f"{name} was left in the target although its data is corrupt"
    for name, data in written.items():
        assert data == source[name], f"{name} was written with wrong content"


@pytest.fixture
def snap(repo: Repository, tmp_path: Path) -> dtstore.Snapshot:
    src = _make_source(tmp_path / "src")
    return repo.snapshot([FilesSource([str(src)])])


def _victim_chunk(repo: Repository, snap: dtstore.Snapshot, tmp_path: Path, index: int = 1) -> bytes:
    item = repo.find_item(snap, str(tmp_path / "src" / VICTIM))
    assert len(item.chunks) > index
    return item.chunks[index]


def _reopen(repo: Repository, repo_dir: Path, cache: Path) -> Repository:
    """A new handle on the same repository and cache (LMDB allows one per process: close the old)."""
    repo.close()
    return Repository.open(str(repo_dir), PASSWORD, cache_dir=cache)


@pytest.mark.parametrize("where", ["blob", "blob-tag", "salt", "magic"])
def test_flipped_byte_in_a_data_pack_fails_restore_naming_the_pack(
        repo: Repository, repo_dir: Path, cache: Path, snap: dtstore.Snapshot, tmp_path: Path,
        where: str) -> None:
    pack, offset, length = _where(repo, repo_dir, _victim_chunk(repo, snap, tmp_path))
    position = {"blob": offset + 20, "blob-tag": offset + length - 1, "salt": 10, "magic": 2}[where]
    flip_byte(pack, position)
    target = tmp_path / "target"
    with _reopen(repo, repo_dir, cache) as repo2, pytest.raises(IntegrityError) as caught:
        repo2.restore(repo2.get_snapshot(snap.id), target)
    assert pack.name in str(caught.value)
    assert VICTIM in str(caught.value)  # the message says what was not restored
    _assert_nothing_wrong_written(target, FILES, {VICTIM})


def test_flipped_byte_in_a_pack_trailer_never_yields_wrong_data(
        repo: Repository, repo_dir: Path, cache: Path, snap: dtstore.Snapshot, tmp_path: Path) -> None:
    """The trailer is only needed to rebuild the index; a restore may succeed, but only with good data."""
    pack, _, _ = _where(repo, repo_dir, _victim_chunk(repo, snap, tmp_path))
    flip_byte(pack, pack.stat().st_size - 10)
    target = tmp_path / "target"
    try:
        with _reopen(repo, repo_dir, cache) as repo2:
            repo2.restore(repo2.get_snapshot(snap.id), target)
    except IntegrityError as exc:
        assert pack.name in str(exc)
        _assert_nothing_wrong_written(target, FILES, {VICTIM})
    else:
        assert _files_written(restored(target, tmp_path / "src")) == FILES


def test_open_item_on_corrupted_data_raises(repo: Repository, repo_dir: Path, cache: Path,
                                            snap: dtstore.Snapshot, tmp_path: Path) -> None:
    pack, offset, _ = _where(repo, repo_dir, _victim_chunk(repo, snap, tmp_path, index=2))
    flip_byte(pack, offset + 30)
    with _reopen(repo, repo_dir, cache) as repo2:
        snap2 = repo2.get_snapshot(snap.id)
        stream = repo2.open_item(snap2, str(tmp_path / "src" / VICTIM))
        with pytest.raises(IntegrityError, match=pack.name):
            stream.read()
        stream.close()
        # reading piecewise: every byte handed out before the error is correct
        got = bytearray()
        with pytest.raises(IntegrityError), repo2.open_item(snap2, str(tmp_path / "src" / VICTIM)) as stream:
            while piece := stream.read(1000):
                got += piece
        assert FILES[VICTIM].startswith(bytes(got))
        assert len(got) < len(FILES[VICTIM])


def test_chunk_relabelled_in_the_index_is_caught_by_the_keyed_hash(
        repo: Repository, repo_dir: Path, cache: Path, snap: dtstore.Snapshot, tmp_path: Path) -> None:
    """Even if the index pointed a chunk ID at another (authentic) blob, the bytes are not accepted."""
    from dtstore.content.pack import BlobLocation, open_blob, pack_key

    victim = _victim_chunk(repo, snap, tmp_path)
    pack, offset, length = _where(repo, repo_dir, victim)
    data = pack.read_bytes()
    key = pack_key(repo.master.sealer(), data[:HEADER_SIZE], pack.name)
    # A blob sealed under `victim`'s ID but holding other plaintext cannot exist without the key, so
    # check the other half of the guarantee: good ciphertext, wrong expected length → rejected.
    with pytest.raises(IntegrityError):
        open_blob(key, data[offset : offset + length], victim, 123, pack.name, repo._hasher)
    assert isinstance(BlobLocation(pack.name, 0, offset, length, 0), BlobLocation)


def test_truncated_pack_fails_restore(repo: Repository, repo_dir: Path, cache: Path, snap: dtstore.Snapshot,
                                      tmp_path: Path) -> None:
    pack, offset, _ = _where(repo, repo_dir, _victim_chunk(repo, snap, tmp_path))
    with open(pack, "r+b") as f:
        f.truncate(offset + 10)
    target = tmp_path / "target"
    with _reopen(repo, repo_dir, cache) as repo2, pytest.raises(DtstoreError) as caught:
        repo2.restore(repo2.get_snapshot(snap.id), target)
    assert pack.name in str(caught.value)
    _assert_nothing_wrong_written(target, FILES, {VICTIM})


def test_missing_pack_fails_restore(repo: Repository, repo_dir: Path, cache: Path, snap: dtstore.Snapshot,
                                    tmp_path: Path) -> None:
    pack, _, _ = _where(repo, repo_dir, _victim_chunk(repo, snap, tmp_path))
    pack.unlink()
    target = tmp_path / "target"
    with _reopen(repo, repo_dir, cache) as repo2, pytest.raises(DtstoreError) as caught:
        repo2.restore(repo2.get_snapshot(snap.id), target)
    assert pack.name in str(caught.value)
    _assert_nothing_wrong_written(target, FILES, {VICTIM})


def test_corruption_early_in_a_pack_does_not_leave_later_files_unwritten(tmp_path: Path) -> None:
    """One pack, read in several ranges (an include leaves a gap): when the first range fails, files
    whose data sits in the later ranges must not be left behind as zero-filled placeholders."""
    files = {name: random_bytes(300_000, seed=n) for n, name in enumerate(["a", "b", "c"])}
    src = _make_source(tmp_path / "src", files)
    repo_dir = tmp_path / "bigpack-repo"
    with init_repo(str(repo_dir), tmp_path / "cache", chunker=ChunkerParams(4096, 16384, 65536),
                   pack_size=8 << 20) as repo:
        snap = repo.snapshot([FilesSource([str(src)])])
        first = repo.find_item(snap, str(src / "a")).chunks[0]
        pack, offset, _ = _where(repo, repo_dir, first)
        assert len(repo_objects(repo_dir, "data")) == 1
        flip_byte(pack, offset + 40)
        target = tmp_path / "target"
        with pytest.raises(IntegrityError):
            repo.restore(snap, target, include=[str(src / "a"), str(src / "c")])
        _assert_nothing_wrong_written(target, files, {"a"})


def test_flipped_byte_in_a_meta_pack_fails_listing(repo: Repository, repo_dir: Path, cache: Path,
                                                   snap: dtstore.Snapshot, tmp_path: Path) -> None:
    (meta_pack,) = repo_objects(repo_dir, "meta")
    flip_byte(meta_pack, HEADER_SIZE + 40)
    target = tmp_path / "target"
    with _reopen(repo, repo_dir, cache) as repo2:
        snap2 = repo2.get_snapshot(snap.id)
        with pytest.raises(IntegrityError, match=meta_pack.name):
            list(repo2.list_items(snap2))
        with pytest.raises(IntegrityError):
            repo2.restore(snap2, target)
    assert _files_written(target) == {} if target.exists() else True


def test_flipped_byte_in_a_snapshot_manifest_is_a_clear_error(repo: Repository, repo_dir: Path, cache: Path,
                                                              snap: dtstore.Snapshot, tmp_path: Path) -> None:
    other_src = tmp_path / "other"
    other_src.mkdir()
    (other_src / "f").write_bytes(b"fine")
    good = repo.snapshot([FilesSource([str(other_src)])])
    manifest = repo_dir / "snapshots" / snap.id
    flip_byte(manifest, manifest.stat().st_size // 2)
    repo.close()
    with Repository.open(str(repo_dir), PASSWORD, cache_dir=tmp_path / "cold-cache") as repo2:
        with pytest.raises(IntegrityError, match=f"snapshot {snap.id[:8]}.*(corrupt|tampered)"):
            repo2.get_snapshot(snap.id)
        with pytest.raises(IntegrityError, match=snap.id[:8]):
            repo2.get_snapshot(snap.id[:10])
        # the damaged manifest does not hide the good one, and check names it
        assert [s.id for s in repo2.snapshots()] == [good.id]
        assert repo2.get_snapshot("latest").id == good.id
        report = repo2.check()
        assert not report.ok
        assert any(snap.id in p.where and snap.id in p.snapshots for p in report.problems)


def test_a_verified_local_copy_of_a_manifest_serves_reads_but_check_judges_the_remote(
        repo: Repository, repo_dir: Path, cache: Path, snap: dtstore.Snapshot, tmp_path: Path) -> None:
    assert [s.id for s in repo.snapshots()] == [snap.id]  # now in the local cache
    local = next(cache.rglob(f"manifests/snapshots/{snap.id}"))
    manifest = repo_dir / "snapshots" / snap.id
    flip_byte(manifest, manifest.stat().st_size // 2)
    with _reopen(repo, repo_dir, cache) as repo2:
        assert repo2.get_snapshot(snap.id).id == snap.id
        repo2.restore(snap, tmp_path / "out")
        report = repo2.check()
        assert not report.ok
        assert any(snap.id in p.where for p in report.problems)
    # a damaged local copy is never believed: it no longer hashes to its name
    manifest.write_bytes(local.read_bytes())  # repair the remote from the good copy
    flip_byte(local, local.stat().st_size // 2)
    with Repository.open(str(repo_dir), PASSWORD, cache_dir=cache) as repo3:
        assert repo3.get_snapshot(snap.id).id == snap.id
        assert repo3.check().ok
        assert local.read_bytes() == manifest.read_bytes()  # fetched again and kept


class _CountingLocalStore(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.names: list[str] = []

    def get(self, name: str) -> bytes:
        self.names.append(name)
        return super().get(name)

    def gets(self, prefix: str) -> int:
        return sum(name.startswith(prefix) for name in self.names)


def test_a_snapshot_run_downloads_only_manifests_it_has_not_seen(repo: Repository, repo_dir: Path, cache: Path,
                                                                  snap: dtstore.Snapshot, tmp_path: Path) -> None:
    src = tmp_path / "more"
    src.mkdir()
    for n in range(3):
        (src / "f").write_bytes(b"version %d" % n)
        repo.snapshot([FilesSource([str(src)])])
    repo.close()
    store = _CountingLocalStore(repo_dir)
    with Repository.open(store, PASSWORD, cache_dir=cache) as repo2:
        assert len(repo2.snapshots()) == 4
        assert store.gets("snapshots/") == 0
    forgotten = snap.id
    with Repository.open(str(repo_dir), PASSWORD, cache_dir=tmp_path / "other-cache") as other:
        other.forget([forgotten])
    with Repository.open(store, PASSWORD, cache_dir=cache) as repo3:
        assert forgotten not in {s.id for s in repo3.snapshots()}
    assert not list(cache.rglob(f"manifests/snapshots/{forgotten}"))  # its local copy went with it


def test_flipped_byte_in_an_index_segment_is_a_clear_error(repo: Repository, repo_dir: Path,
                                                           snap: dtstore.Snapshot, tmp_path: Path) -> None:
    segments = repo_objects(repo_dir, "index")
    assert segments
    for segment in segments:
        flip_byte(segment, segment.stat().st_size // 2)
    target = tmp_path / "target"
    repo.close()
    with Repository.open(str(repo_dir), PASSWORD, cache_dir=tmp_path / "fresh-cache") as repo2:
        with pytest.raises(IntegrityError, match="index segment index/"):
            repo2.restore(repo2.get_snapshot(snap.id), target)
        with pytest.raises(IntegrityError, match="index segment"):
            repo2.snapshot([FilesSource([str(tmp_path / "src")])])
    assert len(repo_objects(repo_dir, "snapshots")) == 1


def test_flipped_byte_in_the_config_is_a_clear_error(repo: Repository, repo_dir: Path, cache: Path) -> None:
    flip_byte(repo_dir / "config", 40)
    with pytest.raises(IntegrityError, match="config"):
        _reopen(repo, repo_dir, cache)


def test_repository_with_a_corrupt_pack_still_takes_snapshots_of_new_data(
        repo: Repository, repo_dir: Path, cache: Path, snap: dtstore.Snapshot, tmp_path: Path) -> None:
    """Corruption is reported on read; it does not make the repository unusable for new backups."""
    pack, offset, _ = _where(repo, repo_dir, _victim_chunk(repo, snap, tmp_path))
    flip_byte(pack, offset + 20)
    other = tmp_path / "other"
    other.mkdir()
    (other / "new").write_bytes(os.urandom(10_000))
    with _reopen(repo, repo_dir, cache) as repo2:
        snap2 = repo2.snapshot([FilesSource([str(other)])])
        with repo2.open_item(snap2, str(other / "new")) as stream:
            assert stream.read() == (other / "new").read_bytes()


def test_small_repo_params_spread_data_over_several_packs(repo: Repository, repo_dir: Path,
                                                          snap: dtstore.Snapshot) -> None:
    """Guard for the tests above: they rely on several data packs and one meta pack."""
    assert len(repo_objects(repo_dir, "data")) >= 3
    assert len(repo_objects(repo_dir, "meta")) == 1
    assert sum(len(d) for d in FILES.values()) > SMALL_PACK
    assert SMALL_CHUNKER_ARGS[2] < len(FILES[VICTIM])


def test_an_item_list_is_read_with_its_pack_header_in_one_range_read(
        repo: Repository, repo_dir: Path, cache: Path, snap: dtstore.Snapshot,
        monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[tuple[str, int, int]] = []
    real = LocalStore.get_range

    def counted(self: LocalStore, name: str, offset: int, length: int) -> bytes:
        reads.append((name, offset, length))
        return real(self, name, offset, length)

    with _reopen(repo, repo_dir, cache) as repo2:
        snap2 = repo2.get_snapshot(snap.id)
        monkeypatch.setattr(LocalStore, "get_range", counted)
        items = list(repo2.list_items(snap2))
    assert len(items) == len(FILES) + 1  # the files and their directory
    assert [(name.split("/")[0], offset) for name, offset, _ in reads] == [("meta", 0)]


def test_a_damaged_pack_header_read_with_its_first_blob_is_a_clear_error(
        repo: Repository, repo_dir: Path, cache: Path, snap: dtstore.Snapshot) -> None:
    (meta_pack,) = repo_objects(repo_dir, "meta")
    flip_byte(meta_pack, 2)
    with _reopen(repo, repo_dir, cache) as repo2:
        snap2 = repo2.get_snapshot(snap.id)
        with pytest.raises(IntegrityError, match="does not start with the dtstore pack magic"):
            list(repo2.list_items(snap2))
