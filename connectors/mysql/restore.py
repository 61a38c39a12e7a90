"""Restore: execute a plan against a target server.

1. Refuse if the target already has one of the databases with tables (never overwrite).
2. Pipe each database item into ``mariadb`` (up to ``jobs`` at once; they are independent, since
   views are set apart and foreign-key checks are off in each dump), then the views, then the
   users and grants the target does not have yet.
3. Fetch the planned binlogs into a private stage folder (size-checked) and replay them with ONE
   ``mariadb-binlog --start-position=<full's pos> [--stop-datetime|--stop-position] files… |
   mariadb --binary-mode`` (one filtered replay per database when only some are restored).
   ``--stop-datetime`` is read in the tool's local zone, so it is given in UTC with ``TZ=UTC``.

Damage costs only what it touches: a damaged database item leaves the others loaded (and replayed);
a damaged binlog stops the replay at the end of the binlog before it.  Either way the restore ends
with an IntegrityError (exit 16) that names what is missing and how far the rest got.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import re
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from dtstore.connectors import _proc
from dtstore.connectors.base import RepositoryView
from dtstore.connectors.fetch import StoredFile, fetch, run_parallel
from dtstore.connectors.mysql.plan import MysqlRestorePlan, PlannedBinlog
from dtstore.connectors.mysql.server import Server, account_key, list_accounts, list_databases, probe
from dtstore.connectors.mysql.url import MysqlUrl
from dtstore.connectors.stage import Stage
from dtstore.errors import ConnectorError, IntegrityError
from dtstore.progress import ProgressCallback, ProgressEvent


def execute_restore(plan: MysqlRestorePlan, url: MysqlUrl, repo: RepositoryView, progress: ProgressCallback) -> None:
    ids = {plan.full.id, *(log.id for log in plan.logs)}
    snaps = {s.id: s for s in repo.snapshots() if s.id in ids}
    with Server(url) as server:
        info = probe(server)
        _refuse_existing(server, [n for n, _ in plan.databases])
        existing = {account_key(*a) for a in list_accounts(server, info.flavor)}
    loader = _Loader(url, info.flavor, repo, snaps[plan.full.id], progress)
    run_parallel([partial(loader.load, "load", name, path) for name, path in plan.databases], url.jobs)
    for name, path in plan.views:  # after every database: a view may use another database's tables
        if name not in loader.damaged:
            loader.load("views", name, path)
    if plan.grants_path:
        loader.grants(plan.grants_path, existing)
    replayed = _replay(plan, loader, repo, snaps, progress) if plan.binlogs else None
    progress(ProgressEvent("restore", message="done"))
    _report_damage(plan, loader.damaged, replayed)


class _Loader:
    """Pipes stored SQL items into the client; a damaged item is recorded, the others go on."""

    def __init__(self, url: MysqlUrl, flavor: str, repo: RepositoryView, full: Any, progress: ProgressCallback) -> None:
        self.url, self.repo, self.full, self.progress = url, repo, full, progress
        self.client = [client_tool(flavor), *url.client_args()]
        self.secrets = [url.password() or ""]
        self.damaged: dict[str, str] = {}

    def feed(self, stream: Any, label: str) -> None:
        _proc.feed(self.client, stream, env=self.url.env(), secrets=self.secrets, label=label)

    def load(self, step: str, name: str, path: str) -> None:
        self.progress(ProgressEvent("restore", current=name, message=step))
        try:
            with contextlib.closing(self.repo.open_item(self.full, path)) as stream:
                self.feed(stream, f"loading {name} ({step})")
        except IntegrityError as exc:
            self.damaged[name] = str(exc)

    def grants(self, path: str, existing: set[str]) -> None:
        self.progress(ProgressEvent("restore", message="grants"))
        try:
            with contextlib.closing(self.repo.open_item(self.full, path)) as stream:
                sql = select_grant_blocks(stream.read().decode(), existing)
        except IntegrityError as exc:
            self.damaged["users and grants"] = str(exc)
            return
        self.feed(io.BytesIO(sql.encode()), "loading grants")


def _replay(plan: MysqlRestorePlan, loader: _Loader, repo: RepositoryView, snaps: dict[str, Any],
            progress: ProgressCallback) -> PlannedBinlog | None:
    """Fetch and replay the binlogs; return the first damaged one (replay stopped before it), if any."""
    with Stage(Path(tempfile.gettempdir()), "mysql-replay") as stage:
        files, bad = [], None
        for binlog in plan.binlogs:
            progress(ProgressEvent("restore", current=binlog.name, message="fetch"))
            item = StoredFile(snaps[binlog.snapshot_id], binlog.path, binlog.size)
            try:
                files.append(fetch(repo, item, stage.file(binlog.name)))
            except IntegrityError:
                bad = binlog
                break
        targets = _replay_targets(plan, set(loader.damaged))
        if not files or targets == []:
            return bad
        replay_plan = replace(plan, replay_databases=targets)
        for argv in replay_commands(replay_plan, files, stop=bad is None and plan.stop.snapshot is None):
            progress(ProgressEvent("restore", message="replay " + " ".join(argv[1 : -len(files)])))
            _proc.pipe(argv, [*loader.client, "--binary-mode"], producer_env=_proc.tool_env(TZ="UTC"),
                       consumer_env=loader.url.env(), secrets=loader.secrets)
    return bad


def _replay_targets(plan: MysqlRestorePlan, damaged: set[str]) -> list[str] | None:
    """The databases to replay (None: all of them): never one whose dump could not be loaded."""
    if plan.replay_databases is None and not damaged:
        return None
    wanted = plan.replay_databases if plan.replay_databases is not None else [n for n, _ in plan.databases]
    return [name for name in wanted if name not in damaged]


def _report_damage(plan: MysqlRestorePlan, damaged: dict[str, str], bad_binlog: PlannedBinlog | None) -> None:
    if not damaged and bad_binlog is None:
        return
    lines = []
    if damaged:
        lines.append(f"not restored (damaged in snapshot {plan.full.short_id}): {', '.join(sorted(damaged))}")
        lines.extend(f"  {name}: {why}" for name, why in sorted(damaged.items()))
    if bad_binlog is not None:
        names = [b.name for b in plan.binlogs]
        before = names[names.index(bad_binlog.name) - 1] if names.index(bad_binlog.name) else None
        reached = f"the end of {before}" if before else "the full itself"
        lines.append(f"binlog {bad_binlog.name} (snapshot {bad_binlog.snapshot_id[:8]}) is damaged: replay stopped "
                     f"at {reached}; everything else was restored")
    raise IntegrityError("\n".join(lines))


def client_tool(flavor: str) -> str:
    return _proc.find_tool("mariadb", "mysql") if flavor == "mariadb" else _proc.find_tool("mysql", "mariadb")


def _refuse_existing(server: Server, databases: Sequence[str]) -> None:
    present = set(list_databases(server))
    for name in databases:
        if name in present and server.value(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (name,)
        ):
            raise ConnectorError(
                f"the target already has database {name!r} with tables; drop it (or restore to "
                "another server) first — a restore never overwrites existing data"
            )


def select_grant_blocks(sql: str, existing: set[str]) -> str:
    """The blocks of ``mysql/_grants.sql`` for accounts the target does not have yet."""
    keep = []
    for block in re.split(r"(?m)^(?=-- account: )", sql):
        if block.startswith("-- account: ") and block.splitlines()[0][len("-- account: ") :] not in existing:
            keep.append(block)
    return "".join(keep)


def replay_commands(plan: MysqlRestorePlan, files: Sequence[Path], *, stop: bool = True) -> list[list[str]]:
    """ONE mariadb-binlog call over all files (one per database when only some databases are restored).

    ``--start-position`` applies to the first file, ``--stop-position`` to the last; ``--stop-datetime``
    is read in the tool's local time zone, so it is given in UTC and the tool runs with ``TZ=UTC``.
    ``stop=False`` replays the files to their end (the replay stops early before a damaged binlog).
    """
    if plan.start is None:
        raise ConnectorError("the plan has no start position to replay from")
    tool = (
        _proc.find_tool("mariadb-binlog", "mysqlbinlog") if plan.flavor == "mariadb" else _proc.find_tool("mysqlbinlog")
    )
    argv = [tool, f"--start-position={plan.start.pos}"]
    if stop and plan.stop.time is not None:
        argv.append(f"--stop-datetime={plan.stop.time.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}")
    elif stop and plan.stop.position is not None:
        argv.append(f"--stop-position={plan.stop.position.pos}")
    paths = [str(f) for f in files]
    if plan.replay_databases is None:
        return [[*argv, *paths]]
    return [[*argv, f"--database={name}", *paths] for name in plan.replay_databases]


__all__ = ["client_tool", "execute_restore", "replay_commands", "select_grant_blocks"]
