"""The MySQL connector's manifest metadata (format 1) as typed records.

``spec/connectors-mysql.md`` §5 lists every key.  Readers go through :meth:`FullMeta.of` and
:meth:`LogMeta.of`, which index the dict (a misspelt or missing key is a ConnectorError naming it,
never a silent ``None``); the source checks its own dict with the same functions before the commit,
so a writer's typo fails the run instead of producing a snapshot no planner can read.  Keys added
after the first release of format 1 (``views``) default to empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dtstore.errors import ConnectorError

METADATA_FORMAT = 1


def _field(meta: Mapping[str, Any], key: str, snapshot: str = "") -> Any:
    try:
        return meta[key]
    except KeyError:
        where = f" of snapshot {snapshot}" if snapshot else ""
        raise ConnectorError(f"the MySQL metadata{where} has no {key!r}: written by another version?") from None


@dataclass(frozen=True)
class Coordinates:
    """``{file, pos}``: a binlog file and an offset (the dump's coordinates, a log's end)."""

    file: str
    pos: int

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "pos": self.pos}

    @classmethod
    def of(cls, value: Mapping[str, Any] | None) -> Coordinates | None:
        return cls(str(value["file"]), int(value["pos"])) if value else None


@dataclass(frozen=True)
class NextBinlog:
    """``{file, start_state}``: the first binlog an archive does not hold yet, and the GTID state it starts with."""

    file: str
    start_state: str

    def to_json(self) -> dict[str, str]:
        return {"file": self.file, "start_state": self.start_state}

    @classmethod
    def of(cls, meta: Mapping[str, Any], key: str = "binlog_next") -> NextBinlog | None:
        value = meta.get(key)
        return cls(str(value["file"]), str(value.get("start_state", ""))) if value else None


@dataclass(frozen=True)
class StoredDump:
    """``{name, path, bytes}``: one database's (or its views') item of a full."""

    name: str
    path: str
    bytes: int

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> StoredDump:
        return cls(str(value["name"]), str(value["path"]), int(value["bytes"]))


@dataclass(frozen=True)
class ArchivedBinlog:
    """One ``binlog/<file>`` item of a log snapshot."""

    name: str
    path: str
    size: int
    first_event_time: str
    last_event_time: str
    start_state: str | None
    rotate_to: str | None

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> ArchivedBinlog:
        return cls(str(value["name"]), str(value["path"]), int(value["size"]), str(value["first_event_time"]),
                   str(value["last_event_time"]), value.get("start_state"), value.get("rotate_to"))


@dataclass(frozen=True)
class FullMeta:
    """What a full snapshot records (``mode: full``)."""

    requested_mode: str
    url: str
    server: Mapping[str, Any]
    consistent_at: str
    binlog: Coordinates | None
    binlog_next: NextBinlog | None
    all_databases: bool
    databases: list[StoredDump]
    views: list[StoredDump]
    grants_path: str | None
    gtid: str | None
    auto_reason: str | None

    @property
    def flavor(self) -> str:
        return str(self.server.get("flavor", "mariadb"))

    @property
    def database_names(self) -> list[str]:
        return [d.name for d in self.databases]

    @classmethod
    def of(cls, meta: Mapping[str, Any], snapshot: str = "") -> FullMeta:
        if _field(meta, "mode", snapshot) != "full":
            raise ConnectorError(f"snapshot {snapshot} is not a MySQL full snapshot")
        grants = _field(meta, "grants", snapshot)
        return cls(
            requested_mode=str(_field(meta, "requested_mode", snapshot)),
            url=str(_field(meta, "url", snapshot)),
            server=_field(meta, "server", snapshot),
            consistent_at=str(_field(meta, "consistent_at", snapshot)),
            binlog=Coordinates.of(_field(meta, "binlog", snapshot)),
            binlog_next=NextBinlog.of(meta) if _field(meta, "binlog_next", snapshot) else None,
            all_databases=bool(_field(meta, "all_databases", snapshot)),
            databases=[StoredDump.of(d) for d in _field(meta, "databases", snapshot)],
            views=[StoredDump.of(d) for d in meta.get("views", [])],
            grants_path=str(grants["path"]) if grants else None,
            gtid=meta.get("gtid"),
            auto_reason=meta.get("auto_reason"),
        )


@dataclass(frozen=True)
class LogMeta:
    """What a log snapshot records (``mode: log``)."""

    parent: str
    binlog_from: NextBinlog
    binlog_next: NextBinlog
    binlogs: list[ArchivedBinlog]
    binlog_end: Coordinates
    covered_until: str
    transfer: str

    @property
    def first(self) -> str:
        return self.binlogs[0].name

    @property
    def last(self) -> str:
        return self.binlogs[-1].name

    @classmethod
    def of(cls, meta: Mapping[str, Any], snapshot: str = "") -> LogMeta:
        if _field(meta, "mode", snapshot) != "log":
            raise ConnectorError(f"snapshot {snapshot} is not a MySQL log snapshot")
        start, nxt = NextBinlog.of(meta, "binlog_from"), NextBinlog.of(meta)
        end = Coordinates.of(_field(meta, "binlog_end", snapshot))
        binlogs = [ArchivedBinlog.of(b) for b in _field(meta, "binlogs", snapshot)]
        if start is None or nxt is None or end is None or not binlogs:
            raise ConnectorError(f"the MySQL log snapshot {snapshot} records no binlog range")
        return cls(
            parent=str(_field(meta, "parent", snapshot)),
            binlog_from=start,
            binlog_next=nxt,
            binlogs=binlogs,
            binlog_end=end,
            covered_until=str(_field(meta, "covered_until", snapshot)),
            transfer=str(_field(meta, "transfer", snapshot)),
        )


def check(meta: Mapping[str, Any]) -> None:
    """Refuse to commit metadata the readers could not read (a writer's typo fails the run)."""
    if _field(meta, "format") != METADATA_FORMAT:
        raise ConnectorError(f"unexpected MySQL metadata format {meta['format']!r}")
    (FullMeta.of if meta.get("mode") == "full" else LogMeta.of)(meta)


__all__ = ["METADATA_FORMAT", "ArchivedBinlog", "Coordinates", "FullMeta", "LogMeta", "NextBinlog", "StoredDump",
           "check"]
