"""Archived WAL: a batch of files pushed by ``dtstore wal-push`` becomes one ``wal`` snapshot.

:class:`WalBatch` is the Source of such a snapshot: items ``wal/<name>`` (segments, ``.history``,
``.backup`` and ``.partial`` files), metadata ``mode: wal`` with each file's size, SHA-256 and, for
segments, its completion time (the file's mtime: no record in it is later).  Each file is read and
hashed *before* the snapshot starts (:func:`describe`), and the stored bytes are checked against
that hash as they go by, so a file that changes while it is pushed fails the push instead of
storing something else under a name the archive already vouches for.

:class:`WalIndex` is what a pusher knows of the archive: name → SHA-256 of every WAL file of one
source.  ``decide`` implements the idempotency rule: the same name with the same hash is already
done; the same name with another hash is refused, never overwritten.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from dtstore.connectors.base import SnapshotInfo, iso
from dtstore.connectors.entries import BLOCK, dir_entry, file_entry
from dtstore.connectors.postgresql import meta
from dtstore.connectors.postgresql.chain import KIND, mode_of
from dtstore.errors import ConnectorError
from dtstore.sources.base import Entry, Reporter


@dataclass(frozen=True)
class PushFile:
    """A WAL file about to be pushed, as read and hashed before the push."""

    path: Path
    name: str
    kind: str
    size: int
    sha256: str
    completed_at: str | None
    identity: tuple[int, int, int, int]
    """(device, inode, size, mtime_ns) when it was hashed"""
    text: str | None = None
    """a ``.history`` file's content (recorded in the metadata: restore-points reads timeline switches)"""


def sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb", buffering=0) as f:
        while block := f.read(BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def describe(path: Path, *, hashed: bool = True) -> PushFile:
    """What a push needs of a file; ``hashed=False`` leaves the SHA-256 to be taken while it is stored."""
    name = path.name
    kind = meta.wal_file_kind(name)
    st = os.stat(path)
    digest, size = sha256_file(path) if hashed else ("", st.st_size)
    completed = iso(dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)) if kind == "segment" else None
    text = path.read_text(errors="replace") if kind == "history" else None
    return PushFile(path, name, kind, size, digest, completed, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
                    text)


