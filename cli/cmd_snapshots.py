"""dtstore snapshots: list snapshots."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli._select import add_filter_options, snapshot_filter
from dtstore.cli.output import Output, fit_table, human_size
from dtstore.snapshots import select


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("snapshots", parents=[common], help="list snapshots",
                       description="List the snapshots that pass the filters, oldest first.  On a terminal the "
                                   "table fits its width: long cells end in '…' (--json has them whole).")
    add_filter_options(p, what="list")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        snaps = select.select(repo.snapshots(), snapshot_filter(args))
    if out.json:
        for snap in snaps:
            out.emit({"type": "snapshot", **snap.to_json()})
        return 0
    headers = ["ID", "Time", "Host", "Source", "Size", "Tags", "Paths"]
    rows = [[s.short_id, out.when(s.time), s.host, s.source_id, human_size(s.summary.get("bytes_total", 0)),
             ",".join(s.tags), " ".join(s.paths)] for s in snaps]
    for line in fit_table(headers, rows, width=out.width(), flexible={2, 3, 5, 6}, right={4}):
        out.line(line)
    out.line(f"{len(snaps)} snapshot(s)")
    return 0
