"""Restore's writes: one thread per file at a time, bounded decoded bytes waiting, write errors surface."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

import dtstore.restore
from dtstore import FilesSource, Repository
from tests.helpers import random_bytes


def _two_files(repo: Repository, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    src = tmp_path / "src"
    src.mkdir()
    contents = {"big": random_bytes(600_000, seed=1), "other": random_bytes(300_000, seed=2),
                "copy": random_bytes(600_000, seed=1)}
    for name, data in contents.items():
        (src / name).write_bytes(data)
    repo.snapshot([FilesSource([str(src)])])
    return src, contents


def test_no_two_threads_write_one_file_at_once(repo: Repository, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    src, contents = _two_files(repo, tmp_path)
    real_pwrite = os.pwrite
    lock = threading.Lock()
    busy: dict[int, int] = {}
    overlaps: list[int] = []

    def pwrite(fd: int, data: object, offset: int) -> int:
        inode = os.fstat(fd).st_ino
        with lock:
            busy[inode] = busy.get(inode, 0) + 1
            if busy[inode] > 1:
                overlaps.append(inode)
        try:
            time.sleep(0.0005)  # widen the window a second writer would need
            return real_pwrite(fd, data, offset)  # type: ignore[arg-type]
        finally:
            with lock:
                busy[inode] -= 1

    monkeypatch.setattr(dtstore.restore.os, "pwrite", pwrite)
    target = tmp_path / "target"
    repo.restore(repo.get_snapshot("latest"), target)
    assert not overlaps
    for name, data in contents.items():
        assert (target / str(src).lstrip("/") / name).read_bytes() == data


def test_decoded_bytes_waiting_are_bounded(repo: Repository, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    src, contents = _two_files(repo, tmp_path)
    monkeypatch.setattr(dtstore.restore, "WRITE_BUDGET", 20_000)
    real_write = dtstore.restore._Writes._write
    peak = [0]

    def write(self: dtstore.restore._Writes, fd: int, number: int, plain: bytes, offset: int) -> None:
        peak[0] = max(peak[0], self._waiting)
        time.sleep(0.001)  # a slow disk: blobs pile up behind the writer
        real_write(self, fd, number, plain, offset)

    monkeypatch.setattr(dtstore.restore._Writes, "_write", write)
    target = tmp_path / "target"
    repo.restore(repo.get_snapshot("latest"), target)
    assert peak[0] <= 20_000 + 16384  # the budget, or one blob alone (the chunker's maximum)
    for name, data in contents.items():
        assert (target / str(src).lstrip("/") / name).read_bytes() == data


def test_a_failing_write_ends_the_restore_with_that_error(repo: Repository, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _two_files(repo, tmp_path)

    def pwrite(fd: int, data: object, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dtstore.restore.os, "pwrite", pwrite)
    with pytest.raises(OSError) as failed:
        repo.restore(repo.get_snapshot("latest"), tmp_path / "target")
    assert failed.value.errno == errno.ENOSPC


def test_a_file_that_cannot_be_opened_ends_the_restore_with_that_error(repo: Repository, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _two_files(repo, tmp_path)
    real_open = os.open

    def open_(path: bytes, flags: int, *args: int) -> int:
        if flags == os.O_WRONLY:  # the writes' open, not the tree's creation
            raise OSError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(dtstore.restore.os, "open", open_)
    with pytest.raises(OSError) as failed:
        repo.restore(repo.get_snapshot("latest"), tmp_path / "target")
    assert failed.value.errno == errno.EACCES


def test_more_files_than_open_descriptors(repo: Repository, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dtstore.restore, "OPEN_FILES", 3)
    src = tmp_path / "src"
    src.mkdir()
    contents = {f"f{i:02d}": random_bytes(5_000 + i * 997, seed=i) for i in range(20)}
    for name, data in contents.items():
        (src / name).write_bytes(data)
    repo.snapshot([FilesSource([str(src)])])
    target = tmp_path / "target"
    repo.restore(repo.get_snapshot("latest"), target)
    for name, data in contents.items():
        assert (target / str(src).lstrip("/") / name).read_bytes() == data
