"""What ``dtstore snapshot mssql://…`` does: one BACKUP per database into the stage folder, uploaded, removed.

For each database (the URL's list, else every user database plus master, model and msdb; never
tempdb, database snapshots, or databases that are not ONLINE: each skip is recorded, and a user
database that is offline or restoring is a warning, exit 3):

1. decide its mode (``--mode full|diff|log|auto``) from the server's own view of its chain (what Ola
   Hallengren's ``@ChangeBackupType = 'Y'`` reads) and the repository's (see :meth:`_log_check`,
   :meth:`_diff_check`): auto takes a log, else a differential, else a full, and records why;
2. ``BACKUP DATABASE|LOG [db] TO DISK = N'<stage>\\<file>' WITH CHECKSUM, INIT, FORMAT[, DIFFERENTIAL]
   [, COPY_ONLY][, COMPRESSION], STATS = 10, NAME = …, DESCRIPTION = N'dtstore:<source id>'``, every
   result set drained;
3. ``RESTORE VERIFYONLY … WITH CHECKSUM``, ``RESTORE HEADERONLY`` (the LSNs are taken from the file
   itself), ``RESTORE FILELISTONLY`` (the logical names a MOVE needs);
4. the file becomes the item ``mssql/<db>.bak|.diff.bak|.trn``; once the core has stored it, its
   stage copy is removed.

The core holds this server's source lock for the whole run (``exclusive``) and ``prepare()`` reads
the history under it, so two runs never both continue one base.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from dtstore import clock
from dtstore.connectors.base import ChainCheck, RepositoryView, iso
from dtstore.connectors.chains import ChainPlan, Link, Target, plan
from dtstore.connectors.entries import BLOCK, dir_entry, file_entry
from dtstore.connectors.modes import choose_mode
from dtstore.connectors.mssql import meta
from dtstore.connectors.mssql.chain import KIND, explain, links
from dtstore.connectors.mssql.server import (
    DatabaseState,
    MssqlError,
    Server,
    ServerInfo,
    backups_after,
    databases,
    literal,
    quote_name,
)
from dtstore.connectors.mssql.url import MssqlUrl
from dtstore.connectors.source import ChainedSource
from dtstore.connectors.stage import Stage
from dtstore.errors import ChainError, ConnectorError
from dtstore.progress import ProgressEvent
from dtstore.sources.base import Entry, Reporter

SYSTEM_DATABASES = ("master", "model", "msdb")
EXTENSIONS = {"full": ".bak", "diff": ".diff.bak", "log": ".trn"}
STATS = 10


def item_path(database: str, kind: str) -> str:
    return f"mssql/{quote(database, safe=' -_.')}{EXTENSIONS[kind]}"


def backup_sql(database: str, path: str, kind: str, *, copy_only: bool, compression: bool, source_id: str) -> str:
    """The exact BACKUP statement (no native compression by default: compressed backups do not deduplicate)."""
    options = ["CHECKSUM", "INIT", "FORMAT"]
    if kind == "diff":
        options.append("DIFFERENTIAL")
    if copy_only and kind != "diff":
        options.append("COPY_ONLY")
    if compression:
        options.append("COMPRESSION")
    options += [f"STATS = {STATS}", f"NAME = {literal(f'dtstore {kind} {database}')}",
                f"DESCRIPTION = {literal(f'dtstore:{source_id}')}"]
    what = "LOG" if kind == "log" else "DATABASE"
    return f"BACKUP {what} {quote_name(database)} TO DISK = {literal(path)} WITH {', '.join(options)}"


def header_times(header: dict[str, Any], fallback_offset_minutes: int) -> tuple[str, str, int]:
    """BackupStartDate/FinishDate are the server's local time; TimeZone (15-minute units, 127 unknown) says which."""
    zone = header.get("TimeZone")
    units = int(zone) if zone is not None and int(zone) != 127 else fallback_offset_minutes // 15
    offset = dt.timezone(dt.timedelta(minutes=15 * units))

    def utc(value: Any) -> str:
        moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
        return iso(moment.replace(tzinfo=offset))

    return utc(header["BackupStartDate"]), utc(header["BackupFinishDate"]), units


def _guid(value: Any) -> str | None:
    return str(value).upper() if value is not None else None


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


