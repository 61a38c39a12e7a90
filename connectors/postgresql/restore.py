"""Executing a PostgreSQL restore plan into an empty data directory.

1. Before anything is touched: the data directory must be empty or absent, every tablespace's
   destination too, and every snapshot the plan reads must still exist.
2. The base backup's tree is restored (the core's parallel, chunk-verified restore) into the data
   directory, ``pgdata/*`` moved into place, tablespaces moved to their destination (the original
   location if it is free, else ``&tablespace_dir=DIR/<oid>``) and ``tablespace_map`` rewritten
   for it; files that vanished during the backup are removed.
3. Every planned WAL file is fetched (four at once, size- and SHA-256-checked) into
   ``PGDATA/pg_dtstore_restore/``, so recovery never waits for the repository and needs no secret.
4. ``recovery.signal`` and, in ``postgresql.auto.conf``, ``restore_command = 'cp …/%f "%p"'``,
   the ``recovery_target_*`` settings and ``recovery_target_action = 'promote'``; with
   ``&archive=off`` also ``archive_mode = off`` (a copy restored beside the original must not
   archive into the same source); ``&port=P`` and ``&socket_dir=DIR`` set where it listens.
5. Ownership: run as root, everything is given to the owner of the data directory (or of its
   parent when it did not exist).  With ``&start=yes`` the server is started as that user and the
   restore waits until it has promoted; the prefetched WAL is then removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any

from dtstore.connectors.base import RepositoryView
from dtstore.connectors.fetch import StoredFile, fetch, run_parallel
from dtstore.connectors.postgresql.meta import DATA_DIR, FullMeta
from dtstore.connectors.postgresql.plan import PostgresRestorePlan
from dtstore.connectors.postgresql.server import pg_tool
from dtstore.connectors.postgresql.url import PgUrl
from dtstore.errors import ConnectorError
from dtstore.progress import ProgressCallback, ProgressEvent

PREFETCH = "pg_dtstore_restore"
START_LOG = "dtstore-restore.log"
PROMOTE_WAIT = 3600.0
FETCH_WORKERS = 4
"""WAL files fetched at once (each is independent; the core verifies every chunk it reads)"""


def _empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _owner(pgdata: Path) -> tuple[int, int]:
    probe = pgdata if pgdata.exists() else pgdata.parent
    st = probe.stat()
    return st.st_uid, st.st_gid


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    if os.geteuid() != 0:
        return
    os.lchown(root, uid, gid)
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(base, name), uid, gid)


def _tablespace_destinations(plan: PostgresRestorePlan, url: PgUrl) -> dict[str, Path]:
    meta = FullMeta.of(plan.full.meta)
    chosen: dict[str, Path] = {}
    for space in meta.tablespaces:
        if url.options.get("tablespace_dir"):
            dest = Path(url.options["tablespace_dir"]).absolute() / space.oid
        else:
            dest = Path(space.location)
        if not _empty(dest):
            raise ConnectorError(
                f"tablespace {space.name} ({space.oid}) would be restored to {dest}, which is not empty; "
                "give &tablespace_dir=DIR (an empty folder) in the target URL")
        chosen[space.oid] = dest
    return chosen


def execute_restore(plan: PostgresRestorePlan, url: PgUrl, repo: RepositoryView, progress: ProgressCallback) -> None:
    pgdata = url.pgdata
    if not _empty(pgdata):
        raise ConnectorError(f"the data directory {pgdata} is not empty: a restore never overwrites; "
                             "give an empty or new directory")
    spaces = _tablespace_destinations(plan, url)
    needed = {plan.full.id, *(w.snapshot_id for w in plan.wal)}
    snaps = {s.id: s for s in repo.snapshots() if s.id in needed}
    missing = sorted(needed - set(snaps))
    if missing:
        gone = ", ".join(m[:8] for m in missing)
        raise ConnectorError(f"snapshot(s) {gone} of the plan are gone from the repository")
    uid, gid = _owner(pgdata)
    meta = FullMeta.of(plan.full.meta)
    pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
    progress(ProgressEvent("restore", current=plan.full.short_id, message="base backup"))
    repo.restore(snaps[plan.full.id], str(pgdata), progress=progress)
    _lay_out(pgdata, meta, spaces)
    for vanished in plan.full.meta.get("vanished", []):
        rel = str(vanished).removeprefix(f"{DATA_DIR}/")
        with contextlib.suppress(FileNotFoundError):
            (pgdata / rel).unlink()
    prefetch = pgdata / PREFETCH
    prefetch.mkdir(mode=0o700)
    progress(ProgressEvent("restore", message=f"fetch {len(plan.wal)} WAL file(s)"))
    run_parallel([partial(fetch, repo, StoredFile(snaps[w.snapshot_id], w.path, w.size, w.sha256), prefetch / w.name)
                  for w in plan.wal], FETCH_WORKERS)
    _write_recovery(pgdata, plan, url)
    _chown_tree(pgdata, uid, gid)
    for dest in spaces.values():
        _chown_tree(dest, uid, gid)
    if url.start:
        progress(ProgressEvent("restore", message="start and wait for promotion"))
        start_and_wait(pgdata, url, uid, gid)
        shutil.rmtree(prefetch, ignore_errors=True)
    progress(ProgressEvent("restore", message="done"))


def _lay_out(pgdata: Path, meta: FullMeta, spaces: dict[str, Path]) -> None:
    tree = pgdata / DATA_DIR
    if not tree.is_dir():
        raise ConnectorError(f"the base backup has no {DATA_DIR}/ tree")
    for child in list(tree.iterdir()):
        os.rename(child, pgdata / child.name)
    tree.rmdir()
    lines = []
    for space in meta.tablespaces:
        dest = spaces[space.oid]
        dest.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            dest.rmdir()
        shutil.move(str(pgdata / space.path), str(dest))
        link = pgdata / "pg_tblspc" / space.oid
        if link.is_symlink():
            link.unlink()
        lines.append(f"{space.oid} {dest}\n")
    with contextlib.suppress(OSError):
        (pgdata / "tablespaces").rmdir()
    if lines:
        (pgdata / "tablespace_map").write_text("".join(lines))


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _write_recovery(pgdata: Path, plan: PostgresRestorePlan, url: PgUrl) -> None:
    prefetch = pgdata / PREFETCH
    settings = {"restore_command": f'cp "{prefetch}/%f" "%p"', **plan.recovery}
    if url.options.get("archive", "keep") == "off" or url.options.get("archive_mode") == "off":
        settings["archive_mode"] = "off"
    if url.port:
        settings["port"] = str(url.port)
    if url.options.get("socket_dir"):
        settings["unix_socket_directories"] = url.options["socket_dir"]
        settings["listen_addresses"] = ""
    conf = pgdata / "postgresql.auto.conf"
    text = conf.read_text() if conf.exists() else ""
    added = "".join(f"{key} = {_quote(value)}\n" for key, value in settings.items())
    conf.write_text(text + ("" if not text or text.endswith("\n") else "\n")
                    + f"# added by dtstore restore of {plan.full.short_id}\n" + added)
    (pgdata / "recovery.signal").write_text("")


def _demote(uid: int, gid: int) -> dict[str, Any]:
    if os.geteuid() != 0 or uid == 0:
        return {}
    return {"user": uid, "group": gid, "extra_groups": []}


def start_and_wait(pgdata: Path, url: PgUrl, uid: int, gid: int, wait: float = PROMOTE_WAIT) -> None:
    """``pg_ctl start`` as the data directory's owner, then wait until recovery.signal is gone (promoted)."""
    log = pgdata / START_LOG
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTSTORE_")}
    if uid and os.geteuid() == 0:
        import pwd  # POSIX only (this module must import on Windows): the branch runs only as root there

        env["HOME"] = pwd.getpwuid(uid).pw_dir
    pg_ctl = pg_tool("pg_ctl", url.bindir())
    limit = float(url.options.get("wait", wait))
    done = subprocess.run([pg_ctl, "-D", str(pgdata), "-l", str(log), "-w", "-t", str(int(limit)), "start"], env=env,
                          cwd=str(pgdata), capture_output=True, text=True, check=False, **_demote(uid, gid))
    if done.returncode != 0:
        raise ConnectorError(f"pg_ctl start failed: {done.stderr.strip()[-1000:]} {_log_tail(log)}")
    started = time.monotonic()
    while (pgdata / "recovery.signal").exists():
        if not (pgdata / "postmaster.pid").exists():
            raise ConnectorError(f"the restored server stopped during recovery: {_log_tail(log)}")
        if time.monotonic() - started > limit:
            raise ConnectorError(f"the restored server has not promoted after {limit:.0f} s: {_log_tail(log)}")
        time.sleep(0.2)


def _log_tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    wanted = [line for line in lines if "FATAL" in line or "PANIC" in line] or lines[-5:]
    return " | ".join(wanted[-5:])


__all__ = ["PREFETCH", "execute_restore", "start_and_wait"]
