"""Restore's writes: one thread per file at a time, bounded decoded bytes waiting, write errors surface."""

from __future__ import annotations

import ctypes
import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import dtstore.restore
from dtstore import FilesSource, Repository
from dtstore.errors import TargetFull
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
    target = tmp_path / "target"
    with pytest.raises(TargetFull, match="while writing") as failed:
        repo.restore(repo.get_snapshot("latest"), target)
    assert failed.value.exit_code == 19
    assert [p for p in target.rglob("*") if p.is_file()] == []  # not left looking restored


def test_files_written_before_a_write_failure_stay_and_the_rest_go(repo: Repository, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    src, contents = _two_files(repo, tmp_path)
    real_pwrite = os.pwrite
    other = (src / "other").stat().st_size
    failing = [0]

    def pwrite(fd: int, data: object, offset: int) -> int:
        if os.fstat(fd).st_size != other:  # "other" is written; "big" and "copy" fail at once
            failing[0] += 1
            raise OSError(errno.EIO, "Input/output error")
        return real_pwrite(fd, data, offset)  # type: ignore[arg-type]

    monkeypatch.setattr(dtstore.restore.os, "pwrite", pwrite)
    target = tmp_path / "target"
    with pytest.raises(OSError) as failed:
        repo.restore(repo.get_snapshot("latest"), target)
    assert failed.value.errno == errno.EIO and failing[0]
    left = {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert set(left) <= {"other"}  # a file is there only if it is whole
    for name, data in left.items():
        assert data == contents[name]


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


def _failing_fallocate(code: int) -> Callable[[int, int, int, int], int]:
    """A stand-in for libc's fallocate that fails the way the kernel does: -1 and errno."""

    def fallocate(fd: int, mode: int, offset: int, length: int) -> int:
        ctypes.set_errno(code)
        return -1

    return fallocate


def test_files_get_their_blocks_before_anything_is_fetched(tmp_path: Path) -> None:
    if dtstore.restore._fallocate() is None:
        pytest.skip("fallocate(2) is Linux's")
    path = tmp_path / "reserved"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        dtstore.restore._reserve(fd, 4 << 20)
    finally:
        os.close(fd)
    info = path.stat()
    assert info.st_size == 4 << 20
    assert info.st_blocks * 512 >= 4 << 20  # allocated, not a hole waiting for the writes


def test_a_target_without_room_fails_before_fetching_and_keeps_no_files(
        repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _two_files(repo, tmp_path)
    reserved: list[int] = []
    real_reserve = dtstore.restore._reserve

    def reserve(fd: int, size: int) -> None:
        if reserved:  # the first file fits, the second does not
            raise OSError(errno.ENOSPC, "No space left on device")
        reserved.append(size)
        real_reserve(fd, size)

    fetched: list[str] = []
    monkeypatch.setattr(dtstore.restore, "_reserve", reserve)
    monkeypatch.setattr(dtstore.restore.RestoreRun, "_restore_pack", lambda self, pack_id: fetched.append(pack_id))
    target = tmp_path / "target"
    with pytest.raises(TargetFull) as failed:
        repo.restore(repo.get_snapshot("latest"), target)
    assert failed.value.exit_code == 19
    assert "nothing was fetched" in str(failed.value) and str(target) in str(failed.value)
    assert not fetched
    assert [p for p in target.rglob("*") if p.is_file()] == []


def test_no_room_from_the_kernel_is_target_full(repo: Repository, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _two_files(repo, tmp_path)
    monkeypatch.setattr(dtstore.restore, "_fallocate", lambda: _failing_fallocate(errno.EDQUOT))
    with pytest.raises(TargetFull, match="Disk quota exceeded"):
        repo.restore(repo.get_snapshot("latest"), tmp_path / "target")


def test_a_filesystem_that_cannot_reserve_gets_sparse_files(repo: Repository, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    src, contents = _two_files(repo, tmp_path)
    monkeypatch.setattr(dtstore.restore, "_fallocate", lambda: _failing_fallocate(errno.EOPNOTSUPP))
    target = tmp_path / "target"
    repo.restore(repo.get_snapshot("latest"), target)
    for name, data in contents.items():
        assert (target / str(src).lstrip("/") / name).read_bytes() == data


def test_another_reservation_error_is_raised_as_it_is(repo: Repository, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _two_files(repo, tmp_path)
    monkeypatch.setattr(dtstore.restore, "_fallocate", lambda: _failing_fallocate(errno.EIO))
    target = tmp_path / "target"
    with pytest.raises(OSError) as failed:
        repo.restore(repo.get_snapshot("latest"), target)
    assert failed.value.errno == errno.EIO and not isinstance(failed.value, TargetFull)
    assert [p for p in target.rglob("*") if p.is_file()] == []


def test_ctrl_c_while_writing_leaves_no_file_half_written(repo: Repository, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _, contents = _two_files(repo, tmp_path)
    real_pwrite = os.pwrite
    calls = [0]

    def pwrite(fd: int, data: object, offset: int) -> int:
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real_pwrite(fd, data, offset)  # type: ignore[arg-type]

    monkeypatch.setattr(dtstore.restore.os, "pwrite", pwrite)
    target = tmp_path / "target"
    with pytest.raises(KeyboardInterrupt):
        repo.restore(repo.get_snapshot("latest"), target)
    left = {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert len(left) < len(contents)
    for name, data in left.items():
        assert data == contents[name]  # a file is there only if it is whole


def test_no_room_for_a_directory_is_target_full_too(repo: Repository, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _two_files(repo, tmp_path)
    target = tmp_path / "target"
    target.mkdir()

    def mkdir(path: object, mode: int = 0o777) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dtstore.restore.os, "mkdir", mkdir)  # before any file is made
    with pytest.raises(TargetFull, match="nothing was fetched"):
        repo.restore(repo.get_snapshot("latest"), target)
