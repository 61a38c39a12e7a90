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

from collections.abc import Sequence

from dtstore.connectors.base import ChainCheck, SnapshotInfo, from_iso
from dtstore.connectors.chains import Link
from dtstore.connectors.mysql.meta import FullMeta, LogMeta, NextBinlog
from dtstore.connectors.positions import BinlogPosition, log_file_base, log_file_seq
from dtstore.errors import ConnectorError

KIND = "mysql"


def mode_of(snap: SnapshotInfo) -> str:
    """``full`` or ``log`` (the metadata's discriminator)."""
    mode = snap.meta.get("mode")
    if mode not in ("full", "log"):
        raise ConnectorError(f"MySQL snapshot {snap.short_id} records no mode (full or log)")
    return str(mode)


def is_full(snap: SnapshotInfo) -> bool:
    return mode_of(snap) == "full"


def follows(log: SnapshotInfo, expected: NextBinlog) -> bool:
    return mode_of(log) == "log" and NextBinlog.of(log.meta, "binlog_from") == expected


def check_log_base(history: Sequence[SnapshotInfo]) -> ChainCheck:
    """Can a log snapshot be taken now?  The latest snapshot must chain back to a full with coordinates."""
    if not history:
        return ChainCheck.broken("there is no earlier snapshot of this server")
    current = history[-1]
    if NextBinlog.of(current.meta) is None:
        return ChainCheck.broken(
            f"the latest snapshot {current.short_id} has no binlog coordinates (binary logging was off)"
        )
    while not is_full(current):
        expected = NextBinlog.of(current.meta, "binlog_from")
        earlier = [s for s in history if s.time < current.time and NextBinlog.of(s.meta) == expected]
        if expected is None or not earlier:
            return ChainCheck.broken(
                f"log snapshot {current.short_id} does not continue any snapshot in the "
                "repository (was its base forgotten?)"
            )
        current = earlier[-1]
    return ChainCheck.good()


def check_server_continuity(
    expected: NextBinlog, server_logs: Sequence[tuple[str, int]], server_state: str | None
) -> ChainCheck:
    """Does the server still hold the binlog the archive needs next, with the same history?

    ``server_state`` is the GTID state the server's copy of ``expected.file`` starts with (None if
    the server no longer has that file).
    """
    names = [name for name, _ in server_logs]
    if expected.file in names:
        if server_state is not None and server_state != expected.start_state:
            return ChainCheck.broken(
                f"binlog {expected.file} on the server starts at GTID state {server_state or '[]'} but the "
                f"archive expects {expected.start_state or '[]'}: the binary logs were reset (RESET MASTER) "
                "or this is another server"
            )
        return ChainCheck.good()
    first = names[0] if names else None
    same_stream = first is not None and log_file_base(first) == log_file_base(expected.file)
    if first and same_stream and log_file_seq(first) > log_file_seq(expected.file):
        return ChainCheck.broken(
            f"binlog {expected.file} was purged from the server before it was archived "
            f"(the oldest binlog on the server is {names[0]})"
        )
    newest = names[-1] if names else "none"
    return ChainCheck.broken(
        f"binlog {expected.file} is not on the server (newest: {newest}): the binary logs "
        "were reset (RESET MASTER), renamed, or this is another server"
    )


def _boundary(value: NextBinlog) -> BinlogPosition:
    return BinlogPosition(value.file, 0, value.start_state)


def full_link(snap: SnapshotInfo) -> Link:
    meta = FullMeta.of(snap.meta, snap.short_id)
    state = meta.binlog_next.start_state if meta.binlog_next else ""
    point = BinlogPosition(meta.binlog.file, meta.binlog.pos, state) if meta.binlog else BinlogPosition("", 0)
    return Link(
        snapshot_id=snap.id,
        short_id=snap.short_id,
        taken=snap.time,
        kind="full",
        start=point,
        end=point,
        time_until=from_iso(meta.consistent_at),
        log_chain=meta.binlog_next is not None,
    )


def log_link(snap: SnapshotInfo) -> Link:
    meta = LogMeta.of(snap.meta, snap.short_id)
    return Link(
        snapshot_id=snap.id,
        short_id=snap.short_id,
        taken=snap.time,
        kind="log",
        start=_boundary(meta.binlog_from),
        end=_boundary(meta.binlog_next),
        time_until=from_iso(meta.covered_until),
    )


def links(history: Sequence[SnapshotInfo]) -> list[Link]:
    """Every snapshot of the history as a chain link (one stream per server)."""
    return [full_link(snap) if is_full(snap) else log_link(snap) for snap in history]


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


__all__ = [
    "KIND",
    "NextBinlog",
    "check_log_base",
    "check_server_continuity",
    "explain",
    "follows",
    "full_link",
    "is_full",
    "links",
    "log_link",
    "mode_of",
]
