"""dtstore: deduplicating, encrypted backups of databases and files to local folders, S3 and SFTP.

The public API::

    repo = dtstore.Repository.init(url, password=...)     # or Repository.open(...)
    snap = repo.snapshot([dtstore.FilesSource(["/var/backups"], excludes=dtstore.Excludes(exclude=("*.tmp",)))])
    repo.get_snapshot("latest", dtstore.SnapshotFilter(hosts=("db1",), tags=("nightly",)))
    repo.snapshots(); repo.restore(snap, "/tmp/r"); repo.open_item(snap, "var/backups/x.sql")
"""

from __future__ import annotations

__version__ = "0.1.0"

from dtstore.errors import DtstoreError
from dtstore.progress import ProgressCallback, ProgressEvent
from dtstore.repository import Repository
from dtstore.snapshots.manifest import Item, Snapshot
from dtstore.snapshots.select import SnapshotFilter
from dtstore.sources.base import Entry, FileIdentity, Reporter, Source
from dtstore.sources.excludes import Excludes
from dtstore.sources.files import FilesSource
from dtstore.sources.stream import CommandSource, StdinSource

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
