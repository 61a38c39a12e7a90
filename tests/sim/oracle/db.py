"""The simulated database engine: its file tree, SCN clock, redo, backup mode and media recovery.

Everything lives in the tree (``__init__.py`` lists it); nothing is kept in memory between
statements, so the driver in one process, the command line in another and the fake ``sqlplus`` in a
third see one database.  Each statement holds ``DIR/.sim/lock`` (flock) while it reads and writes.

Redo is *physiological and idempotent*: a change record sets a row to its after-image (``put``),
removes it (``del``), creates or drops a table.  That is what lets a data file copied while it was
being written (a hot backup: fuzzy) be repaired by replaying every change from the SCN its header
froze at ``BEGIN BACKUP``; the ``end_backup`` record clears the file's backup-fuzzy flag, and a
file whose flag is still set cannot be opened (ORA-01194), as in Oracle.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import json
import os
import random
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 8192
EXTENT = 256 * 1024
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
PASSWORD_DEFAULT = "change_on_install"
ARCH_FORMAT = "%t_%s_%r.arc"
DATAFILES = (("SYSTEM", "system01.dbf"), ("SYSAUX", "sysaux01.dbf"), ("UNDOTBS1", "undotbs01.dbf"),
             ("USERS", "users01.dbf"))
SIZES = {"SYSTEM": 1 << 20, "SYSAUX": 2 << 20, "UNDOTBS1": 1 << 20, "USERS": 2 << 20}


class OraError(Exception):
    """An Oracle error: ``code`` and the lines of the error stack (``ORA-nnnnn: text``)."""

    def __init__(self, code: int, text: str, *more: str) -> None:
        self.code = code
        self.lines = [f"ORA-{code:05d}: {text}", *more]
        super().__init__("\n".join(self.lines))

    @property
    def message(self) -> str:
        return "\n".join(self.lines)


def file_error(number: int, name: str) -> str:
    return f"ORA-01110: data file {number}: '{name}'"


# -- parameter files ---------------------------------------------------------------------------------


def parse_params(text: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("*.").lower()
        values = [v.strip().strip("'\"") for v in re.findall(r"'[^']*'|\"[^\"]*\"|[^,]+", value)]
        params[key] = values if key == "control_files" else (values[0] if values else "")
    return params


def format_params(params: dict[str, Any]) -> str:
    lines = []
    for key in sorted(params):
        value = params[key]
        if isinstance(value, list):
            lines.append(f"*.{key}=" + ",".join(f"'{v}'" for v in value))
        elif str(value).isdigit():
            lines.append(f"*.{key}={value}")
        else:
            lines.append(f"*.{key}='{value}'")
    return "\n".join(lines) + "\n"


def archive_dests(params: dict[str, Any]) -> list[tuple[int, str]]:
    """(dest_id, folder) of every ``log_archive_dest_N='LOCATION=…'``."""
    found = []
    for key, value in params.items():
        match = re.fullmatch(r"log_archive_dest_(\d+)", key)
        if match and str(value).upper().startswith("LOCATION="):
            found.append((int(match.group(1)), str(value)[len("LOCATION="):].strip()))
    return sorted(found)


def arch_name(fmt: str, thread: int, sequence: int, resetlogs_id: int) -> str:
    return fmt.replace("%t", str(thread)).replace("%s", str(sequence)).replace("%r", str(resetlogs_id))


# -- the tree ----------------------------------------------------------------------------------------


def root_of_pfile(pfile: Path) -> Path:
    return pfile.parent.parent if pfile.parent.name == "dbs" else pfile.parent


@dataclass
class Tree:
    """One database tree (the folder ``ORACLE_SIM_STATE`` names)."""

    root: Path

    @property
    def sim(self) -> Path:
        return self.root / ".sim"

    @property
    def instance_file(self) -> Path:
        return self.sim / "instance.json"

    def zone(self) -> dt.tzinfo:
        name = os.environ.get("ORACLE_SIM_TZ")
        if not name and (self.sim / "tz").exists():
            name = (self.sim / "tz").read_text().strip()
        return zoneinfo.ZoneInfo(name or "UTC")

    def now(self) -> dt.datetime:
        """The server's local time (naive, whole seconds), as Oracle's DATE."""
        return dt.datetime.now(self.zone()).replace(microsecond=0, tzinfo=None)

    def now_text(self) -> str:
        return self.now().strftime(TIME_FORMAT)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.sim.mkdir(parents=True, exist_ok=True)
        with open(self.sim / "lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def instance(self) -> dict[str, Any] | None:
        if not self.instance_file.exists():
            return None
        value: dict[str, Any] = json.loads(self.instance_file.read_text())
        return value

    def save_instance(self, value: dict[str, Any] | None) -> None:
        if value is None:
            self.instance_file.unlink(missing_ok=True)
        else:
            write_atomic(self.instance_file, json.dumps(value, indent=1).encode())

    def spfile(self, name: str = "") -> Path | None:
        found = sorted((self.root / "dbs").glob(f"spfile{name}*.ora")) if (self.root / "dbs").is_dir() else []
        return found[0] if found else None

    def pfile(self) -> Path | None:
        found = sorted((self.root / "dbs").glob("init*.ora")) if (self.root / "dbs").is_dir() else []
        return found[0] if found else None


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".simtmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- data files --------------------------------------------------------------------------------------


def _pad(data: bytes, size: int = BLOCK) -> bytes:
    return data + b"\0" * (-len(data) % size)


def write_datafile(path: Path, header: dict[str, Any], body: dict[str, Any], ts: str) -> None:
    """Block 0 the header; then the dictionary (SYSTEM), the rows one per line, each table from a new
    block (USERS), or fixed filler (SYSAUX, UNDOTBS1); the file grows in 256 KiB extents."""
    if ts == "SYSTEM":
        data = _pad(json.dumps(body, sort_keys=True).encode() + b"\n")
    elif ts == "USERS":
        parts = []
        for table in sorted(body):
            lines = [json.dumps({"t": table, "r": int(r), "scn": row["scn"], "v": row["v"]}).encode() + b"\n"
                     for r, row in sorted(body[table].items(), key=lambda kv: int(kv[0]))]
            parts.append(_pad(b"".join(lines) or b"\n"))
        data = b"".join(parts)
    else:
        data = b""
    header["data_blocks"] = len(data) // BLOCK
    head = _pad(json.dumps(header, sort_keys=True).encode() + b"\n")
    content = head + data
    size = max(SIZES.get(ts, 1 << 20), len(content) + (-len(content) % EXTENT))
    write_atomic(path, content + _filler(ts, size)[len(content):])


@functools.lru_cache(maxsize=8)
def _filler(ts: str, size: int) -> bytes:
    """What the unused blocks hold: stable bytes (old contents), the same at every write."""
    return random.Random(ts).randbytes(size)


def read_datafile(path: Path, ts: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise OraError(1157, "cannot identify/lock data file - see DBWR trace file",
                       f"ORA-01110: data file: '{path}'") from None
    header = json.loads(raw[:BLOCK].rstrip(b"\0"))
    data = raw[BLOCK:BLOCK * (1 + int(header.get("data_blocks", 0)))]
    body: dict[str, Any] = {}
    if ts == "SYSTEM":
        body = json.loads(data.split(b"\0", 1)[0] or b"{}")
    elif ts == "USERS":
        for line in data.replace(b"\0", b"").splitlines():
            if line.strip():
                row = json.loads(line)
                body.setdefault(row["t"], {})[str(row["r"])] = {"scn": row["scn"], "v": row["v"]}
    return header, body


# -- the database (control file + files), one statement at a time ------------------------------------


@dataclass
class Database:
    tree: Tree
    params: dict[str, Any]
    ctl: dict[str, Any] = field(default_factory=dict)

    # control file
    @property
    def control_files(self) -> list[Path]:
        return [Path(p) for p in self.params["control_files"]]

    def load(self) -> Database:
        last: Exception | None = None
        for path in self.control_files:
            try:
                self.ctl = json.loads(path.read_text())
                return self
            except FileNotFoundError as exc:
                last = exc
        raise OraError(205, "error in identifying control file, check alert log for more info",
                       f"ORA-00202: control file: '{self.control_files[0]}'") from last

    def save(self) -> None:
        data = json.dumps(self.ctl, indent=1, sort_keys=True).encode()
        for path in self.control_files:
            write_atomic(path, data)

    @property
    def scn(self) -> int:
        return int(self.ctl["scn"])

    def next_scn(self) -> int:
        self.ctl["scn"] = self.scn + 1
        return self.scn

    @property
    def incarnation(self) -> dict[str, Any]:
        inc: dict[str, Any] = self.ctl["incarnation"]
        return inc

    def current_log(self) -> dict[str, Any]:
        return next(g for g in self.ctl["logs"] if g["status"] == "CURRENT")

    # data files
    def datafile(self, ts: str) -> dict[str, Any]:
        return next(f for f in self.ctl["datafiles"] if f["ts"] == ts)

    def read(self, ts: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return read_datafile(Path(self.datafile(ts)["name"]), ts)

    def write(self, ts: str, header: dict[str, Any], body: dict[str, Any]) -> None:
        if not header.get("fuzzy"):
            header["checkpoint_change"] = self.scn + 1
            header["checkpoint_time"] = self.tree.now_text()
        info = self.datafile(ts)
        write_datafile(Path(info["name"]), header, body, ts)

    # redo
    def redo(self, records: list[dict[str, Any]]) -> None:
        group = self.current_log()
        path = Path(group["members"][0])
        with open(path, "ab") as handle:
            for record in records:
                handle.write(json.dumps(record, sort_keys=True).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _log_header(self, group: dict[str, Any]) -> dict[str, Any]:
        return {"thread": group["thread"], "sequence": group["sequence"], "first_change": group["first_change"],
                "first_time": group["first_time"], "resetlogs_id": self.incarnation["resetlogs_id"],
                "resetlogs_change": self.incarnation["resetlogs_change"], "dbid": self.ctl["dbid"]}

    def start_log(self, group: dict[str, Any], sequence: int, first_change: int) -> None:
        group.update(sequence=sequence, status="CURRENT", first_change=first_change,
                     first_time=self.tree.now_text(), archived="NO")
        for member in group["members"]:
            write_atomic(Path(member), json.dumps(self._log_header(group), sort_keys=True).encode() + b"\n")

    def switch_logfile(self) -> None:
        """Close the current online log (archive it in ARCHIVELOG mode) and open the next group."""
        group = self.current_log()
        next_change = self.next_scn()
        now = self.tree.now_text()
        lines = Path(group["members"][0]).read_bytes().splitlines()
        header = json.loads(lines[0])
        header.update(next_change=next_change, next_time=now)
        content = b"".join(line + b"\n" for line in [json.dumps(header, sort_keys=True).encode(), *lines[1:]])
        if self.ctl["log_mode"] == "ARCHIVELOG":
            fmt = str(self.params.get("log_archive_format", ARCH_FORMAT))
            for dest_id, folder in archive_dests(self.params):
                name = Path(folder) / arch_name(fmt, group["thread"], group["sequence"],
                                                self.incarnation["resetlogs_id"])
                write_atomic(name, content)
                self.ctl["recid"] = int(self.ctl.get("recid", 0)) + 1
                self.ctl["archived"].append({
                    "recid": self.ctl["recid"], "name": str(name), "dest_id": dest_id, "thread": group["thread"],
                    "sequence": group["sequence"], "first_change": group["first_change"], "first_time":
                    group["first_time"], "next_change": next_change, "next_time": now,
                    "resetlogs_change": self.incarnation["resetlogs_change"],
                    "resetlogs_id": self.incarnation["resetlogs_id"], "blocks": -(-len(content) // 512),
                    "block_size": 512, "deleted": "NO",
                })
            group["archived"] = "YES"
        group["status"] = "ACTIVE"
        groups = self.ctl["logs"]
        nxt = groups[(groups.index(group) + 1) % len(groups)]
        for g in groups:
            if g is not group and g["status"] == "ACTIVE":
                g["status"] = "INACTIVE"
        self.start_log(nxt, group["sequence"] + 1, next_change)

    # backup mode
    def backup_states(self) -> dict[str, dict[str, Any]]:
        states: dict[str, dict[str, Any]] = self.ctl.setdefault("backup", {})
        for f in self.ctl["datafiles"]:
            states.setdefault(str(f["file"]), {"status": "NOT ACTIVE", "change": 0, "time": None})
        return states

    def begin_backup(self) -> None:
        if self.ctl["log_mode"] != "ARCHIVELOG":
            raise OraError(1123, "cannot start online backup; media recovery not enabled")
        states = self.backup_states()
        for f in self.ctl["datafiles"]:
            if states[str(f["file"])]["status"] == "ACTIVE":
                raise OraError(1146, f"cannot start online backup - file {f['file']} is already in backup",
                               file_error(f["file"], f["name"]))
        scn = self.next_scn()
        now = self.tree.now_text()
        for f in self.ctl["datafiles"]:
            header, body = self.read(f["ts"])
            header.update(fuzzy=scn, checkpoint_change=scn, checkpoint_time=now)
            write_datafile(Path(f["name"]), header, body, f["ts"])
            states[str(f["file"])] = {"status": "ACTIVE", "change": scn, "time": now}
        files = [f["file"] for f in self.ctl["datafiles"]]
        self.redo([{"scn": scn, "time": now, "op": "begin_backup", "files": files}])

    def end_backup(self) -> None:
        states = self.backup_states()
        active = [f for f in self.ctl["datafiles"] if states[str(f["file"])]["status"] == "ACTIVE"]
        if not active:
            raise OraError(1142, "cannot end online backup - none of the files are in backup")
        scn = self.next_scn()
        now = self.tree.now_text()
        for f in active:
            header, body = self.read(f["ts"])
            header.pop("fuzzy", None)
            header.update(checkpoint_change=scn, checkpoint_time=now)
            write_datafile(Path(f["name"]), header, body, f["ts"])
            states[str(f["file"])] = {"status": "NOT ACTIVE", "change": states[str(f["file"])]["change"],
                                      "time": states[str(f["file"])]["time"]}
        self.redo([{"scn": scn, "time": now, "op": "end_backup", "files": [f["file"] for f in active]}])

    def active_backups(self) -> list[dict[str, Any]]:
        states = self.backup_states()
        return [f for f in self.ctl["datafiles"] if states[str(f["file"])]["status"] == "ACTIVE"]


# -- creating a database -----------------------------------------------------------------------------


def create(root: Path, *, archivelog: bool = True, password: str | None = None, name: str = "ORCL") -> Tree:
    root = root.absolute()
    tree = Tree(root)
    if (root / "dbs").exists():
        raise OraError(1501, f"CREATE DATABASE failed: {root} already holds a database")
    data = root / "oradata" / name
    data.mkdir(parents=True)
    (root / "arch").mkdir()
    (root / "dbs").mkdir()
    tree.sim.mkdir()
    if os.environ.get("ORACLE_SIM_TZ"):
        (tree.sim / "tz").write_text(os.environ["ORACLE_SIM_TZ"] + "\n")
    params: dict[str, Any] = {
        "db_name": name, "db_block_size": str(BLOCK), "compatible": "19.0.0",
        "control_files": [str(data / "control01.ctl"), str(data / "control02.ctl")],
        "log_archive_dest_1": f"LOCATION={root / 'arch'}", "log_archive_format": ARCH_FORMAT,
    }
    (root / "dbs" / f"spfile{name}.ora").write_text(format_params(params))
    (root / "dbs" / f"init{name}.ora").write_text(format_params(params))
    secret = password if password is not None else os.environ.get("ORACLE_PWD", PASSWORD_DEFAULT)
    (root / "dbs" / f"orapw{name}").write_text(hashlib.sha256(secret.encode()).hexdigest() + "\n")
    now = tree.now_text()
    rid = random.Random(str(root) + now).randrange(10**8, 10**9)
    ctl: dict[str, Any] = {
        "dbid": random.Random(str(root)).randrange(10**9, 4 * 10**9), "name": name, "db_unique_name": name,
        "log_mode": "ARCHIVELOG" if archivelog else "NOARCHIVELOG", "scn": 1000,
        "incarnation": {"resetlogs_change": 1, "resetlogs_time": now, "resetlogs_id": rid, "number": 1},
        "prior_incarnations": [],
        "datafiles": [{"file": n, "name": str(data / fname), "ts": ts, "ts_number": n - 1, "creation_change": 1}
                      for n, (ts, fname) in enumerate(DATAFILES, 1)],
        "logs": [{"group": n, "thread": 1, "members": [str(data / f"redo0{n}.log")], "sequence": 0,
                  "status": "UNUSED", "first_change": 0, "first_time": now, "archived": "NO"} for n in (1, 2, 3)],
        "archived": [], "backup": {}, "backup_controlfile": False, "recid": 0,
    }
    db = Database(tree, params, ctl)
    for f in ctl["datafiles"]:
        body: dict[str, Any] = {"tables": {}} if f["ts"] == "SYSTEM" else {}
        header = {"file": f["file"], "ts": f["ts"], "dbid": ctl["dbid"], "creation_change": 1}
        db.write(f["ts"], header, body)
    db.start_log(ctl["logs"][0], 1, db.next_scn())
    db.save()
    tree.save_instance({"status": "OPEN", "params": params})
    return tree


# -- opening a tree ----------------------------------------------------------------------------------


def running(tree: Tree) -> Database:
    """The database of a running instance (OPEN or MOUNTED); ORA-01034 when it is down."""
    inst = tree.instance()
    if inst is None:
        raise OraError(1034, "ORACLE not available", "ORA-27101: shared memory realm does not exist")
    return Database(tree, inst["params"]).load()


def state_root() -> Path:
    value = os.environ.get("ORACLE_SIM_STATE")
    if not value:
        raise OraError(12541, "TNS:no listener (ORACLE_SIM_STATE is not set)")
    return Path(value)


# -- recovery ----------------------------------------------------------------------------------------


def _apply(record: dict[str, Any], tables: dict[str, Any], rows: dict[str, Any]) -> None:
    op, name = record["op"], record.get("table")
    if op == "create":
        tables[name] = {"columns": record["columns"], "next_rowid": 1}
        rows.setdefault(name, {})
    elif op == "drop":
        tables.pop(name, None)
        rows.pop(name, None)
    elif op == "put":
        rows.setdefault(name, {})[str(record["rowid"])] = {"scn": record["scn"], "v": record["v"]}
        if name in tables:
            tables[name]["next_rowid"] = max(tables[name]["next_rowid"], int(record["rowid"]) + 1)
    elif op == "del":
        rows.get(name, {}).pop(str(record["rowid"]), None)


def recover(db: Database, *, from_dir: str | None, until_time: str | None, until_change: int | None,
            say: Any) -> None:
    """``RECOVER AUTOMATIC [FROM dir] DATABASE UNTIL … USING BACKUP CONTROLFILE`` on a mounted database."""
    files = {f["ts"]: f for f in db.ctl["datafiles"]}
    system_h, system_b = db.read("SYSTEM")
    users_h, users_b = db.read("USERS")
    headers = {ts: db.read(ts)[0] for ts in files}
    headers["SYSTEM"], headers["USERS"] = system_h, users_h
    tables: dict[str, Any] = system_b.setdefault("tables", {})
    start = min(int(h.get("fuzzy") or h["checkpoint_change"]) for h in headers.values())
    per_file_from = {ts: int(h.get("fuzzy") or h["checkpoint_change"]) for ts, h in headers.items()}
    inc = db.incarnation
    fmt = str(db.params.get("log_archive_format", ARCH_FORMAT))
    folder = from_dir or next((f for _, f in archive_dests(db.params)), str(db.tree.root / "arch"))
    known = [a for a in db.ctl["archived"] if a["resetlogs_id"] == inc["resetlogs_id"] and a["thread"] == 1]
    seq = next((a["sequence"] for a in known if a["first_change"] <= start < a["next_change"]), None)
    if seq is None:
        seq = db.current_log()["sequence"]
    stop_scn = start
    applied_end: set[int] = set()
    done = False
    while not done:
        path = Path(folder) / arch_name(fmt, 1, seq, inc["resetlogs_id"])
        if not path.exists():
            when = db.tree.now_text()
            raise OraError(279, f"change {stop_scn} generated at {when} needed for thread 1",
                           f"ORA-00289: suggestion : {path}",
                           f"ORA-00280: change {stop_scn} for thread 1 is in sequence #{seq}",
                           f"ORA-00308: cannot open archived log '{path}'",
                           "ORA-27037: unable to obtain file status",
                           "Linux-x86_64 Error: 2: No such file or directory")
        say(f"ORA-00279: change {stop_scn} generated at {db.tree.now_text()} needed for thread 1")
        say(f"ORA-00289: suggestion : {path}")
        lines = path.read_bytes().splitlines()
        header = json.loads(lines[0])
        if header.get("resetlogs_id") != inc["resetlogs_id"] or header.get("sequence") != seq:
            raise OraError(310, f"archived log contains sequence {header.get('sequence')}; sequence {seq} required",
                           f"ORA-00334: archived log: '{path}'")
        for line in lines[1:]:
            record = json.loads(line)
            if until_change is not None and record["scn"] >= until_change:
                done = True
                break
            if until_time is not None and record["time"] > until_time:
                done = True
                break
            stop_scn = max(stop_scn, int(record["scn"]))
            if record["op"] == "end_backup":
                applied_end.update(int(n) for n in record["files"])
                continue
            if record["op"] == "begin_backup":
                continue
            target_ts = "SYSTEM" if record["op"] in ("create", "drop") else "USERS"
            if record["scn"] < per_file_from[target_ts]:
                continue  # the file already holds it
            _apply(record, tables, users_b)
        if until_change is not None and header["next_change"] >= until_change:
            done = True
        if until_time is not None and header["next_time"] > until_time:
            done = True
        if not done:
            stop_scn = max(stop_scn, int(header["next_change"]) - 1)
            seq += 1
        say("Log applied.")
    until = until_change - 1 if until_change is not None else stop_scn
    for name, info in tables.items():
        info["next_rowid"] = max([info["next_rowid"], *(int(r) + 1 for r in users_b.get(name, {}))])
    for ts, f in files.items():
        header = headers[ts]
        if header.get("fuzzy") and int(f["file"]) in applied_end:
            header.pop("fuzzy")
        header["checkpoint_change"] = max(int(header["checkpoint_change"]), until)
        body = system_b if ts == "SYSTEM" else users_b if ts == "USERS" else {}
        write_datafile(Path(f["name"]), header, body, ts)
    db.ctl["recovered_to"] = until
    db.ctl["scn"] = max(db.scn, until + 1)
    say("Media recovery complete.")


def open_resetlogs(db: Database) -> None:
    for f in db.ctl["datafiles"]:
        header, _ = db.read(f["ts"])
        if header.get("fuzzy"):
            raise OraError(1194, f"file {f['file']} needs more recovery to be consistent",
                           file_error(f["file"], f["name"]))
    if not db.ctl.get("backup_controlfile") and "recovered_to" not in db.ctl:
        raise OraError(1139, "RESETLOGS option only valid after an incomplete database recovery")
    old = dict(db.incarnation)
    db.ctl["prior_incarnations"].append(old)
    scn = db.next_scn()
    now = db.tree.now_text()
    rid = max(old["resetlogs_id"] + 1, random.Random(f"{now}{scn}").randrange(10**8, 10**9))
    db.ctl["incarnation"] = {"resetlogs_change": scn, "resetlogs_time": now, "resetlogs_id": rid,
                             "number": int(old.get("number", 1)) + 1}
    db.ctl["backup_controlfile"] = False
    db.ctl.pop("recovered_to", None)
    for f in db.ctl["datafiles"]:
        header, body = db.read(f["ts"])
        db.write(f["ts"], header, body)
    db.ctl["backup"] = {}
    for g in db.ctl["logs"]:
        g.update(status="UNUSED", sequence=0)
    db.start_log(db.ctl["logs"][0], 1, db.next_scn())
