"""dtstore snapshots: list snapshots."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli._select import add_filter_options, snapshot_filter
from dtstore.cli.output import Output, fit_table, human_size
from dtstore.errors import DtstoreError
from dtstore.snapshots import select


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("snapshots", parents=[common], help="list snapshots",
                       description="List the snapshots that pass the filters, oldest first, with the kind of each "
                                   "database snapshot (full, diff, log) and, for a log, the restore window it "
                                   "extends.  On a terminal the table fits its width: long cells end in '…' "
                                   "(--json has them whole).")
    add_filter_options(p, what="list")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    from dtstore.connectors.points import SnapshotPoint, snapshot_points

    with open_repo(args) as repo:
        every = repo.snapshots()
    snaps = select.select(every, snapshot_filter(args))
    try:
        points = snapshot_points(every)  # chains are judged on the whole history, whatever is listed
    except DtstoreError as exc:
        out.info(f"cannot tell the kinds of database snapshots: {exc}")
        points = {}
    if out.json:
        for snap in snaps:
            point = points.get(snap.id)
            out.emit({"type": "snapshot", **snap.to_json(),
                      **(point.to_json() if point else {"kind": None, "restore_window": None})})
        return 0

    def kind(point: SnapshotPoint | None) -> str:
        """full, diff, log → the newest moment the log makes restorable; ``-``: not a database snapshot"""
        if point is None:
            return "-"
        if point.kind != "log":
            return point.kind
        return f"log → {out.when(point.window[1])}" if point.window else "log (unreachable)"

    headers = ["ID", "Time", "Host", "Kind", "Source", "Size", "Tags", "Paths"]
    rows = [[s.short_id, out.when(s.time), s.host, kind(points.get(s.id)), s.source_id,
             human_size(s.summary.get("bytes_total", 0)), ",".join(s.tags), " ".join(s.paths)] for s in snaps]
    for line in fit_table(headers, rows, width=out.width(), flexible={2, 3, 4, 6, 7}, right={5}):
        out.line(line)
    out.line(f"{len(snaps)} snapshot(s)")
    return 0
