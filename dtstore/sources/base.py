"""The source interface: what a snapshot is made of.

A source yields *entries* (directories, symlinks, regular files on disk, and streams such as a dump's
stdout), each under the path it will have inside the snapshot, and afterwards a metadata dict that
goes into the manifest unchanged.  Files (`files.py`), standard input (`stdin.py`), a command's
output (`command.py`) and every connector (`dtstore.connectors.*`) implement it; the core never
knows which one it is talking to.  See `spec/connectors.md`.
"""

from __future__ import annotations

import stat as statmod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal, Protocol, runtime_checkable

EntryType = Literal["file", "dir", "symlink"]


@dataclass(frozen=True)
class FileIdentity:
    """What the file-metadata cache compares to decide a file is unchanged and need not be read."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


@dataclass
class Entry:
    """One thing to store.

    ``path`` is the path inside the snapshot as bytes (``/``-separated, no leading ``/``), so names
    that are not UTF-8 survive.  For ``type == "file"``, ``opener`` returns a context manager over a
    readable binary stream; leaving it may raise :class:`~dtstore.errors.SourceError` (for example
    when the command that produced the stream exited non-zero), which aborts the snapshot.
    ``identity`` and ``cache_key`` (e.g. the absolute path) are set for regular files on disk so
    unchanged files are not read again.  ``stored`` names content already in this repository (the
    chunk IDs and size of a stored item): when every chunk is indexed and usable the file is recorded
    from them without reading (a copy of an item costs a manifest line); otherwise ``opener`` reads it.
    """

    path: bytes
    type: EntryType
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    size: int | None = None
    opener: Callable[[], AbstractContextManager[BinaryIO]] | None = None
    identity: FileIdentity | None = None
    cache_key: bytes | None = None
    target: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)
    stored: tuple[list[bytes], int] | None = None


class Reporter(Protocol):
    """What a source may tell the core while it is being read."""

    def warn(self, path: bytes, message: str) -> None:
        """A part of the source could not be read; the snapshot goes on and exits with code 3."""


@runtime_checkable
class Source(Protocol):
    """A named set of streams and files plus a metadata dict."""

    @property
    def kind(self) -> str:
        """Short name of the source type, e.g. ``files``, ``stdin``, ``command``, ``mysql``."""

    @property
    def source_id(self) -> str:
        """Stable identity used to group snapshots of the same source (kind + identity)."""

    @property
    def display_paths(self) -> list[str]:
        """What the user asked to back up, as shown in ``dtstore snapshots``."""

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        """Yield the entries in a deterministic order; raise SourceError to abort the snapshot."""

    def metadata(self) -> dict[str, Any]:
        """Called after every entry was stored; the dict is recorded in the manifest verbatim."""


class CommitAware(Protocol):
    """Optional: a source that must confirm something to its application only once the snapshot is
    durable (truncate Exchange logs, ``NSFDoneArchivingLog`` on Domino, purge archived logs) defines
    ``committed``; the core calls it after the manifest is written, never before."""

    def committed(self, snapshot: Any) -> None: ...


def mode_type(mode: int) -> EntryType | None:
    if statmod.S_ISREG(mode):
        return "file"
    if statmod.S_ISDIR(mode):
        return "dir"
    if statmod.S_ISLNK(mode):
        return "symlink"
    return None
