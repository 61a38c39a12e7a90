"""The Domino 12+ backup task backend: the commands Domino Backup's configuration calls.

Domino Backup (``load backup``, configured in ``dominobackup.nsf``) does the Domino side itself: it
puts databases into backup mode (``NSFBackupStart``…), collects the changes made during the copy as
``.DELTA`` files, hands over full transaction-log extents and marks an extent archived
(``NSFDoneArchivingLog``) only when the command that took it reports success.  dtstore is the
"native OS command" (type sCMD) it runs; Domino appends the parameters (HCL Domino 14 "Native OS
commands")::

    1 PhysicalFileName   2 FileName            3 BackupReference (DBIID, or the LogID for a TXN)
    4 BackupNode         5 BackupName          6 BackupMode (FULL SNAP TRANSLOG INCR DELTA SELECT)
    7 BackupStartDT      8 BackupTargetDir     9 RetentionDays (backup) / RestoreFileName (restore)
    10 RefString (restore: what the backup command returned after the Backup Ref String)

Each backup command stores its file(s) as one snapshot (source ``domino:<BackupNode>``) and prints
``BackupRef: <snapshot id>`` and ``Return: PROCESSED …`` **only after the snapshot's manifest is
committed**; any failure prints ``Return: ERROR …`` and exits non-zero.  The configuration's OK
string is ``Return: PROCESSED``, its error string ``Return: ERROR`` (the strings HCL's own
integration scripts print), the Backup Result String ``Return:`` and the Backup Ref String
``BackupRef:``.  An extent sent again with the same content (Domino retries one it was not told is
done) is a success at once; with different content it is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO, Protocol

from dtstore import clock
from dtstore.connectors.base import SnapshotInfo, iso, snapshots_of
from dtstore.connectors.domino.chain import KIND, METADATA_FORMAT, mode_of, task_set
from dtstore.connectors.domino.files import extent_sequence, is_database, read_extent_header, read_nsf_header
from dtstore.connectors.entries import BLOCK, dir_entry
from dtstore.connectors.fetch import StoredFile, fetch
from dtstore.errors import ConnectorError, UsageError
from dtstore.sources.base import Entry, FileIdentity, Reporter

OK = "Return: PROCESSED"
ERROR = "Return: ERROR"
REF = "BackupRef:"
PARAMETERS = ("PhysicalFileName", "FileName", "BackupReference", "BackupNode", "BackupName", "BackupMode",
              "BackupStartDT", "BackupTargetDir")


class TaskRepo(Protocol):
    def snapshots(self) -> list[Any]: ...

    def snapshot(self, sources: Sequence[Any], *, tags: Sequence[str] = ...) -> Any: ...

    def open_item(self, snapshot: Any, path: str | bytes) -> BinaryIO: ...

    def restore(self, snapshot: Any, target: str, include: Sequence[str | bytes] = (), progress: Any = ...) -> None: ...

    def forget(self, snapshot_ids: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class Call:
    """The parameters Domino appended to the command (names as in HCL's table)."""

    physical: str
    file_name: str
    reference: str
    node: str
    name: str
    mode: str
    start: str
    target_dir: str
    ninth: str = ""
    ref_string: str = ""

    @classmethod
    def of(cls, values: Sequence[str]) -> Call:
        if len(values) < 8:
            raise UsageError(f"Domino passes at least 8 parameters ({', '.join(PARAMETERS)}); got {len(values)}")
        v = [*values, "", ""]
        return cls(physical=v[0], file_name=v[1], reference=v[2], node=v[3], name=v[4], mode=v[5], start=v[6],
                   target_dir=v[7], ninth=v[8], ref_string=v[9])

    @property
    def source_id(self) -> str:
        if not self.node:
            raise UsageError("BackupNode (parameter 4) is empty")
        return f"{KIND}:{self.node}"

    def task_meta(self) -> dict[str, Any]:
        return {"set": self.start, "node": self.node, "name": self.name, "backup_mode": self.mode,
                "target_dir": self.target_dir}


def logical(name: str) -> str:
    """A FileName as Domino passes it (native separators) → the ``/``-separated path in the snapshot."""
    path = PureWindowsPath(name) if "\\" in name else PurePosixPath(name)
    parts = [p for p in path.parts if p not in ("/", "\\") and not p.endswith(":\\") and not p.endswith(":")]
    if not parts or any(p in (".", "..") for p in parts):
        raise UsageError(f"unusable FileName {name!r}")
    return "/".join(parts)


def _stat_entry(item: str, path: Path) -> Entry:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConnectorError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return Entry(path=item.encode(), type="file", mode=0o600, mtime_ns=st.st_mtime_ns, size=st.st_size,
                 opener=lambda: open(path, "rb", buffering=0),
                 identity=FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns),
                 cache_key=b"file:" + os.fsencode(path))


