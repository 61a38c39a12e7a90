"""Restore helpers: stored items fetched to disk with checks, and N loads run at once."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtstore.connectors.base import RepositoryView
from dtstore.connectors.entries import BLOCK
from dtstore.connectors.stage import write_durably
from dtstore.errors import IntegrityError


@dataclass(frozen=True)
class StoredFile:
    """One item of one snapshot, with what its manifest metadata says of it."""

    snapshot: Any
    path: str
    size: int | None = None
    sha256: str | None = None


def fetch(repo: RepositoryView, item: StoredFile, dest: Path) -> Path:
    """Copy a stored item to ``dest`` (crash-safe) and check its size and hash against the metadata.

    The core has verified every chunk already; this catches a manifest whose metadata and items
    disagree (the wrong file under the right name), which would otherwise replay the wrong log.
    """
    digest = hashlib.sha256() if item.sha256 else None

    def blocks() -> Any:
        with contextlib.closing(repo.open_item(item.snapshot, item.path)) as src:
            while block := src.read(BLOCK):
                if digest is not None:
                    digest.update(block)
                yield block

    size = write_durably(dest, blocks())
    if item.size is not None and size != item.size:
        dest.unlink(missing_ok=True)
        raise IntegrityError(
            f"{item.path} from snapshot {item.snapshot.short_id} has {size} bytes, the manifest says {item.size}"
        )
    if digest is not None and digest.hexdigest() != item.sha256:
        dest.unlink(missing_ok=True)
        raise IntegrityError(f"{item.path} from snapshot {item.snapshot.short_id} does not match its recorded hash")
    return dest


def copy_to(repo: RepositoryView, snapshot: Any, path: str, dest: Any) -> None:
    """Stream a stored item into an open binary file."""
    with contextlib.closing(repo.open_item(snapshot, path)) as src:
        shutil.copyfileobj(src, dest, BLOCK)


def run_parallel(jobs: Sequence[Callable[[], object]], workers: int) -> None:
    """Run independent loads at once (at most ``workers``); every one runs to its end, then the first
    failure is raised, so no load is cut off half-way by another's error."""
    if not jobs:
        return
    with ThreadPoolExecutor(max(1, min(workers, len(jobs))), thread_name_prefix="dtstore-load") as pool:
        futures = [pool.submit(job) for job in jobs]
    for future in futures:
        future.result()


__all__ = ["StoredFile", "copy_to", "fetch", "run_parallel"]
