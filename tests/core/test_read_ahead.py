"""Reading the first file while the repository opens (issue 18 §3): the backup uses those bytes,
and a file that changed in between is read afresh, never stitched from two versions."""

from __future__ import annotations

import os
from pathlib import Path

import dtstore
from dtstore.sources.base import FileIdentity
from dtstore.sources.readahead import ReadAhead


def _restored(repo: dtstore.Repository, snap: dtstore.Snapshot, path: Path) -> bytes:
    with repo.open_item(snap, str(path)) as stream:
        return stream.read()


def _identity(path: Path) -> FileIdentity:
    st = os.stat(path)
    return FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def test_stream_is_the_head_then_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = os.urandom(300_000)
    path.write_bytes(data)
    ahead = ReadAhead(os.fsencode(path), limit=100_000)
    stream = ahead.take(_identity(path))
    assert stream is not None
    with stream:
        got = bytearray()
        buf = bytearray(70_000)  # reads that straddle the end of the head
        while n := stream.readinto(memoryview(buf)):
            got += buf[:n]
    assert bytes(got) == data


def test_backup_takes_the_bytes_read_ahead(repo: dtstore.Repository, tmp_path: Path,
                                           monkeypatch: object) -> None:
    path = tmp_path / "dump.sql"
    data = os.urandom(1 << 20)
    path.write_bytes(data)
    source = dtstore.FilesSource([str(path)])
    source.read_ahead(limit=256 << 10)
    opened: list[str] = []
    real_open = open

    def counting_open(file: object, *args: object, **kwargs: object) -> object:
        if os.fsdecode(file) == str(path):  # type: ignore[call-overload]
            opened.append("open")
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    import dtstore.sources.files as files_module
    monkeypatch.setattr(files_module, "open", counting_open, raising=False)  # type: ignore[attr-defined]
    snap = repo.snapshot([source])
    assert opened == []  # the read-ahead's own descriptor was used, the file not opened again
    assert _restored(repo, snap, path) == data


def test_file_changed_after_read_ahead_is_read_afresh(repo: dtstore.Repository, tmp_path: Path) -> None:
    path = tmp_path / "dump.sql"
    path.write_bytes(b"A" * (512 << 10))
    source = dtstore.FilesSource([str(path)])
    source.read_ahead(limit=128 << 10)
    replacement = tmp_path / "new"
    new_data = os.urandom(600 << 10)
    replacement.write_bytes(new_data)
    os.replace(replacement, path)  # a new inode under the same name, as a dump tool writes it
    snap = repo.snapshot([source])
    assert _restored(repo, snap, path) == new_data


def test_read_ahead_of_a_file_not_read_is_closed(repo: dtstore.Repository, tmp_path: Path) -> None:
    path = tmp_path / "same.sql"
    path.write_bytes(os.urandom(200 << 10))
    repo.snapshot([dtstore.FilesSource([str(path)])])
    source = dtstore.FilesSource([str(path)])
    source.read_ahead()
    ahead = source._ahead
    assert ahead is not None
    snap = repo.snapshot([source])  # unchanged: the files cache answers, nothing is read
    assert snap.summary["files_unchanged"] == 1
    assert source._ahead is None
    assert ahead.take(_identity(path)) is None  # discarded: its descriptor is closed


def test_directory_reads_ahead_its_first_file(repo: dtstore.Repository, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "first").write_bytes(b"1" * 5000)
    (tree / "b").write_bytes(b"2" * 7000)
    source = dtstore.FilesSource([str(tree)])
    source.read_ahead()
    assert source._ahead is not None and source._ahead.path == os.fsencode(tree / "a" / "first")
    snap = repo.snapshot([source])
    assert _restored(repo, snap, tree / "a" / "first") == b"1" * 5000
    assert _restored(repo, snap, tree / "b") == b"2" * 7000
