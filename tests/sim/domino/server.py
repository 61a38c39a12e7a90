"""A simulated Domino server on disk: data directory, NOTES.INI, NSF/NTF/BOX files, DAOS objects,
an archive-style transaction log of ``S#######.TXN`` extents and ``nlogctrl.lfh``.

It models what dtstore's Domino connector reads, as documented (db-backup-mechanics §5), not the
real on-disk formats, which HCL does not publish:

* NSF header (first 64 bytes): ``b"DTSIMNSF"``, replica ID (u64), DBIID (u64), ODS (u16), logged
  (u8), then zeros.  A compact gives the database a new DBIID (as a copy-style compact does).
* TXN extent header (first 64 bytes): ``b"DTSIMTXN"``, LogID (16 bytes), sequence (u32), used bytes
  (u64: where the next record goes), first and last record time (u64 µs since the epoch).  Extents
  are preallocated to the extent size (64 MiB on a real server; a parameter here).
* A log record: time (u64 µs), length (u32), DBIID (u64), database path (length-prefixed), payload.
* ``nlogctrl.lfh``: ``b"DTSIMLFH"``, LogID, current sequence (u32), archived-through sequence (u32).
  Only the simulated backup task marks extents archived (``mark_archived``), as Domino does when
  the Backup Translog Command reports success.
* ``pid.nbf`` while "running": the PIDs of the server's processes.

Everything is deterministic for a given seed.
"""

from __future__ import annotations

import json
import os
import random
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

NSF_MAGIC = b"DTSIMNSF"
TXN_MAGIC = b"DTSIMTXN"
LFH_MAGIC = b"DTSIMLFH"
HEADER = 64
NSF_HEADER = struct.Struct("<8sQQHB")
TXN_HEADER = struct.Struct("<8s16sIQQQ")
LFH = struct.Struct("<8s16sII")
RECORD = struct.Struct("<QIQ")
DEFAULT_EXTENT = 64 << 20
STATE = "sim.json"

DATABASES = ["names.nsf", "log.nsf", "admin4.nsf", "events4.nsf", "domlog.nsf", "pernames.ntf", "mail.box"]


@dataclass
class SimState:
    log_id: str
    sequence: int = 1
    extent_size: int = DEFAULT_EXTENT
    seed: int = 1
    style: int = 1
    mail_users: int = 4
    db_size: int = 256 << 10
    writes: int = 0
    clock_us: int = 0
    dbiids: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


