"""A connector's stage directory: a private folder per run, crash-safe files, removed at the end.

``spec/connectors.md`` §8 rule 4: a run stages in ``PARENT/dtstore-<kind>-<random>`` (mode 0700,
with an ``owner.pid`` file); before it starts, folders of runs whose process is dead (kill -9) are
removed; every file is written as ``NAME.partial``, fsynced and renamed into place; the folder goes
when the run ends, whether it succeeded or not.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from dtstore.errors import ConnectorError
from dtstore.processes import pid_alive

PREFIX = "dtstore-"
OWNER_FILE = "owner.pid"


def _owner_alive(run_dir: Path) -> bool:
    try:
        return pid_alive(int((run_dir / OWNER_FILE).read_text()))
    except (OSError, ValueError):
        return False


def sweep(parent: Path, kind: str) -> list[Path]:
    """Remove the stage folders of dead runs of ``kind`` under ``parent``; return them."""
    removed = []
    for old in parent.glob(f"{PREFIX}{kind}-*"):
        if old.is_dir() and not _owner_alive(old):
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed


def fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX; Windows has no directory handles to fsync)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, chunks: Iterable[bytes]) -> int:
    """Write ``path.partial``, fsync it, rename it to ``path``, fsync the folder; return the size."""
    partial_path = path.with_name(path.name + ".partial")
    size = 0
    with open(partial_path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
            size += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial_path, path)
    fsync_dir(path.parent)
    return size


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


class Stage:
    """``with Stage(parent, "mysql", need_bytes=n) as stage: stage.write("0.sql", chunks)``."""

    def __init__(self, parent: Path, kind: str, *, need_bytes: int | None = None) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        sweep(parent, kind)
        if need_bytes is not None:
            self.check_space(parent, need_bytes)
        self.path = parent / f"{PREFIX}{kind}-{uuid.uuid4().hex[:12]}"
        self.path.mkdir(mode=0o700)
        (self.path / OWNER_FILE).write_text(str(os.getpid()))

    @staticmethod
    def check_space(parent: Path, need_bytes: int) -> None:
        """Refuse to start a large dump that cannot fit (with a message that says how much is missing)."""
        free = free_bytes(parent)
        if need_bytes > free:
            raise ConnectorError(
                f"the stage folder {parent} has {free / 2**30:.1f} GiB free but this run needs about "
                f"{need_bytes / 2**30:.1f} GiB; free some space or choose another --stage folder"
            )

    def file(self, name: str) -> Path:
        return self.path / name

    def write(self, name: str, chunks: Iterable[bytes]) -> tuple[Path, int]:
        path = self.file(name)
        return path, write_durably(path, chunks)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["OWNER_FILE", "PREFIX", "Stage", "free_bytes", "fsync_dir", "sweep", "write_durably"]
