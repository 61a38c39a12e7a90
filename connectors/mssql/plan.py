"""The SQL Server restore plan (pure): per database, which full, which differential, which logs, the T-SQL.

The framework's planner (``dtstore.connectors.chains.plan``) picks, per database, the newest full
at or before the target, the newest differential that belongs to it, and the contiguous logs up to
the one that covers the target (dbatools' ``Select-DbaBackupInformation``).  This module then checks
the chosen chain as dbatools' ``Test-DbaLsnChain`` does, before any RESTORE runs:

* the differential's ``differential_base_guid`` is the full's ``backup_set_guid`` and its
  ``database_backup_lsn`` the full's ``checkpoint_lsn``;
* the first log starts at or before the base's ``last_lsn`` and ends after it; each next log
  starts where the previous ended (``prev.last_lsn == next.first_lsn``: "break in the log chain");
* every log is on the recovery fork the base ends on (``first_recovery_fork_guid``).

The statements are ``RESTORE DATABASE … WITH NORECOVERY[, REPLACE][, MOVE …]``, the differential
``WITH NORECOVERY``, each ``RESTORE LOG … WITH NORECOVERY[, STOPAT = '…']`` (the same STOPAT on
every log, in the server's local time), then ``RESTORE DATABASE … WITH RECOVERY``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any

from dtstore.connectors.base import RestorePlan, SnapshotInfo, iso
from dtstore.connectors.chains import ChainPlan, Gap, Target, by_stream, plan
from dtstore.connectors.mssql.chain import KIND, explain, links
from dtstore.connectors.mssql.meta import BackupFile, SnapshotMeta
from dtstore.errors import ChainError, UsageError

RUN_DIR = "{run}"
"""placeholder in the statements for the restore's stage folder (``STAGE/dtstore-mssql-<random>``)"""
DATA_DIR, LOG_DIR = "{data}", "{log}"
"""placeholders for the target's SERVERPROPERTY('InstanceDefaultDataPath'/'InstanceDefaultLogPath')"""
DEFAULT_PATHS = ("<InstanceDefaultDataPath>", "<InstanceDefaultLogPath>")
STATS = 10


def quote_name(name: str) -> str:
    return "[" + name.replace("]", "]]") + "]"


def literal(text: str) -> str:
    return "N'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class PlannedFile:
    snapshot_id: str
    short_id: str
    backup: BackupFile
    file_name: str  # inside the restore's stage folder


@dataclass(frozen=True)
class DatabaseRestore:
    source: str
    target: str
    full: PlannedFile
    diff: PlannedFile | None
    logs: list[PlannedFile]
    stopat: str | None  # server local time, e.g. 2026-12-02T09:30:00
    stopatmark: str | None  # lsn:N
    moves: list[tuple[str, str]]
    reached: str  # UTC ISO: what the chain reaches
    point_in_time: bool
    gap: Gap | None

    @property
    def files(self) -> list[PlannedFile]:
        return [self.full, *([self.diff] if self.diff else []), *self.logs]

    def statements(self, run_dir: str, *, replace: bool, sep: str = "\\",
                   defaults: tuple[str, str] = DEFAULT_PATHS) -> list[tuple[PlannedFile | None, str]]:
        """(file, T-SQL) in order; the file is None for the final RECOVERY.  ``defaults``: the target's
        default data and log folders (with their trailing separator), where files without --move-to go."""
        name = quote_name(self.target)

        def place(path: str) -> str:
            return path.replace(DATA_DIR, defaults[0], 1).replace(LOG_DIR, defaults[1], 1)

        def disk(f: PlannedFile) -> str:
            return literal(f"{run_dir}{sep}{f.file_name}")

        first = ["NORECOVERY", "CHECKSUM", f"STATS = {STATS}"]
        if replace:
            first.append("REPLACE")
        first += [f"MOVE {literal(a)} TO {literal(place(b))}" for a, b in self.moves]
        out: list[tuple[PlannedFile | None, str]] = [
            (self.full, f"RESTORE DATABASE {name} FROM DISK = {disk(self.full)} WITH {', '.join(first)}")]
        if self.diff is not None:
            out.append((self.diff, f"RESTORE DATABASE {name} FROM DISK = {disk(self.diff)} WITH NORECOVERY, "
                                   f"CHECKSUM, STATS = {STATS}"))
        stop = (f", STOPAT = {literal(self.stopat)}" if self.stopat else
                f", STOPATMARK = {literal(self.stopatmark)}" if self.stopatmark else "")
        for log in self.logs:
            out.append((log, f"RESTORE LOG {name} FROM DISK = {disk(log)} WITH NORECOVERY, CHECKSUM, "
                             f"STATS = {STATS}{stop}"))
        out.append((None, f"RESTORE DATABASE {name} WITH RECOVERY"))
        return out


