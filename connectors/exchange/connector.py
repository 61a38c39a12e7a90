"""The Exchange connector object: what ``connectors/__init__.py`` loads for ``exchange://``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dtstore.connectors.base import RepositoryView, SnapshotInfo
from dtstore.connectors.chains import Target, by_stream
from dtstore.connectors.exchange.chain import KIND, links
from dtstore.connectors.exchange.ese import HEADER, parse_database_header, windows_aware
from dtstore.connectors.exchange.plan import ExchangeRestorePlan, pick_database, plan_restore
from dtstore.connectors.exchange.restore import execute_restore
from dtstore.connectors.exchange.server import discover
from dtstore.connectors.exchange.source import ExchangeSource, file_target, server_targets
from dtstore.connectors.exchange.url import parse_url
from dtstore.connectors.modes import check_mode
from dtstore.connectors.positions import ExchangeGeneration
from dtstore.connectors.request import RestoreRequest, stop_target
from dtstore.connectors.runner import LocalRunner
from dtstore.errors import ConnectorError
from dtstore.progress import ProgressCallback, ProgressEvent


class ExchangeConnector:
    kind = KIND
    schemes = ("exchange",)
    modes = ("full", "log")
    position = ExchangeGeneration

    def make_source(self, url: str, *, repo: RepositoryView | None, mode: str = "full",
                    stage_dir: Path | None = None) -> ExchangeSource:
        check_mode(mode, self.modes, KIND)
        parsed = parse_url(url)
        runner = LocalRunner()
        if parsed.file_mode:
            target = file_target(parsed)
            edb = windows_aware(target.edb)
            with runner.read_file(edb) as f:
                header = parse_database_header(bytes(f.read(HEADER)), str(edb))
            if not runner.exists(target.log_folder):
                raise ConnectorError(f"the log folder {target.log_folder} does not exist")
            return ExchangeSource(parsed, runner, [target], source_id=f"exchange:file/{header.db_signature}",
                                  discovery=None, repo=repo, mode=mode, stage_dir=stage_dir)
        found = discover(runner)
        targets = server_targets(found, parsed.databases)
        scope = "/" + ",".join(sorted(t.name.lower() for t in targets)) if parsed.databases else ""
        return ExchangeSource(parsed, runner, targets, source_id=f"exchange:{found.server.lower()}{scope}",
                              discovery=found, repo=repo, mode=mode, stage_dir=stage_dir)

    def plan(self, request: RestoreRequest, history: Sequence[SnapshotInfo]) -> ExchangeRestorePlan:
        parsed = parse_url(request.url, restore=True)
        database = pick_database(history, request.scope, None)
        stream = by_stream(links(history)).get(database.lower(), [])
        target = stop_target(request, position_kind="gen", parse=ExchangeGeneration.parse, links=stream)
        if target.position is not None and not target.position.signature and stream:
            target = Target(position=ExchangeGeneration(stream[-1].end.signature, target.position.generation))
        return plan_restore(
            history, target=target, database=database, source_id=history[0].source_id if history else "",
            target_display=parsed.display(), edb_dest=parsed.edb, logs_dest=parsed.logs,
            allow_gap=request.allow_gap, recovery_db=parsed.databases[0] if parsed.recovery_db else None,
            recover=parsed.recover)

    def execute(self, plan: Any, request: RestoreRequest, repo: RepositoryView, progress: ProgressCallback) -> None:
        for note in execute_restore(plan, repo, progress):
            progress(ProgressEvent("restore", current=plan.database, message=note))


CONNECTOR = ExchangeConnector()

__all__ = ["CONNECTOR", "ExchangeConnector"]
