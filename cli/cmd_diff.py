"""dtstore diff: what changed between two snapshots."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli._select import SNAPSHOT_HELP, add_filter_options, snapshot_filter
from dtstore.cli.output import Output, human_size
from dtstore.snapshots.diff import DiffStats, diff_items

SIGNS = {"added": "+", "removed": "-", "modified": "M", "metadata": "U"}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("diff", parents=[common], help="show what changed between two snapshots",
                       description="Compare the items of snapshot A with those of snapshot B.  Each changed path "
                                   "is printed with +  (only in B), -  (only in A), M (type, content or link "
                                   "target changed) or U (only mode, owner or mtime changed), then the counts.")
    p.add_argument("first", metavar="A", help=f"the older snapshot: {SNAPSHOT_HELP}")
    p.add_argument("second", metavar="B", help="the newer snapshot (same forms)")
    add_filter_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    flt = snapshot_filter(args)
    stats = DiffStats()
    with open_repo(args) as repo:
        a = repo.get_snapshot(args.first, flt)
        b = repo.get_snapshot(args.second, flt)
        if not out.json:
            out.line(f"comparing snapshot {a.short_id} to {b.short_id}:")
        for change in diff_items(repo.list_items(a), repo.list_items(b), stats):
            if out.json:
                out.emit({"type": "change", **change.to_json()})
            else:
                what = f"  ({', '.join(change.fields)})" if change.fields else ""
                slash = "/" if change.type == "dir" else ""
                out.line(f"{SIGNS[change.kind]:2} /{change.name}{slash}{what}")
    if out.json:
        out.emit({"type": "summary", "first": a.id, "second": b.id, **stats.to_json()})
    else:
        out.line(f"{stats.added} added, {stats.removed} removed, {stats.modified} modified, "
                 f"{stats.metadata} with changed metadata only; files grew by {human_size(stats.bytes_added)} "
                 f"and shrank by {human_size(stats.bytes_removed)}")
    return 0
