"""Snapshot and Item, and their msgpack encodings (see spec/repository-format.md §Manifests)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import msgpack

from dtstore.errors import IntegrityError, SourceError, UnsupportedFormat

MANIFEST_VERSION = 1
CHUNK_ID_SIZE = 32


def split_chunk_ids(raw: bytes) -> list[bytes]:
    """The chunk IDs of a joined list (as items and manifests store them)."""
    if len(raw) % CHUNK_ID_SIZE:
        raise IntegrityError(f"a chunk list of {len(raw)} bytes is not whole {CHUNK_ID_SIZE}-byte chunk IDs")
    return [raw[i : i + CHUNK_ID_SIZE] for i in range(0, len(raw), CHUNK_ID_SIZE)]


@dataclass
class Item:
    """One entry of a snapshot: a file (or stream), a directory or a symlink."""

    path: bytes
    type: str
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    size: int = 0
    chunks: list[bytes] = field(default_factory=list)
    target: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.decode("utf-8", "surrogateescape")

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"path": self.path, "type": self.type, "mode": self.mode, "uid": self.uid,
                               "gid": self.gid, "mtime_ns": self.mtime_ns}
        if self.type == "file":
            doc["size"] = self.size
            doc["chunks"] = b"".join(self.chunks)
        elif self.type == "symlink":
            doc["target"] = self.target
        if self.extra:
            doc["extra"] = clean(self.extra)
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Item:
        raw = doc.get("chunks", b"")
        return cls(
            path=bytes(doc["path"]), type=doc["type"], mode=int(doc["mode"]), uid=int(doc["uid"]),
            gid=int(doc["gid"]), mtime_ns=int(doc["mtime_ns"]), size=int(doc.get("size", 0)),
            chunks=split_chunk_ids(raw),
            target=bytes(doc.get("target", b"")), extra=dict(doc.get("extra", {})),
        )


def encode_item(item: Item) -> bytes:
    return msgpack.packb(item.to_doc(), use_bin_type=True)  # type: ignore[no-any-return]


def decode_items(stream: BinaryIO) -> Iterator[Item]:
    unpacker = msgpack.Unpacker(stream, raw=False, max_buffer_size=1 << 30)
    for doc in unpacker:
        yield Item.from_doc(doc)


def clean(value: Any) -> Any:
    """Make a value msgpack-safe and readable back: str keys, text that is valid UTF-8 (a name
    that is not keeps its undecodable bytes as ``\\xNN``), datetimes as ISO 8601 text."""
    if isinstance(value, str):
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "backslashreplace")
        return raw.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {clean(str(k)): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    if value is None or isinstance(value, (bool, int, float, bytes)):
        return value
    raise SourceError(f"source metadata holds a {type(value).__name__}, which a manifest cannot store")


@dataclass
class Snapshot:
    """A committed snapshot, as listed by ``Repository.snapshots()``."""

    id: str
    time: dt.datetime
    host: str
    tags: list[str]
    source_kind: str
    source_id: str
    paths: list[str]
    source_metadata: dict[str, Any]
    summary: dict[str, Any]
    parent: str | None
    program_version: str
    items_chunks: list[bytes]
    items_count: int
    username: str = ""
    original: str | None = None
    """the ID of the snapshot this one was rewritten from (``tag``), kept through rewrites"""

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def to_doc(self) -> dict[str, Any]:
        doc = {
            "version": MANIFEST_VERSION,
            "time": self.time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "host": clean(self.host),
            "username": clean(self.username),
            "tags": clean(list(self.tags)),
            "source": {"kind": self.source_kind, "id": clean(self.source_id), "paths": clean(list(self.paths)),
                       "metadata": clean(self.source_metadata)},
            "parent": self.parent,
            "summary": clean(self.summary),
            "program_version": self.program_version,
            "items": {"chunks": b"".join(self.items_chunks), "count": self.items_count},
        }
        if self.original:
            doc["original"] = self.original
        return doc

    @classmethod
    def from_doc(cls, snapshot_id: str, doc: dict[str, Any]) -> Snapshot:
        if doc.get("version") != MANIFEST_VERSION:
            raise UnsupportedFormat(f"snapshot {snapshot_id[:8]} has manifest version {doc.get('version')}")
        raw = doc["items"]["chunks"]
        source = doc["source"]
        return cls(
            id=snapshot_id,
            time=dt.datetime.fromisoformat(doc["time"].replace("Z", "+00:00")),
            host=doc["host"], username=doc.get("username", ""), tags=list(doc["tags"]),
            source_kind=source["kind"], source_id=source["id"], paths=list(source["paths"]),
            source_metadata=dict(source["metadata"]), summary=dict(doc["summary"]),
            parent=doc.get("parent"), program_version=doc.get("program_version", ""),
            items_chunks=split_chunk_ids(raw),
            items_count=int(doc["items"]["count"]), original=doc.get("original"),
        )

    def to_json(self) -> dict[str, Any]:
        """The ``dtstore snapshots --json`` record."""
        return {
            "id": self.id, "short_id": self.short_id,
            "time": self.time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "host": self.host, "username": self.username, "tags": self.tags,
            "source": {"kind": self.source_kind, "id": self.source_id, "metadata": self.source_metadata},
            "paths": self.paths, "parent": self.parent, "summary": self.summary,
            "program_version": self.program_version,
            **({"original": self.original} if self.original else {}),
        }


def retagged(tags: Sequence[str], *, add: Sequence[str] = (), remove: Sequence[str] = (),
             set_tags: Sequence[str] | None = None) -> list[str]:
    """restic's ``tag`` rules: ``set_tags`` replaces the tags; otherwise ``add`` appends the tags not
    yet there and ``remove`` drops every occurrence.  Order is kept; duplicates are dropped."""
    base = list(set_tags) if set_tags is not None else [*tags, *add]
    gone = {clean(t) for t in remove}
    out: list[str] = []
    for tag in (clean(t) for t in base):
        if tag and tag not in gone and tag not in out:
            out.append(tag)
    return out


def encode_manifest(snapshot: Snapshot) -> bytes:
    return msgpack.packb(snapshot.to_doc(), use_bin_type=True)  # type: ignore[no-any-return]


def decode_manifest(snapshot_id: str, data: bytes) -> Snapshot:
    return Snapshot.from_doc(snapshot_id, msgpack.unpackb(data, raw=False))
