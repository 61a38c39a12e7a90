"""The Oracle connector's manifest metadata (format 1) as typed records.

``spec/connectors-oracle.md`` §4 lists every key.  Readers go through :meth:`OracleMeta.of`, which
indexes the dict: a missing key is a ConnectorError naming it, never a silent ``None``; the source
checks its own dict with it before the commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from dtstore.errors import ConnectorError

METADATA_FORMAT = 1
DATA_DIR = "datafiles"
CONTROL_DIR = "controlfile"
PFILE_DIR = "pfile"
ARCH_DIR = "arch"
CONTROL_ITEM = f"{CONTROL_DIR}/control.bkp"
TRACE_ITEM = f"{CONTROL_DIR}/control.trc"


def parse_offset(text: str) -> dt.timezone:
    """``+01:00`` (``TO_CHAR(SYSTIMESTAMP, 'TZH:TZM')``) as a timezone."""
    sign = -1 if text.strip().startswith("-") else 1
    hours, _, minutes = text.strip().lstrip("+-").partition(":")
    try:
        return dt.timezone(sign * dt.timedelta(hours=int(hours), minutes=int(minutes or 0)))
    except ValueError:
        raise ConnectorError(f"the server's UTC offset {text!r} is not +HH:MM") from None


def _field(meta: Mapping[str, Any], key: str, snapshot: str = "") -> Any:
    try:
        return meta[key]
    except KeyError:
        where = f" of snapshot {snapshot}" if snapshot else ""
        raise ConnectorError(f"the Oracle metadata{where} has no {key!r}: written by another version?") from None


@dataclass(frozen=True)
class Incarnation:
    resetlogs_change: int
    resetlogs_time: str
    """UTC ISO 8601"""
    resetlogs_id: int

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> Incarnation:
        return cls(int(value["resetlogs_change"]), str(value["resetlogs_time"]), int(value["resetlogs_id"]))


@dataclass(frozen=True)
class DataFile:
    file: int
    name: str
    """the path on the database host"""
    tablespace: str
    bytes: int
    checkpoint_change: int
    backup_change: int
    """v$backup.change#: the SCN the file's backup mode began at"""
    path: str
    """the item (``datafiles/<file#>_<base name>``)"""
    size: int
    sha256: str

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> DataFile:
        return cls(int(value["file"]), str(value["name"]), str(value["tablespace"]), int(value["bytes"]),
                   int(value["checkpoint_change"]), int(value["backup_change"]), str(value["path"]),
                   int(value["size"]), str(value["sha256"]))


@dataclass(frozen=True)
class ArchivedLog:
    thread: int
    sequence: int
    resetlogs_id: int
    first_change: int
    next_change: int
    first_time: str
    next_time: str
    """UTC ISO 8601 (converted from the server's local time with ``server_utc_offset``)"""
    name: str
    """the path on the database host (the first destination that held it)"""
    path: str
    """the item (``arch/<thread>_<sequence>_<resetlogs_id>.arc``)"""
    size: int
    sha256: str

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.resetlogs_id, self.thread, self.sequence)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> ArchivedLog:
        return cls(int(value["thread"]), int(value["sequence"]), int(value["resetlogs_id"]),
                   int(value["first_change"]), int(value["next_change"]), str(value["first_time"]),
                   str(value["next_time"]), str(value["name"]), str(value["path"]), int(value["size"]),
                   str(value["sha256"]))


@dataclass(frozen=True)
class ThreadEnd:
    """Where one redo thread's stored logs end: its last sequence and that log's next change/time."""

    sequence: int
    next_change: int
    next_time: str

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> ThreadEnd:
        return cls(int(value["sequence"]), int(value["next_change"]), str(value["next_time"]))


def frontier_of(value: Mapping[str, Any]) -> dict[int, ThreadEnd]:
    return {int(t): ThreadEnd.of(v) for t, v in value.items()}


@dataclass(frozen=True)
class OracleMeta:
    """A full (``mode: full``) or a log snapshot (``mode: log``)."""

    mode: str
    dbid: int
    name: str
    incarnation: Incarnation
    server_utc_offset: str
    """the server's UTC offset when the snapshot was taken (``+01:00``): its times are local"""
    log_archive_format: str
    windows: bool
    logs: list[ArchivedLog]
    frontier: dict[int, ThreadEnd]
    """per thread, the last log the repository holds after this snapshot"""
    continues: dict[int, ThreadEnd] | None
    """log: the frontier it continued (None for a full)"""
    datafiles: list[DataFile]
    control_files: list[str]
    online_logs: list[tuple[int, str]]
    pfile_item: str
    spfile: str
    begin_scn: int
    end_scn: int
    """full: the consistent point (recovery must reach it: UNTIL CHANGE ≥ end_scn)"""
    end_time: str

    @classmethod
    def of(cls, meta: Mapping[str, Any], snapshot: str = "") -> OracleMeta:
        mode = _field(meta, "mode", snapshot)
        if mode not in ("full", "log"):
            raise ConnectorError(f"Oracle snapshot {snapshot} records no mode (full or log)")
        full = mode == "full"
        continues = _field(meta, "continues", snapshot)
        return cls(
            mode=str(mode),
            dbid=int(_field(meta, "dbid", snapshot)),
            name=str(_field(meta, "name", snapshot)),
            incarnation=Incarnation.of(_field(meta, "incarnation", snapshot)),
            server_utc_offset=str(_field(meta, "server_utc_offset", snapshot)),
            log_archive_format=str(_field(meta, "log_archive_format", snapshot)),
            windows=bool(_field(meta, "windows", snapshot)),
            logs=[ArchivedLog.of(v) for v in _field(meta, "logs", snapshot)],
            frontier=frontier_of(_field(meta, "frontier", snapshot)),
            continues=None if continues is None else frontier_of(continues),
            datafiles=[DataFile.of(v) for v in _field(meta, "datafiles", snapshot)] if full else [],
            control_files=[str(v) for v in _field(meta, "control_files", snapshot)],
            online_logs=[(int(g), str(m)) for g, m in _field(meta, "online_logs", snapshot)],
            pfile_item=str(_field(meta, "pfile_item", snapshot)) if full else "",
            spfile=str(_field(meta, "spfile", snapshot)),
            begin_scn=int(_field(meta, "begin_scn", snapshot)) if full else 0,
            end_scn=int(_field(meta, "end_scn", snapshot)),
            end_time=str(_field(meta, "end_time", snapshot)),
        )


def check(meta: Mapping[str, Any]) -> None:
    """Refuse to commit metadata the readers could not read."""
    if _field(meta, "format") != METADATA_FORMAT:
        raise ConnectorError(f"unexpected Oracle metadata format {meta.get('format')!r}")
    OracleMeta.of(meta)


__all__ = ["ARCH_DIR", "CONTROL_DIR", "CONTROL_ITEM", "DATA_DIR", "METADATA_FORMAT", "PFILE_DIR", "TRACE_ITEM",
           "ArchivedLog", "DataFile", "Incarnation", "OracleMeta", "ThreadEnd", "check", "frontier_of", "parse_offset"]
