"""The PostgreSQL connector object: what ``connectors/__init__.py`` loads for postgresql:// and postgres://."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dtstore.connectors.base import RepositoryView, SnapshotInfo
from dtstore.connectors.modes import check_mode
from dtstore.connectors.positions import PgLsn
from dtstore.connectors.postgresql.chain import KIND, links
from dtstore.connectors.postgresql.plan import PostgresRestorePlan, plan_restore
from dtstore.connectors.postgresql.restore import execute_restore
from dtstore.connectors.postgresql.source import PostgresSource, make
from dtstore.connectors.postgresql.url import SCHEMES, parse_url
from dtstore.connectors.request import RestoreRequest, stop_target
from dtstore.progress import ProgressCallback


class PostgresConnector:
    kind = KIND
    schemes = SCHEMES
    modes = ("full",)
    position = PgLsn

    def make_source(self, url: str, *, repo: RepositoryView | None, mode: str = "full",
                    stage_dir: Path | None = None) -> PostgresSource:
        check_mode(mode, self.modes, KIND)
        return make(parse_url(url), repo, mode)

    def plan(self, request: RestoreRequest, history: Sequence[SnapshotInfo]) -> PostgresRestorePlan:
        url = parse_url(request.url, restore=True)
        target = stop_target(request, position_kind="lsn", parse=PgLsn.parse, links=links(history))
        return plan_restore(history, target=target, options=request.options,
                            source_id=history[0].source_id if history else "",
                            target_display=f"postgresql:///?pgdata={url.pgdata}", allow_gap=request.allow_gap)

    def execute(self, plan: Any, request: RestoreRequest, repo: RepositoryView, progress: ProgressCallback) -> None:
        execute_restore(plan, parse_url(request.url, restore=True), repo, progress)


CONNECTOR = PostgresConnector()

__all__ = ["CONNECTOR", "PostgresConnector"]
