"""The Domino connector object: what ``connectors/__init__.py`` loads for domino://."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dtstore.connectors.base import RepositoryView, SnapshotInfo
from dtstore.connectors.domino.chain import KIND, DominoPoint, links
from dtstore.connectors.domino.plan import DominoRestorePlan, plan_restore
from dtstore.connectors.domino.restore import execute_restore
from dtstore.connectors.domino.source import DominoSource
from dtstore.connectors.domino.url import parse_url
from dtstore.connectors.modes import check_mode
from dtstore.connectors.request import RestoreRequest, stop_target
from dtstore.progress import ProgressCallback


class DominoConnector:
    kind = KIND
    schemes = ("domino",)
    modes = ("full", "log")
    position = DominoPoint

    def make_source(self, url: str, *, repo: RepositoryView | None, mode: str = "full",
                    stage_dir: Path | None = None) -> DominoSource:
        check_mode(mode, self.modes, KIND)
        return DominoSource(parse_url(url), repo, mode)

    def plan(self, request: RestoreRequest, history: Sequence[SnapshotInfo]) -> DominoRestorePlan:
        parsed = parse_url(request.url)
        target = stop_target(request, position_kind="extent", parse=DominoPoint.parse, links=links(history))
        return plan_restore(history, target=target, databases=list(request.scope) if request.scope else None,
                            source_id=history[0].source_id if history else "", target_display=parsed.display(),
                            allow_gap=request.allow_gap)

    def execute(self, plan: Any, request: RestoreRequest, repo: RepositoryView, progress: ProgressCallback) -> None:
        execute_restore(plan, parse_url(request.url), repo, progress)


CONNECTOR = DominoConnector()

__all__ = ["CONNECTOR", "DominoConnector"]
