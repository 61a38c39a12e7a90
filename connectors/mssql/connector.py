"""The SQL Server connector object: what ``connectors/__init__.py`` loads for mssql://."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dtstore.connectors.base import RepositoryView, SnapshotInfo
from dtstore.connectors.modes import check_mode
from dtstore.connectors.mssql.chain import KIND, links
from dtstore.connectors.mssql.plan import MssqlRestorePlan, plan_restore
from dtstore.connectors.mssql.restore import execute_restore
from dtstore.connectors.mssql.server import Server, databases, probe
from dtstore.connectors.mssql.source import MssqlSource, select_databases
from dtstore.connectors.mssql.url import parse_url
from dtstore.connectors.positions import Lsn
from dtstore.connectors.request import RestoreRequest, stop_target
from dtstore.progress import ProgressCallback


class MssqlConnector:
    kind = KIND
    schemes = ("mssql",)
    modes = ("full", "diff", "log")
    position = Lsn

    def make_source(self, url: str, *, repo: RepositoryView | None, mode: str = "full",
                    stage_dir: Path | None = None) -> MssqlSource:
        check_mode(mode, self.modes, KIND)
        parsed = parse_url(url)
        if stage_dir is not None:  # --stage DIR overrides &stage=
            parsed = replace(parsed, stage=str(stage_dir))
        parsed.stage_dir()  # a usage error before connecting
        with Server(parsed) as server:
            info = probe(server)
            targets, skipped = select_databases(parsed, databases(server))
        return MssqlSource(parsed, info, targets, skipped, repo, mode)

    def plan(self, request: RestoreRequest, history: Sequence[SnapshotInfo]) -> MssqlRestorePlan:
        parsed = parse_url(request.url)
        parsed.stage_dir()  # the restore fetches its files there: a usage error even for --dry-run
        target = stop_target(request, position_kind="lsn", parse=Lsn.parse, links=links(history))
        scope = list(request.scope) if request.scope is not None else (list(parsed.databases) or None)
        return plan_restore(history, target=target, scope=scope, options=request.options,
                            source_id=history[0].source_id if history else "",
                            target_display=replace(parsed, databases=()).display(), stage=parsed.stage,
                            allow_gap=request.allow_gap)

    def execute(self, plan: Any, request: RestoreRequest, repo: RepositoryView, progress: ProgressCallback) -> None:
        execute_restore(plan, parse_url(request.url), repo, progress)


CONNECTOR = MssqlConnector()

__all__ = ["CONNECTOR", "MssqlConnector"]
