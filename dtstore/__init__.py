"""dtstore: deduplicating, encrypted backups of databases and files to local folders, S3 and SFTP.

The public API::

    repo = dtstore.Repository.init(url, password=...)     # or Repository.open(...)
    snap = repo.snapshot([dtstore.FilesSource(["/var/backups"], excludes=dtstore.Excludes(exclude=("*.tmp",)))])
    repo.get_snapshot("latest", dtstore.SnapshotFilter(hosts=("db1",), tags=("nightly",)))
    repo.snapshots(); repo.restore(snap, "/tmp/r"); repo.open_item(snap, "var/backups/x.sql")
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dtstore.errors import DtstoreError
    from dtstore.progress import ProgressCallback, ProgressEvent
    from dtstore.repository import Repository
    from dtstore.snapshots.manifest import Item, Snapshot
    from dtstore.snapshots.select import SnapshotFilter
    from dtstore.sources.base import Entry, FileIdentity, Reporter, Source
    from dtstore.sources.excludes import Excludes
    from dtstore.sources.files import FilesSource
    from dtstore.sources.stream import CommandSource, StdinSource

_HOMES = {
    "DtstoreError": "dtstore.errors", "ProgressCallback": "dtstore.progress", "ProgressEvent": "dtstore.progress",
    "Repository": "dtstore.repository", "Item": "dtstore.snapshots.manifest", "Snapshot": "dtstore.snapshots.manifest",
    "SnapshotFilter": "dtstore.snapshots.select", "Entry": "dtstore.sources.base",
    "FileIdentity": "dtstore.sources.base", "Reporter": "dtstore.sources.base", "Source": "dtstore.sources.base",
    "Excludes": "dtstore.sources.excludes", "FilesSource": "dtstore.sources.files",
    "CommandSource": "dtstore.sources.stream", "StdinSource": "dtstore.sources.stream",
}


def __getattr__(name: str) -> Any:
    """The public names load on first use (PEP 562): ``import dtstore.errors`` or a command that only
    lists snapshots does not pay for the whole library at start-up."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'dtstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "CommandSource",
    "DtstoreError",
    "Entry",
    "Excludes",
    "FileIdentity",
    "FilesSource",
    "Item",
    "ProgressCallback",
    "ProgressEvent",
    "Reporter",
    "Repository",
    "Snapshot",
    "SnapshotFilter",
    "Source",
    "StdinSource",
    "__version__",
]