class MssqlSource(ChainedSource):
    """One ``dtstore snapshot mssql://…`` run."""

    kind = KIND

    def __init__(self, url: MssqlUrl, info: ServerInfo, targets: list[DatabaseState],
                 skipped: list[dict[str, str]], repo: RepositoryView | None, mode: str) -> None:
        self.url, self.info, self.targets, self.skipped, self.repo = url, info, targets, skipped, repo
        self.mode = mode
        self.history = []
        self._meta: dict[str, Any] = {}
        self._links: dict[str, list[Link]] = {}

    def prepare(self) -> None:
        super().prepare()
        for link in links(self.history):
            self._links.setdefault(link.stream, []).append(link)

    def metadata(self) -> dict[str, Any]:
        meta.check(self._meta)
        return self._meta

    # -- the run --------------------------------------------------------------------------------------------------

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        self._meta = {
            "format": meta.METADATA_FORMAT, "requested_mode": self.mode, "mode": self.mode,
            "url": self.url.display(), "server": self.info.to_json(), "started_at": iso(clock.now()),
            "databases": [], "skipped": self.skipped, "foreign_backups": [], "copy_only": self.url.copy_only,
        }
        for skip in self.skipped:
            if skip.get("warn"):
                reporter.warn(b"mssql", f"database {skip['name']} not backed up: {skip['reason']}")
        yield dir_entry("mssql")
        stage_parent = self.url.stage_dir()
        with Stage(stage_parent, KIND) as stage, Server(self.url) as server:
            with contextlib.suppress(OSError):
                os.chmod(stage.path, 0o2770)  # the SQL Server service (another user, same group) writes here
            current = {d.name: d for d in databases(server)}
            for target in self.targets:
                state = current.get(target.name)
                if state is None or state.state != "ONLINE":
                    raise ConnectorError(f"database {target.name} is no longer ONLINE on {self.info.name}")
                yield from self._backup(server, stage, state, reporter)
        kinds = {b["kind"] for b in self._meta["databases"]}
        self._meta["mode"] = kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else self.mode)
        self._meta["finished_at"] = iso(clock.now())

    def _progress(self, reporter: Reporter, database: str) -> Any:
        hook = getattr(reporter, "progress", None)

        def report(text: str) -> None:
            if callable(hook):
                hook(ProgressEvent("backup", current=database, message=text))

        return report

    def _never(self, db: DatabaseState) -> str | None:
        """Why ``--mode log``/``diff`` can never apply to this database (Ola Hallengren skips them)."""
        if db.name.lower() == "master":
            return "master has full backups only"
        if self.mode == "log" and db.recovery_model == "SIMPLE":
            return "SIMPLE recovery model: no log backups"
        return None

    def _backup(self, server: Server, stage: Stage, db: DatabaseState, reporter: Reporter) -> Iterator[Entry]:
        never = self._never(db) if self.mode in ("log", "diff") and not self.url.databases else None
        if never is not None:  # instance-wide log/diff run: skipped and recorded, as Ola's jobs skip them
            self._meta["skipped"].append({"name": db.name, "reason": f"--mode {self.mode}: {never}"})
            return
        choice = choose_mode(self.mode, log=lambda: self._log_check(server, db), diff=lambda: self._diff_check(db))
        kind = choice.mode
        stamp = clock.now().astimezone(dt.UTC).strftime("%Y%m%d_%H%M%S")
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", db.name)
        path = stage.file(f"{safe}_{kind.upper()}_{stamp}{EXTENSIONS[kind]}")
        sql = backup_sql(db.name, str(path), kind, copy_only=self.url.copy_only, compression=self.url.compression,
                         source_id=self.source_id)
        report = self._progress(reporter, db.name)
        try:
            _, messages = server.execute(sql, progress=report)
            if 3014 not in messages.numbers():
                raise ConnectorError(f"BACKUP of {db.name} ended without its 'successfully processed' message (3014): "
                                     f"{messages.text() or 'no messages'}")
            if not path.is_file():
                raise ConnectorError(f"BACKUP of {db.name} reported success but {path} is not there: is the stage "
                                     "folder the same folder for SQL Server and for dtstore?")
            server.execute(f"RESTORE VERIFYONLY FROM DISK = {literal(str(path))} WITH CHECKSUM")
            header = server.records(f"RESTORE HEADERONLY FROM DISK = {literal(str(path))}")[0]
            filelist = server.records(f"RESTORE FILELISTONLY FROM DISK = {literal(str(path))}")
        except MssqlError as exc:
            path.unlink(missing_ok=True)
            raise ConnectorError(f"backup of database {db.name} failed: {exc}") from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        expected = {"full": 1, "diff": 5, "log": 2}[kind]
        if int(header["BackupType"]) != expected or str(header["DatabaseName"]) != db.name:
            raise ConnectorError(f"{path} holds backup type {header['BackupType']} of {header['DatabaseName']}, "
                                 f"not the {kind} backup of {db.name} just taken")
        start, finish, zone = header_times(header, self.info.tz_offset_minutes)
        record = meta.BackupFile(
            database=db.name, kind=kind, path=item_path(db.name, kind), bytes=path.stat().st_size,
            first_lsn=int(header["FirstLSN"]), last_lsn=int(header["LastLSN"]),
            checkpoint_lsn=int(header["CheckpointLSN"]), database_backup_lsn=int(header["DatabaseBackupLSN"] or 0),
            differential_base_lsn=_int(header.get("DifferentialBaseLSN")),
            differential_base_guid=_guid(header.get("DifferentialBaseGUID")),
            backup_set_guid=str(header["BackupSetGUID"]).upper(),
            first_recovery_fork_guid=_guid(header.get("FirstRecoveryForkID")),
            last_recovery_fork_guid=_guid(header.get("RecoveryForkID")),
            fork_point_lsn=_int(header.get("ForkPointLSN")), start=start, finish=finish, time_zone=zone,
            recovery_model=str(header.get("RecoveryModel") or db.recovery_model),
            database_guid=_guid(header.get("BindingID")) or db.database_guid,
            family_guid=_guid(header.get("FamilyGUID")) or db.family_guid,
            is_copy_only=bool(header.get("IsCopyOnly")), begins_log_chain=bool(header.get("BeginsLogChain")),
            has_checksums=bool(header.get("HasBackupChecksums")), verified=True,
            compressed=bool(header.get("Compressed")),
            files=[meta.DataFile(str(f["LogicalName"]), str(f["PhysicalName"]), str(f["Type"]).strip())
                   for f in filelist],
            auto_reason=choice.reason,
        )
        value = record.to_json()
        value["server_message"] = messages.items[-1][1] if messages.items else None
        self._meta["databases"].append(value)
        if choice.reason:
            self._meta.setdefault("auto_reasons", {})[db.name] = choice.reason
            self._meta["auto_reason"] = "; ".join(f"{k}: {v}" for k, v in self._meta["auto_reasons"].items())
        yield file_entry(record.path, lambda: _stage_file(path), size=record.bytes)

    # -- chain checks ---------------------------------------------------------------------------------------------

    def _chain(self, database: str) -> ChainPlan | None:
        mine = self._links.get(database, [])
        if not mine:
            return None
        return plan(mine, Target(), explain=explain)

    def _log_check(self, server: Server, db: DatabaseState) -> ChainCheck:
        if self.url.copy_only:
            return ChainCheck.broken("copy_only=1: dtstore takes copy-only fulls and leaves the log chain to the other "
                                     "tool (no point-in-time restore from this repository)")
        if db.name.lower() == "master":
            return ChainCheck.broken("master has full backups only")
        if db.recovery_model == "SIMPLE":
            return ChainCheck.broken(f"database {db.name} uses the SIMPLE recovery model: no log backups, no "
                                     "point-in-time restore")
        if db.last_log_backup_lsn is None:
            return ChainCheck.broken(f"database {db.name} has no log chain on the server yet (last_log_backup_lsn "
                                     "is NULL: no full backup since it was created or switched to FULL recovery)")
        try:
            chain = self._chain(db.name)
        except ChainError as exc:
            return ChainCheck.broken(f"the repository's chain of {db.name} is broken: {exc}")
        if chain is None:
            return ChainCheck.broken(f"the repository holds no backup of database {db.name}")
        end = int(chain.last.end.value)
        last = self._backup_record(chain.last)
        if last is not None and last.database_guid != db.database_guid:
            return ChainCheck.broken(f"database {db.name} on the server is another database than the one in the "
                                     f"repository (database_guid {db.database_guid}, archived {last.database_guid})")
        if last is not None and db.recovery_fork_guid and last.last_recovery_fork_guid and \
                db.recovery_fork_guid != last.last_recovery_fork_guid:
            return ChainCheck.broken(f"database {db.name} is on another recovery fork than the repository's last "
                                     f"backup of it (it was restored since): {db.recovery_fork_guid}")
        ours = {link.ref for link in self._links.get(db.name, [])}
        foreign = [r for r in backups_after(server, db.name, db.database_guid, end)
                   if r.type == "L" and not r.is_copy_only and r.backup_set_guid not in ours]
        mine = [r for r in foreign if (r.description or "") == f"dtstore:{self.source_id}"]
        if mine:
            lost = mine[0]
            return ChainCheck.broken(
                f"a log backup of {db.name} that dtstore took in a run that did not commit (LSN {lost.first_lsn}–"
                f"{lost.last_lsn}, {lost.device or 'file gone'}) is not in the repository: its log records are "
                "lost to it, so the log chain is broken there; a differential or full continues (auto does it)")
        if foreign:
            first = foreign[0]
            self._meta["foreign_backups"].append(
                {"database": db.name, "type": "log", "backup_set_guid": first.backup_set_guid,
                 "device": first.device, "first_lsn": str(first.first_lsn), "last_lsn": str(first.last_lsn),
                 "finish_local": first.finish.isoformat() if isinstance(first.finish, dt.datetime) else None,
                 "name": first.name, "description": first.description})
            return ChainCheck.broken(
                f"another tool took a log backup of {db.name} ({first.device or 'unknown device'}, LSN "
                f"{first.first_lsn}–{first.last_lsn}, named {first.name!r}): its log records are not in the "
                "repository, so dtstore's log chain is broken; let that tool use COPY_ONLY, or use &copy_only=1 here")
        if db.last_log_backup_lsn > end:
            return ChainCheck.broken(f"the server's log chain of {db.name} continues from LSN {db.last_log_backup_lsn}"
                                     f", after the repository's end at LSN {end}: a log backup the repository lacks")
        return ChainCheck.good()

    def _diff_check(self, db: DatabaseState) -> ChainCheck:
        if self.url.copy_only:
            return ChainCheck.broken("copy_only=1: differentials belong to the other tool's full backups")
        if db.name.lower() == "master":
            return ChainCheck.broken("master has full backups only")
        if db.differential_base_guid is None:
            return ChainCheck.broken(f"database {db.name} has no full backup on the server (differential_base_lsn "
                                     "is NULL)")
        fulls = {link.ref for link in self._links.get(db.name, []) if link.kind == "full"}
        if db.differential_base_guid not in fulls:
            self._meta["foreign_backups"].append(
                {"database": db.name, "type": "full", "backup_set_guid": db.differential_base_guid,
                 "differential_base_lsn": str(db.differential_base_lsn)})
            return ChainCheck.broken(
                f"the differential base of {db.name} is full backup {db.differential_base_guid} (LSN "
                f"{db.differential_base_lsn}), which the repository does not hold: another tool took a full backup "
                "without COPY_ONLY, so a differential now would need it")
        return ChainCheck.good()

    def _backup_record(self, link: Link) -> meta.BackupFile | None:
        for snap in self.history:
            if snap.id == link.snapshot_id:
                for b in meta.SnapshotMeta.of(snap.meta, snap.short_id).backups:
                    if b.database == link.stream:
                        return b
        return None