@dataclass(frozen=True, kw_only=True)
class MssqlRestorePlan(RestorePlan):
    restores: list[DatabaseRestore]
    stop: Target
    replace: bool
    stage: str | None
    sep: str = "\\"

    def run_dir_display(self) -> str:
        return f"{self.stage or '<stage>'}{self.sep}dtstore-mssql-<random>"

    def describe(self) -> list[str]:
        lines = [f"restore {self.source_id} to {self.target}, stopping at the {self.stop.describe()}"]
        for r in self.restores:
            head = f"  database {r.source}" + (f" as {r.target}" if r.target != r.source else "")
            lines.append(f"{head}: reaches {r.reached}" + ("" if r.point_in_time else " (no point-in-time restore)"))
            for f in r.files:
                b = f.backup
                lines.append(f"    {b.kind:<4} {f.short_id}  finished {b.finish}  LSN {b.first_lsn} .. {b.last_lsn}")
            if r.gap is not None:
                lines.append(f"    stops before a gap (--allow-gap): {r.gap.reason}")
            lines.append("    T-SQL (the stage folder's last part is chosen when the restore runs):")
            lines.extend(f"      {sql}" for _, sql in r.statements(self.run_dir_display(), replace=self.replace,
                                                                  sep=self.sep))
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "stop": self.stop.to_json(),
            "replace": self.replace,
            "databases": [
                {"database": r.source, "target": r.target, "reached": r.reached, "stopat": r.stopat,
                 "point_in_time": r.point_in_time,
                 "files": [{"snapshot": f.snapshot_id, "kind": f.backup.kind, "path": f.backup.path,
                            "first_lsn": str(f.backup.first_lsn), "last_lsn": str(f.backup.last_lsn)}
                           for f in r.files],
                 "statements": [sql for _, sql in r.statements(self.run_dir_display(), replace=self.replace,
                                                                sep=self.sep)],
                 "gap": r.gap.to_json() if r.gap else None}
                for r in self.restores],
        }


def _flavour(path: str) -> type[PurePath]:
    return PureWindowsPath if re.match(r"^(?:[A-Za-z]:[\\/]|\\\\)", path) else PurePosixPath


def moved_files(backup: BackupFile, new_name: str, move_to: str | None) -> list[tuple[str, str]]:
    """MOVE targets: DIR, else the target's default data/log folder (dbatools' default), file names
    renamed after ``new_name``, in the server's path style."""
    moves = []
    for f in backup.files:
        original = _flavour(f.physical_name)(f.physical_name)
        base = original.name
        if new_name != backup.database:
            base = new_name + base[len(backup.database):] if base.lower().startswith(backup.database.lower()) \
                else f"{new_name}_{base}"
        if move_to:
            moves.append((f.logical_name, str(_flavour(move_to)(move_to) / base)))
        else:
            moves.append((f.logical_name, (LOG_DIR if f.type == "L" else DATA_DIR) + base))
    return moves


def server_local(moment: dt.datetime, time_zone: int) -> str:
    """A UTC moment in the server's local time (``time_zone``: 15-minute units, as msdb records it)."""
    local = moment.astimezone(dt.UTC) + dt.timedelta(minutes=15 * time_zone)
    return local.strftime("%Y-%m-%dT%H:%M:%S")


def _records(history: Sequence[SnapshotInfo]) -> dict[tuple[str, str], BackupFile]:
    found = {}
    for snap in history:
        for b in SnapshotMeta.of(snap.meta, snap.short_id).backups:
            found[(snap.id, b.database)] = b
    return found


