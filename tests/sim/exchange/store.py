"""The simulated server's files and state (see the package docstring).

Log records are JSON ``[[database file name, page, version], …]`` after the 4096-byte header, padded
with zeros to the log size; a data page ``i`` of an EDB holds ``(i, version)`` and filler derived from
them, so a replay can be checked page by page against :meth:`SimServer.expected`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import shutil
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEADER = 4096
SEED = 0x89ABCDEF
ERAS = {
    "2003": {"digits": 5, "log_size": 5 << 20, "page_size": 4096, "version": "6.5 (Build 7638.2)"},
    "2016": {"digits": 8, "log_size": 1 << 20, "page_size": 32768, "version": "Version 15.1 (Build 2507.6)"},
}
WRITER = "{76fe1ac4-15f7-4bcd-987e-8e1acb462fb7}"  # the Microsoft Exchange Writer


def checksum(header: bytes | bytearray) -> int:
    value = SEED
    for (word,) in struct.iter_unpack("<I", bytes(header[4:HEADER])):
        value ^= word
    return value


def seal(header: bytearray) -> bytearray:
    struct.pack_into("<I", header, 0, checksum(header))
    return header


def logtime(when: dt.datetime) -> bytes:
    return bytes([when.second, when.minute, when.hour, when.day, when.month, when.year - 1900, 0, 0])


def signature(rand: int, when: dt.datetime, computer: str = "EXSIM") -> bytes:
    return struct.pack("<I", rand) + logtime(when) + computer.encode()[:16].ljust(16, b"\0")


def sig_text(raw: bytes) -> str:
    (rand,) = struct.unpack_from("<I", raw, 0)
    sec, minute, hour, day, month, year = raw[4:10]
    return f"{rand:08X}-{1900 + year:04d}{month:02d}{day:02d}{hour:02d}{minute:02d}{sec:02d}"


def page_bytes(db: str, page: int, version: int, size: int) -> bytes:
    head = struct.pack("<II", page, version)
    seed = hashlib.blake2b(f"{db}:{page}:{version}".encode(), digest_size=16).digest()
    return head + random.Random(seed).randbytes(size - len(head))  # incompressible, like real pages


@dataclass
class Clock:
    """The simulated server's time: starts at a fixed moment and moves one minute per generation."""

    minutes: int = 0

    def now(self) -> dt.datetime:
        return dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC) + dt.timedelta(minutes=self.minutes)