@contextlib.contextmanager
def _stage_file(path: Path) -> Iterator[BinaryIO]:
    """The staged .bak, removed once the core has stored it (and also when storing it failed)."""
    try:
        with open(path, "rb", buffering=BLOCK) as f:
            yield f
    finally:
        path.unlink(missing_ok=True)


def select_databases(url: MssqlUrl, states: list[DatabaseState]) -> tuple[list[DatabaseState], list[dict[str, str]]]:
    """The databases to back up, and the ones skipped with why (a user database offline or restoring warns)."""
    by_name = {s.name.lower(): s for s in states}
    if url.databases:
        missing = [d for d in url.databases if d.lower() not in by_name]
        if missing:
            raise ConnectorError(f"database(s) {', '.join(missing)} do not exist on the server")
        chosen = [by_name[d.lower()] for d in url.databases]
        bad = [f"{s.name} ({s.state})" for s in chosen if s.state != "ONLINE" or s.is_snapshot]
        if bad:
            raise ConnectorError(f"database(s) {', '.join(bad)} cannot be backed up: not ONLINE, or a snapshot")
        return chosen, []
    chosen, skipped = [], [{"name": "tempdb", "reason": "tempdb is rebuilt at every start and cannot be backed up"}]
    for s in states:
        if s.is_snapshot:
            skipped.append({"name": s.name, "reason": "a database snapshot (back up its source database)"})
        elif s.state != "ONLINE":
            skipped.append({"name": s.name, "reason": f"state {s.state}", "warn": "1"})
        else:
            chosen.append(s)
    system = [s for s in chosen if s.name.lower() in SYSTEM_DATABASES]
    users = [s for s in chosen if s.name.lower() not in SYSTEM_DATABASES]
    return sorted(system, key=lambda s: SYSTEM_DATABASES.index(s.name.lower())) + users, skipped


__all__ = ["MssqlSource", "backup_sql", "header_times", "item_path", "select_databases"]
