"""Snapshot → restore through the library: contents and metadata, includes, streaming, dedup, the file
cache, unreadable sources, a lost local cache, keyed chunk IDs and no plaintext in the repository."""

from __future__ import annotations

import builtins
import io
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

import dtstore
import dtstore.sources.files as files_module
from dtstore import FilesSource, Repository
from dtstore.chunking import ChunkerParams
from dtstore.errors import ItemNotFound, SourceError, UsageError
from dtstore.progress import ProgressEvent
from dtstore.sources.stream import CommandSource, StdinSource
from tests.helpers import (
    NON_UTF8_NAME,
    PASSWORD,
    SMALL_CHUNKER_ARGS,
    SMALL_PACK,
    UNICODE_NAME,
    init_repo,
    make_sample_tree,
    random_bytes,
    repo_objects,
    restored,
    tree_state,
)


def snap_of(repo: Repository, *paths: Path, **kwargs: Any) -> dtstore.Snapshot:
    return repo.snapshot([FilesSource([str(p) for p in paths])], **kwargs)


def item_of(repo: Repository, snap: dtstore.Snapshot, path: Path | bytes) -> dtstore.Item:
    return repo.find_item(snap, os.fsencode(path))


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Records every file the files source opens for reading."""
    calls: list[bytes] = []

    def recording_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(os.fsencode(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(files_module, "open", recording_open, raising=False)
    return calls


# restore equals source -----------------------------------------------------------------------

def test_restore_equals_source_byte_for_byte_with_metadata(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_sample_tree(src)
    as_root = os.geteuid() == 0  # ownership can only be given away (and restored) by root
    if as_root:
        os.chown(os.path.join(os.fsencode(src), b"sub/other.txt"), 1234, 5678)
        os.lchown(os.path.join(os.fsencode(src), b"link"), 4321, 8765)
    expected = tree_state(src)
    top = os.lstat(src)

    snap = snap_of(repo, src)
    assert snap.summary["files"] == 9
    assert snap.summary["symlinks"] == 4
    assert snap.summary["warnings"] == []
    target = tmp_path / "target"
    repo.restore(snap, target)

    out = restored(target, src)
    assert tree_state(out) == expected
    # the details a dict comparison could hide
    assert (out / "empty").stat().st_size == 0
    assert stat.S_IMODE((out / "empty").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "script.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "sub").stat().st_mode) == 0o750
    assert os.readlink(out / "dangling") == "does/not/exist"
    assert os.readlink(os.path.join(os.fsencode(out), b"odd-link")) == b"\xfe\xff-target"
    assert os.path.isfile(os.path.join(os.fsencode(out), NON_UTF8_NAME))
    assert (out / UNICODE_NAME).read_bytes() == (src / UNICODE_NAME).read_bytes()
    assert (out / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    st = os.lstat(out)
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (stat.S_IMODE(top.st_mode), top.st_mtime_ns)
    # ownership: as root, restore can and must set it
    owners = {name: os.lstat(os.path.join(os.fsencode(out), name))
              for name in (b"sub/other.txt", b"link", b"small.txt")}
    expected_owners = {b"sub/other.txt": (1234, 5678), b"link": (4321, 8765)} if as_root else {}
    for name, st in owners.items():
        want = os.lstat(os.path.join(os.fsencode(src), name))
        assert (st.st_uid, st.st_gid) == expected_owners.get(name, (want.st_uid, want.st_gid))


def test_items_carry_paths_types_and_sizes(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_sample_tree(src)
    snap = snap_of(repo, src)
    items = {i.path: i for i in repo.list_items(snap)}
    base = os.fsencode(src).lstrip(b"/")
    assert len(items) == snap.items_count
    assert items[base].type == "dir"
    assert items[base + b"/" + NON_UTF8_NAME].type == "file"
    assert items[base + b"/" + os.fsencode(UNICODE_NAME)].size == len((src / UNICODE_NAME).read_bytes())
    assert items[base + b"/empty"].chunks == []
    assert items[base + b"/link"].type == "symlink"
    assert items[base + b"/link"].target == b"small.txt"
    assert items[base + b"/big.bin"].size == 150_000
    assert snap.paths == [str(src)]
    assert snap.source_kind == "files"


def test_restore_with_include_paths(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_sample_tree(src)
    full = tree_state(src)
    snap = snap_of(repo, src)
    target = tmp_path / "target"
    repo.restore(snap, target, include=[str(src / "sub"), str(src / UNICODE_NAME),
                                        os.path.join(os.fsencode(src), NON_UTF8_NAME)])
    got = tree_state(restored(target, src))
    wanted = {k for k in full if k == "sub" or k.startswith("sub/")}
    wanted |= {UNICODE_NAME, os.fsdecode(NON_UTF8_NAME)}
    assert set(got) == wanted
    for key in wanted:
        assert got[key] == full[key]


def test_restore_include_matching_nothing_is_a_usage_error(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_sample_tree(src)
    snap = snap_of(repo, src)
    with pytest.raises(UsageError, match="nothing in the snapshot matches"):
        repo.restore(snap, tmp_path / "target", include=[str(src / "no-such-thing")])
    # a prefix of a name is not a match
    with pytest.raises(UsageError):
        repo.restore(snap, tmp_path / "target", include=[str(src / "su")])


def test_open_item_streams_a_multi_chunk_file(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = random_bytes(300_000, seed=7) + b"tail" * 10_000
    (src / "big").write_bytes(data)
    snap = snap_of(repo, src)
    item = item_of(repo, snap, src / "big")
    assert len(item.chunks) > 10
    with repo.open_item(snap, str(src / "big")) as stream:
        pieces = []
        while True:
            piece = stream.read(7777)
            if not piece:
                break
            pieces.append(piece)
    assert b"".join(pieces) == data
    with repo.open_item(snap, os.fsencode(src / "big")) as stream:
        assert stream.read() == data
    with pytest.raises(UsageError):
        repo.open_item(snap, str(src))
    with pytest.raises(ItemNotFound):
        repo.open_item(snap, str(src / "missing"))


def test_restore_into_a_non_empty_target_replaces_what_is_there(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_sample_tree(src)
    snap = snap_of(repo, src)
    target = tmp_path / "target"
    out = restored(target, src)
    out.mkdir(parents=True)
    (out / "big.bin").write_bytes(b"stale and longer than nothing" * 10_000)
    os.symlink("elsewhere", out / "small.txt")
    (out / "empty").write_bytes(b"not empty")
    repo.restore(snap, target)
    assert tree_state(out) == tree_state(src)


# stdin and command sources -------------------------------------------------------------------

def test_stream_sources_round_trip(repo: Repository) -> None:
    data = random_bytes(70_000, seed=3)
    snap = repo.snapshot([StdinSource("dumps/db.sql", stream=io.BytesIO(data))])
    assert snap.source_kind == "stdin"
    assert [i.path for i in repo.list_items(snap)] == [b"dumps/db.sql"]
    with repo.open_item(snap, "dumps/db.sql") as stream:
        assert stream.read() == data

    snap = repo.snapshot([CommandSource("printf 'a%.0s' $(seq 1 5000)", "out.txt")])
    assert snap.source_metadata["exit_status"] == 0
    with repo.open_item(snap, "out.txt") as stream:
        assert stream.read() == b"a" * 5000


def test_failing_command_makes_no_snapshot(repo: Repository) -> None:
    repo.snapshot([StdinSource("x", stream=io.BytesIO(b"first"))])
    with pytest.raises(SourceError, match="status 3"):
        repo.snapshot([CommandSource("head -c 100000 /dev/urandom; exit 3", "dump.sql")])
    assert len(repo.snapshots()) == 1


# dedup and the file-metadata cache -----------------------------------------------------------

def test_unchanged_data_is_neither_read_nor_stored_again(repo: Repository, repo_dir: Path, tmp_path: Path,
                                                         opened: list[bytes]) -> None:
    src = tmp_path / "src"
    make_sample_tree(src)
    first = snap_of(repo, src)
    assert first.summary["bytes_read"] > 150_000
    assert len(opened) == first.summary["files"]
    packs_before = repo_objects(repo_dir, "data")
    opened.clear()

    second = snap_of(repo, src)
    s = second.summary
    assert opened == []
    assert s["bytes_read"] == 0
    assert s["files_unchanged"] == s["files"] == first.summary["files"]
    assert s["bytes_total"] == first.summary["bytes_total"]
    assert s["chunks_new"] == 0
    assert s["bytes_stored"] < 1024
    assert repo_objects(repo_dir, "data") == packs_before
    assert second.parent == first.id
    assert [x.id for x in repo.snapshots()] == [first.id, second.id]
    target = tmp_path / "target"
    repo.restore(second, target)
    assert tree_state(restored(target, src)) == tree_state(src)


def test_modified_file_is_reread_and_only_new_chunks_are_stored(repo: Repository, tmp_path: Path,
                                                                 opened: list[bytes]) -> None:
    src = tmp_path / "src"
    make_sample_tree(src)
    first = snap_of(repo, src)
    old_chunks = item_of(repo, first, src / "big.bin").chunks
    big = bytearray((src / "big.bin").read_bytes())
    big[70_000:70_100] = b"X" * 100
    (src / "big.bin").write_bytes(bytes(big))
    opened.clear()

    second = snap_of(repo, src)
    s = second.summary
    assert opened == [os.fsencode(src / "big.bin")]
    assert s["bytes_read"] == len(big)
    assert s["files_unchanged"] == s["files"] - 1
    new_chunks = item_of(repo, second, src / "big.bin").chunks
    fresh = set(new_chunks) - set(old_chunks)
    assert 1 <= len(fresh) <= 4
    assert len(set(new_chunks) & set(old_chunks)) >= len(old_chunks) - 4
    assert s["chunks_new"] <= len(fresh) + 2  # + the re-written item list
    assert s["bytes_new"] < len(big) // 2
    target = tmp_path / "target"
    repo.restore(second, target)
    assert tree_state(restored(target, src)) == tree_state(src)


def test_same_size_rewrite_with_restored_mtime_is_still_reread(repo: Repository, tmp_path: Path,
                                                                opened: list[bytes]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    path = src / "f"
    path.write_bytes(b"A" * 10_000)
    before = path.stat()
    snap_of(repo, src)
    path.write_bytes(b"B" * 10_000)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    opened.clear()
    second = snap_of(repo, src)
    assert opened == [os.fsencode(path)]
    with repo.open_item(second, str(path)) as stream:
        assert stream.read() == b"B" * 10_000


def test_identical_content_under_other_names_is_stored_once(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = random_bytes(100_000, seed=11)
    (src / "a").write_bytes(data)
    (src / "b").write_bytes(data)
    snap = snap_of(repo, src)
    s = snap.summary
    assert s["bytes_read"] == 200_000
    assert s["bytes_new"] < 110_000
    assert s["chunks_reused"] >= s["chunks_new"] - 3
    assert item_of(repo, snap, src / "a").chunks == item_of(repo, snap, src / "b").chunks


# unreadable sources --------------------------------------------------------------------------

def test_unreadable_file_is_reported_and_snapshot_commits(repo: Repository, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    make_sample_tree(src)
    denied = os.fsencode(src / "sub" / "other.txt")

    def guarded_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fsencode(path) == denied:
            raise PermissionError(13, "Permission denied", path)
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(files_module, "open", guarded_open, raising=False)
    snap = snap_of(repo, src)
    warnings = snap.summary["warnings"]
    assert len(warnings) == 1
    assert warnings[0]["path"] == os.fsdecode(denied).lstrip("/")
    assert "Permission denied" in warnings[0]["message"]
    assert snap.summary["files"] == 8
    assert snap.id in [s.id for s in repo.snapshots()]
    paths = {i.path for i in repo.list_items(snap)}
    assert denied.lstrip(b"/") not in paths
    assert os.fsencode(src / "big.bin").lstrip(b"/") in paths
    target = tmp_path / "target"
    repo.restore(snap, target)
    expected = {k: v for k, v in tree_state(src).items() if k != "sub/other.txt"}
    got = tree_state(restored(target, src))
    assert got.keys() == expected.keys()
    assert got["big.bin"] == expected["big.bin"]


def test_read_error_half_way_skips_the_file(repo: Repository, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "bad").write_bytes(random_bytes(100_000, seed=5))
    (src / "good").write_bytes(b"good\n")
    bad = os.fsencode(src / "bad")

    class FailingReader(io.RawIOBase):
        def __init__(self) -> None:
            self._left = 40_000

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            if self._left <= 0:
                raise OSError(5, "Input/output error")
            n = min(len(buffer), self._left)
            buffer[:n] = b"\x00" * n
            self._left -= n
            return n

    def flaky_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        return FailingReader() if os.fsencode(path) == bad else builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(files_module, "open", flaky_open, raising=False)
    snap = snap_of(repo, src)
    assert [w["path"] for w in snap.summary["warnings"]] == [os.fsdecode(bad).lstrip("/")]
    assert "Input/output error" in snap.summary["warnings"][0]["message"]
    paths = {i.path for i in repo.list_items(snap)}
    assert bad.lstrip(b"/") not in paths
    with repo.open_item(snap, str(src / "good")) as stream:
        assert stream.read() == b"good\n"


def test_file_vanishing_during_the_snapshot_is_reported(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a-big").write_bytes(random_bytes(100_000, seed=6))
    (src / "b-gone").write_bytes(b"here when the snapshot starts")
    (src / "c-kept").write_bytes(b"kept")

    def progress(event: ProgressEvent) -> None:
        if (src / "b-gone").exists():
            (src / "b-gone").unlink()

    snap = repo.snapshot([FilesSource([str(src)])], progress=progress)
    assert [w["path"] for w in snap.summary["warnings"]] == [str(src / "b-gone").lstrip("/")]
    names = {os.path.basename(i.path) for i in repo.list_items(snap)}
    assert names == {b"src", b"a-big", b"c-kept"}


def test_special_files_are_reported_and_skipped(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "fifo")
    (src / "f").write_bytes(b"x")
    snap = snap_of(repo, src)
    assert [w["path"] for w in snap.summary["warnings"]] == [str(src / "fifo").lstrip("/")]
    assert {os.path.basename(i.path) for i in repo.list_items(snap)} == {b"src", b"f"}


def test_unreadable_file_with_non_utf8_name_is_reported(repo: Repository, tmp_path: Path) -> None:
    """A warning about a file whose name is not UTF-8 must not break the snapshot."""
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(os.path.join(os.fsencode(src), b"fifo-\xff"))
    (src / "f").write_bytes(b"x")
    snap = snap_of(repo, src)
    assert len(snap.summary["warnings"]) == 1
    assert repo.snapshots()[-1].summary["warnings"] == snap.summary["warnings"]


def test_non_utf8_top_level_path_can_be_backed_up(repo: Repository, tmp_path: Path) -> None:
    src = os.path.join(os.fsencode(tmp_path), b"top-\xe9\xff")
    os.mkdir(src)
    with open(os.path.join(src, b"f"), "wb") as f:
        f.write(b"content")
    snap = repo.snapshot([FilesSource([os.fsdecode(src)])])
    target = tmp_path / "target"
    repo.restore(snap, target)
    with open(os.path.join(os.fsencode(target), src.lstrip(b"/"), b"f"), "rb") as f:
        assert f.read() == b"content"


# the local cache -----------------------------------------------------------------------------

def test_deleted_cache_is_rebuilt_from_the_remote_index(repo_dir: Path, cache: Path, tmp_path: Path,
                                                         opened: list[bytes]) -> None:
    src = tmp_path / "src"
    make_sample_tree(src)
    with init_repo(str(repo_dir), cache, chunker=ChunkerParams(*SMALL_CHUNKER_ARGS),
                   pack_size=SMALL_PACK) as repo:
        first = snap_of(repo, src)
    shutil.rmtree(cache)

    with Repository.open(str(repo_dir), PASSWORD, cache_dir=cache) as repo:
        target = tmp_path / "target"
        repo.restore(repo.get_snapshot(first.id), target)
        assert tree_state(restored(target, src)) == tree_state(src)
    shutil.rmtree(cache)

    opened.clear()
    with Repository.open(str(repo_dir), PASSWORD, cache_dir=tmp_path / "other-cache") as repo:
        second = snap_of(repo, src)
    # the file cache is gone, so files are read again, but every chunk is known from the index
    assert len(opened) == second.summary["files"]
    assert second.summary["chunks_new"] == 0
    assert second.summary["bytes_stored"] < 1024


def test_two_handles_on_one_repository_in_one_process(repo: Repository, repo_dir: Path, cache: Path,
                                                     tmp_path: Path) -> None:
    """E.g. a scheduler or a connector holding the repository open while another part of the same
    program opens it too: both handles share the local cache directory."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    first = snap_of(repo, src)
    with Repository.open(str(repo_dir), PASSWORD, cache_dir=cache) as other:
        assert [s.id for s in other.snapshots()] == [first.id]
        with other.open_item(other.get_snapshot(first.id), str(src / "f")) as stream:
            assert stream.read() == b"data"


