"""MySQL snapshots as chain links: what a full and a log snapshot record, read as positions.

A full records ``binlog`` (the dump's coordinates, ``file:pos``) and ``binlog_next`` (the file the
next log snapshot must start with, and the GTID state that file starts with).  A log snapshot
records ``binlog_from`` (the file it starts with, and its GTID state), ``binlog_next`` and
``covered_until`` (its last event's time).  A log continues a chain when its ``binlog_from`` is the
chain's ``binlog_next``: same file, same GTID state (a ``RESET MASTER`` gives the same file name a
new state).

This module imports nothing but the framework, so retention and ``restore-points`` work without
the ``mysql`` extra installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dtstore.connectors.base import SnapshotInfo, from_iso
from dtstore.connectors.chains import Link
from dtstore.connectors.positions import BinlogPosition, log_file_base, log_file_seq

KIND = "mysql"


def _boundary(value: Mapping[str, Any] | None) -> BinlogPosition | None:
    return BinlogPosition(str(value["file"]), 0, str(value.get("start_state", ""))) if value else None


def full_link(snap: SnapshotInfo) -> Link | None:
    meta = snap.meta
    coords, consistent = meta.get("binlog"), meta.get("consistent_at")
    if consistent is None:
        return None
    nxt = _boundary(meta.get("binlog_next"))
    if coords:
        point = BinlogPosition(str(coords["file"]), int(coords["pos"]), nxt.state if nxt else "")
    else:
        point = BinlogPosition("", 0)
    return Link(
        snapshot_id=snap.id,
        short_id=snap.short_id,
        taken=snap.time,
        kind="full",
        start=point,
        end=point,
        time_until=from_iso(str(consistent)),
        log_chain=nxt is not None,
    )


def log_link(snap: SnapshotInfo) -> Link | None:
    meta = snap.meta
    start, end, covered = _boundary(meta.get("binlog_from")), _boundary(meta.get("binlog_next")), meta.get(
        "covered_until"
    )
    if start is None or end is None or covered is None:
        return None
    return Link(
        snapshot_id=snap.id,
        short_id=snap.short_id,
        taken=snap.time,
        kind="log",
        start=start,
        end=end,
        time_until=from_iso(str(covered)),
    )


def links(history: Sequence[SnapshotInfo]) -> list[Link]:
    """Every snapshot of the history that takes part in a chain (one stream per server)."""
    found = []
    for snap in history:
        mode = snap.meta.get("mode")
        link = full_link(snap) if mode == "full" else log_link(snap) if mode == "log" else None
        if link is not None:
            found.append(link)
    return found


def explain(end: BinlogPosition, next_start: BinlogPosition | None) -> str:
    """Name the binlog files a gap lacks (``mysql-bin.000042 missing``)."""
    if next_start is None:
        return f"no log snapshot starts at binlog {end.file}"
    if next_start.file == end.file:
        return (
            f"binlog {end.file} was archived with another GTID state ({next_start.state or '[]'} instead of "
            f"{end.state or '[]'}): the binary logs were reset"
        )
    base = log_file_base(end.file)
    first, last = log_file_seq(end.file), log_file_seq(next_start.file) - 1
    if log_file_base(next_start.file) != base or last < first:
        return f"the next log snapshot starts at {next_start.file}, not at {end.file}"
    width = len(end.file) - len(base)
    missing = f"{end.file}" if last == first else f"{end.file} .. {base}{last:0{width}d}"
    return f"{missing} missing"


__all__ = ["KIND", "explain", "full_link", "links", "log_link"]
