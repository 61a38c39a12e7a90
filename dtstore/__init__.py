"""dtstore: deduplicating, encrypted backups of databases and files to local folders, S3 and SFTP.

The public API::

    repo = dtstore.Repository.init(url, password=...)     # or Repository.open(...)
    snap = repo.snapshot([dtstore.FilesSource(["/var/backups"])], tags=["nightly"])
    repo.snapshots(); repo.restore(snap, "/tmp/r"); repo.open_item(snap, "var/backups/x.sql")
"""

from __future__ import annotations

__version__ = "0.1.0"

from dtstore.errors import DtstoreError  # noqa: E402
from dtstore.progress import ProgressCallback, ProgressEvent  # noqa: E402
from dtstore.repository import Repository  # noqa: E402
from dtstore.snapshots.manifest import Item, Snapshot  # noqa: E402
from dtstore.sources.base import Entry, FileIdentity, Reporter, Source  # noqa: E402
from dtstore.sources.files import FilesSource  # noqa: E402
from dtstore.sources.stream import CommandSource, StdinSource  # noqa: E402

__all__ = [
    "CommandSource",
    "DtstoreError",
    "Entry",
    "FileIdentity",
    "FilesSource",
    "Item",
    "ProgressCallback",
    "ProgressEvent",
    "Reporter",
    "Repository",
    "Snapshot",
    "Source",
    "StdinSource",
    "__version__",
]
