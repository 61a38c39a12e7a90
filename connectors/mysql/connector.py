"""The MySQL/MariaDB connector object: what ``connectors/__init__.py`` loads for mysql:// and mariadb://."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dtstore.connectors.base import RepositoryView, SnapshotInfo
from dtstore.connectors.modes import check_mode
from dtstore.connectors.mysql.chain import KIND, links
from dtstore.connectors.mysql.plan import MysqlRestorePlan, plan_restore
from dtstore.connectors.mysql.restore import execute_restore
from dtstore.connectors.mysql.server import Server, list_databases, probe
from dtstore.connectors.mysql.source import MysqlSource
from dtstore.connectors.mysql.url import parse_url
from dtstore.connectors.positions import BinlogPosition
from dtstore.connectors.request import RestoreRequest, stop_target
from dtstore.errors import ConnectorError
from dtstore.progress import ProgressCallback


class MysqlConnector:
    kind = KIND
    schemes = ("mysql", "mariadb")
    modes = ("full", "log")
    position = BinlogPosition

    def make_source(self, url: str, *, repo: RepositoryView | None, mode: str = "full",
                    stage_dir: Path | None = None) -> MysqlSource:
        check_mode(mode, self.modes, KIND)
        parsed = parse_url(url)
        with Server(parsed) as server:
            info = probe(server)
            present = list_databases(server)
        missing = [d for d in parsed.databases if d not in present]
        if missing:
            raise ConnectorError(f"database(s) {', '.join(missing)} do not exist on {parsed.display()}")
        databases = sorted(parsed.databases) if parsed.databases else present
        return MysqlSource(parsed, info, databases, repo, mode, stage_dir)

    def plan(self, request: RestoreRequest, history: Sequence[SnapshotInfo]) -> MysqlRestorePlan:
        parsed = parse_url(request.url)
        target = stop_target(request, position_kind="binlog", parse=BinlogPosition.parse, links=links(history))
        wanted = list(request.scope) if request.scope is not None else (list(parsed.databases) or None)
        return plan_restore(
            history,
            target=target,
            databases=wanted,
            source_id=history[0].source_id if history else "",
            target_display=replace(parsed, databases=()).display(),
            allow_gap=request.allow_gap,
        )

    def execute(self, plan: Any, request: RestoreRequest, repo: RepositoryView, progress: ProgressCallback) -> None:
        execute_restore(plan, parse_url(request.url), repo, progress)


CONNECTOR = MysqlConnector()

__all__ = ["CONNECTOR", "MysqlConnector"]
