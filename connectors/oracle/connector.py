"""The Oracle connector object: what ``connectors/__init__.py`` loads for oracle://."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dtstore.connectors.base import RepositoryView, SnapshotInfo
from dtstore.connectors.modes import check_mode
from dtstore.connectors.oracle.chain import KIND, links
from dtstore.connectors.oracle.plan import OracleRestorePlan, plan_restore
from dtstore.connectors.oracle.restore import execute_restore
from dtstore.connectors.oracle.source import OracleSource, make
from dtstore.connectors.oracle.url import SCHEMES, parse_url
from dtstore.connectors.positions import Scn
from dtstore.connectors.request import RestoreRequest, stop_target
from dtstore.progress import ProgressCallback


class OracleConnector:
    kind = KIND
    schemes = SCHEMES
    modes = ("full", "log")
    position = Scn

    def make_source(self, url: str, *, repo: RepositoryView | None, mode: str = "full",
                    stage_dir: Path | None = None) -> OracleSource:
        check_mode(mode, self.modes, KIND)
        return make(parse_url(url), repo, mode)

    def plan(self, request: RestoreRequest, history: Sequence[SnapshotInfo]) -> OracleRestorePlan:
        url = parse_url(request.url)
        target = stop_target(request, position_kind="scn", parse=Scn.parse, links=links(history))
        options = {**({"target_dir": url.target_dir} if url.target_dir else {}), **request.options}
        return plan_restore(history, target=target, options=options,
                            source_id=history[0].source_id if history else "", target_display=url.display(),
                            stage=url.stage, allow_gap=request.allow_gap)

    def execute(self, plan: Any, request: RestoreRequest, repo: RepositoryView, progress: ProgressCallback) -> None:
        execute_restore(plan, parse_url(request.url), repo, progress)


CONNECTOR = OracleConnector()

__all__ = ["CONNECTOR", "OracleConnector"]
