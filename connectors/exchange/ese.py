"""ESE (Extensible Storage Engine) file headers, read from the files themselves: databases, logs, checkpoints.

Layouts as Microsoft's published ESE source defines them (``LGFILEHDR_FIXED``, ``CHECKPOINT_FIXED``,
the database header ``DBFILEHDR``) and libyal's EDB format notes; every value little-endian:

* **Database** (page 0; page 1 is a copy): +0 checksum, +4 magic ``0x89abcdef``, +8 format version,
  +12 file type (0 database, 1 streaming file), +24 database signature, +52 state (1 just created,
  2 dirty shutdown, 3 clean shutdown, 4 being converted, 5 force detach), +104 log signature, +136 /
  +160 / +184 previous full, previous incremental and current full backup (``BKINFO``: log position,
  time, low and high generation), +232 format revision, +236 page size, +296 required log (low, high).
* **Log file** (4096-byte header): +0 checksum, +4 generation, +8 bytes per sector, +10 header
  sectors, +12 file sectors, +14 page size, +16 creation time, +24 previous generation's creation time,
  +32 major/minor/update version, +44 log signature, +639 flags (0x02 circular logging on, 0x04 was on),
  +640 checkpoint position.
* **Checkpoint** (``E00.chk``, 4096 bytes): +0 checksum, +4 last full backup checkpoint, +12
  checkpoint position (generation at +16), +20 log signature.

A ``SIGNATURE`` is 28 bytes: a random ULONG, the creation ``LOGTIME`` (8 bytes: seconds, minutes, hours,
day, month, years since 1900, two filler bytes) and the computer name (16 bytes).  dtstore writes a
signature as ``RANDOM-YYYYMMDDHHMMSS`` (hex, then the creation time).

The header checksum is the seed ``0x89abcdef`` XORed with every 32-bit word from offset 4 to 4095 (the
magic word cancels the seed in a database header); a header whose checksum does not match is refused.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath
from typing import BinaryIO

from dtstore.errors import ConnectorError

HEADER = 4096
MAGIC = 0x89ABCDEF
SEED = 0x89ABCDEF
STATES = {1: "Just Created", 2: "Dirty Shutdown", 3: "Clean Shutdown", 4: "Being Converted", 5: "Force Detach"}
CLEAN = 3
CIRCULAR_CURRENT = 0x02


def checksum(header: bytes) -> int:
    """The ESE header checksum of the first 4096 bytes (seed XOR every word from offset 4)."""
    words = struct.unpack_from("<1023I", header, 4)
    value = SEED
    for word in words:
        value ^= word
    return value


def logtime(raw: bytes) -> dt.datetime | None:
    """A ``LOGTIME`` (seconds, minutes, hours, day, month, years since 1900, fillers); None when empty."""
    sec, minute, hour, day, month, year = raw[:6]
    if not month:
        return None
    try:
        return dt.datetime(1900 + year, month, day, hour, minute, sec, tzinfo=dt.UTC)
    except ValueError:
        return None


def signature_text(raw: bytes) -> str:
    """A 28-byte ``SIGNATURE`` as ``RANDOM-YYYYMMDDHHMMSS``; ``""`` when it is all zero."""
    if not any(raw):
        return ""
    (random,) = struct.unpack_from("<I", raw, 0)
    when = logtime(raw[4:12])
    return f"{random:08X}-{when:%Y%m%d%H%M%S}" if when else f"{random:08X}"


@dataclass(frozen=True)
class BackupInfo:
    """A ``BKINFO``: when the last full or incremental backup was taken, which generations it held."""

    generation: int
    time: dt.datetime | None
    low: int
    high: int

    def to_json(self) -> dict[str, object] | None:
        if not (self.generation or self.low or self.high or self.time):
            return None
        return {"generation": self.generation, "time": self.time.isoformat().replace("+00:00", "Z") if self.time
                else None, "low": self.low, "high": self.high}

    @classmethod
    def read(cls, page: bytes, offset: int) -> BackupInfo:
        _, _, generation = struct.unpack_from("<HHi", page, offset)
        low, high = struct.unpack_from("<II", page, offset + 16)
        return cls(generation, logtime(page[offset + 8 : offset + 16]), low, high)


@dataclass(frozen=True)
class DatabaseHeader:
    format_version: int
    file_type: int
    db_signature: str
    state: int
    log_signature: str
    last_full: BackupInfo
    last_incremental: BackupInfo
    current_full: BackupInfo
    format_revision: int
    page_size: int
    required: tuple[int, int]

    @property
    def state_name(self) -> str:
        return STATES.get(self.state, f"unknown ({self.state})")

    @property
    def clean(self) -> bool:
        return self.state == CLEAN

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.state_name,
            "db_signature": self.db_signature,
            "log_signature": self.log_signature,
            "required": list(self.required),
            "last_full_backup": self.last_full.to_json(),
            "last_incremental_backup": self.last_incremental.to_json(),
            "page_size": self.page_size,
            "format_version": f"0x{self.format_version:x}",
            "format_revision": self.format_revision,
        }


def parse_database_header(page: bytes, name: str = "database") -> DatabaseHeader:
    if len(page) < HEADER:
        raise ConnectorError(f"{name} is too short for an ESE database ({len(page)} bytes)")
    (stored, magic) = struct.unpack_from("<II", page, 0)
    if magic != MAGIC:
        raise ConnectorError(f"{name} is not an ESE database (magic 0x{magic:08x}, expected 0x{MAGIC:08x})")
    if checksum(page) != stored:
        raise ConnectorError(f"the ESE header of {name} is damaged (checksum 0x{stored:08x}, computed "
                             f"0x{checksum(page):08x})")
    fmt, ftype = struct.unpack_from("<II", page, 8)
    (state,) = struct.unpack_from("<I", page, 52)
    rev, page_size = struct.unpack_from("<II", page, 232)
    low, high = struct.unpack_from("<II", page, 296)
    return DatabaseHeader(
        format_version=fmt, file_type=ftype, db_signature=signature_text(page[24:52]), state=state,
        log_signature=signature_text(page[104:132]), last_full=BackupInfo.read(page, 136),
        last_incremental=BackupInfo.read(page, 160), current_full=BackupInfo.read(page, 184),
        format_revision=rev, page_size=page_size, required=(low, high),
    )


@dataclass(frozen=True)
class LogHeader:
    generation: int
    created: dt.datetime | None
    previous_created: dt.datetime | None
    signature: str
    flags: int
    checkpoint: int
    version: tuple[int, int, int]

    @property
    def circular(self) -> bool:
        return bool(self.flags & CIRCULAR_CURRENT)


def _checked(raw: bytes, name: str, what: str) -> None:
    if len(raw) < HEADER:
        raise ConnectorError(f"{name} is too short for an ESE {what} ({len(raw)} bytes)")
    (stored,) = struct.unpack_from("<I", raw, 0)
    if checksum(raw) != stored:
        raise ConnectorError(f"the header of {what} {name} is damaged (checksum 0x{stored:08x}, computed "
                             f"0x{checksum(raw):08x}): it is not an Exchange transaction log or it is corrupted")


def parse_log_header(raw: bytes, name: str = "log") -> LogHeader:
    _checked(raw, name, "log file")
    (generation,) = struct.unpack_from("<i", raw, 4)
    major, minor, update = struct.unpack_from("<III", raw, 32)
    (checkpoint,) = struct.unpack_from("<i", raw, 644)
    return LogHeader(generation, logtime(raw[16:24]), logtime(raw[24:32]), signature_text(raw[44:72]), raw[639],
                     checkpoint, (major, minor, update))


@dataclass(frozen=True)
class Checkpoint:
    generation: int
    signature: str


def parse_checkpoint(raw: bytes, name: str = "checkpoint") -> Checkpoint:
    _checked(raw, name, "checkpoint file")
    (generation,) = struct.unpack_from("<i", raw, 16)
    return Checkpoint(generation, signature_text(raw[20:48]))


def read_header(stream: BinaryIO, name: str) -> bytes:
    data = stream.read(HEADER)
    return bytes(data or b"")


# -- file names ---------------------------------------------------------------------------------------

RESERVE = re.compile(r"^(res\d+\.log|E[0-9A-F]{2}res\d+\.jrs)$", re.IGNORECASE)


@dataclass(frozen=True)
class LogFolder:
    """What a log folder holds for one prefix: numbered generations, the current log, checkpoint, reserves."""

    prefix: str
    generations: dict[int, str]
    """generation → file name"""
    current: str | None
    checkpoint: str | None
    reserve: list[str]
    digits: int
    """5 (Exchange 2000/2003, 5 MiB logs) or 8 (2007 onwards, 1 MiB logs); 0 when no numbered log exists"""

    def name_of(self, generation: int) -> str:
        digits = self.digits or 8
        return f"{self.prefix}{generation:0{digits}X}.log"


def scan_folder(names: Iterable[str], prefix: str | None = None) -> LogFolder:
    """Sort a log folder's file names; ``prefix`` None: the one prefix found (several: ConnectorError)."""
    numbered: dict[str, dict[int, str]] = {}
    digits: dict[str, set[int]] = {}
    currents, checkpoints, reserve = set(), set(), []
    for name in names:
        upper = name.upper()
        match = re.match(r"^(E[0-9A-F]{2})([0-9A-F]{5}|[0-9A-F]{8})\.LOG$", upper)
        if match:
            numbered.setdefault(match.group(1), {})[int(match.group(2), 16)] = name
            digits.setdefault(match.group(1), set()).add(len(match.group(2)))
        elif re.match(r"^E[0-9A-F]{2}\.LOG$", upper):
            currents.add(upper[:3])
        elif re.match(r"^E[0-9A-F]{2}\.CHK$", upper):
            checkpoints.add(upper[:3])
        elif RESERVE.match(name):
            reserve.append(name)
    found = sorted(set(numbered) | currents | checkpoints)
    if prefix is None:
        if len(found) > 1:
            raise ConnectorError(f"the log folder holds several log streams ({', '.join(found)}); name one with "
                                 "&prefix=E00")
        prefix = found[0] if found else "E00"
    prefix = prefix.upper()
    gens = numbered.get(prefix, {})
    widths = digits.get(prefix, set())
    # ESE names generations with 5 hex digits until 0xFFFFF, then 8; a 2007+ folder uses 8 throughout
    width = 8 if 8 in widths else (5 if widths else 0)
    by_case = {n.upper(): n for n in names}
    return LogFolder(prefix, dict(sorted(gens.items())), by_case.get(f"{prefix}.LOG"),
                     by_case.get(f"{prefix}.CHK"), sorted(reserve), width)


def windows_aware(path: str) -> PurePath:
    """A host path as the right pure type: ``C:\\…`` is a Windows path wherever dtstore runs."""
    from pathlib import PurePosixPath, PureWindowsPath

    return PureWindowsPath(path) if re.match(r"^[A-Za-z]:[\\/]|^\\\\", path) else PurePosixPath(path)


__all__ = ["CLEAN", "HEADER", "STATES", "BackupInfo", "Checkpoint", "DatabaseHeader", "LogFolder", "LogHeader",
           "checksum", "logtime", "parse_checkpoint", "parse_database_header", "parse_log_header", "read_header",
           "scan_folder", "signature_text", "windows_aware"]
