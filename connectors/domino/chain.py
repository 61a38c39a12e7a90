"""Domino snapshots as chain links (importable without anything but the framework).

A point in the log is ``DominoPoint(log_id, sequence, offset, mark)``: an extent of one log (its
LogID) and a byte offset in it.  Direct mode archives the current extent's new bytes too, so a log
snapshot starts exactly where the previous snapshot ended (``continues``: equal points) and ends at
the used size of the newest extent (a run that found nothing new ends one ``mark`` on).  The
backup-task backend archives whole extents (Domino hands over an extent only once it is full):
extent N is the link ``N@0 → N+1@0``.  ``--until-position`` takes ``LOGID:SEQ`` (the start of that
extent), ``SEQ`` or ``LOGID:SEQ@OFFSET[+MARK]``.

Link kinds:

* a direct full: ``full``, its point both start and end;
* a direct log: ``log``;
* backup task: the first snapshot of a backup set (``BackupStartDT``) is the ``full``, later ones
  of the same set (.DELTA files, databases sent one by one) are ``diff``s of it; its end is where
  the first translog snapshot taken after it starts (Domino's recovery replays every extent archived
  after the backup); the snapshots of an incremental set (BackupMode INCR, ``load backup -i``) are
  ``diff``s of the newest full set before them, ending where that full ends (its databases still
  need every extent since it);
* a backup-task extent: ``log``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from dtstore.connectors.base import SnapshotInfo, from_iso
from dtstore.connectors.chains import Link
from dtstore.errors import ConnectorError, UsageError

KIND = "domino"
METADATA_FORMAT = 1


@dataclass(frozen=True, order=True)
class DominoPoint:
    """(LogID, extent sequence, byte offset in it, mark).

    ``mark`` counts the direct-mode log runs that found no new byte at this offset: such a run still
    extends the archive in time ("nothing happened until then"), so it is a link, ending one mark on."""

    kind: ClassVar[str] = "extent"
    log_id: str
    sequence: int
    offset: int = 0
    mark: int = 0

    def continues(self, end: DominoPoint) -> bool:
        return self.start_key() == end.successor_key()

    def start_key(self) -> tuple[str, int, int, int]:
        return (self.log_id, self.sequence, self.offset, self.mark)

    def successor_key(self) -> tuple[str, int, int, int]:
        return (self.log_id, self.sequence, self.offset, self.mark)

    def after(self, end: DominoPoint) -> DominoPoint:
        """Where a run that starts here and read up to ``end`` ends (one mark on when nothing was new)."""
        if (end.log_id, end.sequence, end.offset) == (self.log_id, self.sequence, self.offset):
            return DominoPoint(self.log_id, self.sequence, self.offset, self.mark + 1)
        return end

    def __str__(self) -> str:
        return f"{self.log_id}:{self.sequence}@{self.offset}" + (f"+{self.mark}" if self.mark else "")

    @classmethod
    def parse(cls, text: str) -> Self:
        log_id, _, rest = text.rpartition(":")
        seq, _, offset = rest.partition("@")
        offset, _, mark = offset.partition("+")
        if not seq.isdigit() or (offset and not offset.isdigit()) or (mark and not mark.isdigit()):
            raise UsageError(f"invalid extent position {text!r}: expected LOGID:SEQUENCE[@OFFSET] or SEQUENCE, e.g. 42")
        return cls(log_id, int(seq), int(offset or 0), int(mark or 0))


NOWHERE = DominoPoint("", 0, 0)


def mode_of(snap: SnapshotInfo) -> str:
    mode = snap.meta.get("mode")
    if mode not in ("full", "log", "task-db", "task-snapshot", "task-log"):
        raise ConnectorError(f"Domino snapshot {snap.short_id} records no mode")
    return str(mode)


def point(meta: Mapping[str, Any], key: str) -> DominoPoint:
    value = meta.get(key)
    if not value:
        raise ConnectorError(f"the Domino metadata has no {key!r}: written by another version?")
    return DominoPoint.parse(str(value))


def _time(meta: Mapping[str, Any], key: str, snap: SnapshotInfo) -> Any:
    value = meta.get(key)
    return from_iso(str(value)) if value else snap.time


def task_set(snap: SnapshotInfo) -> str:
    return str(snap.meta.get("task", {}).get("set", snap.id))


def links(history: Sequence[SnapshotInfo]) -> list[Link]:
    """Every snapshot of one source's history as chain links (one stream per server)."""
    found: list[Link] = []
    ordered = sorted(history, key=lambda s: s.time)
    task_logs = [s for s in ordered if mode_of(s) == "task-log"]
    set_first: dict[str, SnapshotInfo] = {}  # backup set → the snapshot that is its base
    set_end: dict[str, DominoPoint] = {}  # base snapshot id → where its logs start
    last_full: SnapshotInfo | None = None
    for snap in ordered:
        mode = mode_of(snap)
        meta = snap.meta
        if mode == "full":
            at = point(meta, "log_end")
            found.append(Link(snap.id, snap.short_id, snap.time, "full", at, at, _time(meta, "consistent_at", snap),
                              log_chain=meta.get("log", {}).get("style") == "archive"))
        elif mode == "log":
            start, end = point(meta, "log_start"), point(meta, "log_end")
            found.append(Link(snap.id, snap.short_id, snap.time, "log", start, end,
                              _time(meta, "covered_until", snap)))
        elif mode == "task-log":
            seq = int(meta["extent"]["sequence"])
            log_id = str(meta["log"]["log_id"])
            found.append(Link(snap.id, snap.short_id, snap.time, "log", DominoPoint(log_id, seq),
                              DominoPoint(log_id, seq + 1), _time(meta, "covered_until", snap)))
        else:
            name = task_set(snap)
            incremental = str(meta.get("task", {}).get("backup_mode", "")).upper() == "INCR"
            if name not in set_first:
                if incremental and last_full is not None:  # load backup -i: new DBIIDs since that full
                    set_first[name] = last_full
                else:
                    set_first[name] = snap
                    later = [t for t in task_logs if t.time > snap.time]
                    set_end[snap.id] = (DominoPoint(str(later[0].meta["log"]["log_id"]),
                                                    int(later[0].meta["extent"]["sequence"])) if later else NOWHERE)
                    last_full = snap
                    end = set_end[snap.id]
                    found.append(Link(snap.id, snap.short_id, snap.time, "full", end, end,
                                      _time(meta, "consistent_at", snap)))
                    continue
            base = set_first[name]
            end = set_end[base.id]  # the logs from the base's backup on: its databases need every one
            found.append(Link(snap.id, snap.short_id, snap.time, "diff", end, end, _time(meta, "consistent_at", snap),
                              base_ref=base.id))
    return found


def explain(end: DominoPoint, next_start: DominoPoint | None) -> str:
    """Name the extents a gap lacks."""
    if next_start is None:
        return f"no log snapshot continues extent S{end.sequence:07d}.TXN at offset {end.offset} (LogID {end.log_id})"
    if next_start.log_id != end.log_id:
        return f"the transaction log was recreated: LogID {next_start.log_id} follows {end.log_id}"
    if next_start.sequence > end.sequence:
        last = next_start.sequence - 1
        names = f"S{end.sequence:07d}.TXN" + (f" .. S{last:07d}.TXN" if last > end.sequence else "")
        return f"extent(s) {names} missing from the archive"
    return f"the next log snapshot starts at {next_start}, not at {end}"


__all__ = ["KIND", "METADATA_FORMAT", "NOWHERE", "DominoPoint", "explain", "links", "mode_of", "point", "task_set"]
