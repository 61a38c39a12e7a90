"""What changed between two snapshots' item lists (``dtstore diff``), and item search (``dtstore find``).

Kinds of change, as restic's and borg's ``diff`` report them:

* ``added`` / ``removed``: the path is only in the second / the first snapshot;
* ``modified``: the type, the content (a file's chunk list or size) or a symlink's target changed;
* ``metadata``: only the mode, owner (uid/gid) or mtime changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from dtstore.snapshots.manifest import Item


@dataclass(frozen=True)
class _Digest:
    type: str
    size: int
    content: bytes
    target: bytes
    mode: int
    uid: int
    gid: int
    mtime_ns: int


def _digest(item: Item) -> _Digest:
    content = hashlib.blake2b(b"".join(item.chunks), digest_size=16).digest() if item.chunks else b""
    return _Digest(item.type, item.size, content, item.target, item.mode, item.uid, item.gid, item.mtime_ns)


@dataclass(frozen=True)
class Change:
    path: bytes
    kind: str
    """``added``, ``removed``, ``modified`` or ``metadata``"""
    type: str
    """the item's type in the newer snapshot (the older one's for ``removed``)"""
    size_before: int | None = None
    size_after: int | None = None
    fields: tuple[str, ...] = ()
    """what differs: ``type``, ``content``, ``target``, ``mode``, ``owner``, ``mtime``"""

    @property
    def name(self) -> str:
        return self.path.decode("utf-8", "surrogateescape")

    def to_json(self) -> dict[str, Any]:
        return {"path": "/" + self.name, "change": self.kind, "kind": self.type, "size_before": self.size_before,
                "size_after": self.size_after, "fields": list(self.fields)}


@dataclass
class DiffStats:
    added: int = 0
    removed: int = 0
    modified: int = 0
    metadata: int = 0
    bytes_added: int = 0
    """file bytes in added files, plus growth of modified files"""
    bytes_removed: int = 0

    def to_json(self) -> dict[str, int]:
        return {"added": self.added, "removed": self.removed, "modified": self.modified, "metadata": self.metadata,
                "bytes_added": self.bytes_added, "bytes_removed": self.bytes_removed}


def diff_items(before: Iterable[Item], after: Iterable[Item], stats: DiffStats | None = None) -> Iterator[Change]:
    """Changes from ``before`` to ``after``, in path order.  ``stats`` (if given) is filled in."""
    stats = stats if stats is not None else DiffStats()
    old = {item.path: _digest(item) for item in before}
    new = {item.path: _digest(item) for item in after}
    for path in sorted(old.keys() | new.keys()):
        a, b = old.get(path), new.get(path)
        change = _compare(path, a, b)
        if change is None:
            continue
        setattr(stats, change.kind, getattr(stats, change.kind) + 1)
        grow = (change.size_after or 0) - (change.size_before or 0)
        if grow > 0:
            stats.bytes_added += grow
        else:
            stats.bytes_removed -= grow
        yield change


def _compare(path: bytes, a: _Digest | None, b: _Digest | None) -> Change | None:
    if a is None:
        assert b is not None
        return Change(path, "added", b.type, None, b.size)
    if b is None:
        return Change(path, "removed", a.type, a.size, None)
    fields = []
    if a.type != b.type:
        fields.append("type")
    elif a.content != b.content or a.size != b.size:
        fields.append("content")
    if a.target != b.target:
        fields.append("target")
    modified = bool(fields)
    if a.mode != b.mode:
        fields.append("mode")
    if (a.uid, a.gid) != (b.uid, b.gid):
        fields.append("owner")
    if a.mtime_ns != b.mtime_ns:
        fields.append("mtime")
    if not fields:
        return None
    return Change(path, "modified" if modified else "metadata", b.type, a.size, b.size, tuple(fields))