def validate(database: str, full: BackupFile, diff: BackupFile | None, logs: Sequence[BackupFile]) -> None:
    """dbatools' Test-DbaLsnChain on the chosen backups; ChainError (17) before any RESTORE runs."""
    if diff is not None:
        if diff.differential_base_guid != full.backup_set_guid:
            raise ChainError(f"{database}: the differential {diff.backup_set_guid} belongs to full "
                             f"{diff.differential_base_guid}, not to {full.backup_set_guid}")
        if diff.database_backup_lsn and diff.database_backup_lsn != full.checkpoint_lsn:
            raise ChainError(f"{database}: the differential's database_backup_lsn {diff.database_backup_lsn} is not "
                             f"the full's checkpoint_lsn {full.checkpoint_lsn}")
    anchor = diff or full
    previous = anchor
    for i, log in enumerate(logs):
        if i == 0:
            if not log.first_lsn <= anchor.last_lsn < log.last_lsn:
                raise ChainError(f"{database}: the first log backup (LSN {log.first_lsn} .. {log.last_lsn}) does not "
                                 f"continue the {anchor.kind} ending at LSN {anchor.last_lsn} (error 4305 on the "
                                 "server)")
        elif log.first_lsn != previous.last_lsn:
            raise ChainError(f"{database}: break in the log chain between LSN {previous.last_lsn} and "
                             f"{log.first_lsn}: the log backup from LSN {previous.last_lsn} to LSN {log.first_lsn} is "
                             "missing")
        if previous.last_recovery_fork_guid and log.first_recovery_fork_guid and \
                log.first_recovery_fork_guid != previous.last_recovery_fork_guid:
            raise ChainError(f"{database}: the log backup from LSN {log.first_lsn} is on recovery fork "
                             f"{log.first_recovery_fork_guid}, the chain before it on "
                             f"{previous.last_recovery_fork_guid} (the database was restored in between)")
        previous = log


def plan_restore(history: Sequence[SnapshotInfo], *, target: Target, scope: Sequence[str] | None,
                 options: Mapping[str, str], source_id: str, target_display: str, stage: str | None,
                 allow_gap: bool = False) -> MssqlRestorePlan:
    streams = by_stream(links(history))
    known = sorted(streams)
    wanted = list(scope) if scope is not None else known
    unknown = [d for d in wanted if d not in streams]
    if unknown:
        raise UsageError(f"no snapshot of this source holds database(s) {', '.join(unknown)}; known: "
                         f"{', '.join(known) or 'none'}")
    new_name = options.get("as")
    if new_name is not None and len(wanted) != 1:
        raise UsageError("--as NEW_NAME restores one database: name it with --databases")
    move_to = options.get("move_to")
    replace = options.get("replace") in ("1", "true", "yes")
    records = _records(history)
    by_id = {s.id: s for s in history}
    restores = []
    for database in wanted:
        try:
            chain: ChainPlan = plan(streams[database], target, allow_gap=allow_gap, explain=explain)
        except ChainError as exc:
            text = str(exc)
            raise ChainError(text if text.startswith(f"{database}:") else f"{database}: {text}") from None
        full = records[(chain.full.snapshot_id, database)]
        diff = records[(chain.diff.snapshot_id, database)] if chain.diff else None
        logs = [records[(link.snapshot_id, database)] for link in chain.logs]
        validate(database, full, diff, logs)
        ext = {"full": ".bak", "diff": ".diff.bak", "log": ".trn"}
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", database)
        planned = [PlannedFile(link.snapshot_id, by_id[link.snapshot_id].short_id, b,
                               f"{safe}-{i:03d}-{b.kind}{ext[b.kind]}")
                   for i, (link, b) in enumerate(zip(chain.links, [full, *([diff] if diff else []), *logs],
                                                     strict=True))]
        name = new_name or database
        stopat = server_local(target.time, logs[-1].time_zone) if target.time is not None and logs else None
        mark = f"lsn:{target.position}" if target.position is not None and logs else None
        restores.append(DatabaseRestore(
            source=database, target=name, full=planned[0], diff=planned[1] if diff else None,
            logs=planned[2 if diff else 1:], stopat=stopat, stopatmark=mark,
            moves=moved_files(full, name, move_to),
            reached=iso(target.time) if target.time is not None and logs else iso(chain.reached_time),
            point_in_time=full.point_in_time, gap=chain.gap))
    sep = "\\" if stage and _flavour(stage) is PureWindowsPath else "/"
    return MssqlRestorePlan(connector=KIND, source_id=source_id, target=target_display, restores=restores,
                            stop=target, replace=replace, stage=stage, sep=sep)


__all__ = [
    "DATA_DIR", "DEFAULT_PATHS", "LOG_DIR", "RUN_DIR", "DatabaseRestore", "MssqlRestorePlan", "PlannedFile",
    "moved_files", "plan_restore", "server_local", "validate",
]
