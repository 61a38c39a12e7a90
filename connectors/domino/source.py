"""Direct mode: ``dtstore snapshot domino:///local/notesdata --mode full|log|auto``.

* **Full**: every file below the data directory (NSF, NTF, BOX, ID files, DAOS ``.nlo``, the rest),
  less the exclusions, as ``domino/data/<path>`` through the core's file cache (an unchanged file is
  not read again); NOTES.INI as ``domino/notes.ini``; a DAOS repository outside the data directory as
  ``domino/daos/<path>``; every ``S#######.TXN`` extent and ``nlogctrl.lfh`` as
  ``domino/translog/<name>``.  A running server (``pid.nbf`` names a live process) is refused
  unless the URL says the data is a file-system snapshot (``?snapshot=1``).
* **Log**: the extents from where the newest snapshot's log ended (its extent again, for the new
  bytes) to the current one, plus DAOS objects that are new since then.  The chain must continue:
  same LogID, no missing extent, archive style; otherwise ChainError (17), and ``auto`` takes a full.
  A database whose DBIID changed (compact, fixup) or that is new needs a copy of its own: ``log``
  refuses with a message naming it, ``auto`` includes the copy (``db_copies``).
* Nothing is marked archived: direct mode has no C API; the backup-task backend (``task.py``) is how
  Domino learns an extent is safe, after the commit.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from dtstore import FilesSource, clock
from dtstore.connectors.base import ChainCheck, RepositoryView, SnapshotInfo, iso
from dtstore.connectors.domino.chain import KIND, METADATA_FORMAT, DominoPoint, links, mode_of
from dtstore.connectors.domino.files import (
    CONTROL_FILE,
    PID_FILE,
    extent_name,
    is_database,
    list_extents,
    read_extent_header,
    read_nsf_header,
    running_pids,
)
from dtstore.connectors.domino.notesini import NotesIni, find_ini, read_ini
from dtstore.connectors.domino.url import DominoUrl
from dtstore.connectors.entries import BLOCK, dir_entry
from dtstore.connectors.modes import choose_mode
from dtstore.connectors.source import ChainedSource
from dtstore.errors import ChainError, ConnectorError
from dtstore.sources.base import Entry, FileIdentity, Reporter

DEFAULT_EXCLUDES = ("*.lck", PID_FILE, "*.DELTA", "*.dtstore-partial")


def _file_entry(item: str, path: Path, st: os.stat_result, opener: Any = None) -> Entry:
    return Entry(
        path=item.encode(), type="file", mode=0o600, mtime_ns=st.st_mtime_ns, size=st.st_size,
        opener=opener or partial(open, path, "rb", buffering=0),
        identity=FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns),
        cache_key=b"file:" + os.fsencode(path),
    )


class _Hashing:
    """An opener whose stream records the SHA-256 of what the core reads."""

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        self.path, self.record = path, record

    @contextlib.contextmanager
    def __call__(self) -> Iterator[BinaryIO]:
        digest = hashlib.sha256()
        with open(self.path, "rb", buffering=0) as raw:
            reader = _DigestReader(raw, digest)
            yield reader  # type: ignore[misc]
        self.record["sha256"] = digest.hexdigest()


class _DigestReader:
    def __init__(self, raw: Any, digest: Any) -> None:
        self._raw, self._digest = raw, digest

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._raw.read(n if n and n > 0 else BLOCK)
        self._digest.update(data)
        return data


class DominoSource(ChainedSource):
    """One ``dtstore snapshot domino://…`` run in direct mode."""

    kind = KIND

    def __init__(self, url: DominoUrl, repo: RepositoryView | None, mode: str) -> None:
        self.url, self.repo, self.mode = url, repo, mode
        self.data = Path(os.path.abspath(url.data))
        if not self.data.is_dir():
            raise ConnectorError(f"the Domino data directory {self.data} does not exist")
        self.ini_path = Path(os.path.abspath(url.ini)) if url.ini else find_ini(self.data)
        self.ini: NotesIni = read_ini(self.ini_path)
        self.translog = Path(os.path.abspath(self.ini.translog_path(self.data)))
        daos = self.ini.daos_path(self.data)
        self.daos = Path(os.path.abspath(daos)) if daos else None
        self.history = []
        self._meta: dict[str, Any] = {}

    # -- identity -------------------------------------------------------------------------------

    @property
    def source_id(self) -> str:
        node = self.ini.node()
        return f"domino:{node}" if node else f"domino:{self.data.as_posix()}"

    def estimated_size(self) -> int:
        total = 0
        for base in (self.data, self.translog):
            for root, _, names in os.walk(base):
                for name in names:
                    with contextlib.suppress(OSError):
                        total += os.lstat(os.path.join(root, name)).st_size
        return total

    def metadata(self) -> dict[str, Any]:
        return self._meta

    # -- the run --------------------------------------------------------------------------------

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        started = clock.now()
        self._meta = {
            "format": METADATA_FORMAT,
            "transport": "direct",
            "requested_mode": self.mode,
            "started_at": iso(started),
            "url": self.url.display(),
            "server": {"name": self.ini.server_name, "node": self.ini.node(), "version": self.ini.version,
                       "platform": os.name},
            "data_dir": str(self.data),
            "log": {"path": str(self.translog), "style": self.ini.translog_style,
                    "status": self.ini.translog_status},
            "snapshot": self.url.snapshot,
        }
        choice = choose_mode(self.mode, log=self._log_check)
        self._meta["mode"] = choice.mode
        if choice.reason:
            self._meta["auto_reason"] = choice.reason
        if choice.mode == "full":
            yield from self._full(reporter)
        else:
            yield from self._log(reporter)
        self._meta["finished_at"] = iso(clock.now())

    def _refuse_running(self, what: str) -> None:
        pids = running_pids(self.data)
        if pids and not self.url.snapshot:
            raise ConnectorError(
                f"the Domino server is running (pid.nbf names process {pids[0]}): {what} of a running server "
                "cannot be copied consistently; stop the server, point dtstore at a file-system snapshot of the "
                "data directory with ?snapshot=1, or use the Domino backup task with dtstore as its backend "
                "(dtstore domino …, spec/connectors-domino.md)"
            )

    # -- full -----------------------------------------------------------------------------------

    def _skip(self, path: str) -> bool:
        absolute = os.path.abspath(path)
        inside = [self.translog, *([self.daos] if self.daos and not _under(self.daos, self.data) else [])]
        return absolute == str(self.ini_path) or any(
            absolute == str(p) or absolute.startswith(str(p) + os.sep) for p in inside)

    def _full(self, reporter: Reporter) -> Iterator[Entry]:
        self._refuse_running("the open NSF files")
        from dtstore import Excludes

        excludes = Excludes(exclude=(*DEFAULT_EXCLUDES, *self.url.excludes))
        self._meta.update(excludes=[*DEFAULT_EXCLUDES, *self.url.excludes], databases=[], files=[], daos=[],
                          consistent_at=self._meta["started_at"])
        yield dir_entry("domino")
        root = stored_path(os.fsencode(str(self.data)))
        for entry in FilesSource([str(self.data)], excludes=excludes).entries(reporter):
            key = os.fsdecode(entry.cache_key[len(b"file:"):]) if entry.cache_key else None
            rel = entry.path[len(root):].lstrip(b"/\\").replace(b"\\", b"/")
            absolute = os.path.join(str(self.data), os.fsdecode(rel)) if rel else str(self.data)
            if (key is not None and self._skip(key)) or (rel and self._skip(absolute)):
                continue
            entry.path = b"domino/data/" + rel if rel else b"domino/data"
            if entry.type == "file":
                name = os.fsdecode(rel)
                if is_database(name):
                    self._meta["databases"].append(self._database(name, entry.size or 0, reporter))
                else:
                    self._meta["files"].append([name, entry.size or 0])
            yield entry
        st = os.stat(self.ini_path)
        self._meta["ini"] = {"item": "domino/notes.ini", "name": self.ini_path.name, "size": st.st_size}
        yield _file_entry("domino/notes.ini", self.ini_path, st)
        if self.daos is not None and not _under(self.daos, self.data) and self.daos.is_dir():
            yield dir_entry("domino/daos")
            for path in sorted(self.daos.rglob("*")):
                if path.is_file():
                    rel_daos = path.relative_to(self.daos).as_posix()
                    st = path.stat()
                    self._meta["daos"].append([rel_daos, st.st_size])
                    yield _file_entry(f"domino/daos/{rel_daos}", path, st)
        yield from self._translog(reporter, full=True)
        self._meta["consistent_at"] = self._meta["covered_until"]  # a stopped server's (or snapshot's) last record

    def _database(self, name: str, size: int, reporter: Reporter) -> dict[str, Any]:
        record: dict[str, Any] = {"file": name, "item": f"domino/data/{name}", "size": size}
        try:
            record.update(read_nsf_header(self.data / name).to_json())
        except ConnectorError as exc:
            reporter.warn(f"domino/data/{name}".encode(), str(exc))
        return record

    # -- the log --------------------------------------------------------------------------------

    def _extents(self) -> tuple[dict[int, Path], int, str]:
        extents = list_extents(self.translog)
        if not extents:
            raise ConnectorError(f"the transaction log directory {self.translog} holds no S#######.TXN extent")
        current = max(extents)
        return extents, current, read_extent_header(extents[current]).log_id

    def _translog(self, reporter: Reporter, *, full: bool, start: DominoPoint | None = None) -> Iterator[Entry]:
        extents, current, log_id = self._extents()
        first = min(extents) if full or start is None else start.sequence
        self._meta["log"]["log_id"] = log_id
        self._meta["extents"] = []
        yield dir_entry("domino/translog")
        last_us = 0
        previous = self._previous_hashes()
        wanted = sorted(extents) if full else range(first, current + 1)  # a full takes what is there
        for seq in wanted:
            path = extents.get(seq)
            if path is None:
                raise ChainError(f"extent {extent_name(seq)} is missing from {self.translog} (the log needs it)")
            header = read_extent_header(path)
            if header.log_id != log_id:
                raise ChainError(f"extent {path.name} belongs to LogID {header.log_id}, the log is {log_id}")
            st = path.stat()
            record: dict[str, Any] = {"name": path.name, "sequence": seq, "item": f"domino/translog/{path.name}",
                                      "size": st.st_size, "used": header.used, "mtime_ns": st.st_mtime_ns,
                                      "partial": seq == current,
                                      "sha256": previous.get((path.name, st.st_size, st.st_mtime_ns, header.used))}
            self._meta["extents"].append(record)
            last_us = max(last_us, header.last_us)
            yield _file_entry(record["item"], path, st, opener=_Hashing(path, record))
        end = DominoPoint(log_id, current, read_extent_header(extents[current]).used)
        self._meta["log_end"] = str(start.after(end) if start is not None and not full else end)
        self._meta["covered_until"] = iso(_from_us(last_us)) if last_us else self._meta["started_at"]
        control = self.translog / CONTROL_FILE
        if full and control.is_file():
            st = control.stat()
            self._meta["control"] = {"item": f"domino/translog/{CONTROL_FILE}", "size": st.st_size}
            yield _file_entry(f"domino/translog/{CONTROL_FILE}", control, st)

    def _previous_hashes(self) -> dict[tuple[str, int, int, int], str]:
        found = {}
        for snap in self.history:
            for e in snap.meta.get("extents", []):
                if e.get("sha256"):
                    found[(e["name"], e["size"], e.get("mtime_ns", 0), e["used"])] = e["sha256"]
        return found

    def _direct_history(self) -> list[SnapshotInfo]:
        return [s for s in self.history if s.meta.get("transport", "direct") == "direct"]

    def _chain_end(self) -> tuple[SnapshotInfo, DominoPoint] | None:
        direct = self._direct_history()
        if not direct:
            return None
        newest = direct[-1]
        return newest, DominoPoint.parse(str(newest.meta["log_end"]))

    def _log_check(self) -> ChainCheck:
        style = self.ini.translog_style
        if style != "archive" or not self.ini.translog_status:
            state = "off" if not self.ini.translog_status else f"{style} style"
            return ChainCheck.broken(
                f"transaction logging is {state} (TRANSLOG_Status={self.ini.get('TRANSLOG_Status', '0')}, "
                f"TRANSLOG_Style={self.ini.get('TRANSLOG_Style', '0')}): only archive style (1) keeps every extent"
            )
        found = self._chain_end()
        if found is None:
            return ChainCheck.broken("there is no earlier direct-mode snapshot of this server")
        newest, end = found
        if not any(link.is_base for link in links(self._direct_history())):
            return ChainCheck.broken("no full snapshot of this server is left in the repository")
        extents, current, log_id = self._extents()
        if log_id != end.log_id:
            return ChainCheck.broken(
                f"the transaction log has a new LogID {log_id} (snapshot {newest.short_id} ended in LogID "
                f"{end.log_id}): the log was recreated, so its extents cannot continue the archive"
            )
        missing = [seq for seq in range(end.sequence, current + 1) if seq not in extents]
        if missing:
            return ChainCheck.broken(
                f"extent {extent_name(missing[0])} is missing from {self.translog}: snapshot {newest.short_id} "
                f"ended in it at offset {end.offset} and the archive needs every extent from there"
            )
        if read_extent_header(extents[end.sequence]).used < end.offset:
            return ChainCheck.broken(f"extent {extent_name(end.sequence)} is shorter than when it was archived "
                                     "(it was reused)")
        return ChainCheck.good()

    def _known_databases(self) -> dict[str, str]:
        """Database file → the DBIID of its newest copy in the chain since the newest full."""
        direct = self._direct_history()
        fulls = [i for i, s in enumerate(direct) if mode_of(s) == "full"]
        known: dict[str, str] = {}
        for snap in direct[fulls[-1]:] if fulls else []:
            for db in [*snap.meta.get("databases", []), *snap.meta.get("db_copies", [])]:
                known[str(db["file"])] = str(db.get("dbiid", ""))
        return known

    def _known_files(self) -> set[str]:
        direct = self._direct_history()
        fulls = [i for i, s in enumerate(direct) if mode_of(s) == "full"]
        found: set[str] = set()
        for snap in direct[fulls[-1]:] if fulls else []:
            found.update(str(f[0]) for f in snap.meta.get("files", []))
            found.update(str(f[0]) for f in snap.meta.get("files_new", []))
        return found

    def _needs_copy(self) -> list[tuple[str, str]]:
        """(database, why) for every database whose DBIID changed or that the chain has no copy of."""
        known = self._known_databases()
        needed = []
        for path in sorted(self.data.rglob("*")):
            if not path.is_file() or not is_database(path.name) or self._skip(str(path)):
                continue
            name = path.relative_to(self.data).as_posix()
            try:
                dbiid = read_nsf_header(path).dbiid
            except ConnectorError:
                continue
            if name not in known:
                needed.append((name, "is new: the archive holds no copy of it"))
            elif known[name] and known[name] != dbiid:
                needed.append((name, f"has a new DBIID {dbiid} (the archived copy has {known[name]}: compacted, "
                                     "fixed up or restored), so the logs no longer apply to that copy"))
        return needed

    def _log(self, reporter: Reporter) -> Iterator[Entry]:
        found = self._chain_end()
        if found is None:  # choose_mode ran the check
            raise ChainError("no snapshot to continue")
        base, start = found
        copies = self._needs_copy()
        if copies and self._meta["requested_mode"] == "log":
            name, why = copies[0]
            more = f" (and {len(copies) - 1} more)" if len(copies) > 1 else ""
            raise ChainError(
                f"database {name} {why}{more}: it needs a new full copy. Run dtstore snapshot … --mode auto, which "
                "includes that copy, or --mode full"
            )
        self._meta.update(parent=base.id, log_start=str(start), db_copies=[], files_new=[])
        yield dir_entry("domino")
        if copies:
            self._refuse_running(f"database {copies[0][0]}")
            yield dir_entry("domino/data")
            self._meta["copy_reasons"] = {name: why for name, why in copies}
            for name, _ in copies:
                path = self.data / name
                st = path.stat()
                self._meta["db_copies"].append(self._database(name, st.st_size, reporter))
                yield _file_entry(f"domino/data/{name}", path, st)
        known = self._known_files()
        daos = self.daos if self.daos and _under(self.daos, self.data) else None
        if daos is not None and daos.is_dir():
            for path in sorted(daos.rglob("*.nlo")):
                name = path.relative_to(self.data).as_posix()
                if name not in known:
                    st = path.stat()
                    self._meta["files_new"].append([name, st.st_size])
                    yield _file_entry(f"domino/data/{name}", path, st)
        yield from self._translog(reporter, full=False, start=start)


def stored_path(path: bytes) -> bytes:
    """Where FilesSource stores an absolute path: without its leading separator."""
    return os.path.normpath(path).lstrip(b"/") or b"."


def _under(path: Path, parent: Path) -> bool:
    return path == parent or str(path).startswith(str(parent) + os.sep)


def _from_us(value: int) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(value / 1_000_000, dt.UTC)


__all__ = ["DominoSource"]
