"""Exchange snapshots as chain links: one stream per database, ESE log generations as positions.

A full of a database ends at its last closed generation (the current log's generation minus one): the
next log snapshot must start at the generation after it, with the same log signature.  A log snapshot
starts at its first new generation and ends at its last.  A log snapshot that found no new generation
for a database (file mode, nothing written) has no link for it: it adds nothing to restore.

This module imports nothing but the framework (retention and ``restore-points`` need no Windows tool).
"""

from __future__ import annotations

from collections.abc import Sequence

from dtstore.connectors.base import SnapshotInfo, from_iso
from dtstore.connectors.chains import Link
from dtstore.connectors.exchange.meta import DatabaseMeta, ExchangeMeta
from dtstore.connectors.positions import ExchangeGeneration
from dtstore.errors import ConnectorError

KIND = "exchange"


def mode_of(snap: SnapshotInfo) -> str:
    mode = snap.meta.get("mode")
    if mode not in ("full", "log"):
        raise ConnectorError(f"Exchange snapshot {snap.short_id} records no mode (full or log)")
    return str(mode)


def database_link(snap: SnapshotInfo, meta: ExchangeMeta, db: DatabaseMeta) -> Link | None:
    when = from_iso(meta.consistent_at)
    if meta.mode == "full":
        point = ExchangeGeneration(db.log_signature, db.end)
        return Link(snap.id, snap.short_id, snap.time, "full", point, point, when, stream=db.name.lower())
    if db.first is None or db.last is None:
        return None
    return Link(snap.id, snap.short_id, snap.time, "log", ExchangeGeneration(db.log_signature, db.first),
                ExchangeGeneration(db.log_signature, db.last), when, stream=db.name.lower())


def links(history: Sequence[SnapshotInfo]) -> list[Link]:
    """Every database of every snapshot as a link of that database's stream."""
    found = []
    for snap in history:
        meta = ExchangeMeta.of(snap.meta, snap.short_id)
        for db in meta.databases:
            link = database_link(snap, meta, db)
            if link is not None:
                found.append(link)
    return found


def generation_name(prefix: str, generation: int, digits: int = 8) -> str:
    return f"{prefix}{generation:0{digits or 8}X}.log"


def explain(end: ExchangeGeneration, next_start: ExchangeGeneration | None) -> str:
    """Name the generations a gap lacks (``E0000000005.log .. E0000000007.log missing``)."""
    if next_start is None:
        return f"no log snapshot starts at generation {end.generation + 1:X} (after {end.generation:X})"
    if next_start.signature != end.signature:
        return (f"the next log snapshot has log signature {next_start.signature}, not {end.signature}: the log "
                "stream was recreated")
    first, last = end.generation + 1, next_start.generation - 1
    if last < first:
        return f"the next log snapshot starts at generation {next_start.generation:X}, not {first:X}"
    missing = f"generation {first:X}" if first == last else f"generations {first:X} .. {last:X}"
    return f"{missing} missing"


__all__ = ["KIND", "database_link", "explain", "generation_name", "links", "mode_of"]