class DominoSim:
    """``DominoSim(root)``: the server below ``root`` (``notesdata/``, ``translog/``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.data = self.root / "notesdata"
        self.translog = self.root / "translog"
        self.ini = self.data / "notes.ini"

    # -- state -----------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.root / STATE

    def load(self) -> SimState:
        raw = json.loads(self.state_path.read_text())
        return SimState(**raw)

    def save(self, state: SimState) -> None:
        self.state_path.write_text(json.dumps(state.to_json(), indent=1, sort_keys=True))

    def _rng(self, state: SimState, salt: str) -> random.Random:
        return random.Random(f"{state.seed}:{state.writes}:{salt}")

    def _now_us(self, state: SimState) -> int:
        """A clock that only moves forward: the wall clock, or 1 ms after the last record."""
        state.clock_us = max(int(time.time() * 1_000_000), state.clock_us + 1000)
        return state.clock_us

    # -- init ------------------------------------------------------------------------------------

    def init(self, *, extent_size: int = DEFAULT_EXTENT, seed: int = 1, mail_users: int = 4,
             db_size: int = 256 << 10, style: int = 1, server: str = "CN=sim1/O=Acme") -> SimState:
        rng = random.Random(seed)
        state = SimState(log_id=rng.randbytes(16).hex().upper(), extent_size=extent_size, seed=seed,
                         style=style, mail_users=mail_users, db_size=db_size)
        self.data.mkdir(parents=True, exist_ok=True)
        (self.data / "mail").mkdir(exist_ok=True)
        self.translog.mkdir(parents=True, exist_ok=True)
        self.write_ini(style=style, server=server)
        for name in [*DATABASES, *(f"mail/user{i:03d}.nsf" for i in range(mail_users))]:
            self._create_db(state, name, rng)
        (self.data / "server.id").write_bytes(rng.randbytes(2048))
        (self.data / "cert.id").write_bytes(rng.randbytes(2048))
        (self.data / "names.lck").write_bytes(b"")
        daos = self.data / "DAOS" / "0001"
        daos.mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (daos / f"{rng.randbytes(20).hex().upper()}.nlo").write_bytes(rng.randbytes(8192 + i))
        self._new_extent(state, state.sequence)
        self._write_lfh(state, archived=0)
        self.save(state)
        return state

    def write_ini(self, *, style: int = 1, server: str = "CN=sim1/O=Acme", log_path: Path | None = None) -> None:
        lines = [
            "[Notes]",
            f"Directory={self.data}",
            "KitType=2",
            f"ServerName={server}",
            "ServerTasks=Replica,Router,Update,AMgr,Adminp,HTTP",
            "TRANSLOG_Status=1",
            f"TRANSLOG_Style={style}",
            f"TRANSLOG_Path={log_path or self.translog}",
            "TRANSLOG_MaxSize=4096",
            "DAOSBasePath=DAOS",
            "DAOSEnable=1",
            "Domino_Version=14.0.0",
            "",
        ]
        self.ini.write_text("\r\n".join(lines) if os.name == "nt" else "\n".join(lines))

    def _create_db(self, state: SimState, name: str, rng: random.Random) -> None:
        replica = rng.getrandbits(64)
        dbiid = rng.getrandbits(64)
        state.dbiids[name] = dbiid
        ods = 55 if name.endswith(".nsf") else 53
        header = NSF_HEADER.pack(NSF_MAGIC, replica, dbiid, ods, 1).ljust(HEADER, b"\0")
        path = self.data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(header + rng.randbytes(state.db_size))

    def databases(self) -> list[str]:
        """Relative paths (``/``-separated) of every NSF/NTF/BOX below the data directory."""
        found = []
        for path in sorted(self.data.rglob("*")):
            if path.is_file() and path.suffix.lower() in (".nsf", ".ntf", ".box"):
                found.append(path.relative_to(self.data).as_posix())
        return found

    # -- the log ---------------------------------------------------------------------------------

    def extent_path(self, sequence: int) -> Path:
        return self.translog / f"S{sequence:07d}.TXN"

    def _new_extent(self, state: SimState, sequence: int) -> None:
        path = self.extent_path(sequence)
        with open(path, "wb") as f:
            header = TXN_HEADER.pack(TXN_MAGIC, bytes.fromhex(state.log_id), sequence, HEADER, 0, 0)
            f.write(header.ljust(HEADER, b"\0"))
            f.truncate(state.extent_size)

    def extent_header(self, sequence: int) -> tuple[str, int, int, int, int]:
        with open(self.extent_path(sequence), "rb") as f:
            _magic, log_id, seq, used, first, last = TXN_HEADER.unpack(f.read(TXN_HEADER.size))
        return log_id.hex().upper(), seq, used, first, last

    def _append_record(self, state: SimState, dbiid: int, name: str, payload: bytes) -> None:
        encoded = name.encode()
        record = RECORD.pack(self._now_us(state), len(payload), dbiid) + struct.pack("<H", len(encoded))
        record += encoded + payload
        path = self.extent_path(state.sequence)
        _, _, used, first, _ = self.extent_header(state.sequence)
        if used + len(record) > state.extent_size:
            state.sequence += 1
            self._new_extent(state, state.sequence)
            path, used, first = self.extent_path(state.sequence), HEADER, 0
        stamp = state.clock_us
        with open(path, "r+b") as f:
            f.seek(used)
            f.write(record)
            f.seek(0)
            f.write(TXN_HEADER.pack(TXN_MAGIC, bytes.fromhex(state.log_id), state.sequence, used + len(record),
                                    first or stamp, stamp))
        self._write_lfh(state)

    def _write_lfh(self, state: SimState, archived: int | None = None) -> None:
        lfh = self.translog / "nlogctrl.lfh"
        if archived is None:
            archived = self.archived_through()
        lfh.write_bytes(LFH.pack(LFH_MAGIC, bytes.fromhex(state.log_id), state.sequence, archived).ljust(512, b"\0"))

    def archived_through(self) -> int:
        """The highest extent sequence the backup task has marked archived (0: none)."""
        try:
            data = (self.translog / "nlogctrl.lfh").read_bytes()
        except FileNotFoundError:
            return 0
        return int(LFH.unpack(data[: LFH.size])[3])

    def mark_archived(self, sequence: int) -> None:
        """What ``NSFDoneArchivingLog`` does: this extent may now be reused (only in order)."""
        state = self.load()
        if sequence != self.archived_through() + 1 and sequence > self.archived_through():
            raise ValueError(f"extent {sequence} marked archived before {self.archived_through() + 1}")
        self._write_lfh(state, archived=max(sequence, self.archived_through()))

    def complete_extents(self) -> list[int]:
        """Sequences of the extents Domino has finished writing (every one but the current)."""
        state = self.load()
        return sorted(int(p.stem[1:]) for p in self.translog.glob("S*.TXN") if int(p.stem[1:]) < state.sequence)

    # -- writes ----------------------------------------------------------------------------------

    def write(self, *, extents: int = 1, compact: list[str] | None = None, databases: int = 2,
              record: int | None = None) -> SimState:
        """Change ``databases`` mail files per record and write records until ``extents`` more extents
        exist (0: a few records in the current extent); ``compact`` gives those databases a new DBIID."""
        state = self.load()
        state.writes += 1
        state.clock_us += 1_000_000  # each write() call happens at least a second after the last one
        rng = self._rng(state, "write")
        names = [n for n in self.databases() if n.startswith("mail/")] or self.databases()
        size = record or max(512, state.extent_size // 8)
        target = state.sequence + extents
        count = 0
        while state.sequence < target or (extents == 0 and count < 3):
            name = names[rng.randrange(len(names))]
            payload = rng.randbytes(size)
            self._change_db(name, payload, rng)
            self._append_record(state, state.dbiids[name], name, payload)
            count += 1
        for name in rng.sample(names, min(databases, len(names))):
            payload = rng.randbytes(1024)
            self._change_db(name, payload, rng)
            self._append_record(state, state.dbiids[name], name, payload)
        for name in compact or []:
            self.compact(state, name, rng)
        self.save(state)
        return state

    def _change_db(self, name: str, payload: bytes, rng: random.Random) -> None:
        path = self.data / name
        size = path.stat().st_size
        offset = HEADER + rng.randrange(max(1, size - HEADER - len(payload[:4096])))
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(payload[:4096])

    def compact(self, state: SimState, name: str, rng: random.Random) -> None:
        path = self.data / name
        if not path.exists():
            raise FileNotFoundError(f"no database {name}")
        data = bytearray(path.read_bytes())
        magic, replica, _, ods, logged = NSF_HEADER.unpack(bytes(data[: NSF_HEADER.size]))
        dbiid = rng.getrandbits(64)
        state.dbiids[name] = dbiid
        data[: NSF_HEADER.size] = NSF_HEADER.pack(magic, replica, dbiid, ods, logged)
        body = bytes(data[HEADER:])
        path.write_bytes(bytes(data[:HEADER]) + body[len(body) // 3 :] + body[: len(body) // 3])  # moved around

    def add_daos(self, count: int = 1) -> list[Path]:
        state = self.load()
        state.writes += 1
        rng = self._rng(state, "daos")
        made = []
        for _ in range(count):
            path = self.data / "DAOS" / "0001" / f"{rng.randbytes(20).hex().upper()}.nlo"
            path.write_bytes(rng.randbytes(4096))
            made.append(path)
        self.save(state)
        return made

    # -- breaking the chain ----------------------------------------------------------------------

    def recreate_log(self) -> None:
        """A new LogID (TRANSLOG_Recreate / the log directory lost): extents start again at 1."""
        state = self.load()
        for path in self.translog.glob("S*.TXN"):
            path.unlink()
        state.log_id = random.Random(f"{state.seed}:{state.writes}:recreate").randbytes(16).hex().upper()
        state.writes += 1
        state.sequence = 1
        self._new_extent(state, 1)
        self._write_lfh(state, archived=0)
        self.save(state)

    def remove_extent(self, sequence: int) -> None:
        self.extent_path(sequence).unlink()

    def set_style(self, style: int) -> None:
        state = self.load()
        state.style = style
        self.write_ini(style=style)
        self.save(state)

    # -- running ---------------------------------------------------------------------------------

    def mark_running(self, pid: int) -> None:
        (self.data / "pid.nbf").write_text(f"{pid} server\n")

    def mark_stopped(self) -> None:
        (self.data / "pid.nbf").unlink(missing_ok=True)


def tree(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Relative path → content of every file below ``root`` (for comparisons in tests)."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not any(rel == s or rel.startswith(s + "/") for s in skip):
            out[rel] = path.read_bytes()
    return out


__all__ = ["DEFAULT_EXTENT", "DominoSim", "SimState", "tree"]