# keyed chunk IDs and encryption --------------------------------------------------------------

def test_two_repositories_name_the_same_data_differently(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "small").write_bytes(b"same small file\n" * 20)
    (src / "big").write_bytes(random_bytes(100_000, seed=9))
    chunks = []
    for n in (1, 2):
        with init_repo(str(tmp_path / f"repo{n}"), tmp_path / f"cache{n}",
                       chunker=ChunkerParams(*SMALL_CHUNKER_ARGS), pack_size=SMALL_PACK) as repo:
            snap = snap_of(repo, src)
            small = item_of(repo, snap, src / "small").chunks
            big = item_of(repo, snap, src / "big").chunks
            assert len(small) == 1
            chunks.append((set(small), set(big)))
    assert not chunks[0][0] & chunks[1][0]
    assert not chunks[0][1] & chunks[1][1]


def test_repository_holds_no_plaintext(repo: Repository, repo_dir: Path, tmp_path: Path) -> None:
    marker = b"PLAINTEXT-MARKER-q7Zx93"
    dir_name = "secret-directory-k2Jw"
    file_name = "secret-file-name-p4Lm.txt"
    link_target = "secret-link-target-h8Vb"
    tag = "secret-tag-w3Rt"
    host = "secret-host-n5Qy"
    src = tmp_path / "src" / dir_name
    src.mkdir(parents=True)
    (src / file_name).write_bytes(marker * 2000)  # compressible: stored zstd-compressed
    noise = random_bytes(50_000, seed=4)
    (src / "incompressible").write_bytes(noise[:25_000] + marker + noise[25_000:])  # stored raw
    os.symlink(link_target, src / "link")
    repo.snapshot([FilesSource([str(src)])], tags=[tag], host=host)
    repo.snapshot([StdinSource(file_name, stream=io.BytesIO(marker))], tags=[tag], host=host)

    needles = [marker, dir_name.encode(), file_name.encode(), link_target.encode(), tag.encode(),
               host.encode(), noise[10_000:10_032]]
    objects = [p for p in repo_dir.rglob("*") if p.is_file()]
    assert len(objects) >= 6
    for path in objects:
        data = path.read_bytes()
        name = str(path.relative_to(repo_dir))
        for needle in needles:
            assert needle not in data, f"{needle!r} in {name}"
            assert needle.decode("latin-1") not in name


def test_snapshot_metadata_is_recorded(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    snap = snap_of(repo, src, tags=["nightly", "db"], host="backup-host")
    loaded = repo.get_snapshot(snap.id[:10])
    assert loaded.tags == ["nightly", "db"]
    assert loaded.host == "backup-host"
    assert loaded.time.utcoffset() is not None and loaded.time.utcoffset().total_seconds() == 0
    assert loaded.program_version.startswith("dtstore ")
    assert repo.get_snapshot("latest").id == snap.id


def test_progress_events_are_reported(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(random_bytes(100_000, seed=8))
    events: list[ProgressEvent] = []
    snap = repo.snapshot([FilesSource([str(src)])], progress=events.append)
    assert events and all(e.phase == "backup" for e in events)
    assert events[-1].bytes_done == 100_000
    events.clear()
    repo.restore(snap, tmp_path / "target", progress=events.append)
    assert events and events[-1].phase == "restore"
    assert events[-1].bytes_done == events[-1].bytes_total == 100_000
