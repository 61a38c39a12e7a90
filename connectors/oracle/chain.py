"""Oracle snapshots as chain links: one stream per incarnation, every redo thread in one position.

Decision (``spec/connectors-oracle.md`` §5): recovery to SCN N needs, for *every* thread, all its
archived logs below N, so the threads of a RAC database cannot be planned as independent streams.
A link's position is a :class:`Frontier`: the incarnation, the last stored sequence of each thread
and the SCN below which every thread is covered (the smallest ``next_change#`` of the threads' last
logs).  A log snapshot records the frontier it continued (``continues``) and the one it reached
(``frontier``); it continues a chain only when that frontier is exactly the chain's end (same
sequence of every thread, same SCN), and the source checked at backup time that each thread's new
logs follow (``sequence + 1``, ``first_change#`` = previous ``next_change#``).

* A full is a ``full`` link: ``start`` = ``end`` = its frontier after the closing ``ARCHIVE LOG
  CURRENT`` (its consistent point: recovery must apply the redo through ``END BACKUP``),
  ``time_until`` the earliest ``next_time`` of the threads' last logs.
* A log snapshot is a ``log`` link from ``continues`` to ``frontier``.
* Stream ``incarnation <resetlogs_id>``: after ``OPEN RESETLOGS`` sequences restart at 1 under a new
  id; nothing crosses incarnations (the source takes a full there).

This module needs nothing beyond the framework, so retention and ``restore-points`` always work.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from dtstore.connectors.base import SnapshotInfo, from_iso
from dtstore.connectors.chains import Link
from dtstore.connectors.oracle.meta import OracleMeta, ThreadEnd
from dtstore.connectors.positions import Scn
from dtstore.errors import UsageError

KIND = "oracle"


def _scn_of(other: Any) -> int:
    if isinstance(other, Frontier):
        return other.scn
    if isinstance(other, Scn):
        return other.value
    return NotImplemented  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Frontier:
    """Composite position: ``(resetlogs_id, {thread: sequence}, scn)``; ordered by the SCN.

    Text form ``RESETLOGSID:T1_SEQ,T2_SEQ:SCN`` (``291523335:1_42,2_17:1234567``).  Compared with an
    :class:`Scn` (``--until-position scn:N``) by the SCN alone."""

    kind: ClassVar[str] = "frontier"
    resetlogs_id: int
    sequences: tuple[tuple[int, int], ...]
    scn: int

    def continues(self, end: Frontier) -> bool:
        return self == end

    def start_key(self) -> tuple[int, tuple[tuple[int, int], ...], int]:
        return (self.resetlogs_id, self.sequences, self.scn)

    def successor_key(self) -> tuple[int, tuple[tuple[int, int], ...], int]:
        return self.start_key()

    def __lt__(self, other: Any) -> bool:
        return self.scn < _scn_of(other)

    def __le__(self, other: Any) -> bool:
        return self.scn <= _scn_of(other)

    def __gt__(self, other: Any) -> bool:
        return self.scn > _scn_of(other)

    def __ge__(self, other: Any) -> bool:
        return self.scn >= _scn_of(other)

    def __str__(self) -> str:
        seqs = ",".join(f"{t}_{s}" for t, s in self.sequences)
        return f"{self.resetlogs_id}:{seqs}:{self.scn}"

    @classmethod
    def parse(cls, text: str) -> Self:
        try:
            rid, seqs, scn = text.split(":")
            pairs = tuple(tuple(int(x) for x in p.split("_")) for p in seqs.split(",") if p)
            return cls(int(rid), tuple((a, b) for a, b in pairs), int(scn))
        except ValueError:
            raise UsageError(f"invalid Oracle frontier {text!r}: expected RESETLOGSID:T_SEQ[,T_SEQ…]:SCN") from None

    @classmethod
    def of(cls, resetlogs_id: int, ends: Mapping[int, ThreadEnd]) -> Frontier:
        return cls(resetlogs_id, tuple(sorted((t, e.sequence) for t, e in ends.items())),
                   min((e.next_change for e in ends.values()), default=0))


def reached_time(ends: Mapping[int, ThreadEnd]) -> dt.datetime:
    """The newest moment every thread's logs cover."""
    return min(from_iso(e.next_time) for e in ends.values())


def stream_name(resetlogs_id: int) -> str:
    return f"incarnation {resetlogs_id}"


def link_of(snap: SnapshotInfo) -> Link | None:
    meta = OracleMeta.of(snap.meta, snap.short_id)
    rid = meta.incarnation.resetlogs_id
    if not meta.frontier:
        return None
    end = Frontier.of(rid, meta.frontier)
    if meta.mode == "full":
        return Link(snapshot_id=snap.id, short_id=snap.short_id, taken=snap.time, kind="full", start=end, end=end,
                    time_until=reached_time(meta.frontier), stream=stream_name(rid))
    if meta.continues is None:
        return None
    return Link(snapshot_id=snap.id, short_id=snap.short_id, taken=snap.time, kind="log",
                start=Frontier.of(rid, meta.continues), end=end, time_until=reached_time(meta.frontier),
                stream=stream_name(rid))


def links(history: Sequence[SnapshotInfo]) -> list[Link]:
    """Every snapshot of one source as links (one stream per incarnation)."""
    return [link for snap in history if (link := link_of(snap)) is not None]


def explain(end: Frontier, next_start: Frontier | None) -> str:
    """Name the archived logs a gap lacks (``thread 1 sequence 7 .. 8 missing``)."""
    if next_start is None:
        seqs = ", ".join(f"thread {t} sequence {s + 1}" for t, s in end.sequences)
        return f"archived log {seqs or 'after ' + str(end)} is not in the repository (nothing continues {end})"
    if next_start.resetlogs_id != end.resetlogs_id:
        return f"a new incarnation (resetlogs id {next_start.resetlogs_id}) begins"
    have = dict(end.sequences)
    missing = []
    for thread, seq in next_start.sequences:
        last = have.get(thread, 0)
        if seq > last:
            missing.append(f"thread {thread} sequence {last + 1}" + (f" .. {seq}" if seq > last + 1 else ""))
    if not missing:
        return f"the archived logs jump from {end} to {next_start}"
    return "archived log " + ", ".join(missing) + " missing"


__all__ = ["KIND", "Frontier", "explain", "link_of", "links", "reached_time", "stream_name"]
