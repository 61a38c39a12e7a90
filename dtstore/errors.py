"""Every error dtstore raises, each with a message a user can act on and its exit code.

The tree::

    DtstoreError (1)
    ├── UsageError (2)
    ├── RepositoryNotFound (10)
    ├── RepositoryLocked (11)
    ├── WrongPassword (12)
    ├── RepositoryExists (1)
    ├── UnsupportedFormat (1)
    ├── SnapshotNotFound (1)
    ├── ItemNotFound (1)
    ├── IntegrityError (16)
    ├── SourceError (1)          a dump or command failed: no snapshot was made
    │   └── ConnectorError (1)
    ├── ChainError (17)          a log chain has a gap, or a restore target is outside the archive
    ├── AdminKeyRequired (18)    opened with a backup key: reading stored data needs an admin key
    ├── TargetFull (19)          the restore target has no room: no partly written file is left
    └── StorageError (1)         translated once, at the storage boundary
        ├── BlobNotFound (1)
        ├── StorageAuthError (13)
        ├── HostKeyError (14)
        └── StorageUnavailable (15)

Exit code 3 (snapshot made, some sources unreadable) is not an error: the CLI derives it from the
snapshot's summary.  Messages never contain passwords, keys or credentials.
"""

from __future__ import annotations

from collections.abc import Sequence

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130


class DtstoreError(Exception):
    """Base of the tree; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_ERROR


class UsageError(DtstoreError):
    exit_code = EXIT_USAGE


class RepositoryNotFound(DtstoreError):
    exit_code = 10


class RepositoryLocked(DtstoreError):
    exit_code = 11


class WrongPassword(DtstoreError):
    exit_code = 12


class RepositoryExists(DtstoreError):
    pass


class UnsupportedFormat(DtstoreError):
    pass


class SnapshotNotFound(DtstoreError):
    pass


class ItemNotFound(DtstoreError):
    pass


class IntegrityError(DtstoreError):
    """Data failed authentication or its keyed hash: never written out as if it were good."""

    exit_code = 16

    def __init__(self, message: str, *, paths: Sequence[str] = (), packs: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.paths = list(paths)
        """the items this error cost (a restore that wrote everything else names them here)"""
        self.packs = list(packs)
        """the packs whose damage caused it"""


class SourceError(DtstoreError):
    """A source could not be read as a whole (a dump failed, a command exited non-zero)."""


class ConnectorError(SourceError):
    pass


class ChainError(DtstoreError):
    """A log chain is broken, or a point-in-time target lies outside what the repository holds."""

    exit_code = 17


class AdminKeyRequired(DtstoreError):
    """The repository was opened with a backup key, and this needs an admin key (reading stored data or
    manifests, forget, prune, check, repair, key management)."""

    exit_code = 18


class TargetFull(DtstoreError):
    """A restore target's filesystem has no room for the files (or a quota refused them).

    Found before anything is fetched where the filesystem reserves space, else while writing; either
    way no file the restore had not completely written is left behind."""

    exit_code = 19


class StorageError(DtstoreError):
    """A remote operation failed; ``transient`` says whether a retry may help."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class BlobNotFound(StorageError):
    pass


class StorageAuthError(StorageError):
    exit_code = 13


class HostKeyError(StorageError):
    exit_code = 14


class StorageUnavailable(StorageError):
    exit_code = 15


ALL_ERRORS: tuple[type[DtstoreError], ...] = (
    DtstoreError, UsageError, RepositoryNotFound, RepositoryLocked, WrongPassword, RepositoryExists,
    UnsupportedFormat, SnapshotNotFound, ItemNotFound, IntegrityError, SourceError, ConnectorError,
    ChainError, AdminKeyRequired, TargetFull, StorageError, BlobNotFound, StorageAuthError, HostKeyError,
    StorageUnavailable,
)