def unchanged(file: PushFile) -> bool:
    """Is the file on disk still the one that was hashed (same device, inode, size and mtime)?"""
    try:
        st = os.stat(file.path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == file.identity


class _Checked(io.RawIOBase):
    def __init__(self, raw: BinaryIO, file: PushFile) -> None:
        self._raw, self._file, self._digest, self._size = raw, file, hashlib.sha256(), 0
        self.sha256 = ""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            n = int(self._raw.readinto(buffer) or 0)  # type: ignore[attr-defined]
        except OSError as exc:
            raise ConnectorError(f"reading {self._file.path} failed: {exc.strerror or exc}") from exc
        if n:
            self._digest.update(memoryview(buffer)[:n])
            self._size += n
            return n
        digest = self._digest.hexdigest()
        if self._size != self._file.size or (self._file.sha256 and digest != self._file.sha256) \
                or not unchanged(self._file):
            raise ConnectorError(f"{self._file.name} changed while it was pushed; PostgreSQL will retry it")
        self.sha256 = digest
        return 0

    def close(self) -> None:
        self._raw.close()
        super().close()


class WalBatch:
    """The Source of one ``wal`` snapshot."""

    kind = KIND

    def __init__(self, system_identifier: str, segment_size: int, files: Sequence[PushFile], host: str) -> None:
        self.system_identifier, self.segment_size, self.files, self.host = system_identifier, segment_size, files, host
        self.hashes: dict[str, str] = {f.name: f.sha256 for f in files if f.sha256}
        """name → SHA-256 of what was stored (taken while it was read)"""

    @property
    def source_id(self) -> str:
        return f"{KIND}:{self.system_identifier}"

    @property
    def display_paths(self) -> list[str]:
        names = [f.name for f in self.files]
        return [f"wal {names[0]}" + (f" .. {names[-1]} ({len(names)} files)" if len(names) > 1 else "")]

    def estimated_size(self) -> int:
        return sum(f.size for f in self.files)

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        yield dir_entry(meta.WAL_DIR)
        for f in self.files:
            yield file_entry(f"{meta.WAL_DIR}/{f.name}", partial(self._open, f), size=f.size)

    @contextlib.contextmanager
    def _open(self, f: PushFile) -> Iterator[BinaryIO]:
        try:
            raw = open(f.path, "rb", buffering=0)  # noqa: SIM115 - closed by the reader
        except OSError as exc:
            raise ConnectorError(f"cannot open {f.path}: {exc.strerror or exc}") from exc
        checked = _Checked(raw, f)
        with io.BufferedReader(checked, BLOCK) as stream:  # type: ignore[arg-type]
            yield stream  # type: ignore[misc]
        if not checked.sha256:
            raise ConnectorError(f"{f.name} was not read to its end")
        self.hashes[f.name] = checked.sha256

    def metadata(self) -> dict[str, Any]:
        data = {
            "format": meta.METADATA_FORMAT,
            "mode": "wal",
            "system_identifier": self.system_identifier,
            "segment_size": self.segment_size,
            "files": [{"name": f.name, "kind": f.kind, "size": f.size, "sha256": self.hashes[f.name],
                       "completed_at": f.completed_at} for f in self.files],
            "first": self.files[0].name,
            "last": self.files[-1].name,
            "history_text": {f.name: f.text for f in self.files if f.text is not None},
            "pushed_by": self.host,
        }
        meta.check(data)
        return data


class WalCopy:
    """The Source of a consolidated ``wal`` snapshot: the files of several earlier ones.

    Each file is recorded from the chunk list of its stored item (the core checks every chunk is
    indexed and usable): nothing is read, decrypted or uploaded, only the new manifest is written,
    so consolidating costs the pusher milliseconds, not the CPU of a second push.  Should a chunk be
    unusable (damaged, in a pack prune is removing), that file is read back instead, checked against
    its SHA-256, and stored afresh.
    """

    kind = KIND

    def __init__(self, system_identifier: str, segment_size: int, files: Sequence[tuple[meta.WalFile, Any]],
                 texts: dict[str, str], open_item: Any, replaces: Sequence[str], host: str,
                 find_item: Any = None) -> None:
        self.system_identifier, self.segment_size, self.files = system_identifier, segment_size, files
        self.texts, self.open_item, self.replaces, self.host = texts, open_item, replaces, host
        self.find_item = find_item

    @property
    def source_id(self) -> str:
        return f"{KIND}:{self.system_identifier}"

    @property
    def display_paths(self) -> list[str]:
        names = [f.name for f, _ in self.files]
        return [f"wal {names[0]} .. {names[-1]} ({len(names)} files, consolidated)"]

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        yield dir_entry(meta.WAL_DIR)
        for f, snap in self.files:
            entry = file_entry(f.path, partial(self._open, f, snap), size=f.size)
            if self.find_item is not None:
                item = self.find_item(snap, f.path)
                if item.size == f.size:
                    entry = replace(entry, stored=(list(item.chunks), item.size))
            yield entry

    @contextlib.contextmanager
    def _open(self, f: meta.WalFile, snap: Any) -> Iterator[BinaryIO]:
        data = self.open_item(snap, f.path).read()
        if hashlib.sha256(data).hexdigest() != f.sha256:
            raise ConnectorError(f"{f.path} of snapshot {snap.short_id} does not match its recorded hash")
        yield io.BytesIO(data)

    def metadata(self) -> dict[str, Any]:
        names = [f.name for f, _ in self.files]
        data = {
            "format": meta.METADATA_FORMAT,
            "mode": "wal",
            "system_identifier": self.system_identifier,
            "segment_size": self.segment_size,
            "files": [f.to_json() for f, _ in self.files],
            "first": names[0],
            "last": names[-1],
            "history_text": {n: t for n, t in self.texts.items() if n in set(names)},
            "pushed_by": self.host,
            "consolidates": list(self.replaces),
        }
        meta.check(data)
        return data


class WalIndex:
    """name → SHA-256 of every archived WAL file of one source (what makes a push idempotent)."""

    def __init__(self) -> None:
        self.hashes: dict[str, str] = {}
        self.snapshots: set[str] = set()

    def add_snapshot(self, snap: SnapshotInfo) -> None:
        if snap.id in self.snapshots or mode_of(snap) != "wal":
            return
        self.snapshots.add(snap.id)
        for f in meta.WalMeta.of(snap.meta, snap.short_id).files:
            self.hashes.setdefault(f.name, f.sha256)

    def load(self, history: Iterable[SnapshotInfo]) -> None:
        for snap in history:
            if snap.kind == KIND and snap.meta.get("mode") == "wal":
                self.add_snapshot(snap)

    def decide(self, file: PushFile) -> str:
        """``new``, ``done`` (the same bytes are archived) or ``conflict`` (other bytes under that name)."""
        known = self.hashes.get(file.name)
        if known is None:
            return "new"
        return "done" if known == file.sha256 else "conflict"


def conflict_message(name: str) -> str:
    return (f"{name} is already archived with different contents: refusing to overwrite it (is another "
            "cluster with the same system identifier archiving into this repository?)")


__all__ = ["PushFile", "WalBatch", "WalCopy", "WalIndex", "conflict_message", "describe", "sha256_file", "unchanged"]
