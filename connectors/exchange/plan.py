"""The Exchange restore plan (pure): which full, which log snapshots, which generations, what to run.

The generic planner picks, for the database's stream, the full at or before the target and the
contiguous log snapshots up to the one that covers it.  This module turns that into the files to lay
down (the EDB and ``.stm`` of the full, every generation from the full's first to the last one needed,
the current log of the last snapshot, the full's checkpoint) and checks, before anything is written,
that the generations are contiguous, cover what the EDB header requires, and all carry the EDB's log
signature.  A stop before the end of a snapshot (``--until-position gen:N``, or a ``--until`` time that
ends inside one) lays down generation N as the current log ``E00.log``, so that soft recovery replays
exactly up to it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dtstore.connectors.base import RestorePlan, SnapshotInfo, from_iso, iso
from dtstore.connectors.chains import Gap, Target, by_stream, plan
from dtstore.connectors.exchange.chain import KIND, explain, links
from dtstore.connectors.exchange.ese import windows_aware
from dtstore.connectors.exchange.meta import DatabaseMeta, ExchangeMeta, StoredFile
from dtstore.errors import ChainError, UsageError


@dataclass(frozen=True)
class LaidFile:
    """One stored item and where it goes (``dest``: a host path)."""

    snapshot_id: str
    item: str
    size: int
    dest: str

    def to_json(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot_id, "item": self.item, "size": self.size, "dest": self.dest}


@dataclass(frozen=True, kw_only=True)
class ExchangeRestorePlan(RestorePlan):
    database: str
    full: SnapshotInfo
    logs: list[SnapshotInfo]
    edb_dest: str
    laid_down_as: str
    """the EDB's file name while it is recovered (its original name: ESE finds databases by name)"""
    logs_dest: str
    files: list[LaidFile]
    prefix: str
    first: int | None
    last: int | None
    stop: Target
    commands: list[list[str]] = field(default_factory=list)
    recovery_db: str | None = None
    recover: bool = True
    gap: Gap | None = None

    def describe(self) -> list[str]:
        lines = [f"restore Exchange database {self.database} (source {self.source_id}) to {self.target}, "
                 f"stopping at the {self.stop.describe()}",
                 f"  full  {self.full.short_id}  {iso(self.full.time)}"]
        lines += [f"  log   {s.short_id}  {iso(s.time)}" for s in self.logs]
        span = f"generations {self.first:X} .. {self.last:X}" if self.first is not None and self.last is not None \
            else "no numbered generation"
        lines += [f"  step: {step}" for step in self.steps]
        lines.append(f"  {len(self.files)} file(s): the EDB, {span}, the current log, the checkpoint")
        lines += [f"  command: {' '.join(argv)}" for argv in self.commands]
        if self.gap is not None:
            lines.append(f"  stops before a gap (--allow-gap): {self.gap.reason}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "database": self.database, "full": self.full.id,
                "logs": [s.id for s in self.logs], "edb": self.edb_dest, "log_folder": self.logs_dest,
                "first": self.first, "last": self.last, "stop": self.stop.to_json(),
                "files": [f.to_json() for f in self.files], "commands": self.commands,
                "recovery_db": self.recovery_db, "gap": self.gap.to_json() if self.gap else None}


def pick_database(history: Sequence[SnapshotInfo], scope: Sequence[str] | None, url_name: str | None) -> str:
    names: dict[str, str] = {}
    for snap in history:
        for db in ExchangeMeta.of(snap.meta, snap.short_id).databases:
            names.setdefault(db.name.lower(), db.name)
    wanted = list(scope or [])
    if len(wanted) > 1:
        raise UsageError("an Exchange restore lays down one database at a time: --databases NAME")
    if wanted:
        if wanted[0].lower() not in names:
            raise UsageError(f"no snapshot of this source holds database {wanted[0]}; known: "
                             f"{', '.join(sorted(names.values()))}")
        return names[wanted[0].lower()]
    if len(names) == 1:
        return next(iter(names.values()))
    raise UsageError(f"the snapshots hold several databases ({', '.join(sorted(names.values()))}): pick one with "
                     "--databases NAME")