class TaskSource:
    """The file(s) of one backup-task command, as one snapshot."""

    kind = KIND
    exclusive = False  # Domino runs its commands one after another; each snapshot stands alone

    def __init__(self, source_id: str, files: list[tuple[str, Path]], meta: dict[str, Any]) -> None:
        self._source_id, self.files, self.meta = source_id, files, meta

    @property
    def source_id(self) -> str:
        return self._source_id

    @property
    def display_paths(self) -> list[str]:
        return [f"domino backup task {self.meta['task']['node']} {self.meta['task']['backup_mode']}"]

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        yield dir_entry("domino")
        dirs = sorted({item.rsplit("/", 1)[0] for item, _ in self.files})
        for d in dirs:
            yield dir_entry(d)
        for item, path in self.files:
            yield _stat_entry(item, path)
        self.meta["finished_at"] = iso(clock.now())

    def metadata(self) -> dict[str, Any]:
        return self.meta


def _base_meta(call: Call, mode: str) -> dict[str, Any]:
    now = iso(clock.now())
    return {"format": METADATA_FORMAT, "transport": "task", "mode": mode, "started_at": now, "consistent_at": now,
            "task": call.task_meta(), "server": {"node": call.node}}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _db_record(path: Path, name: str) -> dict[str, Any]:
    record: dict[str, Any] = {"file": name, "item": f"domino/data/{name}", "size": path.stat().st_size}
    if is_database(name):
        with contextlib.suppress(ConnectorError):  # a real NSF: the header is Domino's, its DBIID is parameter 3
            record.update(read_nsf_header(path).to_json())
    return record


