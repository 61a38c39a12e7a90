"""What ``dtstore snapshot oracle://…`` reads: a user-managed hot backup, or the new archived logs.

Full (``--mode full``, or ``auto`` when no log can follow):

1. Every run first looks at ``v$backup``: files left ``ACTIVE`` by a run that was killed are taken out
   of backup mode (``ALTER DATABASE END BACKUP``) and listed as ``ended_stuck_backup``.
2. Refuse unless ``v$database.log_mode`` is ARCHIVELOG (a hot backup could never be made consistent).
3. ``ALTER SYSTEM ARCHIVE LOG CURRENT``; ``ALTER DATABASE BEGIN BACKUP``; every ``v$datafile`` file
   must then be ``ACTIVE`` in ``v$backup`` (its ``change#`` is the SCN recovery starts from).
4. Each data file is streamed from the host (directly, or over SFTP) into the repository as
   ``datafiles/<file#>_<name>``, hashed (SHA-256) on the way.
5. ``ALTER DATABASE END BACKUP`` in a ``finally``: also when a read fails or the run is stopped.
6. ``ALTER SYSTEM ARCHIVE LOG CURRENT`` again: the end boundary (the redo through END BACKUP is archived).
7. ``ALTER DATABASE BACKUP CONTROLFILE TO '<stage>/…' REUSE`` and ``… TO TRACE AS '<stage>/…' REUSE``,
   ``CREATE PFILE='<stage>/…' FROM SPFILE`` (the ``&pfile=`` file, or ``FROM MEMORY`` without an SPFILE):
   read, stored, removed.
8. Every archived log from the one holding the backup's first SCN to the last: ``arch/<t>_<s>_<r>.arc``.

Log (``--mode log``): ``ARCHIVE LOG CURRENT``, then, per thread, the archived logs after the last one
the repository holds, in the current incarnation only; each must follow (``sequence + 1``,
``first_change#`` = previous ``next_change#``) and be on the host's disk, else ChainError (17, or a
full in ``auto``) naming thread and sequence.  A log archived to two destinations (two
``v$archived_log`` rows with one thread/sequence) is stored once.  dtstore never deletes archived logs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import PurePath
from typing import Any, BinaryIO

from dtstore import clock
from dtstore.connectors.base import ChainCheck, RepositoryView, iso
from dtstore.connectors.chains import Target
from dtstore.connectors.chains import plan as chain_plan
from dtstore.connectors.entries import BLOCK, bytes_entry, dir_entry, file_entry
from dtstore.connectors.modes import choose_mode
from dtstore.connectors.oracle import meta
from dtstore.connectors.oracle.chain import KIND, explain, links, stream_name
from dtstore.connectors.oracle.meta import OracleMeta, ThreadEnd, parse_offset
from dtstore.connectors.oracle.session import Session, runner_for, session
from dtstore.connectors.oracle.url import OracleUrl
from dtstore.connectors.runner import CommandRunner
from dtstore.connectors.source import ChainedSource
from dtstore.errors import ChainError, ConnectorError
from dtstore.sources.base import Entry, Reporter

ARCHIVED_LOGS = ("SELECT thread#, sequence#, name, dest_id, first_change#, next_change#, first_time, next_time, "
                 "resetlogs_change#, resetlogs_id, blocks, block_size FROM v$archived_log WHERE archived = 'YES' "
                 "AND deleted = 'NO' AND standby_dest = 'NO' ORDER BY thread#, sequence#, dest_id")


def to_utc(value: Any, zone: dt.timezone) -> str:
    """A server DATE (naive, the server's local time) as UTC ISO 8601."""
    if not isinstance(value, dt.datetime):
        raise ConnectorError(f"expected a DATE from the server, got {value!r}")
    return iso(value.replace(tzinfo=zone) if value.tzinfo is None else value)


@dataclass
class ServerInfo:
    dbid: int
    name: str
    db_unique_name: str
    log_mode: str
    open_mode: str
    version: str
    platform: str
    resetlogs_change: int
    resetlogs_time: str
    resetlogs_id: int
    utc_offset: str
    params: dict[str, str]
    datafile_bytes: int
    backup_active: list[int] = field(default_factory=list)

    @property
    def source_id(self) -> str:
        return f"oracle:{self.dbid}/{self.name}"

    @property
    def zone(self) -> dt.timezone:
        return parse_offset(self.utc_offset)


def probe(s: Session) -> ServerInfo:
    db = s.rows("SELECT dbid, name, db_unique_name, log_mode, open_mode, current_scn, resetlogs_change#, "
                "resetlogs_time, platform_name FROM v$database")[0]
    inc = s.rows("SELECT resetlogs_id, resetlogs_change# FROM v$database_incarnation WHERE status = 'CURRENT'")
    version = s.value("SELECT version FROM v$instance")
    params = {str(r["NAME"]): str(r["VALUE"] or "") for r in s.rows("SELECT name, value FROM v$parameter")}
    offset = str(s.value("SELECT TO_CHAR(SYSTIMESTAMP, 'TZH:TZM') FROM dual"))
    files = s.rows("SELECT file#, bytes FROM v$datafile")
    active = [int(r["FILE#"]) for r in s.rows("SELECT file#, status FROM v$backup") if r["STATUS"] == "ACTIVE"]
    zone = parse_offset(offset)
    return ServerInfo(
        dbid=int(db["DBID"]), name=str(db["NAME"]), db_unique_name=str(db["DB_UNIQUE_NAME"]),
        log_mode=str(db["LOG_MODE"]), open_mode=str(db["OPEN_MODE"]), version=str(version),
        platform=str(db["PLATFORM_NAME"]), resetlogs_change=int(db["RESETLOGS_CHANGE#"]),
        resetlogs_time=to_utc(db["RESETLOGS_TIME"], zone), resetlogs_id=int(inc[0]["RESETLOGS_ID"]),
        utc_offset=offset, params=params, datafile_bytes=sum(int(r["BYTES"] or 0) for r in files),
        backup_active=active,
    )


class _Hashing(io.RawIOBase):
    """A host file's reads, hashed; an OSError becomes ConnectorError (a backup missing a file is none)."""

    def __init__(self, raw: BinaryIO, name: str) -> None:
        self._raw, self._name = raw, name
        self.digest = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._raw.read(len(buffer))
        except OSError as exc:
            raise ConnectorError(f"reading {self._name} failed: {exc.strerror or exc}") from exc
        n = len(data)
        buffer[:n] = data
        self.digest.update(data)
        self.count += n
        return n


@dataclass(frozen=True)
class HostLog:
    """One archived log as ``v$archived_log`` lists it (the first destination whose file exists)."""

    thread: int
    sequence: int
    resetlogs_id: int
    first_change: int
    next_change: int
    first_time: str
    next_time: str
    name: str

    @property
    def item(self) -> str:
        return f"{meta.ARCH_DIR}/{self.thread}_{self.sequence}_{self.resetlogs_id}.arc"


class OracleSource(ChainedSource):
    """One ``dtstore snapshot oracle://…`` run."""

    kind = KIND
    url: OracleUrl
    info: ServerInfo

    def __init__(self, url: OracleUrl, info: ServerInfo, repo: RepositoryView | None, mode: str) -> None:
        self.url, self.info, self.repo, self.mode = url, info, repo, mode
        self.history = []
        self._meta: dict[str, Any] = {}
        self._session: Session | None = None
        self._runner: CommandRunner | None = None
        self._new_logs: list[HostLog] = []
        self._continues: dict[int, ThreadEnd] = {}

    def estimated_size(self) -> int:
        return self.info.datafile_bytes if self.mode != "log" else 0

    def metadata(self) -> dict[str, Any]:
        meta.check(self._meta)
        return self._meta

    # -- helpers ------------------------------------------------------------------------------------

    @property
    def s(self) -> Session:
        if self._session is None:
            raise ConnectorError("the Oracle session is not open")
        return self._session

    @property
    def runner(self) -> CommandRunner:
        if self._runner is None:
            raise ConnectorError("the host's files are not reachable (no runner)")
        return self._runner

    def _path(self, text: str) -> PurePath:
        return self.url.host_path(text)

    def _host_logs(self, info: ServerInfo) -> list[HostLog]:
        """The current incarnation's archived logs, one per (thread, sequence): the first destination
        whose file is on the host's disk (or the first listed, when none is)."""
        chosen: dict[tuple[int, int], HostLog] = {}
        for row in self.s.rows(ARCHIVED_LOGS):
            if int(row["RESETLOGS_ID"]) != info.resetlogs_id:
                continue
            key = (int(row["THREAD#"]), int(row["SEQUENCE#"]))
            log = HostLog(key[0], key[1], int(row["RESETLOGS_ID"]), int(row["FIRST_CHANGE#"]),
                          int(row["NEXT_CHANGE#"]), to_utc(row["FIRST_TIME"], info.zone),
                          to_utc(row["NEXT_TIME"], info.zone), str(row["NAME"]))
            if key not in chosen or (not self.runner.exists(chosen[key].name) and self.runner.exists(log.name)):
                chosen[key] = log
        return [chosen[k] for k in sorted(chosen)]

    def _open(self, name: str, record: dict[str, Any]) -> contextlib.AbstractContextManager[BinaryIO]:
        @contextlib.contextmanager
        def opener() -> Iterator[BinaryIO]:
            raw = self.runner.read_file(name)
            hashing = _Hashing(raw, name)
            try:
                with io.BufferedReader(hashing, BLOCK) as stream:  # type: ignore[arg-type]
                    yield stream  # type: ignore[misc]
            finally:
                raw.close()
            record["size"], record["sha256"] = hashing.count, hashing.digest.hexdigest()
        return opener()

    def _log_entry(self, log: HostLog) -> Entry:
        record: dict[str, Any] = {
            "thread": log.thread, "sequence": log.sequence, "resetlogs_id": log.resetlogs_id,
            "first_change": log.first_change, "next_change": log.next_change, "first_time": log.first_time,
            "next_time": log.next_time, "name": log.name, "path": log.item, "size": 0, "sha256": "",
        }
        self._meta["logs"].append(record)
        return file_entry(log.item, partial(self._open, log.name, record))

    def _small_file(self, statement: str, name: str) -> bytes:
        """Run a statement that writes ``name`` on the host, read the file, remove it."""
        self.s.execute(statement.replace("{}", name.replace("'", "''")))
        try:
            with contextlib.closing(self.runner.read_file(name)) as handle:
                return handle.read()
        finally:
            with contextlib.suppress(ConnectorError):
                self.runner.remove(name)

    def _stage_name(self, token: str, what: str) -> str:
        folder = self.url.stage or str(self._path(self.info.params["control_files"].split(",")[0].strip()).parent)
        return str(self._path(folder) / f"dtstore-{token}-{what}")

    def _end_stuck_backup(self) -> list[int]:
        active = [int(r["FILE#"]) for r in self.s.rows("SELECT file#, status FROM v$backup") if r["STATUS"] == "ACTIVE"]
        if active:
            self.s.execute("ALTER DATABASE END BACKUP")
        return active

    # -- the run ------------------------------------------------------------------------------------

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        with session(self.url) as s, runner_for(self.url) as runner:
            self._session, self._runner = s, runner
            try:
                yield from self._entries()
            finally:
                self._session = self._runner = None

    def _base_meta(self, info: ServerInfo, mode: str) -> None:
        self._meta = {
            "format": meta.METADATA_FORMAT, "mode": mode, "requested_mode": self.mode, "url": self.url.display(),
            "dbid": info.dbid, "name": info.name, "db_unique_name": info.db_unique_name, "version": info.version,
            "platform": info.platform, "block_size": int(info.params.get("db_block_size") or 8192),
            "incarnation": {"resetlogs_change": info.resetlogs_change, "resetlogs_time": info.resetlogs_time,
                            "resetlogs_id": info.resetlogs_id},
            "server_utc_offset": info.utc_offset,
            "log_archive_format": info.params.get("log_archive_format") or "%t_%s_%r.dbf",
            "windows": self.url.windows, "spfile": info.params.get("spfile", ""),
            "control_files": [c.strip() for c in info.params.get("control_files", "").split(",") if c.strip()],
            "online_logs": [[int(r["GROUP#"]), str(r["MEMBER"])]
                            for r in self.s.rows("SELECT group#, member FROM v$logfile ORDER BY group#, member")],
            "logs": [], "frontier": {}, "continues": None, "started_at": iso(clock.now()),
        }

    def _entries(self) -> Iterator[Entry]:
        stuck = self._end_stuck_backup()
        info = probe(self.s)
        self.info = info
        if info.log_mode != "ARCHIVELOG" and self.mode != "log":
            raise ConnectorError(
                f"database {info.name} runs in {info.log_mode} mode: a hot backup cannot be recovered without "
                "archived logs (ORA-01123). Enable ARCHIVELOG mode (SHUTDOWN IMMEDIATE; STARTUP MOUNT; ALTER "
                "DATABASE ARCHIVELOG; ALTER DATABASE OPEN) or back it up cold, outside dtstore")
        if info.log_mode == "ARCHIVELOG":
            self.s.execute("ALTER SYSTEM ARCHIVE LOG CURRENT")
        choice = choose_mode(self.mode, log=self._log_check)
        self._base_meta(info, choice.mode)
        if stuck:
            self._meta["ended_stuck_backup"] = stuck
        if choice.reason:
            self._meta["auto_reason"] = choice.reason
        if choice.mode == "full":
            yield from self._full(info)
        else:
            yield from self._log(info)
        self._meta["finished_at"] = iso(clock.now())

    def _full(self, info: ServerInfo) -> Iterator[Entry]:
        self.s.execute("ALTER DATABASE BEGIN BACKUP")
        ended = False
        try:
            files = self.s.rows("SELECT file#, name, bytes, ts#, checkpoint_change# FROM v$datafile ORDER BY file#")
            spaces = {int(r["TS#"]): str(r["NAME"]) for r in self.s.rows("SELECT ts#, name FROM v$tablespace")}
            states = {int(r["FILE#"]): r for r in self.s.rows("SELECT file#, status, change# FROM v$backup")}
            idle = [int(f["FILE#"]) for f in files if states.get(int(f["FILE#"]), {}).get("STATUS") != "ACTIVE"]
            if idle:
                raise ConnectorError(f"after BEGIN BACKUP, v$backup does not show data file(s) "
                                     f"{', '.join(map(str, idle))} ACTIVE")
            self._meta["begin_scn"] = min(int(states[int(f["FILE#"])]["CHANGE#"]) for f in files)
            self._meta["datafiles"] = []
            yield dir_entry(meta.DATA_DIR)
            for f in files:
                number, name = int(f["FILE#"]), str(f["NAME"])
                item = f"{meta.DATA_DIR}/{number}_{self._path(name).name}"
                record: dict[str, Any] = {
                    "file": number, "name": name, "tablespace": spaces.get(int(f["TS#"]), ""),
                    "bytes": int(f["BYTES"] or 0), "checkpoint_change": int(f["CHECKPOINT_CHANGE#"] or 0),
                    "backup_change": int(states[number]["CHANGE#"]), "path": item, "size": 0, "sha256": "",
                }
                self._meta["datafiles"].append(record)
                entry = file_entry(item, partial(self._open, name, record), size=record["bytes"] or None)
                yield entry
            self.s.execute("ALTER DATABASE END BACKUP")
            ended = True
        finally:
            if not ended:
                with contextlib.suppress(ConnectorError):
                    self.s.execute("ALTER DATABASE END BACKUP")
        self.s.execute("ALTER SYSTEM ARCHIVE LOG CURRENT")
        token = uuid.uuid4().hex[:8]
        yield dir_entry(meta.CONTROL_DIR)
        yield bytes_entry(meta.CONTROL_ITEM, self._small_file("ALTER DATABASE BACKUP CONTROLFILE TO '{}' REUSE",
                                                              self._stage_name(token, "control.bkp")))
        yield bytes_entry(meta.TRACE_ITEM, self._small_file("ALTER DATABASE BACKUP CONTROLFILE TO TRACE AS '{}' REUSE",
                                                            self._stage_name(token, "control.trc")))
        pfile_item = f"{meta.PFILE_DIR}/init{info.name}.ora"
        if info.params.get("spfile"):
            pfile = self._small_file("CREATE PFILE='{}' FROM SPFILE", self._stage_name(token, f"init{info.name}.ora"))
        elif self.url.pfile:
            with contextlib.closing(self.runner.read_file(self.url.pfile)) as handle:
                pfile = handle.read()
        else:  # started from a PFILE: the parameters in use (11g and later)
            pfile = self._small_file("CREATE PFILE='{}' FROM MEMORY", self._stage_name(token, f"init{info.name}.ora"))
        yield dir_entry(meta.PFILE_DIR)
        yield bytes_entry(pfile_item, pfile)
        self._meta["pfile_item"] = pfile_item
        logs = self._host_logs(info)
        begin = int(self._meta["begin_scn"])
        needed = [log for log in logs if log.next_change > begin]
        self._check_contiguous(needed, {})
        yield dir_entry(meta.ARCH_DIR)
        for log in needed:
            self._require_on_disk(log)
            yield self._log_entry(log)
        self._meta["frontier"] = self._frontier(needed, {})
        self._meta["end_scn"] = min(e["next_change"] for e in self._meta["frontier"].values())
        self._meta["end_time"] = min(e["next_time"] for e in self._meta["frontier"].values())

    def _log(self, info: ServerInfo) -> Iterator[Entry]:
        self._meta["continues"] = {str(t): {"sequence": e.sequence, "next_change": e.next_change,
                                            "next_time": e.next_time} for t, e in self._continues.items()}
        yield dir_entry(meta.ARCH_DIR)
        for log in self._new_logs:
            yield self._log_entry(log)
        self._meta["frontier"] = self._frontier(self._new_logs, self._continues)
        self._meta["end_scn"] = min(e["next_change"] for e in self._meta["frontier"].values())
        self._meta["end_time"] = min(e["next_time"] for e in self._meta["frontier"].values())

    @staticmethod
    def _frontier(logs: list[HostLog], before: dict[int, ThreadEnd]) -> dict[str, dict[str, Any]]:
        ends = {t: {"sequence": e.sequence, "next_change": e.next_change, "next_time": e.next_time}
                for t, e in before.items()}
        for log in logs:
            ends[log.thread] = {"sequence": log.sequence, "next_change": log.next_change, "next_time": log.next_time}
        if not ends:
            raise ConnectorError("no archived log is listed in v$archived_log after ARCHIVE LOG CURRENT")
        return {str(t): ends[t] for t in sorted(ends)}

    @staticmethod
    def _check_contiguous(logs: list[HostLog], before: dict[int, ThreadEnd]) -> None:
        last: dict[int, tuple[int, int]] = {t: (e.sequence, e.next_change) for t, e in before.items()}
        for log in logs:
            if log.thread in last:
                seq, change = last[log.thread]
                if log.sequence != seq + 1:
                    missing = f"{seq + 1}" + (f" .. {log.sequence - 1}" if log.sequence - 1 > seq + 1 else "")
                    raise ChainError(f"archived log thread {log.thread} sequence {missing} is missing from "
                                     f"v$archived_log (the next one listed is sequence {log.sequence}); a full "
                                     "snapshot is needed")
                if log.first_change != change:
                    raise ChainError(f"archived log thread {log.thread} sequence {log.sequence} starts at SCN "
                                     f"{log.first_change}, not at {change} where sequence {seq} ended")
            last[log.thread] = (log.sequence, log.next_change)

    def _require_on_disk(self, log: HostLog) -> None:
        if not self.runner.exists(log.name):
            raise ChainError(f"archived log thread {log.thread} sequence {log.sequence} ({log.name}) is listed but "
                             f"not on the database host's disk; restore it there, or take a full snapshot "
                             "(CROSSCHECK ARCHIVELOG ALL in RMAN marks it expired)")

    def _log_check(self) -> ChainCheck:
        info = self.info
        if info.log_mode != "ARCHIVELOG":
            return ChainCheck.broken(f"database {info.name} runs in {info.log_mode} mode (no archived logs)")
        if not self.history:
            return ChainCheck.broken("the repository holds no snapshot of this database yet")
        newest = OracleMeta.of(self.history[-1].meta, self.history[-1].short_id)
        if newest.incarnation.resetlogs_id != info.resetlogs_id:
            return ChainCheck.broken(
                f"the database was opened with RESETLOGS (new incarnation {info.resetlogs_id} at SCN "
                f"{info.resetlogs_change}); the logs of the new incarnation need a new full")
        stream = [link for link in links(self.history) if link.stream == stream_name(info.resetlogs_id)]
        try:
            reached = chain_plan(stream, Target(), explain=explain)
        except ChainError as exc:
            return ChainCheck.broken(f"the newest snapshots are not restorable from a full ({exc})")
        if reached.last.snapshot_id != self.history[-1].id:
            return ChainCheck.broken(f"the newest snapshot {self.history[-1].short_id} is not reached by the chain "
                                     f"of full {reached.full.short_id}")
        before = dict(newest.frontier)
        nothing = ThreadEnd(0, 0, "")
        logs = [log for log in self._host_logs(info) if log.sequence > before.get(log.thread, nothing).sequence]
        try:
            self._check_contiguous(logs, before)
            for log in logs:
                self._require_on_disk(log)
        except ChainError as exc:
            return ChainCheck.broken(str(exc).removesuffix("; a full snapshot is needed"))
        base = next((s for s in reversed(self.history) if s.meta.get("mode") == "full"), None)
        if base is not None:
            known = {d.name for d in OracleMeta.of(base.meta, base.short_id).datafiles}
            now = {str(r["NAME"]) for r in self.s.rows("SELECT file#, name FROM v$datafile")}
            if now != known:
                return ChainCheck.broken("the set of data files changed since the last full (added or renamed "
                                         "files are unknown to its control file)")
        if not logs:
            return ChainCheck.broken("no new archived log")
        self._new_logs, self._continues = logs, before
        return ChainCheck.good()


def make(url: OracleUrl, repo: RepositoryView | None, mode: str) -> OracleSource:
    with session(url) as s:
        info = probe(s)
    return OracleSource(url, info, repo, mode)


__all__ = ["ARCHIVED_LOGS", "OracleSource", "ServerInfo", "make", "parse_offset", "probe", "to_utc"]
