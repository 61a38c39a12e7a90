"""Test helpers: cheap-KDF repositories and tree comparison (no pytest fixtures here)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

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