def read_file_list(path: Path, data: Path | None) -> list[tuple[str, Path]]:
    """The snapshot file list: one file a line, ``PHYSICAL`` or ``PHYSICAL;LOGICAL``."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise ConnectorError(f"cannot read the snapshot file list {path}: {exc.strerror or exc}") from exc
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        physical, sep, name = line.partition(";")
        if not sep:
            if data is None:
                raise UsageError("the file list holds physical paths only: set Backup Snapshot File List to "
                                 "Physical&LogicalPath, or give --data DIR")
            name = os.path.relpath(physical, data)
        found.append((logical(name), Path(physical)))
    if not found:
        raise ConnectorError(f"the snapshot file list {path} is empty")
    return found


def backup_snapshot(repo: TaskRepo, call: Call, *, data: Path | None = None) -> Any:
    """Backup Snapshot Command: every file of the list (parameter 1) as ONE snapshot."""
    listed = read_file_list(Path(call.physical), data)
    meta = _base_meta(call, "task-snapshot")
    meta["task"]["retention_days"] = call.ninth
    meta["task"]["files"] = [_db_record(path, name) for name, path in listed]
    meta["databases"] = [r for r in meta["task"]["files"] if is_database(r["file"])]
    source = TaskSource(call.source_id, [(f"domino/data/{name}", path) for name, path in listed], meta)
    return repo.snapshot([source], tags=[f"domino-{call.mode.lower() or 'full'}"])


def backup_db(repo: TaskRepo, call: Call) -> Any:
    """Backup DB Command: one NSF (or its ``.DELTA``) as one snapshot of the backup set."""
    physical = Path(call.physical)
    name = logical(call.file_name)
    if physical.name.upper().endswith(".DELTA") and not name.upper().endswith(".DELTA"):
        name += ".DELTA"
    meta = _base_meta(call, "task-db")
    meta["task"]["retention_days"] = call.ninth
    meta["task"]["dbiid"] = call.reference
    record = _db_record(physical, name)
    meta["task"]["files"] = [record]
    meta["databases"] = [record] if is_database(name) else []
    return repo.snapshot([TaskSource(call.source_id, [(f"domino/data/{name}", physical)], meta)],
                         tags=[f"domino-{call.mode.lower() or 'db'}"])


def archived_extent(history: Sequence[SnapshotInfo], log_id: str, name: str) -> SnapshotInfo | None:
    found = [s for s in history if mode_of(s) == "task-log" and s.meta["log"]["log_id"] == log_id
             and s.meta["extent"]["name"].upper() == name.upper()]
    return found[-1] if found else None


def backup_translog(repo: TaskRepo, call: Call) -> tuple[Any, str]:
    """Backup Translog Command: one extent as one snapshot; (snapshot, note).  Again with the same
    bytes: the earlier snapshot, at once; with other bytes: refused."""
    physical = Path(call.physical)
    name = physical.name
    sequence = extent_sequence(name)
    if sequence is None:
        raise UsageError(f"{name} is not a transaction log extent (S#######.TXN)")
    log_id = call.reference
    if not log_id:
        raise UsageError("BackupReference (parameter 3, the LogID) is empty")
    digest = _sha256(physical)
    history = snapshots_of(repo.snapshots(), KIND, call.source_id)
    earlier = archived_extent(history, log_id, name)
    if earlier is not None:
        if earlier.meta["extent"]["sha256"] == digest:
            return next(s for s in repo.snapshots() if s.id == earlier.id), "already archived"
        raise ConnectorError(f"{name} of LogID {log_id} is archived already (snapshot {earlier.short_id}) with "
                             "other content; refusing to store a second version")
    note = ""
    previous = [s for s in history if mode_of(s) == "task-log" and s.meta["log"]["log_id"] == log_id]
    if previous and int(previous[-1].meta["extent"]["sequence"]) != sequence - 1:
        note = f"gap: the archive's previous extent of this log is {previous[-1].meta['extent']['name']}"
    meta = _base_meta(call, "task-log")
    meta["log"] = {"log_id": log_id, "style": "archive"}
    st = physical.stat()
    meta["extent"] = {"name": name, "sequence": sequence, "item": f"domino/translog/{name}", "size": st.st_size,
                      "sha256": digest}
    with contextlib.suppress(ConnectorError):
        header = read_extent_header(physical)
        if header.last_us:
            import datetime as dt

            meta["covered_until"] = iso(dt.datetime.fromtimestamp(header.last_us / 1e6, dt.UTC))
    source = TaskSource(call.source_id, [(f"domino/translog/{name}", physical)], meta)
    return repo.snapshot([source], tags=["domino-translog"]), note


def _choose(repo: TaskRepo, call: Call, item: str, *, extent: bool) -> tuple[Any, dict[str, Any]]:
    snaps = {s.id: s for s in repo.snapshots()}
    history = snapshots_of(snaps.values(), KIND, call.source_id)
    if call.ref_string:
        wanted = [s for s in history if s.id.startswith(call.ref_string)]
    elif extent:
        wanted = [s for s in history if mode_of(s) == "task-log" and s.meta["log"]["log_id"] == call.reference]
    else:
        wanted = [s for s in history if mode_of(s) in ("task-db", "task-snapshot") and task_set(s) == call.start]
    for snap in reversed(wanted):
        records = [snap.meta["extent"]] if "extent" in snap.meta else snap.meta.get("task", {}).get("files", [])
        for record in records:
            if str(record["item"]).upper() == item.upper():
                return snaps[snap.id], record
    raise ConnectorError(f"no snapshot of {call.source_id} holds {item}"
                         + (f" (RefString {call.ref_string})" if call.ref_string else f" (backup set {call.start})"))


def restore_file(repo: TaskRepo, call: Call, *, extent: bool) -> Path:
    """Restore DB / Restore Translog Command: the stored file written to RestoreFileName (parameter 9)."""
    if not call.ninth:
        raise UsageError("RestoreFileName (parameter 9) is empty")
    dest = Path(call.ninth)
    if extent:
        item = f"domino/translog/{Path(call.file_name).name if call.file_name else Path(call.physical).name}"
    else:
        name = logical(call.file_name)
        if dest.name.upper().endswith(".DELTA") and not name.upper().endswith(".DELTA"):
            name += ".DELTA"
        item = f"domino/data/{name}"
    snapshot, record = _choose(repo, call, item, extent=extent)
    if dest.exists():
        raise ConnectorError(f"{dest} exists: a restore never overwrites")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return fetch(repo, StoredFile(snapshot, item, record.get("size"), record.get("sha256")), dest)


def prune(repo: TaskRepo, call: Call, *, what: str) -> list[str]:
    """Prune DB / Translog / Snapshot Command: forget the snapshots holding that backup (data goes at
    the next ``dtstore prune``)."""
    history = snapshots_of(repo.snapshots(), KIND, call.source_id)
    if what == "translog":
        name = Path(call.file_name or call.physical).name
        found = archived_extent(history, call.reference, name)
        ids = [found.id] if found else []
    elif what == "snapshot":
        ids = [s.id for s in history if mode_of(s) in ("task-snapshot", "task-db") and task_set(s) == call.start]
    else:
        item = f"domino/data/{logical(call.file_name)}"
        ids = [s.id for s in history if mode_of(s) in ("task-db", "task-snapshot") and task_set(s) == call.start
               and any(str(f["item"]).upper() in (item.upper(), item.upper() + ".DELTA")
                       for f in s.meta["task"]["files"])
               and len(s.meta["task"]["files"]) <= 1]
    if ids:
        repo.forget(ids)
    return ids


__all__ = ["ERROR", "OK", "PARAMETERS", "REF", "Call", "TaskSource", "backup_db", "backup_snapshot",
           "backup_translog", "logical", "prune", "read_file_list", "restore_file"]
