"""Log positions, one type per application: how each names a point in its log stream.

A position has three jobs, and each type does them its own way:

* ``parse(text)``: read what a user types after ``--until-position`` (without the ``kind:`` prefix)
  and what a connector records in its metadata (``str(position)`` round-trips through ``parse``);
* ordering (``<``, ``<=``): positions of one stream form a total order, so the planner can ask
  "is the target inside this link?";
* ``continues(end)``: may a log link that starts here follow a chain that ends at ``end``?  For
  most applications the start of the next log must equal the end of the previous one; SQL Server
  lets a log backup start before the end of the full it follows (the full's LSNs lie inside it).

Orderings never compare names as text: ``mysql-bin.1000000`` comes after ``mysql-bin.999999``,
WAL segment and Exchange generation names are hexadecimal, LSNs are numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self, TypeVar

from dtstore.errors import UsageError

_TRAILING_DIGITS = re.compile(r"(\d+)$")


class Position(Protocol):
    """What the generic planner needs of a position (``dtstore.connectors.chains``)."""

    kind: ClassVar[str]

    def __lt__(self, other: Any, /) -> bool: ...

    def __le__(self, other: Any, /) -> bool: ...

    def continues(self, end: Any, /) -> bool:
        """May a log that starts at ``self`` follow a chain whose newest link ends at ``end``?"""
        ...


# Optional, for speed: ``start_key()`` and ``successor_key()`` such that ``s.continues(e)`` implies
# ``s.start_key() == e.successor_key()``.  The planner then finds the logs that may continue a point
# by a dictionary lookup instead of scanning every later log (a year of 15-minute logs is 35,040).
# A type whose ``continues`` is "starts at or before the end" sets ``STARTS_AT_OR_BEFORE = True``;
# the planner then answers "which logs span this point" with a sorted index.


P = TypeVar("P", bound=Position)


def _bad(kind: str, text: str, expected: str) -> UsageError:
    return UsageError(f"invalid {kind} position {text!r}: expected {expected}")


def log_file_seq(name: str) -> int:
    """The number a log file name ends with; -1 when it has none."""
    match = _TRAILING_DIGITS.search(name)
    return int(match.group(1)) if match else -1


def log_file_base(name: str) -> str:
    """``mysql-bin.000042`` → ``mysql-bin.``: files of one stream share it."""
    return name.rstrip("0123456789")


@dataclass(frozen=True, order=False)
class BinlogPosition:
    """MySQL/MariaDB: a binary log file and a byte offset in it (``mysql-bin.000042:1337``).

    ``state`` is the GTID state the file starts with (MariaDB's ``Gtid_list``; empty on MySQL or
    when unknown).  Two boundaries continue each other when file and state agree; offsets order
    within a file.
    """

    kind: ClassVar[str] = "binlog"
    file: str
    pos: int = 0
    state: str = ""

    @property
    def seq(self) -> int:
        return log_file_seq(self.file)

    def sort_key(self) -> tuple[int, int]:
        return (self.seq, self.pos)

    def __lt__(self, other: BinlogPosition) -> bool:
        return self.sort_key() < other.sort_key()

    def __le__(self, other: BinlogPosition) -> bool:
        return self.sort_key() <= other.sort_key()

    def continues(self, end: BinlogPosition) -> bool:
        return self.file == end.file and self.state == end.state

    def start_key(self) -> tuple[str, str]:
        return (self.file, self.state)

    def successor_key(self) -> tuple[str, str]:
        return (self.file, self.state)

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"

    @classmethod
    def parse(cls, text: str) -> Self:
        name, sep, pos = text.rpartition(":")
        if not sep or not name or not pos.isdigit():
            raise _bad("binlog", text, "FILE:POS, e.g. mysql-bin.000042:1337")
        if not _TRAILING_DIGITS.search(name):
            raise UsageError(f"invalid log file name {name!r}: it must end with a number")
        return cls(name, int(pos))


@dataclass(frozen=True, order=True)
class Lsn:
    """SQL Server: a log sequence number as msdb shows it, a decimal number (``numeric(25,0)``).

    A log backup continues a chain when its ``first_lsn`` is at or before the chain's end
    (``last_lsn`` of the previous log; for the first log after a full, the LSNs of the full lie
    inside it, so it may start well before the full ends).
    """

    kind: ClassVar[str] = "lsn"
    STARTS_AT_OR_BEFORE: ClassVar[bool] = True
    value: int

    def continues(self, end: Lsn) -> bool:
        return self.value <= end.value

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def parse(cls, text: str) -> Self:
        if not text.isdigit():
            raise _bad("lsn", text, "a decimal LSN as msdb.backupset shows it, e.g. 45000000012300001")
        return cls(int(text))


@dataclass(frozen=True, order=True)
class _ValuePosition:
    """A position that is one number, where the next log starts exactly where the last one ended."""

    value: int

    def continues(self, end: _ValuePosition) -> bool:
        return self.value == end.value

    def start_key(self) -> int:
        return self.value

    def successor_key(self) -> int:
        return self.value


@dataclass(frozen=True, order=True)
class PgLsn(_ValuePosition):
    """PostgreSQL: a WAL location ``X/Y`` (two hexadecimal halves of a 64-bit byte position)."""

    kind: ClassVar[str] = "lsn"

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    @classmethod
    def parse(cls, text: str) -> Self:
        hi, sep, lo = text.partition("/")
        try:
            if not sep:
                raise ValueError(text)
            high, low = int(hi, 16), int(lo, 16)
        except ValueError:
            raise _bad("lsn", text, "X/Y in hexadecimal, e.g. 0/3000060") from None
        if high > 0xFFFFFFFF or low > 0xFFFFFFFF or high < 0 or low < 0:
            raise _bad("lsn", text, "X/Y with each half at most FFFFFFFF")
        return cls((high << 32) | low)


WAL_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")


@dataclass(frozen=True, order=True)
class WalSegment:
    """PostgreSQL: a WAL segment file, ``TTTTTTTTXXXXXXXXYYYYYYYY`` (timeline, then the segment
    number split in two, all hexadecimal).  ``segment`` is the flat number for a given segment size:
    ``XXXXXXXX * (0x100000000 // segment_size) + YYYYYYYY``; with the default 16 MiB segments that
    is ``X * 256 + Y``."""

    kind: ClassVar[str] = "wal"
    timeline: int
    segment: int
    per_xlogid: int = 0x100

    def continues(self, end: WalSegment) -> bool:
        return self.timeline >= end.timeline and self.segment == end.segment + 1

    def start_key(self) -> int:
        return self.segment

    def successor_key(self) -> int:
        return self.segment + 1

    @property
    def name(self) -> str:
        hi, lo = divmod(self.segment, self.per_xlogid)
        return f"{self.timeline:08X}{hi:08X}{lo:08X}"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str, segment_size: int = 16 << 20) -> Self:
        match = WAL_SEGMENT.match(text.upper())
        if not match:
            raise _bad("wal", text, "a 24-digit segment name, e.g. 000000010000000000000003")
        per = 0x100000000 // segment_size
        timeline, hi, lo = (int(g, 16) for g in match.groups())
        if lo >= per:
            raise _bad("wal", text, f"a segment number below {per:X} in its last 8 digits")
        return cls(timeline, hi * per + lo, per)


@dataclass(frozen=True, order=True)
class Scn(_ValuePosition):
    """Oracle: a system change number (decimal)."""

    kind: ClassVar[str] = "scn"

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def parse(cls, text: str) -> Self:
        if not text.isdigit():
            raise _bad("scn", text, "a decimal SCN, e.g. 1234567")
        return cls(int(text))


@dataclass(frozen=True, order=True)
class OracleLogSequence:
    """Oracle: an archived redo log, ``(resetlogs_id, thread, sequence)``.

    A new incarnation (``RESETLOGS``) starts sequences again at 1 with a new ``resetlogs_id``; a log
    of another incarnation never continues a chain, so ordering puts the incarnation first.
    """

    kind: ClassVar[str] = "seq"
    resetlogs_id: int
    thread: int
    sequence: int

    def continues(self, end: OracleLogSequence) -> bool:
        return (self.resetlogs_id, self.thread) == (end.resetlogs_id, end.thread) and self.sequence == end.sequence + 1

    def start_key(self) -> tuple[int, int, int]:
        return (self.resetlogs_id, self.thread, self.sequence)

    def successor_key(self) -> tuple[int, int, int]:
        return (self.resetlogs_id, self.thread, self.sequence + 1)

    def __str__(self) -> str:
        return f"{self.thread}_{self.sequence}_{self.resetlogs_id}"

    @classmethod
    def parse(cls, text: str) -> Self:
        parts = text.split("_")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise _bad("seq", text, "THREAD_SEQUENCE_RESETLOGSID as in 1_42_1187462315.arc")
        thread, sequence, resetlogs = (int(p) for p in parts)
        return cls(resetlogs, thread, sequence)


EXCHANGE_LOG = re.compile(r"^(E[0-9A-F]{2})([0-9A-F]{5}|[0-9A-F]{8})(?:\.log)?$", re.IGNORECASE)


@dataclass(frozen=True, order=True)
class ExchangeGeneration:
    """Exchange (ESE): a log generation of one log stream.

    ``signature`` is the log signature from the log header (it changes when the log stream is
    recreated); ``generation`` is the hexadecimal number in ``E00000002A.log``.  A generation
    continues the previous one in the same signature.
    """

    kind: ClassVar[str] = "gen"
    signature: str
    generation: int

    def continues(self, end: ExchangeGeneration) -> bool:
        return self.signature == end.signature and self.generation == end.generation + 1

    def start_key(self) -> tuple[str, int]:
        return (self.signature, self.generation)

    def successor_key(self) -> tuple[str, int]:
        return (self.signature, self.generation + 1)

    def __str__(self) -> str:
        return f"{self.generation:X}" if not self.signature else f"{self.signature}:{self.generation:X}"

    @classmethod
    def parse(cls, text: str) -> Self:
        signature, _, number = text.rpartition(":")
        try:
            return cls(signature, int(number, 16))
        except ValueError:
            raise _bad("gen", text, "a hexadecimal generation, e.g. 2A (or SIGNATURE:2A)") from None

    @staticmethod
    def from_file_name(name: str) -> tuple[str, int]:
        """``E00000002A.log`` → ``("E00", 0x2A)``; both the 5- and 8-digit schemes."""
        match = EXCHANGE_LOG.match(name)
        if not match:
            raise ValueError(f"not an Exchange log generation file name: {name!r}")
        return match.group(1).upper(), int(match.group(2), 16)


@dataclass(frozen=True, order=True)
class DominoExtent:
    """Domino: a transaction log extent ``S0000042.TXN`` of one log (its LogID)."""

    kind: ClassVar[str] = "extent"
    log_id: str
    sequence: int

    def continues(self, end: DominoExtent) -> bool:
        return self.log_id == end.log_id and self.sequence == end.sequence + 1

    def start_key(self) -> tuple[str, int]:
        return (self.log_id, self.sequence)

    def successor_key(self) -> tuple[str, int]:
        return (self.log_id, self.sequence + 1)

    def __str__(self) -> str:
        return f"{self.log_id}:{self.sequence}" if self.log_id else str(self.sequence)

    @classmethod
    def parse(cls, text: str) -> Self:
        log_id, _, number = text.rpartition(":")
        if not number.isdigit():
            raise _bad("extent", text, "LOGID:SEQUENCE or SEQUENCE, e.g. 42")
        return cls(log_id, int(number))


__all__ = [
    "BinlogPosition",
    "DominoExtent",
    "ExchangeGeneration",
    "Lsn",
    "OracleLogSequence",
    "PgLsn",
    "Position",
    "Scn",
    "WalSegment",
    "log_file_base",
    "log_file_seq",
]
