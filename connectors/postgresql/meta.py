"""The PostgreSQL connector's manifest metadata (format 1) as typed records.

``spec/connectors-postgresql.md`` §4 lists every key.  Two snapshot modes exist: ``full`` (a base
backup) and ``wal`` (a batch of archived WAL files pushed by ``dtstore wal-push``).  Readers go
through :meth:`FullMeta.of` and :meth:`WalMeta.of`, which index the dict: a missing key is a
ConnectorError naming it, never a silent ``None``; the sources check their own dicts with them
before the commit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dtstore.connectors.positions import PgLsn, WalSegment
from dtstore.errors import ConnectorError

METADATA_FORMAT = 1
WAL_DIR = "wal"
DATA_DIR = "pgdata"
TABLESPACE_DIR = "tablespaces"
SEGMENT_NAME = re.compile(r"^[0-9A-F]{24}$")
HISTORY_NAME = re.compile(r"^[0-9A-F]{8}\.history$")
BACKUP_NAME = re.compile(r"^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$")
PARTIAL_NAME = re.compile(r"^[0-9A-F]{24}\.partial$")


def wal_file_kind(name: str) -> str:
    """``segment``, ``history``, ``backup`` or ``partial``; anything else is a usage error."""
    for kind, pattern in (("segment", SEGMENT_NAME), ("history", HISTORY_NAME), ("backup", BACKUP_NAME),
                          ("partial", PARTIAL_NAME)):
        if pattern.match(name):
            return kind
    raise ConnectorError(f"{name!r} is not a WAL segment, .history, .backup or .partial file name")


def _field(meta: Mapping[str, Any], key: str, snapshot: str = "") -> Any:
    try:
        return meta[key]
    except KeyError:
        where = f" of snapshot {snapshot}" if snapshot else ""
        raise ConnectorError(f"the PostgreSQL metadata{where} has no {key!r}: written by another version?") from None


def segment_of(lsn: PgLsn, timeline: int, segment_size: int) -> WalSegment:
    return WalSegment(timeline, lsn.value // segment_size, 0x100000000 // segment_size)


@dataclass(frozen=True)
class Tablespace:
    oid: str
    name: str
    location: str
    path: str
    """the item folder (``tablespaces/<oid>``)"""

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> Tablespace:
        return cls(str(value["oid"]), str(value["name"]), str(value["location"]), str(value["path"]))


@dataclass(frozen=True)
class FullMeta:
    """A base backup (``mode: full``)."""

    system_identifier: str
    timeline: int
    segment_size: int
    start_lsn: PgLsn
    stop_lsn: PgLsn
    started_at: str
    consistent_at: str
    backup_label: str
    tablespace_map: str
    tablespaces: list[Tablespace]
    version_num: int

    @property
    def start_segment(self) -> WalSegment:
        return segment_of(self.start_lsn, self.timeline, self.segment_size)

    @property
    def stop_segment(self) -> WalSegment:
        """The last segment the backup needs to become consistent (the one holding ``stop_lsn - 1``)."""
        return segment_of(PgLsn(max(self.stop_lsn.value - 1, self.start_lsn.value)), self.timeline,
                          self.segment_size)

    @classmethod
    def of(cls, meta: Mapping[str, Any], snapshot: str = "") -> FullMeta:
        if _field(meta, "mode", snapshot) != "full":
            raise ConnectorError(f"snapshot {snapshot} is not a PostgreSQL base backup")
        return cls(
            system_identifier=str(_field(meta, "system_identifier", snapshot)),
            timeline=int(_field(meta, "timeline", snapshot)),
            segment_size=int(_field(meta, "segment_size", snapshot)),
            start_lsn=PgLsn.parse(str(_field(meta, "start_lsn", snapshot))),
            stop_lsn=PgLsn.parse(str(_field(meta, "stop_lsn", snapshot))),
            started_at=str(_field(meta, "started_at", snapshot)),
            consistent_at=str(_field(meta, "consistent_at", snapshot)),
            backup_label=str(_field(meta, "backup_label", snapshot)),
            tablespace_map=str(_field(meta, "tablespace_map", snapshot)),
            tablespaces=[Tablespace.of(t) for t in _field(meta, "tablespaces", snapshot)],
            version_num=int(_field(meta, "server", snapshot)["version_num"]),
        )


@dataclass(frozen=True)
class WalFile:
    """One archived WAL file of a ``wal`` snapshot (``wal/<name>``)."""

    name: str
    kind: str
    size: int
    sha256: str
    completed_at: str | None
    """segments: the file's modification time when it was pushed (its last record is not later)"""

    @property
    def path(self) -> str:
        return f"{WAL_DIR}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "size": self.size, "sha256": self.sha256,
                "completed_at": self.completed_at}

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> WalFile:
        return cls(str(value["name"]), str(value["kind"]), int(value["size"]), str(value["sha256"]),
                   value.get("completed_at"))


@dataclass(frozen=True)
class WalMeta:
    """A batch of pushed WAL files (``mode: wal``)."""

    system_identifier: str
    segment_size: int
    files: list[WalFile]

    @classmethod
    def of(cls, meta: Mapping[str, Any], snapshot: str = "") -> WalMeta:
        if _field(meta, "mode", snapshot) != "wal":
            raise ConnectorError(f"snapshot {snapshot} is not a PostgreSQL WAL snapshot")
        return cls(
            system_identifier=str(_field(meta, "system_identifier", snapshot)),
            segment_size=int(_field(meta, "segment_size", snapshot)),
            files=[WalFile.of(f) for f in _field(meta, "files", snapshot)],
        )


def parse_segment(name: str, segment_size: int) -> WalSegment:
    return WalSegment.parse(name[:24], segment_size)


def check(meta: Mapping[str, Any]) -> None:
    """Refuse to commit metadata the readers could not read."""
    if _field(meta, "format") != METADATA_FORMAT:
        raise ConnectorError(f"unexpected PostgreSQL metadata format {meta.get('format')!r}")
    (FullMeta.of if meta.get("mode") == "full" else WalMeta.of)(meta)


__all__ = ["DATA_DIR", "METADATA_FORMAT", "TABLESPACE_DIR", "WAL_DIR", "FullMeta", "Tablespace", "WalFile",
           "WalMeta", "check", "parse_segment", "segment_of", "wal_file_kind"]
