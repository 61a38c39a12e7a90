"""The Oracle restore plan (pure): which full, which archived logs, where each file goes, the script.

The generic planner picks, in one incarnation's stream, the newest full whose consistent point is at
or before the target and the log snapshots up to the one that covers it.  The plan then lists every
archived log recovery reads (the full's own logs, then each chosen log snapshot's, once per thread
and sequence), the destination of every file (``--target-dir DIR`` maps the folder that holds all of
the database's files onto ``DIR``, the way ``DB_FILE_NAME_CONVERT`` maps a prefix; the SQL*Plus
script renames the data files and online logs in MOUNT), and the script itself::

    WHENEVER SQLERROR EXIT FAILURE
    CONNECT / AS SYSDBA
    STARTUP MOUNT PFILE='…'
    ALTER DATABASE RENAME FILE '…' TO '…';            (only for remapped files)
    RECOVER AUTOMATIC FROM '<stage>' DATABASE UNTIL TIME 'YYYY-MM-DD:HH24:MI:SS' USING BACKUP CONTROLFILE
    ALTER DATABASE OPEN RESETLOGS;

``UNTIL TIME`` is the database server's local time (the UTC offset the newest planned snapshot
recorded); ``--until-position scn:N`` is ``UNTIL CHANGE N`` (recovery applies changes below N); the
latest point is ``UNTIL CHANGE`` the SCN every thread's last planned log reaches.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any

from dtstore.connectors.base import RestorePlan, SnapshotInfo, iso
from dtstore.connectors.chains import Gap, Target, by_stream, plan
from dtstore.connectors.oracle.chain import KIND, Frontier, explain, links
from dtstore.connectors.oracle.meta import CONTROL_ITEM, OracleMeta, parse_offset
from dtstore.connectors.positions import Scn
from dtstore.errors import ChainError, UsageError

RESTORE_STAGE = "dtstore-restore-arch"


@dataclass(frozen=True)
class PlannedFile:
    item: str
    snapshot_id: str
    dest: str
    size: int | None
    sha256: str | None
    label: str = ""


@dataclass(frozen=True, kw_only=True)
class OracleRestorePlan(RestorePlan):
    full: SnapshotInfo
    datafiles: list[PlannedFile]
    control_files: list[PlannedFile]
    pfile: PlannedFile
    logs: list[PlannedFile]
    stage_dir: str
    convert: list[tuple[str, str]]
    renames: list[tuple[str, str]]
    until: str
    script: str
    stop: Target
    covered_until: str
    windows: bool
    gap: Gap | None = None

    def describe(self) -> list[str]:
        meta = OracleMeta.of(self.full.meta)
        lines = [
            f"restore {self.source_id} to {self.target}, stopping at the {self.stop.describe()} ({self.until})",
            f"  full  {self.full.short_id}  {iso(self.full.time)}  scn {meta.begin_scn} .. {meta.end_scn}  "
            f"{len(self.datafiles)} data file(s)",
        ]
        if self.logs:
            lines.append(f"  logs  {len(self.logs)} archived log(s) {self.logs[0].label} .. {self.logs[-1].label}; "
                         f"the archive covers until {self.covered_until}")
        for old, new in self.convert:
            lines.append(f"  convert {old} -> {new}")
        lines.append(f"  pfile {self.pfile.dest}; archived logs staged in {self.stage_dir}")
        if self.gap is not None:
            lines.append(f"  stops before a gap (--allow-gap): {self.gap.reason}")
        lines.append("  SQL*Plus script:")
        lines.extend(f"    {line}" for line in self.script.splitlines())
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "full": {"id": self.full.id, "time": iso(self.full.time)},
            "datafiles": [{"item": f.item, "dest": f.dest} for f in self.datafiles],
            "control_files": [f.dest for f in self.control_files],
            "pfile": self.pfile.dest,
            "logs": [{"log": f.label, "snapshot": f.snapshot_id, "dest": f.dest} for f in self.logs],
            "convert": [list(p) for p in self.convert],
            "until": self.until,
            "script": self.script,
            "stop": self.stop.to_json(),
            "covered_until": self.covered_until,
            "gap": self.gap.to_json() if self.gap else None,
        }


def host_path(text: str, windows: bool) -> PurePath:
    return PureWindowsPath(text) if windows else PurePosixPath(text)


def common_root(paths: Sequence[str], windows: bool) -> PurePath:
    parts = [host_path(p, windows).parent.parts for p in paths]
    common: list[str] = []
    for items in zip(*parts, strict=False):
        if all(i.lower() == items[0].lower() if windows else i == items[0] for i in items):
            common.append(items[0])
        else:
            break
    if not common:
        raise UsageError("the database's files share no folder: --target-dir cannot map them")
    return host_path(common[0], windows).joinpath(*common[1:])


def remap(path: str, convert: Sequence[tuple[str, str]], windows: bool) -> str:
    p = host_path(path, windows)
    for old, new in convert:
        try:
            rest = p.relative_to(host_path(old, windows))
        except ValueError:
            continue
        return str(host_path(new, windows) / rest)
    return path


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def server_time(value: dt.datetime, offset: str) -> str:
    return value.astimezone(parse_offset(offset)).strftime("%Y-%m-%d:%H:%M:%S")


def _choose(history: Sequence[SnapshotInfo], target: Target, allow_gap: bool) -> Any:
    streams = by_stream(links(history))
    if not streams:
        raise ChainError("the repository holds no Oracle full snapshot of this source")
    order = sorted(streams, key=lambda s: max(link.taken for link in streams[s]), reverse=True)
    first_error: ChainError | None = None
    for name in order:
        stream = streams[name]
        if not any(link.kind == "full" for link in stream):
            continue
        try:
            return plan(stream, target, allow_gap=allow_gap, explain=explain)
        except ChainError as exc:
            first_error = first_error or exc
    raise first_error or ChainError("no incarnation of this source has a full snapshot to restore from")


def plan_restore(history: Sequence[SnapshotInfo], *, target: Target, options: Mapping[str, str], source_id: str,
                 target_display: str, stage: str | None = None, sqlplus_connect: str = "/ AS SYSDBA",
                 allow_gap: bool = False) -> OracleRestorePlan:
    chain = _choose(history, target, allow_gap)
    by_id = {s.id: s for s in history}
    full = by_id[chain.full.snapshot_id]
    meta = OracleMeta.of(full.meta, full.short_id)
    windows = meta.windows
    convert: list[tuple[str, str]] = []
    if options.get("target_dir"):
        everything = [d.name for d in meta.datafiles] + meta.control_files + [m for _, m in meta.online_logs]
        if meta.spfile:
            everything.append(meta.spfile)
        root = common_root(everything, windows)
        convert.append((str(root), str(host_path(options["target_dir"], windows))))
    datafiles = [PlannedFile(d.path, full.id, remap(d.name, convert, windows), d.size, d.sha256, str(d.file))
                 for d in meta.datafiles]
    controls = [PlannedFile(CONTROL_ITEM, full.id, remap(c, convert, windows), None, None, c)
                for c in meta.control_files]
    pfile_dir = host_path(meta.spfile or meta.control_files[0], windows).parent
    pfile = PlannedFile(meta.pfile_item, full.id,
                        str(host_path(remap(str(pfile_dir), convert, windows), windows)
                            / f"init{meta.name}.dtstore.ora"),
                        None, None)
    stage_dir = stage or str(host_path(controls[0].dest, windows).parent / RESTORE_STAGE)
    seen: set[tuple[int, int, int]] = set()
    logs: list[PlannedFile] = []
    newest = meta
    for link in [chain.full, *chain.logs]:
        snap = by_id[link.snapshot_id]
        m = OracleMeta.of(snap.meta, snap.short_id)
        newest = m
        for log in sorted(m.logs, key=lambda x: x.key):
            if log.key in seen:
                continue
            seen.add(log.key)
            name = (m.log_archive_format.replace("%t", str(log.thread)).replace("%s", str(log.sequence))
                    .replace("%r", str(log.resetlogs_id)).replace("%T", f"{log.thread:04d}")
                    .replace("%S", f"{log.sequence:05d}"))
            logs.append(PlannedFile(log.path, snap.id, str(host_path(stage_dir, windows) / name), log.size,
                                    log.sha256, f"{log.thread}_{log.sequence}_{log.resetlogs_id}"))
    if target.time is not None:
        until = f"UNTIL TIME '{server_time(target.time, newest.server_utc_offset)}'"
    elif isinstance(target.position, Scn):
        until = f"UNTIL CHANGE {target.position.value}"
    else:
        end: Frontier = chain.last.end
        until = f"UNTIL CHANGE {end.scn}"
    renames = [(d.name, remap(d.name, convert, windows)) for d in meta.datafiles]
    renames += [(m, remap(m, convert, windows)) for _, m in meta.online_logs]
    renames = [(a, b) for a, b in renames if a != b]
    script = "\n".join([
        "WHENEVER SQLERROR EXIT FAILURE",
        f"CONNECT {sqlplus_connect}",
        f"STARTUP MOUNT PFILE={quote(pfile.dest)}",
        *(f"ALTER DATABASE RENAME FILE {quote(a)} TO {quote(b)};" for a, b in renames),
        f"RECOVER AUTOMATIC FROM {quote(stage_dir)} DATABASE {until} USING BACKUP CONTROLFILE",
        "ALTER DATABASE OPEN RESETLOGS;",
        "EXIT",
    ]) + "\n"
    return OracleRestorePlan(
        connector=KIND, source_id=source_id, target=target_display, full=full, datafiles=datafiles,
        control_files=controls, pfile=pfile, logs=logs, stage_dir=stage_dir, convert=convert, renames=renames,
        until=until, script=script, stop=target, covered_until=iso(chain.reached_time), windows=windows,
        gap=chain.gap,
    )


__all__ = ["RESTORE_STAGE", "OracleRestorePlan", "PlannedFile", "common_root", "plan_restore", "remap"]
