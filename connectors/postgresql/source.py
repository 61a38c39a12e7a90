"""What ``dtstore snapshot postgresql://…`` reads: a base backup, file by file, straight from the data directory.

1. ``pg_backup_start('dtstore …', fast)`` in a psql session that stays open (non-exclusive backup).
2. The data directory and every tablespace are walked in bytewise order and each file is streamed
   into the repository as one item (``pgdata/<path>``, ``tablespaces/<oid>/<path>``): no temporary
   copy, and every file starts a chunk of its own, so unchanged relation files deduplicate
   completely.  What PostgreSQL's own ``pg_basebackup`` leaves out is left out (``pg_wal/*``,
   ``postmaster.pid``, ``pg_replslot/*``, temporary files, …).  A file that vanishes while the
   backup runs (a dropped table) is stored empty and listed as ``vanished``: WAL replay removes it.
3. ``pg_backup_stop(wait_for_archive => true)``: returns only once the WAL up to the stop LSN is
   archived (by ``dtstore wal-push``), so a base snapshot is never committed without the WAL that
   makes it consistent.  Its ``backup_label`` and ``tablespace_map`` are stored as
   ``pgdata/backup_label`` and ``pgdata/tablespace_map``; the restored tree is a ready base backup.

Unchanged files are not even read (the core's file cache, keyed by the file's device, inode, size,
mtime and ctime), but only for files whose mtime is at least ``CACHE_SAFETY`` seconds older than the
backup's start: a file written in the same clock tick as the last look at it could otherwise keep
its mtime and be taken for unchanged.  A file changed during the backup is repaired by WAL replay
(full-page writes), as for every PostgreSQL base backup.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from dtstore import clock
from dtstore.connectors.base import RepositoryView, SnapshotInfo, iso, snapshots_of
from dtstore.connectors.entries import BLOCK, bytes_entry, now_ns
from dtstore.connectors.modes import choose_mode
from dtstore.connectors.positions import PgLsn
from dtstore.connectors.postgresql import meta
from dtstore.connectors.postgresql.chain import KIND
from dtstore.connectors.postgresql.server import BackupSession, ServerInfo, probe, value
from dtstore.connectors.postgresql.url import PgUrl
from dtstore.errors import ConnectorError
from dtstore.sources.base import Entry, FileIdentity, Reporter

CACHE_SAFETY = 2.0
"""seconds: a file modified less than this before the backup started is always read"""

EXCLUDE_CONTENTS = {"pg_wal", "pg_dynshmem", "pg_notify", "pg_replslot", "pg_serial", "pg_snapshots",
                    "pg_stat_tmp", "pg_subtrans"}
EXCLUDE_FILES = {"postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map", "backup_manifest",
                 "postgresql.auto.conf.tmp", "current_logfiles.tmp", "recovery.signal", "standby.signal"}
EXCLUDE_ANYWHERE = {"pg_internal.init"}
OWN_DIRS = {"pg_dtstore_restore"}
"""what a dtstore restore leaves in a data directory (prefetched WAL)"""
TIMELINE = re.compile(r"^START TIMELINE: (\d+)$", re.MULTILINE)


class _Guarded(io.RawIOBase):
    """A file's reads, with an OSError turned into ConnectorError (a file the backup cannot read
    must fail the run: a base backup without one of its files is no backup)."""

    def __init__(self, raw: BinaryIO, name: str) -> None:
        self._raw, self._name = raw, name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return int(self._raw.readinto(buffer) or 0)  # type: ignore[attr-defined]
        except OSError as exc:
            raise ConnectorError(f"reading {self._name} failed: {exc.strerror or exc}") from exc

    def close(self) -> None:
        self._raw.close()
        super().close()


class PostgresSource:
    """One ``dtstore snapshot postgresql://…`` run: a base backup."""

    kind = KIND
    exclusive = True

    def __init__(self, url: PgUrl, info: ServerInfo, repo: RepositoryView | None, mode: str) -> None:
        self.url, self.info, self.repo, self.mode = url, info, repo, mode
        self.history: list[SnapshotInfo] = []
        self._meta: dict[str, Any] = {}
        self.vanished: list[str] = []

    def prepare(self) -> None:
        if self.repo is not None:
            self.history = snapshots_of(self.repo.snapshots(), KIND, self.source_id)

    @property
    def source_id(self) -> str:
        return self.info.source_id

    @property
    def display_paths(self) -> list[str]:
        return [self.url.display()]

    def estimated_size(self) -> int:
        return int(value(self.url, "SELECT sum(pg_database_size(oid))::bigint FROM pg_database") or 0)

    def metadata(self) -> dict[str, Any]:
        meta.check(self._meta)
        return self._meta

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        choice = choose_mode(self.mode)
        info = self.info
        self._meta = {
            "format": meta.METADATA_FORMAT,
            "mode": choice.mode,
            "requested_mode": self.mode,
            "url": self.url.display(),
            "server": info.to_json(),
            "system_identifier": info.system_identifier,
            "segment_size": info.segment_size,
            "tablespaces": [],
            "files": 0,
            "bytes": 0,
            "cache_eligible": 0,
        }
        if choice.reason:
            self._meta["auto_reason"] = choice.reason
        if info.archive_mode not in ("on", "always") or not info.archive_command.strip():
            raise ConnectorError(
                "WAL archiving is off (archive_mode/archive_command): a base backup cannot be restored without "
                "its WAL; set archive_command = 'dtstore wal-push %p' (spec/connectors-postgresql.md §2)"
            )
        pgdata = Path(info.data_directory)
        if not os.access(pgdata / "global" / "pg_control", os.R_OK):
            raise ConnectorError(f"the data directory {pgdata} is not readable here: run the backup on the "
                                 "database host as the server's user (or root)")
        started = clock.now()
        self._meta["started_at"] = iso(started)
        cutoff_ns = int((started.timestamp() - CACHE_SAFETY) * 1e9)
        with BackupSession(self.url, info.version_num) as session:
            self._meta["start_lsn"] = str(PgLsn.parse(session.start(f"dtstore {iso(started)}")))
            yield self._dir(meta.DATA_DIR, pgdata)
            yield from self._walk(pgdata, meta.DATA_DIR, cutoff_ns, top=True)
            if info.tablespaces:
                yield Entry(path=meta.TABLESPACE_DIR.encode(), type="dir", mode=0o700, mtime_ns=now_ns())
            for space in info.tablespaces:
                oid, location = space["oid"], Path(space["location"])
                path = f"{meta.TABLESPACE_DIR}/{oid}"
                self._meta["tablespaces"].append({**space, "path": path})
                yield self._dir(path, location)
                yield from self._walk(location, path, cutoff_ns, top=False)
            stop = session.stop()
        self._meta.update(
            stop_lsn=str(PgLsn.parse(stop.lsn)),
            consistent_at=stop.stopped_at,
            backup_label=stop.label,
            tablespace_map=stop.tablespace_map,
            vanished=self.vanished,
        )
        match = TIMELINE.search(stop.label)
        self._meta["timeline"] = int(match.group(1)) if match else info.timeline
        full = meta.FullMeta.of(self._meta)
        self._meta["start_wal"], self._meta["stop_wal"] = str(full.start_segment), str(full.stop_segment)
        yield bytes_entry(f"{meta.DATA_DIR}/backup_label", stop.label.encode())
        if stop.tablespace_map:
            yield bytes_entry(f"{meta.DATA_DIR}/tablespace_map", stop.tablespace_map.encode())
        self._meta["finished_at"] = iso(clock.now())

    # -- walking ------------------------------------------------------------------------------------

    @staticmethod
    def _dir(path: str, on_disk: Path) -> Entry:
        st = os.lstat(on_disk)
        return Entry(path=path.encode(), type="dir", mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                     mtime_ns=st.st_mtime_ns)

    def _walk(self, directory: Path, prefix: str, cutoff_ns: int, *, top: bool) -> Iterator[Entry]:
        try:
            names = sorted(os.listdir(directory), key=os.fsencode)
        except FileNotFoundError:
            return  # a database dropped during the backup: WAL replay drops it too
        for name in names:
            if name in EXCLUDE_ANYWHERE or name.startswith("pgsql_tmp"):
                continue
            if top and (name in EXCLUDE_FILES or name in OWN_DIRS):
                continue
            full = directory / name
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            path = f"{prefix}/{name}"
            if stat.S_ISDIR(st.st_mode):
                yield Entry(path=path.encode(), type="dir", mode=stat.S_IMODE(st.st_mode), uid=st.st_uid,
                            gid=st.st_gid, mtime_ns=st.st_mtime_ns)
                if top and name in EXCLUDE_CONTENTS:
                    if name == "pg_wal":
                        yield self._dir(f"{path}/archive_status", full / "archive_status")
                    continue
                yield from self._walk(full, path, cutoff_ns, top=False)
            elif stat.S_ISLNK(st.st_mode):
                yield Entry(path=path.encode(), type="symlink", mode=0o777, uid=st.st_uid, gid=st.st_gid,
                            mtime_ns=st.st_mtime_ns, target=os.fsencode(os.readlink(full)))
            elif stat.S_ISREG(st.st_mode):
                yield self._file(full, path, st, cutoff_ns)

    def _file(self, full: Path, path: str, st: os.stat_result, cutoff_ns: int) -> Entry:
        self._meta["files"] += 1
        self._meta["bytes"] += st.st_size
        entry = Entry(path=path.encode(), type="file", mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                      mtime_ns=st.st_mtime_ns, size=st.st_size, opener=partial(self._open, full, path))
        if st.st_mtime_ns < cutoff_ns and st.st_ctime_ns < cutoff_ns:
            self._meta["cache_eligible"] += 1
            entry.identity = FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            entry.cache_key = f"{KIND}:{self.info.system_identifier}:{full}".encode()
        return entry

    @contextlib.contextmanager
    def _open(self, full: Path, path: str) -> Iterator[BinaryIO]:
        try:
            raw = open(full, "rb", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            self.vanished.append(path)
            yield io.BytesIO(b"")
            return
        except OSError as exc:
            raise ConnectorError(f"cannot open {full}: {exc.strerror or exc}") from exc
        with io.BufferedReader(_Guarded(raw, str(full)), BLOCK) as stream:  # type: ignore[arg-type]
            yield stream  # type: ignore[misc]


def make(url: PgUrl, repo: RepositoryView | None, mode: str) -> PostgresSource:
    return PostgresSource(url, probe(url), repo, mode)


__all__ = ["CACHE_SAFETY", "EXCLUDE_CONTENTS", "EXCLUDE_FILES", "PostgresSource", "make"]
