"""What ``dtstore snapshot exchange://…`` reads: every database, its log generations, checkpoint, system state.

* **Server mode** (``exchange://localhost/…``): discovery (``server.py``), then one ``diskshadow``
  session: the volumes of the EDBs and logs are shadow-copied with the Exchange writer involved and
  exposed below the run's stage folder; the files are read from there.  BackupComplete (``end backup``)
  is sent only from :meth:`ExchangeSource.committed`, after the manifest is durable, and only with
  ``vss=full`` (the default); a failed, stopped or killed run ends the session without it, so Exchange
  truncates nothing.
* **File mode** (``exchange:///?edb=…&logs=…``): the given files, read in place; never truncates.
* **Full**: per database the EDB (and ``.stm`` next to it, 2000/2003), every numbered generation in the
  log folder (contiguous, each header's generation and log signature checked, all of one size), the
  current log ``E00.log`` and the checkpoint ``E00.chk``; the header facts of the EDB are recorded.
* **Log**: per database only the generations after the newest snapshot's, checked to continue it (same
  log signature, no missing generation, circular logging off), the current log and the checkpoint;
  the EDB is not read again.  A failed check is exit 17 in log mode, a full in auto mode.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePath
from typing import Any, BinaryIO

from dtstore import clock
from dtstore.connectors.base import ChainCheck, RepositoryView, iso
from dtstore.connectors.chains import Target, by_stream, plan
from dtstore.connectors.entries import dir_entry, file_entry
from dtstore.connectors.exchange import meta
from dtstore.connectors.exchange.chain import KIND, explain, links
from dtstore.connectors.exchange.ese import (
    HEADER,
    LogFolder,
    parse_checkpoint,
    parse_database_header,
    parse_log_header,
    scan_folder,
    windows_aware,
)
from dtstore.connectors.exchange.server import Database, Discovery, ShadowSession, system_state_backup
from dtstore.connectors.exchange.url import ExchangeUrl
from dtstore.connectors.modes import choose_mode
from dtstore.connectors.positions import ExchangeGeneration
from dtstore.connectors.runner import CommandRunner
from dtstore.connectors.source import ChainedSource
from dtstore.connectors.stage import Stage
from dtstore.errors import ChainError, ConnectorError
from dtstore.sources.base import Entry, Reporter


@dataclass(frozen=True)
class Target_:
    """One database as this run sees it (live paths; ``volume`` for the shadow copy)."""

    name: str
    guid: str | None
    edb: str
    log_folder: str
    prefix: str | None
    circular: bool
    mounted: bool
    edb_volume: str | None = None
    log_volume: str | None = None


def file_target(url: ExchangeUrl) -> Target_:
    edb = url.edb or ""
    return Target_(windows_aware(edb).stem, None, edb, url.logs or "", url.prefix, False, False)


def server_targets(found: Discovery, wanted: Sequence[str]) -> list[Target_]:
    by_name = {d.name.lower(): d for d in found.databases}
    missing = [w for w in wanted if w.lower() not in by_name]
    if missing:
        raise ConnectorError(f"database(s) {', '.join(missing)} do not exist on {found.server}; it has "
                             f"{', '.join(sorted(d.name for d in found.databases)) or 'none'}")
    chosen: list[Database] = [by_name[w.lower()] for w in wanted] if wanted else found.databases
    if not chosen:
        raise ConnectorError(f"Get-MailboxDatabase lists no database on {found.server}")
    return [Target_(d.name, d.guid, d.edb, d.log_folder, d.prefix, d.circular, d.mounted, d.edb_volume,
                    d.log_volume) for d in sorted(chosen, key=lambda d: d.name.lower())]


def item_name(name: str) -> str:
    """A database name as a path component (Exchange allows spaces; ``/`` and ``\\`` never occur)."""
    return name.replace("/", "_").replace("\\", "_")


class ExchangeSource(ChainedSource):
    """One ``dtstore snapshot exchange://…`` run (full, log, or auto = log when every database allows it)."""

    kind = KIND

    def __init__(self, url: ExchangeUrl, runner: CommandRunner, targets: list[Target_], *, source_id: str,
                 discovery: Discovery | None, repo: RepositoryView | None, mode: str,
                 stage_dir: Path | None) -> None:
        self.url, self.runner, self.targets, self._source_id = url, runner, targets, source_id
        self.discovery, self.repo, self.mode = discovery, repo, mode
        self.stage_parent = Path(url.stage) if url.stage else (stage_dir or Path(tempfile.gettempdir()))
        self.history = []
        self._meta: dict[str, Any] = {}
        self._ends: dict[str, ExchangeGeneration] = {}
        self.session: ShadowSession | None = None
        self.stage: Stage | None = None

    # -- the Source protocol ------------------------------------------------------------------------

    @property
    def source_id(self) -> str:
        return self._source_id

    def metadata(self) -> dict[str, Any]:
        meta.check(self._meta)
        return self._meta

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        self._meta = {
            "format": meta.METADATA_FORMAT, "requested_mode": self.mode, "url": self.url.display(),
            "transport": "file" if self.url.file_mode else "vss", "started_at": iso(clock.now()),
            "server": {"name": self.discovery.server, "version": self.discovery.version} if self.discovery
            else {"name": None, "version": None},
            "truncation": "never" if self.url.file_mode or self.url.vss == "copy" else "after-commit",
            "vss": None if self.url.file_mode else self.url.vss, "databases": [], "system_state": None,
        }
        choice = choose_mode(self.mode, log=self._log_check)
        self._meta["mode"] = choice.mode
        if choice.reason:
            self._meta["auto_reason"] = choice.reason
        if choice.mode == "log":
            self._meta["parent"] = self.history[-1].id
        try:
            yield from self._read(choice.mode)
        except BaseException:
            self.close()
            raise
        self._meta["finished_at"] = iso(clock.now())

    def committed(self, snapshot: Any) -> None:
        """After the manifest is durable: BackupComplete (``vss=full``), which lets Exchange truncate."""
        session, self.session = self.session, None
        try:
            if session is not None:
                if self.url.vss == "full":
                    session.complete()
                else:
                    session.abort()
        finally:
            self.close()

    def close(self) -> None:
        """End a shadow session without BackupComplete and remove the stage (a failed or dropped run)."""
        session, self.session = self.session, None
        if session is not None:
            session.abort()
        if self.stage is not None:
            self.stage.close()
            self.stage = None

    # -- mode ----------------------------------------------------------------------------------------

    def _log_check(self) -> ChainCheck:
        if not self.history:
            return ChainCheck.broken("there is no earlier snapshot of this source")
        streams = by_stream(links(self.history))
        for target in self.targets:
            stream = streams.get(target.name.lower())
            if not stream:
                return ChainCheck.broken(f"no snapshot holds database {target.name} yet")
            try:
                chain = plan(stream, Target(), explain=explain)
            except ChainError as exc:
                return ChainCheck.broken(f"database {target.name}: {exc}")
            end: ExchangeGeneration = chain.last.end
            folder = self._scan(target.log_folder, target.prefix)
            current = self._current_header(target, folder)
            if target.circular or current.circular:
                return ChainCheck.broken(
                    f"circular logging is on for database {target.name}: Exchange deletes its own logs, so "
                    "log snapshots are impossible (turn circular logging off, then take a full)")
            if current.signature != end.signature:
                return ChainCheck.broken(
                    f"the log signature of database {target.name} is {current.signature}, the archive's is "
                    f"{end.signature}: its log stream was recreated (or these are another database's logs)")
            for gen in range(end.generation + 1, current.generation):
                if gen not in folder.generations:
                    return ChainCheck.broken(
                        f"generation {gen:X} ({folder.name_of(gen)}) of database {target.name} is missing: "
                        f"the archive ends at {end.generation:X} and the log folder holds "
                        f"{_span(folder)}; logs were truncated or deleted outside dtstore")
            self._ends[target.name.lower()] = end
        return ChainCheck.good()

    # -- reading -------------------------------------------------------------------------------------

    def _scan(self, folder: str, prefix: str | None) -> LogFolder:
        return scan_folder(self.runner.listdir(folder), prefix)

    def _header(self, path: PurePath | str) -> bytes:
        with self.runner.read_file(path) as f:
            return bytes(f.read(HEADER))

    def _current_header(self, target: Target_, folder: LogFolder, where: str | None = None) -> Any:
        if folder.current is None:
            raise ConnectorError(f"the log folder {where or target.log_folder} of database {target.name} has no "
                                 f"current log {folder.prefix}.log")
        path = windows_aware(where or target.log_folder) / folder.current
        return parse_log_header(self._header(path), str(path))

    def _read(self, mode: str) -> Iterator[Entry]:
        locations = self._locations()
        self._meta["consistent_at"] = iso(clock.now())
        yield dir_entry("exchange")
        for target, (edb, logs) in zip(self.targets, locations, strict=True):
            yield from self._database(mode, target, edb, logs)
        if self.url.system_state and mode == "full" and not self.url.file_mode:
            yield from self._system_state()

    def _locations(self) -> list[tuple[PurePath, PurePath]]:
        """Where each database's EDB and log folder are read from: in place, or in the shadow copy."""
        if self.url.file_mode:
            return [(windows_aware(t.edb), windows_aware(t.log_folder)) for t in self.targets]
        for target in self.targets:
            if not target.mounted:
                raise ConnectorError(f"database {target.name} is not mounted: the Exchange writer backs up mounted "
                                     "databases only (a dismounted one can be backed up in file mode)")
        self.stage = Stage(self.stage_parent, KIND)
        volumes = sorted({v for t in self.targets for v in (t.edb_volume, t.log_volume) if v})
        exposed = [PurePath(self.stage.path / f"shadow-{i}") for i in range(1, len(volumes) + 1)]
        for where in exposed:
            os.mkdir(where)  # diskshadow exposes into an empty folder (an NTFS mount point)
        self.session = ShadowSession(self.runner, volumes, exposed, metadata_file=PurePath(self.stage.path /
                                                                                         "dtstore-vss.cab"))
        mounts = dict(zip(volumes, exposed, strict=True))
        session = self.session
        return [(session.shadow_path(t.edb, t.edb_volume or "", mounts[t.edb_volume or ""]),
                 session.shadow_path(t.log_folder, t.log_volume or "", mounts[t.log_volume or ""]))
                for t in self.targets]

    def _opener(self, path: PurePath) -> Any:
        return partial(self.runner.read_file, path)

    def _database(self, mode: str, target: Target_, edb: PurePath, logs: PurePath) -> Iterator[Entry]:
        base = f"exchange/{item_name(target.name)}"
        folder = scan_folder(self.runner.listdir(logs), target.prefix)
        current = self._current_header(target, folder, str(logs))
        header = None
        if mode == "full":
            header = parse_database_header(self._header(edb), str(edb))
            log_signature = header.log_signature
            first = current.generation  # the contiguous generations that end at the current log (older ones
            while first - 1 in folder.generations:  # behind a gap cannot be replayed into this EDB)
                first -= 1
        else:
            end = self._ends[target.name.lower()]
            log_signature, first = end.signature, end.generation + 1
        if current.signature != log_signature:
            raise ChainError(f"the current log of database {target.name} has log signature {current.signature}, "
                             f"the database's is {log_signature}: these logs belong to another log stream")
        wanted = list(range(first, current.generation))
        missing = [g for g in wanted if g not in folder.generations]
        if missing:
            raise ChainError(f"generation {missing[0]:X} ({folder.name_of(missing[0])}) of database {target.name} "
                             f"is missing: the log folder holds {_span(folder)}")
        if header is not None and not header.clean:
            low, high = header.required
            if low and (low < first or high > current.generation):
                raise ConnectorError(
                    f"database {target.name} needs generations {low:X}-{high:X} but the log folder holds "
                    f"{_span(folder)} and the current log is {current.generation:X}: it cannot be recovered")
        db: dict[str, Any] = {
            "name": target.name, "guid": target.guid, "edb_path": target.edb, "log_folder": target.log_folder,
            "prefix": folder.prefix, "digits": folder.digits or 8, "circular": target.circular or current.circular,
            "mounted": target.mounted, "header": header.to_json() if header else None,
            "log_signature": log_signature, "first": wanted[0] if wanted else None,
            "last": wanted[-1] if wanted else None, "end": current.generation - 1,
            "current_generation": current.generation, "logs": [], "edb": None, "stm": None, "chk": None,
            "current": None, "log_size": None, "checkpoint": 0,
        }
        self._meta["databases"].append(db)
        yield dir_entry(base)
        if header is not None:
            size = self.runner.stat(edb).size
            db["edb"] = {"path": f"{base}/{edb.name}", "size": size, "name": edb.name}
            yield file_entry(db["edb"]["path"], self._opener(edb), size=size)
            stm = edb.with_suffix(".stm")
            if self.runner.exists(stm):
                size = self.runner.stat(stm).size
                db["stm"] = {"path": f"{base}/{stm.name}", "size": size, "name": stm.name}
                yield file_entry(db["stm"]["path"], self._opener(stm), size=size)
        if wanted:
            yield dir_entry(f"{base}/logs")
        sizes = set()
        for gen in wanted:
            name = folder.generations[gen]
            path = logs / name
            log = parse_log_header(self._header(path), str(path))
            if log.generation != gen:
                raise ConnectorError(f"{path} holds generation {log.generation:X}, not {gen:X}: it is not the "
                                     "log its name says")
            if log.signature != log_signature:
                raise ChainError(f"{name} of database {target.name} has log signature {log.signature}, not "
                                 f"{log_signature}: it belongs to another log stream")
            size = self.runner.stat(path).size
            sizes.add(size)
            if len(sizes) > 1:
                raise ConnectorError(f"{path} has {size} bytes, the other generations {min(sizes - {size})}: it "
                                     "is not an Exchange transaction log or it is corrupted")
            db["log_size"] = size
            db["logs"].append({"generation": gen, "name": name, "path": f"{base}/logs/{name}", "size": size,
                               "signature": log.signature, "created": iso(log.created) if log.created else None})
            yield file_entry(f"{base}/logs/{name}", self._opener(path), size=size)
        yield dir_entry(f"{base}/current")
        path = logs / (folder.current or f"{folder.prefix}.log")
        size = self.runner.stat(path).size
        db["current"] = {"path": f"{base}/current/{path.name}", "size": size, "name": path.name}
        db["current_created"] = iso(current.created) if current.created else None
        yield file_entry(db["current"]["path"], self._opener(path), size=size)
        if folder.checkpoint:
            path = logs / folder.checkpoint
            db["checkpoint"] = parse_checkpoint(self._header(path), str(path)).generation
            size = self.runner.stat(path).size
            db["chk"] = {"path": f"{base}/{path.name}", "size": size, "name": path.name}
            yield file_entry(db["chk"]["path"], self._opener(path), size=size)

    def _system_state(self) -> Iterator[Entry]:
        if self.stage is None:
            raise ConnectorError("the system state needs a stage folder")
        target = self.stage.path / "system-state"
        target.mkdir()
        where = _backup_target(target)
        system_state_backup(self.runner, where)
        target = Path(where + "\\") if os.name == "nt" else target
        root = target / "WindowsImageBackup"
        files = sorted(p for p in root.rglob("*") if p.is_file())
        self._meta["system_state"] = {"tool": "wbadmin start systemstatebackup", "path": "system-state",
                                      "files": len(files), "bytes": sum(p.stat().st_size for p in files)}
        yield dir_entry("system-state")
        for path in sorted(p for p in root.rglob("*") if p.is_dir()):
            yield dir_entry(f"system-state/{path.relative_to(target).as_posix()}")
        for path in files:
            yield file_entry(f"system-state/{path.relative_to(target).as_posix()}", partial(_open_local, path),
                             size=path.stat().st_size)


def _open_local(path: Path) -> BinaryIO:
    return open(path, "rb")


def _backup_target(folder: Path) -> str:
    """wbadmin writes a system state backup to a volume (``E:``); the simulator takes a folder."""
    if os.name == "nt":
        return PurePath(folder).anchor.rstrip("\\") or str(folder)
    return str(folder)


def _span(folder: LogFolder) -> str:
    if not folder.generations:
        return "no numbered generation"
    return f"generations {min(folder.generations):X} .. {max(folder.generations):X}"


__all__ = ["ExchangeSource", "Target_", "file_target", "item_name", "server_targets"]
