"""The SQL Server connector's manifest metadata (format 1) as typed records.

A snapshot records one :class:`BackupFile` per database it backed up (``databases``), each with the
backupset fields the planner needs, read from ``RESTORE HEADERONLY`` of the file itself (msdb may be
purged).  ``spec/connectors-mssql.md`` §5 lists every key.  Readers go through ``of()``: a missing
key is a ConnectorError naming it, never a silent None; the source checks its own dict with the
same functions before the commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from dtstore.errors import ConnectorError

METADATA_FORMAT = 1
KINDS = {"full": "D", "diff": "I", "log": "L"}


def _field(meta: Mapping[str, Any], key: str, where: str = "") -> Any:
    try:
        return meta[key]
    except KeyError:
        raise ConnectorError(f"the SQL Server metadata{where} has no {key!r}: written by another version?") from None


def _lsn(value: Any) -> int | None:
    return int(value) if value is not None else None


@dataclass(frozen=True)
class DataFile:
    """A database file as RESTORE FILELISTONLY lists it (for MOVE)."""

    logical_name: str
    physical_name: str
    type: str  # D data, L log

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> DataFile:
        return cls(str(value["logical_name"]), str(value["physical_name"]), str(value["type"]))


@dataclass(frozen=True)
class BackupFile:
    """One database's backup in a snapshot: the item, and the backupset fields of its file."""

    database: str
    kind: str  # full | diff | log
    path: str  # the item in the snapshot
    bytes: int
    first_lsn: int
    last_lsn: int
    checkpoint_lsn: int
    database_backup_lsn: int
    differential_base_lsn: int | None
    differential_base_guid: str | None
    backup_set_guid: str
    first_recovery_fork_guid: str | None
    last_recovery_fork_guid: str | None
    fork_point_lsn: int | None
    start: str  # UTC ISO 8601
    finish: str  # UTC ISO 8601: the newest moment the backup makes restorable
    time_zone: int  # the server's offset then, in 15-minute units (msdb.backupset.time_zone)
    recovery_model: str
    database_guid: str
    family_guid: str
    is_copy_only: bool
    begins_log_chain: bool
    has_checksums: bool
    verified: bool
    compressed: bool
    files: list[DataFile] = field(default_factory=list)
    auto_reason: str | None = None

    @property
    def point_in_time(self) -> bool:
        """Can logs follow this backup?  Not under SIMPLE recovery."""
        return self.recovery_model != "SIMPLE"

    def to_json(self) -> dict[str, Any]:
        value = asdict(self)
        value["files"] = [asdict(f) for f in self.files]
        for key in ("first_lsn", "last_lsn", "checkpoint_lsn", "database_backup_lsn", "differential_base_lsn",
                    "fork_point_lsn"):
            if value[key] is not None:
                value[key] = str(value[key])  # numeric(25,0): text, never a float (and beyond int64 in general)
        return value

    @classmethod
    def of(cls, value: Mapping[str, Any], where: str = "") -> BackupFile:
        kind = str(_field(value, "kind", where))
        if kind not in KINDS:
            raise ConnectorError(f"the SQL Server metadata{where} has an unknown backup kind {kind!r}")
        return cls(
            database=str(_field(value, "database", where)), kind=kind, path=str(_field(value, "path", where)),
            bytes=int(_field(value, "bytes", where)),
            first_lsn=int(_field(value, "first_lsn", where)), last_lsn=int(_field(value, "last_lsn", where)),
            checkpoint_lsn=int(_field(value, "checkpoint_lsn", where)),
            database_backup_lsn=int(_field(value, "database_backup_lsn", where) or 0),
            differential_base_lsn=_lsn(_field(value, "differential_base_lsn", where)),
            differential_base_guid=_field(value, "differential_base_guid", where),
            backup_set_guid=str(_field(value, "backup_set_guid", where)),
            first_recovery_fork_guid=_field(value, "first_recovery_fork_guid", where),
            last_recovery_fork_guid=_field(value, "last_recovery_fork_guid", where),
            fork_point_lsn=_lsn(_field(value, "fork_point_lsn", where)),
            start=str(_field(value, "start", where)), finish=str(_field(value, "finish", where)),
            time_zone=int(_field(value, "time_zone", where)),
            recovery_model=str(_field(value, "recovery_model", where)),
            database_guid=str(_field(value, "database_guid", where)),
            family_guid=str(_field(value, "family_guid", where)),
            is_copy_only=bool(_field(value, "is_copy_only", where)),
            begins_log_chain=bool(_field(value, "begins_log_chain", where)),
            has_checksums=bool(_field(value, "has_checksums", where)),
            verified=bool(_field(value, "verified", where)), compressed=bool(value.get("compressed", False)),
            files=[DataFile.of(f) for f in _field(value, "files", where)],
            auto_reason=value.get("auto_reason"),
        )


@dataclass(frozen=True)
class SnapshotMeta:
    """What one ``dtstore snapshot mssql://…`` run records."""

    requested_mode: str
    mode: str  # full | diff | log | mixed (databases took different modes under auto)
    url: str
    server: Mapping[str, Any]
    backups: list[BackupFile]
    skipped: list[Mapping[str, str]]
    foreign: list[Mapping[str, Any]]

    @classmethod
    def of(cls, meta: Mapping[str, Any], snapshot: str = "") -> SnapshotMeta:
        where = f" of snapshot {snapshot}" if snapshot else ""
        if _field(meta, "format", where) != METADATA_FORMAT:
            raise ConnectorError(f"unexpected SQL Server metadata format {meta['format']!r}{where}")
        return cls(
            requested_mode=str(_field(meta, "requested_mode", where)), mode=str(_field(meta, "mode", where)),
            url=str(_field(meta, "url", where)), server=_field(meta, "server", where),
            backups=[BackupFile.of(b, where) for b in _field(meta, "databases", where)],
            skipped=list(meta.get("skipped", [])), foreign=list(meta.get("foreign_backups", [])),
        )


def check(meta: Mapping[str, Any]) -> None:
    """Refuse to commit metadata the readers could not read (a writer's typo fails the run)."""
    SnapshotMeta.of(meta)


__all__ = ["KINDS", "METADATA_FORMAT", "BackupFile", "DataFile", "SnapshotMeta", "check"]
