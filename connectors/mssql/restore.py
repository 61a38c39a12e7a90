"""Executing a SQL Server restore plan: fetch the .bak files into the stage folder, run the RESTOREs.

1. Refuse a target database that exists (ONLINE or RESTORING) unless ``--replace``.
2. Per database: fetch its files (size-checked, crash-safe) into ``STAGE/dtstore-mssql-<random>``
   (a folder the SQL Server service can read), run the plan's statements in order, every result set
   drained, progress from the server's messages; each file is removed after its RESTORE.
3. After ``RESTORE DATABASE … WITH RECOVERY`` the database must be ONLINE.

A server error (4305 log too recent, 3159 tail of the log, 1834 file in use, …) stops the restore
with a ConnectorError that carries the server's numbers; the database is left RESTORING, as SQL
Server leaves it (``RESTORE DATABASE [x] WITH RECOVERY`` or a new restore with ``--replace``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from dtstore.connectors.base import RepositoryView
from dtstore.connectors.fetch import StoredFile, fetch
from dtstore.connectors.mssql.plan import MssqlRestorePlan
from dtstore.connectors.mssql.server import MssqlError, Server, databases
from dtstore.connectors.mssql.url import MssqlUrl
from dtstore.connectors.stage import Stage
from dtstore.errors import ConnectorError
from dtstore.progress import ProgressCallback, ProgressEvent


def execute_restore(plan: MssqlRestorePlan, url: MssqlUrl, repo: RepositoryView, progress: ProgressCallback) -> None:
    wanted = {f.snapshot_id for r in plan.restores for f in r.files}
    snaps = {s.id: s for s in repo.snapshots() if s.id in wanted}
    with Server(url) as server:
        present = {d.name.lower(): d for d in databases(server)}
        if not plan.replace:
            taken = [f"{r.target} ({present[r.target.lower()].state})" for r in plan.restores
                     if r.target.lower() in present]
            if taken:
                raise ConnectorError(f"the target already has database(s) {', '.join(taken)}: restore with --as "
                                     "NEW_NAME, or with --replace to overwrite (a restore never overwrites by itself)")
        defaults = _default_paths(server)
        with Stage(url.stage_dir(), "mssql") as stage:
            with contextlib.suppress(OSError):
                os.chmod(stage.path, 0o2770)  # the SQL Server service reads here
            for r in plan.restores:
                statements = r.statements(str(stage.path), replace=plan.replace, sep=os.sep, defaults=defaults)
                for f, _ in statements:
                    if f is not None:
                        progress(ProgressEvent("restore", current=r.target, message=f"fetch {f.backup.kind} "
                                                                                    f"{f.short_id}"))
                        fetch(repo, StoredFile(snaps[f.snapshot_id], f.backup.path, f.backup.bytes),
                              stage.file(f.file_name))
                for f, sql in statements:
                    progress(ProgressEvent("restore", current=r.target, message=sql.split(" FROM ")[0]))
                    try:
                        server.execute(sql, progress=_reporter(progress, r.target))
                    except MssqlError as exc:
                        raise ConnectorError(f"restore of {r.source} as {r.target} failed; the database is left as "
                                             f"the server left it (RESTORING): {exc}") from None
                    if f is not None:
                        stage.file(f.file_name).unlink(missing_ok=True)
                state = {d.name.lower(): d for d in databases(server)}.get(r.target.lower())
                if state is None or state.state != "ONLINE":
                    raise ConnectorError(f"{r.target} is {state.state if state else 'missing'} after RESTORE WITH "
                                         "RECOVERY (the STOPAT may lie beyond the last log)")
    progress(ProgressEvent("restore", message="done"))


def _default_paths(server: Server) -> tuple[str, str]:
    """Where files without --move-to go: the target's default data and log folders (SQL Server 2012+)."""
    data, log = server.rows("SELECT SERVERPROPERTY('InstanceDefaultDataPath'), "
                            "SERVERPROPERTY('InstanceDefaultLogPath')")[0]
    if not data or not log:
        return "", ""  # only used when a MOVE needs them: the server then names the missing folder

    def folder(path: object) -> str:
        text = str(path)
        return text if text.endswith(("\\", "/")) else text + ("\\" if "\\" in text else "/")

    return folder(data), folder(log)


def _reporter(progress: ProgressCallback, name: str) -> Callable[[str], None]:
    def report(text: str) -> None:
        progress(ProgressEvent("restore", current=name, message=text))

    return report


__all__ = ["execute_restore"]
