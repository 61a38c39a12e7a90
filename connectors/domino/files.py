"""What the connector reads from Domino's files: NSF and TXN extent headers, the running server.

**The header layouts below are the simulator's** (``tests/sim/domino/server.py``).  HCL does not
document the NSF or TXN on-disk formats; on a real server these facts come from the C API
(``NSFDbReplicaInfoGet``, ``NSFDbGetLogInfo``, ``NSFGetNextLogToArchive``), which Domino's own
backup task calls and passes to dtstore's commands (``task.py``: BackupReference is the DBIID or the
LogID).  Reading them from the files is what direct mode can do without the C API; it has been
tested only against the simulator.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from dtstore.errors import ConnectorError
from dtstore.processes import pid_alive

NSF_MAGIC = b"DTSIMNSF"
TXN_MAGIC = b"DTSIMTXN"
HEADER_SIZE = 64
_NSF = struct.Struct("<8sQQHB")
_TXN = struct.Struct("<8s16sIQQQ")
EXTENT_NAME = re.compile(r"^S(\d{7})\.TXN$", re.IGNORECASE)
DATABASE_SUFFIXES = (".nsf", ".ntf", ".box")
CONTROL_FILE = "nlogctrl.lfh"
PID_FILE = "pid.nbf"


def hex_id(value: int) -> str:
    """A replica ID or DBIID as Domino shows it: two groups of 8 hex digits."""
    text = f"{value:016X}"
    return f"{text[:8]}:{text[8:]}"


@dataclass(frozen=True)
class NsfHeader:
    replica_id: str
    dbiid: str
    ods: int
    logged: bool

    def to_json(self) -> dict[str, object]:
        return {"replica_id": self.replica_id, "dbiid": self.dbiid, "ods": self.ods, "logged": self.logged}


def is_database(name: str) -> bool:
    return name.lower().endswith(DATABASE_SUFFIXES)


def read_nsf_header(path: Path) -> NsfHeader:
    try:
        with open(path, "rb") as f:
            raw = f.read(_NSF.size)
    except OSError as exc:
        raise ConnectorError(f"cannot read the header of {path}: {exc.strerror or exc}") from exc
    if len(raw) < _NSF.size or raw[:8] != NSF_MAGIC:
        raise ConnectorError(f"{path} has no valid NSF header (damaged, or not a Domino database)")
    _, replica, dbiid, ods, logged = _NSF.unpack(raw)
    return NsfHeader(hex_id(replica), hex_id(dbiid), int(ods), bool(logged))


@dataclass(frozen=True)
class ExtentHeader:
    log_id: str
    sequence: int
    used: int
    first_us: int
    last_us: int


def extent_sequence(name: str) -> int | None:
    match = EXTENT_NAME.match(name)
    return int(match.group(1)) if match else None


def extent_name(sequence: int) -> str:
    return f"S{sequence:07d}.TXN"


def read_extent_header(path: Path) -> ExtentHeader:
    try:
        with open(path, "rb") as f:
            raw = f.read(_TXN.size)
    except OSError as exc:
        raise ConnectorError(f"cannot read the header of extent {path}: {exc.strerror or exc}") from exc
    if len(raw) < _TXN.size or raw[:8] != TXN_MAGIC:
        raise ConnectorError(f"extent {path} has no valid transaction log header")
    _, log_id, sequence, used, first, last = _TXN.unpack(raw)
    return ExtentHeader(log_id.hex().upper(), int(sequence), int(used), int(first), int(last))


def list_extents(translog: Path) -> dict[int, Path]:
    """Sequence → path of every ``S#######.TXN`` in the log directory."""
    found: dict[int, Path] = {}
    try:
        names = sorted(p.name for p in translog.iterdir())
    except OSError as exc:
        raise ConnectorError(f"cannot list the transaction log directory {translog}: {exc.strerror or exc}") from exc
    for name in names:
        seq = extent_sequence(name)
        if seq is not None:
            found[seq] = translog / name
    return found


def running_pids(data: Path) -> list[int]:
    """The live PIDs ``pid.nbf`` names (Domino writes it in the data directory while it runs)."""
    try:
        text = (data / PID_FILE).read_text(errors="replace")
    except OSError:
        return []
    return [int(tok) for tok in re.findall(r"\b\d+\b", text) if pid_alive(int(tok))]


__all__ = ["CONTROL_FILE", "DATABASE_SUFFIXES", "ExtentHeader", "NsfHeader", "extent_name", "extent_sequence",
           "hex_id", "is_database", "list_extents", "read_extent_header", "read_nsf_header", "running_pids"]
