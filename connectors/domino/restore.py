"""Executing a Domino restore plan: the files laid down, NOTES.INI kept aside, nothing overwritten.

* data-directory files go below the target (``domino:///restore/notesdata``);
* NOTES.INI goes next to them as ``notes.ini.dtstore-restored``: never over a live NOTES.INI;
* extents go to ``?translog=PATH`` (default ``<target>/dtstore-restored-translog``) for Domino's
  media recovery (``load restore``, or NSFRecoverDatabases asking for them); ``nlogctrl.lfh`` is
  never restored (db-backup-mechanics §5(a));
* a DAOS repository that lived outside the data directory goes to ``<target>/dtstore-restored-daos``.

A database that exists at the target while a server runs there (``pid.nbf``) is open on that
server: refused.  Any other existing file is refused unless ``?replace=1``.  Every file is written as
``NAME.partial``, fsynced and renamed (``fetch``), and checked against its recorded size and hash.
"""

from __future__ import annotations

import os
from pathlib import Path

from dtstore.connectors.base import RepositoryView
from dtstore.connectors.domino.files import is_database, running_pids
from dtstore.connectors.domino.plan import DominoRestorePlan, PlannedFile
from dtstore.connectors.domino.url import DominoUrl
from dtstore.connectors.fetch import StoredFile, fetch
from dtstore.errors import ConnectorError, IntegrityError
from dtstore.progress import ProgressCallback, ProgressEvent

INI_ASIDE = "notes.ini.dtstore-restored"
TRANSLOG_DIR = "dtstore-restored-translog"
DAOS_DIR = "dtstore-restored-daos"


def destination(url: DominoUrl, planned: PlannedFile) -> Path:
    target = Path(os.path.abspath(url.data))
    parts = planned.dest.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise IntegrityError(f"refusing the stored path {planned.dest!r}")
    if planned.area == "ini":
        return target / INI_ASIDE
    if planned.area == "translog":
        return (Path(os.path.abspath(url.translog)) if url.translog else target / TRANSLOG_DIR) / planned.dest
    if planned.area == "daos":
        return target.joinpath(DAOS_DIR, *parts)
    return target.joinpath(*parts)


def refuse_overwrites(plan: DominoRestorePlan, url: DominoUrl) -> None:
    target = Path(os.path.abspath(url.data))
    running = running_pids(target)
    for planned in plan.files:
        dest = destination(url, planned)
        if not dest.exists():
            continue
        if running and is_database(dest.name):
            raise ConnectorError(
                f"{planned.dest} exists in {target} and a Domino server is running there (pid.nbf: process "
                f"{running[0]}): the database is open on it; restore elsewhere or stop the server"
            )
        if not url.replace:
            raise ConnectorError(
                f"{dest} already exists; a restore never overwrites: restore to an empty directory, or add "
                "?replace=1 on a stopped server"
            )


def execute_restore(plan: DominoRestorePlan, url: DominoUrl, repo: RepositoryView, progress: ProgressCallback) -> None:
    refuse_overwrites(plan, url)
    snaps = {s.id: s for s in repo.snapshots() if s.id in set(plan.snapshot_ids)}
    damaged: list[str] = []
    for planned in plan.files:
        dest = destination(url, planned)
        dest.parent.mkdir(parents=True, exist_ok=True)
        progress(ProgressEvent("restore", current=planned.dest, message=planned.area))
        try:
            fetch(repo, StoredFile(snaps[planned.snapshot_id], planned.item, planned.size, planned.sha256), dest)
        except IntegrityError as exc:
            damaged.append(f"{planned.dest}: {exc}")
    progress(ProgressEvent("restore", message="done"))
    if damaged:
        raise IntegrityError(f"{len(damaged)} file(s) not restored (damaged), every other file was:\n"
                             + "\n".join(damaged), paths=[d.split(":")[0] for d in damaged])


__all__ = ["DAOS_DIR", "INI_ASIDE", "TRANSLOG_DIR", "destination", "execute_restore", "refuse_overwrites"]