def _cut(gens: list[tuple[str, DatabaseMeta, int, str, int]], target: Target, last_meta: DatabaseMeta,
         last_time: str) -> tuple[list[tuple[str, DatabaseMeta, int, str, int]], bool]:
    """Generations up to the target (position: <= N; time: those closed at or before it)."""
    if target.position is not None:
        kept = [g for g in gens if g[2] <= target.position.generation]
        return kept, len(kept) < len(gens)
    if target.time is not None:
        closed: dict[int, str | None] = {}
        for (_, _, gen, _, _), nxt in itertools.zip_longest(gens, gens[1:]):
            if nxt is not None:  # a generation is closed when the next one is created
                closed[gen] = next((log.created for log in nxt[1].logs if log.generation == nxt[2]), None)
            else:
                closed[gen] = last_meta.current_created or last_time
        kept = [g for g in gens if closed[g[2]] is None or from_iso(str(closed[g[2]])) <= target.time]
        return kept, len(kept) < len(gens)
    return gens, False


def plan_restore(history: Sequence[SnapshotInfo], *, target: Target, database: str, source_id: str,
                 target_display: str, edb_dest: str | None, logs_dest: str | None, allow_gap: bool,
                 recovery_db: str | None, recover: bool, eseutil: str = "eseutil") -> ExchangeRestorePlan:
    stream = by_stream(links(history)).get(database.lower())
    if not stream:
        raise ChainError(f"no snapshot holds database {database}")
    chain = plan(stream, target, allow_gap=allow_gap, explain=explain)
    by_id = {s.id: s for s in history}
    full = by_id[chain.full.snapshot_id]
    logs = [by_id[link.snapshot_id] for link in chain.logs]
    full_meta = ExchangeMeta.of(full.meta, full.short_id)
    fdb = full_meta.database(database)
    if fdb is None or fdb.edb is None:
        raise ChainError(f"full snapshot {full.short_id} holds no EDB of database {database}")
    original = windows_aware(fdb.edb_path)
    if recovery_db is not None:
        edb_dest = edb_dest or str(original.parent.parent / recovery_db / original.name)
        logs_dest = logs_dest or str(original.parent.parent / recovery_db / "Logs")
    if not edb_dest or not logs_dest:
        raise UsageError("the restore target needs edb=DEST.edb and logs=DESTDIR")
    edb_path = windows_aware(edb_dest)
    laid = str(edb_path.parent / (fdb.edb.name if recovery_db is None else edb_path.name))
    logs_dir = windows_aware(logs_dest)
    # the generations, in order: the full's, then each log snapshot's
    gens: list[tuple[str, DatabaseMeta, int, str, int]] = []  # (snapshot id, db meta, generation, item, size)
    metas: list[tuple[SnapshotInfo, DatabaseMeta]] = [(full, fdb)]
    for snap in logs:
        dbm = ExchangeMeta.of(snap.meta, snap.short_id).database(database)
        if dbm is None:
            raise ChainError(f"log snapshot {snap.short_id} does not hold database {database}")
        metas.append((snap, dbm))
    for snap, dbm in metas:
        gens += [(snap.id, dbm, log.generation, log.path, log.size) for log in dbm.logs]
        for log in dbm.logs:
            if log.signature != fdb.log_signature:
                raise ChainError(f"{log.name} in snapshot {snap.short_id} has log signature {log.signature}, the "
                                 f"database's is {fdb.log_signature}: refusing to lay down a foreign log")
    for a, b in itertools.pairwise(gens):
        if b[2] != a[2] + 1:
            raise ChainError(f"the archived generations of {database} jump from {a[2]:X} to {b[2]:X}: "
                             f"{explain(_gen(fdb, a[2]), _gen(fdb, b[2]))}")
    last_snap, last_meta = metas[-1]
    kept, cut = _cut(gens, target, last_meta, ExchangeMeta.of(last_snap.meta).consistent_at)
    low, high = fdb.required
    first_gen = kept[0][2] if kept else None
    last_gen = kept[-1][2] if kept else None
    if low and fdb.header and fdb.header.get("state") != "Clean Shutdown":
        have_high = (last_gen if cut else last_meta.current_generation) or 0
        if first_gen is None or first_gen > low or have_high < high:
            raise ChainError(f"database {database} needs generations {low:X}-{high:X} (Log Required) but the "
                             f"restore would lay down {_span(first_gen, last_gen)}")
    files = [LaidFile(full.id, fdb.edb.path, fdb.edb.size, laid)]
    if fdb.stm is not None:
        files.append(LaidFile(full.id, fdb.stm.path, fdb.stm.size, str(edb_path.parent / fdb.stm.name)))
    tail = kept[:-1] if cut and kept else kept
    files += [LaidFile(sid, item, size, str(logs_dir / _name(dbm, gen))) for sid, dbm, gen, item, size in tail]
    current_name = f"{fdb.prefix}.log"
    if cut and kept:
        sid, _, _, item, size = kept[-1]
        files.append(LaidFile(sid, item, size, str(logs_dir / current_name)))
    elif cut:
        raise ChainError(f"the target is before the first archived generation of {database}")
    else:
        current: StoredFile | None = last_meta.current
        if current is None:
            raise ChainError(f"snapshot {last_snap.short_id} holds no current log of {database}")
        files.append(LaidFile(last_snap.id, current.path, current.size, str(logs_dir / current.name)))
    if fdb.chk is not None:
        files.append(LaidFile(full.id, fdb.chk.path, fdb.chk.size, str(logs_dir / fdb.chk.name)))
    commands = []
    steps = [f"check that {edb_dest} does not exist and {logs_dest} is empty",
             f"lay down the EDB as {laid}, {_span(first_gen, last_gen)} and {current_name} in {logs_dest}"
             + (f", the checkpoint {fdb.chk.name}" if fdb.chk else "")]
    if recovery_db is not None:
        steps.insert(0, f"create the Recovery Database {recovery_db} (New-MailboxDatabase -Recovery)")
    if recover:
        commands.append([eseutil, "/r", fdb.prefix, f"/l{logs_dest}", f"/s{logs_dest}", f"/d{edb_path.parent}"])
        commands.append([eseutil, "/mh", laid])
        steps.append("soft recovery (eseutil /r), then check that eseutil /mh shows State: Clean Shutdown")
        if laid != str(edb_path):
            steps.append(f"rename {laid} to {edb_dest}")
    else:
        steps.append("no recovery (recover=0): run eseutil /r yourself")
    if recovery_db is not None:
        steps.append(f"mount the Recovery Database {recovery_db} (Mount-Database)")
    return ExchangeRestorePlan(
        connector=KIND, source_id=source_id, target=target_display, steps=steps, database=database, full=full,
        logs=logs, edb_dest=str(edb_path), laid_down_as=laid, logs_dest=str(logs_dir), files=files,
        prefix=fdb.prefix, first=first_gen, last=last_gen, stop=target, commands=commands,
        recovery_db=recovery_db, recover=recover, gap=chain.gap)


def _gen(db: DatabaseMeta, generation: int) -> Any:
    from dtstore.connectors.positions import ExchangeGeneration

    return ExchangeGeneration(db.log_signature, generation)


def _name(db: DatabaseMeta, generation: int) -> str:
    return f"{db.prefix}{generation:0{db.digits}X}.log"


def _span(first: int | None, last: int | None) -> str:
    return "no numbered generation" if first is None or last is None else f"generations {first:X} .. {last:X}"


__all__ = ["ExchangeRestorePlan", "LaidFile", "pick_database", "plan_restore"]
