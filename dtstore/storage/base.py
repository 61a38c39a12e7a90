"""The BlobStore contract every backend (memory, local, S3, SFTP, …) must keep.

What dtstore relies on, proved per backend by ``tests/conformance/blobstore.py``:

* ``put`` is atomic: a reader sees either no object or the whole object, never a prefix.  Local and
  SFTP write a temporary name and rename it; S3 uses one PUT of the whole body.
* Names are ``/``-separated keys below the store's root; ``list(prefix)`` returns every object whose
  name starts with ``prefix/`` (recursively), each exactly once, with its size.
* Read-after-write: an object is readable and listed as soon as ``put`` returns.
* ``get_range`` returns exactly ``length`` bytes or raises.
* ``delete`` is idempotent: deleting a missing object is not an error (S3 semantics).
* An optional ``stage_parts`` (the local store's) is ``put_parts`` in two steps: written now,
  durable and visible at ``commit`` (``stage_parts`` below).
* An optional ``open_spool`` (the local store's) writes an object piece by piece before its name
  is known (a pack, named by the hash of all its bytes): nothing is visible before ``commit``.
* Every failure is a :class:`~dtstore.errors.StorageError`; foreign exceptions never escape.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class BlobInfo:
    name: str
    size: int
    modified: dt.datetime | None = None


@dataclass(frozen=True)
class Capabilities:
    connections: int = 4
    """Parallel requests that make sense against this backend."""
    atomic_rename: bool = True
    local: bool = False


class BlobStore(Protocol):
    capabilities: Capabilities

    def describe(self) -> str:
        """The location without credentials, for messages."""

    def get(self, name: str) -> bytes: ...

    def get_range(self, name: str, offset: int, length: int) -> bytes: ...

    def put(self, name: str, data: bytes) -> None: ...

    def exists(self, name: str) -> bool: ...

    def size(self, name: str) -> int: ...

    def list(self, prefix: str) -> Iterator[BlobInfo]: ...

    def delete(self, name: str) -> None: ...

    def close(self) -> None: ...


def put_parts(store: BlobStore, name: str, parts: Sequence[bytes]) -> None:
    """``store.put`` of the parts joined; a store with its own ``put_parts`` writes them unjoined."""
    own = getattr(store, "put_parts", None)
    if own is not None:
        own(name, parts)
    else:
        store.put(name, b"".join(parts))


class StagedPut(Protocol):
    """A put whose bytes are written but not yet durable nor visible (``stage_parts``)."""

    def commit(self) -> None:
        """Durable and visible, as a ``put`` that returned; a StorageError is never retried."""

    def abort(self) -> None: ...


def stage_parts(store: BlobStore, name: str, parts: Sequence[bytes]) -> StagedPut | None:
    """The first step of the store's own two-step put (a local folder: write now, fsync and rename
    at ``commit``), or None if it has none: then use ``put_parts``."""
    own = getattr(store, "stage_parts", None)
    return None if own is None else own(name, parts)  # type: ignore[no-any-return]


class Spool(Protocol):
    """An object written piece by piece to a temporary place, named only when complete
    (``open_spool``); until its StagedPut commits, nothing of it is visible under any name."""

    def write(self, parts: Sequence[bytes]) -> None:
        """Append ``parts``; after a failure the same call may be made again (it rewrites from the
        same offset), nothing else."""

    def stage(self, name: str) -> StagedPut:
        """Everything is written: the object is to become ``name`` at ``commit``."""

    def abort(self) -> None:
        """Remove what was written; idempotent, and a no-op after ``stage``."""


def open_spool(store: BlobStore, directory: str) -> Spool:
    """The store's own spool (a temporary file in ``directory``), or one that holds the parts in
    memory and puts them at ``commit`` on a store without one."""
    own = getattr(store, "open_spool", None)
    spool = None if own is None else own(directory)
    return spool if spool is not None else _HeldSpool(store)


class _HeldSpool:
    def __init__(self, store: BlobStore) -> None:
        self._store = store
        self._parts: list[bytes] = []

    def write(self, parts: Sequence[bytes]) -> None:
        self._parts += parts

    def stage(self, name: str) -> StagedPut:
        parts, self._parts = self._parts, []
        staged = stage_parts(self._store, name, parts)
        return staged if staged is not None else _PutAtCommit(self._store, name, parts)

    def abort(self) -> None:
        self._parts = []


class _PutAtCommit:
    def __init__(self, store: BlobStore, name: str, parts: Sequence[bytes]) -> None:
        self._store, self._name, self._parts = store, name, parts

    def commit(self) -> None:
        put_parts(self._store, self._name, self._parts)
        self._parts = ()

    def abort(self) -> None:
        self._parts = ()
