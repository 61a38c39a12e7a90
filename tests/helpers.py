"""Test helpers: cheap-KDF repositories and tree comparison (no pytest fixtures here)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import dtstore
from dtstore.crypto.keys import CHEAP_KDF
from dtstore.storage.base import BlobStore

PASSWORD = "correct horse battery staple"


def init_repo(url: str | BlobStore, cache: Path, **kwargs: object) -> dtstore.Repository:
    return dtstore.Repository.init(url, PASSWORD, kdf=CHEAP_KDF, cache_dir=cache, **kwargs)  # type: ignore[arg-type]


def tree_state(root: Path) -> dict[str, tuple[str, int, int, bytes]]:
    """path → (kind, mode, mtime_ns, content-or-target) for everything under root."""
    state: dict[str, tuple[str, int, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, os.fsencode(root)).decode("utf-8", "surrogateescape")
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                state[rel] = ("link", 0, st.st_mtime_ns, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                state[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns, b"")
            else:
                with open(full, "rb") as f:
                    state[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, f.read())
    return state


# --- shared by tests/core and tests/cli --------------------------------------------------------

SMALL_CHUNKER_ARGS = (1024, 4096, 16384)
"""min/avg/max for test repositories: a 100 kB file becomes a few dozen chunks."""

SMALL_PACK = 64 * 1024

UNICODE_NAME = "naïve café 日本語 ü.txt"
NON_UTF8_NAME = b"latin1-\xe9t\xe9-\xff.dat"


def random_bytes(size: int, seed: int = 0) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


def make_sample_tree(root: Path) -> dict[str, int]:
    """A tree with every kind of entry and metadata a restore must reproduce.

    Returns the mtime (ns) given to each relative path, dirs included."""
    root.mkdir(parents=True, exist_ok=True)
    rb = os.fsencode(root)
    files: dict[bytes, tuple[bytes, int]] = {
        b"small.txt": (b"hello, world\n" * 3, 0o644),
        b"empty": (b"", 0o600),
        b"script.sh": (b"#!/bin/sh\necho hi\n", 0o755),
        b"big.bin": (random_bytes(150_000, seed=1), 0o640),
        b"sub/nested/deeper/file.txt": (b"deep\n" * 1000, 0o444),
        b"sub/other.txt": (random_bytes(3000, seed=2), 0o600),
        os.fsencode(UNICODE_NAME): ("unicode ✓\n".encode(), 0o644),
        NON_UTF8_NAME: (b"bytes name\n", 0o644),
        b"dir-\xe9\xfe/inside": (b"inside a non-UTF-8 directory\n", 0o644),
    }
    for rel, (data, mode) in files.items():
        full = os.path.join(rb, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        os.chmod(full, mode)
    os.makedirs(os.path.join(rb, b"sub/emptydir"), exist_ok=True)
    os.symlink(b"small.txt", os.path.join(rb, b"link"))
    os.symlink(b"does/not/exist", os.path.join(rb, b"dangling"))
    os.symlink(b"sub", os.path.join(rb, b"dirlink"))
    os.symlink(b"\xfe\xff-target", os.path.join(rb, b"odd-link"))
    os.chmod(os.path.join(rb, b"sub/emptydir"), 0o700)
    os.chmod(os.path.join(rb, b"sub"), 0o750)
    # distinct mtimes with nanoseconds; directories last, deepest first
    mtimes: dict[str, int] = {}
    everything: list[bytes] = []
    for dirpath, dirnames, filenames in os.walk(rb):
        for name in dirnames + filenames:
            everything.append(os.path.join(dirpath, name))
    everything.sort(key=lambda p: (os.path.isdir(p) and not os.path.islink(p), -p.count(b"/")))
    for number, full in enumerate(everything):
        mtime = 1_500_000_000_000_000_000 + number * 1_000_000_007 + 123
        os.utime(full, ns=(mtime, mtime), follow_symlinks=False)
        rel = os.path.relpath(full, rb).decode("utf-8", "surrogateescape")
        mtimes[rel] = mtime
    return mtimes


def restored(target: Path, source: Path) -> Path:
    """Where a restore into ``target`` puts the tree backed up from absolute path ``source``."""
    return target / str(source.absolute()).lstrip("/")


def flip_byte(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def repo_objects(repo_dir: Path, prefix: str) -> list[Path]:
    """The stored objects of one kind (``data``, ``meta``, ``index``, ``snapshots`` …), sorted."""
    base = repo_dir / prefix
    return sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))


@contextmanager
def machine_time_zone(monkeypatch: pytest.MonkeyPatch, zone: str) -> Iterator[None]:
    """Run as if this machine's local time zone were ``zone`` (TZ + tzset), then put it back."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


def missing(reason: str) -> None:
    """A server or tool the test needs is not installed: a skip on a developer's machine, a failure in
    CI, where ``.ci/run`` installs everything (a skip there would hide a missing install step)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must install it: see .ci/run)")
    pytest.skip(reason)


def mapped_kib(path: Path) -> int:
    """Resident KiB of this process's mapping of ``path`` (/proc/self/smaps)."""
    current = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:
            current = len(fields) == 6 and fields[5] == str(path)
        elif current and fields[0] == "Rss:":
            return int(fields[1])
    return 0