class SimServer:
    """The state lives in ``ROOT/state.json``; volume ``C:`` is the folder ``ROOT/C``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.state: dict[str, Any] = json.loads((self.root / "state.json").read_text())

    # -- creation -------------------------------------------------------------------------------

    @classmethod
    def init(cls, root: Path, *, era: str = "2016", databases: list[str] | None = None, log_size: int | None = None,
             page_size: int | None = None, pages: int = 16, records: int = 6, seed: int = 1,
             clock: str = "simulated") -> SimServer:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        spec = ERAS[era]
        rng = random.Random(seed)
        volume = root / "C"
        names = databases or (["priv1", "pub1"] if era == "2003" else ["DB1", "DB2"])
        streams, dbs = [], []
        if era == "2003":
            folder = volume / "Exchsrvr" / "MDBDATA"
            streams.append({"prefix": "E00", "folder": str(folder), "databases": names})
            for name in names:
                dbs.append({"name": name, "edb": str(folder / f"{name}.edb"), "stm": str(folder / f"{name}.stm"),
                            "stream": 0})
        else:
            for i, name in enumerate(names):
                folder = volume / "ExchangeServer" / "Mailbox" / name
                streams.append({"prefix": f"E{i:02X}", "folder": str(folder / "Logs"), "databases": [name]})
                dbs.append({"name": name, "edb": str(folder / f"{name}.edb"), "stm": None, "stream": i})
        state = {
            "era": era, "server": "EXSIM", "version": spec["version"], "digits": spec["digits"],
            "log_size": log_size or spec["log_size"], "page_size": page_size or spec["page_size"], "pages": pages,
            "records": records, "minutes": 0, "clock": clock, "writer": "stable", "volume": str(volume), "events": [],
            "streams": [], "databases": [],
        }
        now = dt.datetime.now(dt.UTC).replace(microsecond=0) if clock == "real" else Clock().now()
        for s in streams:
            s.update(signature=signature(rng.getrandbits(32), now).hex(), current=1, checkpoint=1, circular=False,
                     history={}, created={"1": now.isoformat()})
            state["streams"].append(s)
        for d in dbs:
            d.update(guid=str(uuid.UUID(int=rng.getrandbits(128))), signature=signature(rng.getrandbits(32), now).hex(),
                     mounted=True, versions={}, flushed={}, last_full=None)
            state["databases"].append(d)
        (root / "state.json").write_text(json.dumps(state, indent=1))
        server = cls(root)
        for i, s in enumerate(server.state["streams"]):
            Path(s["folder"]).mkdir(parents=True, exist_ok=True)
            server._write_current(i)
            server._write_checkpoint(i)
            reserve = ["res1.log", "res2.log"] if era == "2003" else [f"{s['prefix']}res00001.jrs",
                                                                       f"{s['prefix']}res00002.jrs"]
            for name in reserve:
                (Path(s["folder"]) / name).write_bytes(b"\0" * min(server.log_size, 8192))
        for db in server.state["databases"]:
            server._write_edb(db)
            if db["stm"]:
                Path(db["stm"]).write_bytes(b"STM\0" * 1024)
        server.save()
        return server

    def save(self) -> None:
        tmp = self.root / "state.json.tmp"
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.root / "state.json")

    # -- properties -----------------------------------------------------------------------------

    @property
    def log_size(self) -> int:
        return int(self.state["log_size"])

    @property
    def page_size(self) -> int:
        return int(self.state["page_size"])

    def now(self) -> dt.datetime:
        if self.state.get("clock") == "real":
            return dt.datetime.now(dt.UTC).replace(microsecond=0)
        return Clock(self.state["minutes"]).now()

    def _tick(self) -> None:
        """Time passes between two generations: a simulated minute, or (clock="real") a real second."""
        if self.state.get("clock") == "real":
            import time

            time.sleep(1.05)
        else:
            self.state["minutes"] += 1

    def created(self, stream: dict[str, Any], generation: int) -> dt.datetime:
        when = stream.setdefault("created", {}).get(str(generation))
        return dt.datetime.fromisoformat(when) if when else self.now()

    def db(self, name: str) -> dict[str, Any]:
        return next(d for d in self.state["databases"] if d["name"].lower() == name.lower())

    def stream_of(self, name: str) -> dict[str, Any]:
        return self.state["streams"][self.db(name)["stream"]]

    def log_name(self, stream: dict[str, Any], generation: int) -> str:
        return f"{stream['prefix']}{generation:0{self.state['digits']}X}.log"

    def log_path(self, name: str, generation: int) -> Path:
        stream = self.stream_of(name)
        return Path(stream["folder"]) / self.log_name(stream, generation)

    def generations(self, name: str) -> list[int]:
        stream = self.stream_of(name)
        folder = Path(stream["folder"])
        found = []
        for path in folder.iterdir():
            stem = path.name.upper()
            if stem.startswith(stream["prefix"]) and stem.endswith(".LOG") and len(stem) == 7 + self.state["digits"]:
                found.append(int(stem[3:-4], 16))
        return sorted(found)

    # -- writing ----------------------------------------------------------------------------------

    def _log_header(self, i: int, generation: int, created: dt.datetime, previous: dt.datetime) -> bytearray:
        s = self.state["streams"][i]
        h = bytearray(HEADER)
        struct.pack_into("<i", h, 4, generation)
        struct.pack_into("<HHHH", h, 8, 512, 8, self.log_size // 512 & 0xFFFF, self.page_size & 0xFFFF)
        h[16:24], h[24:32] = logtime(created), logtime(previous)
        struct.pack_into("<III", h, 32, 0x667 if self.state["era"] == "2016" else 0x661, 20, 1)
        h[44:72] = bytes.fromhex(s["signature"])
        h[639] = 0x02 if s["circular"] else 0
        struct.pack_into("<HHi", h, 640, 0, 0, s["checkpoint"])
        return seal(h)

    def _write_log(self, path: Path, header: bytearray, records: list[list[Any]]) -> None:
        body = json.dumps(records).encode()
        data = bytes(header) + body
        if len(data) > self.log_size:
            raise ValueError(f"the log size {self.log_size} is too small for {len(records)} records")
        path.write_bytes(data + b"\0" * (self.log_size - len(data)))

    def _write_current(self, i: int) -> None:
        s = self.state["streams"][i]
        gen = s["current"]
        header = self._log_header(i, gen, self.created(s, gen), self.created(s, gen - 1))
        self._write_log(Path(s["folder"]) / f"{s['prefix']}.log", header, s["history"].get(str(gen), []))

    def _write_checkpoint(self, i: int) -> None:
        s = self.state["streams"][i]
        h = bytearray(HEADER)
        struct.pack_into("<HHi", h, 12, 0, 0, s["checkpoint"])
        h[20:48] = bytes.fromhex(s["signature"])
        (Path(s["folder"]) / f"{s['prefix']}.chk").write_bytes(seal(h))

    def _db_header(self, db: dict[str, Any], *, state: int, required: tuple[int, int]) -> bytearray:
        s = self.state["streams"][db["stream"]]
        h = bytearray(self.page_size)
        struct.pack_into("<IIII", h, 4, SEED, 0x620, 0, 0)
        h[24:52] = bytes.fromhex(db["signature"])
        struct.pack_into("<I", h, 52, state)
        h[104:132] = bytes.fromhex(s["signature"])
        if db["last_full"]:
            gen, when, low, high = db["last_full"]
            struct.pack_into("<HHi", h, 136, 0, 0, gen)
            h[144:152] = logtime(dt.datetime.fromisoformat(when))
            struct.pack_into("<II", h, 152, low, high)
        struct.pack_into("<II", h, 232, 0x14 if self.state["era"] == "2016" else 0x0B, self.page_size)
        struct.pack_into("<II", h, 296, *required)
        return seal(h)

    def _write_edb(self, db: dict[str, Any], path: Path | None = None) -> None:
        s = self.state["streams"][db["stream"]]
        header = self._db_header(db, state=2 if db["mounted"] else 3,
                                 required=(s["checkpoint"], s["current"]) if db["mounted"] else (0, 0))
        with open(path or db["edb"], "wb") as f:
            f.write(header)
            f.write(header)
            for page in range(self.state["pages"]):
                f.write(page_bytes(db["name"], page, int(db["flushed"].get(str(page), 0)), self.page_size))

    def write(self, generations: int) -> None:
        """Exchange writes ``generations`` more log generations in every stream and changes its databases."""
        rng = random.Random(self.state["minutes"] * 7919 + 17)
        for i, s in enumerate(self.state["streams"]):
            for _ in range(generations):
                records = []
                for _ in range(self.state["records"]):
                    name = rng.choice(s["databases"])
                    db = self.db(name)
                    if not db["mounted"]:
                        continue
                    page = rng.randrange(self.state["pages"])
                    version = int(db["versions"].get(str(page), 0)) + 1
                    db["versions"][str(page)] = version
                    records.append([Path(db["edb"]).name, page, version])
                s["history"][str(s["current"])] = records
                self._roll(i)
            # the database file catches up to all but the newest closed generation: the checkpoint follows
            s["checkpoint"] = max(s["checkpoint"], s["current"] - 1)
            self._flush(i)
            if s["circular"]:
                for gen in self.generations(s["databases"][0]):
                    if gen < s["checkpoint"]:
                        self.log_path(s["databases"][0], gen).unlink()
            self._write_current(i)
            self._write_checkpoint(i)
            for name in s["databases"]:
                self._write_edb(self.db(name))
        self.save()

    def _roll(self, i: int) -> None:
        """``E00.log`` becomes the numbered generation, a new ``E00.log`` starts the next one."""
        s = self.state["streams"][i]
        gen = s["current"]
        path = Path(s["folder"]) / self.log_name(s, gen)
        header = self._log_header(i, gen, self.created(s, gen), self.created(s, gen - 1))
        self._write_log(path, header, s["history"].get(str(gen), []))
        self._tick()
        s["current"] = gen + 1
        s.setdefault("created", {})[str(gen + 1)] = self.now().isoformat()
        self._write_current(i)

    def _flush(self, i: int) -> None:
        s = self.state["streams"][i]
        for gen in sorted(int(g) for g in s["history"]):
            if gen >= s["checkpoint"]:
                continue
            for dbfile, page, version in s["history"][str(gen)]:
                db = next(d for d in self.state["databases"] if Path(d["edb"]).name == dbfile)
                db["flushed"][str(page)] = max(int(db["flushed"].get(str(page), 0)), version)

    # -- what tests ask of it -------------------------------------------------------------------

    def expected(self, name: str, upto: int | None = None) -> dict[int, int]:
        """Page → version after every record of generations ``<= upto`` (None: everything written)."""
        db = self.db(name)
        s = self.stream_of(name)
        versions: dict[int, int] = {}
        for gen in sorted(int(g) for g in s["history"]):
            if upto is not None and gen > upto:
                continue
            for dbfile, page, version in s["history"][str(gen)]:
                if dbfile == Path(db["edb"]).name:
                    versions[page] = max(versions.get(page, 0), version)
        return {p: versions.get(p, 0) for p in range(self.state["pages"])}

    def set_circular(self, name: str, on: bool = True) -> None:
        self.stream_of(name)["circular"] = on
        self.save()

    def delete_generation(self, name: str, generation: int) -> None:
        self.log_path(name, generation).unlink()

    def reset_logs(self, name: str) -> None:
        """The log stream is recreated (new signature, generations from 1): an old chain cannot continue."""
        i = self.db(name)["stream"]
        s = self.state["streams"][i]
        for gen in self.generations(name):
            self.log_path(name, gen).unlink()
        s["signature"] = signature(random.Random(s["current"] + 99).getrandbits(32), self.now()).hex()
        s["current"], s["checkpoint"], s["history"] = 1, 1, {}
        for dbname in s["databases"]:
            db = self.db(dbname)
            db["versions"] = dict(db["flushed"])
        self._write_current(i)
        self._write_checkpoint(i)
        for dbname in s["databases"]:
            self._write_edb(self.db(dbname))
        self.save()

    def events(self) -> list[str]:
        return list(SimServer(self.root).state["events"])

    def event(self, text: str) -> None:
        self.state["events"].append(text)
        self.save()


def read_versions(edb: Path, page_size: int) -> dict[int, int]:
    """Page → version of an EDB file (the simulator's pages), checking each page's filler."""
    out = {}
    with open(edb, "rb") as f:
        f.seek(2 * page_size)
        page = 0
        while block := f.read(page_size):
            number, version = struct.unpack_from("<II", block, 0)
            out[number] = version
            page += 1
    return out


def copy_volume(source: Path, target: Path) -> None:
    shutil.copytree(source, target, symlinks=True)


__all__ = ["ERAS", "WRITER", "SimServer", "checksum", "copy_volume", "page_bytes", "read_versions", "sig_text"]
