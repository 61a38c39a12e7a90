"""SQL Server snapshots as chain links: one stream per database, positions are LSNs.

Each database's backup in a snapshot is one :class:`~dtstore.connectors.chains.Link`:

* full: ``start = end = Lsn(last_lsn)`` (the database is restored to the end of the backup),
  ``ref`` = its ``backup_set_guid``, ``log_chain`` False under SIMPLE recovery;
* diff: the same positions, ``base_ref`` = its ``differential_base_guid`` (the full it belongs to:
  a diff whose base is a full we do not hold, a foreign one, belongs to nothing);
* log: ``start = Lsn(first_lsn)``, ``end = Lsn(last_lsn)``; it continues a chain ending at ``E``
  when ``first_lsn <= E < last_lsn`` (``Lsn.continues``), which is dbatools' rule for the first log
  after a full and ``prev.last_lsn == next.first_lsn`` for the others.

``time_until`` is the backup's finish time (UTC).  Recovery forks are checked by the planner
(``plan.py``), not here.  This module imports nothing but the framework (no pyodbc), so retention
and ``restore-points`` work without the ``mssql`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence

from dtstore.connectors.base import SnapshotInfo, from_iso
from dtstore.connectors.chains import Link
from dtstore.connectors.mssql.meta import BackupFile, SnapshotMeta
from dtstore.connectors.positions import Lsn

KIND = "mssql"


def backup_link(snap: SnapshotInfo, backup: BackupFile) -> Link:
    if backup.kind == "log":
        start, end = Lsn(backup.first_lsn), Lsn(backup.last_lsn)
    else:
        start = end = Lsn(backup.last_lsn)
    return Link(
        snapshot_id=snap.id,
        short_id=snap.short_id,
        taken=snap.time,
        kind="full" if backup.kind == "full" else "diff" if backup.kind == "diff" else "log",
        start=start,
        end=end,
        time_until=from_iso(backup.finish),
        stream=backup.database,
        ref=backup.backup_set_guid,
        base_ref=backup.differential_base_guid if backup.kind == "diff" else None,
        log_chain=backup.point_in_time,
    )


def backups(snap: SnapshotInfo) -> list[BackupFile]:
    return SnapshotMeta.of(snap.meta, snap.short_id).backups


def links(history: Sequence[SnapshotInfo]) -> list[Link]:
    """Every database backup of every snapshot as a link (stream = database name)."""
    return [backup_link(snap, b) for snap in history for b in backups(snap)]


def explain(end: Lsn, next_start: Lsn | None) -> str:
    """Name the missing log backup by its LSN range."""
    if next_start is None:
        return f"no log backup starts at or before LSN {end} (the log chain ends there)"
    return (f"the log backup from LSN {end} to LSN {next_start} is missing (the next archived log backup starts at "
            f"LSN {next_start})")


__all__ = ["KIND", "backup_link", "backups", "explain", "links"]
