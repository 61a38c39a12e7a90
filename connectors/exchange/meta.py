"""The Exchange connector's manifest metadata (format 1) as typed records (``spec/connectors-exchange.md`` §5).

Readers go through :meth:`DatabaseMeta.of` and :meth:`ExchangeMeta.of`, which index the dict: a missing
key is a ConnectorError naming it, never a silent ``None``.  The source checks its own dict with the
same functions before the commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dtstore.errors import ConnectorError

METADATA_FORMAT = 1


def _field(meta: Mapping[str, Any], key: str, where: str = "") -> Any:
    try:
        return meta[key]
    except KeyError:
        raise ConnectorError(f"the Exchange metadata{where} has no {key!r}: written by another version?") from None


@dataclass(frozen=True)
class StoredLog:
    """One numbered generation in the snapshot."""

    generation: int
    name: str
    path: str
    size: int
    signature: str
    created: str | None

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> StoredLog:
        return cls(int(value["generation"]), str(value["name"]), str(value["path"]), int(value["size"]),
                   str(value["signature"]), value.get("created"))


@dataclass(frozen=True)
class StoredFile:
    path: str
    size: int
    name: str

    @classmethod
    def of(cls, value: Mapping[str, Any] | None) -> StoredFile | None:
        return cls(str(value["path"]), int(value["size"]), str(value["name"])) if value else None


@dataclass(frozen=True)
class DatabaseMeta:
    """One database of a snapshot: where it lives, what its files said, which generations are stored."""

    name: str
    guid: str | None
    edb_path: str
    log_folder: str
    prefix: str
    digits: int
    circular: bool
    header: Mapping[str, Any] | None
    """the EDB header facts (full snapshots; a log snapshot does not read the EDB again)"""
    log_signature: str
    first: int | None
    last: int | None
    """the generations included (None: none)"""
    end: int
    """the last closed generation the chain reaches with this snapshot (a full: current - 1)"""
    checkpoint: int
    edb: StoredFile | None
    stm: StoredFile | None
    chk: StoredFile | None
    current: StoredFile | None
    current_generation: int
    logs: list[StoredLog]
    log_size: int | None
    current_created: str | None = None

    @property
    def required(self) -> tuple[int, int]:
        value = (self.header or {}).get("required") or [0, 0]
        return int(value[0]), int(value[1])

    @classmethod
    def of(cls, value: Mapping[str, Any], where: str = "") -> DatabaseMeta:
        def f(key: str) -> Any:
            return _field(value, key, where)

        return cls(
            name=str(f("name")), guid=value.get("guid"), edb_path=str(f("edb_path")), log_folder=str(f("log_folder")),
            prefix=str(f("prefix")), digits=int(f("digits")), circular=bool(f("circular")), header=f("header"),
            log_signature=str(f("log_signature")), first=f("first"), last=f("last"), end=int(f("end")),
            checkpoint=int(f("checkpoint")), edb=StoredFile.of(f("edb")), stm=StoredFile.of(value.get("stm")),
            chk=StoredFile.of(f("chk")), current=StoredFile.of(f("current")),
            current_generation=int(f("current_generation")), logs=[StoredLog.of(v) for v in f("logs")],
            log_size=value.get("log_size"), current_created=value.get("current_created"),
        )


@dataclass(frozen=True)
class ExchangeMeta:
    mode: str
    transport: str
    """``vss`` (server mode) or ``file``"""
    consistent_at: str
    server: Mapping[str, Any]
    databases: list[DatabaseMeta]
    parent: str | None
    truncation: str
    system_state: Mapping[str, Any] | None

    def database(self, name: str) -> DatabaseMeta | None:
        return next((d for d in self.databases if d.name.lower() == name.lower()), None)

    @classmethod
    def of(cls, meta: Mapping[str, Any], snapshot: str = "") -> ExchangeMeta:
        where = f" of snapshot {snapshot}" if snapshot else ""
        mode = _field(meta, "mode", where)
        if mode not in ("full", "log"):
            raise ConnectorError(f"Exchange snapshot {snapshot} records no mode (full or log)")
        return cls(
            mode=str(mode), transport=str(_field(meta, "transport", where)),
            consistent_at=str(_field(meta, "consistent_at", where)), server=_field(meta, "server", where),
            databases=[DatabaseMeta.of(d, where) for d in _field(meta, "databases", where)],
            parent=meta.get("parent"), truncation=str(_field(meta, "truncation", where)),
            system_state=meta.get("system_state"),
        )


def check(meta: Mapping[str, Any]) -> None:
    """Refuse to commit metadata the readers could not read (a writer's typo fails the run)."""
    if _field(meta, "format") != METADATA_FORMAT:
        raise ConnectorError(f"unexpected Exchange metadata format {meta['format']!r}")
    ExchangeMeta.of(meta)


__all__ = ["METADATA_FORMAT", "DatabaseMeta", "ExchangeMeta", "StoredFile", "StoredLog", "check"]
