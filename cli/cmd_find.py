"""dtstore find: items whose name or path matches a pattern, across snapshots."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli._select import add_filter_options, snapshot_filter
from dtstore.cli.output import Output
from dtstore.snapshots import select
from dtstore.snapshots.find import compile_patterns, find_items


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("find", parents=[common], help="find files in snapshots by name or path pattern",
                       description="PATTERN without '/' is matched against the item's name, with '/' against "
                                   "its whole path (globs as for --exclude, '**' for any depth).  Every snapshot "
                                   "that passes the filters is searched, oldest first, unless --snapshot is given.")
    p.add_argument("patterns", nargs="+", metavar="PATTERN", help="glob pattern (matches if any PATTERN does)")
    p.add_argument("--snapshot", "-s", action="append", default=[], metavar="SNAPSHOT",
                   help="search only this snapshot (ID, prefix or 'latest'; repeatable)")
    p.add_argument("--ignore-case", "-i", action="store_true", help="match case-insensitively")
    add_filter_options(p, what="the snapshots searched")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    patterns = compile_patterns(args.patterns, ignore_case=args.ignore_case)
    flt = snapshot_filter(args)
    matches = searched = 0
    with open_repo(args) as repo:
        if args.snapshot:
            snaps = [repo.get_snapshot(ref, flt) for ref in args.snapshot]
        else:
            snaps = select.select(repo.snapshots(), flt)
        for snap in snaps:
            searched += 1
            header = False
            for item in find_items(repo.list_items(snap), patterns):
                matches += 1
                when = dt.datetime.fromtimestamp(item.mtime_ns / 1e9, dt.UTC)
                if out.json:
                    out.emit({"type": "match", "snapshot_id": snap.id, "path": "/" + item.name, "kind": item.type,
                              "size": item.size, "mtime": when.isoformat().replace("+00:00", "Z")})
                    continue
                if not header:
                    out.line(f"snapshot {snap.short_id} of {out.when(snap.time)} ({snap.host}):")
                    header = True
                out.line(f"  {item.size:>14} {out.when(when)} /{item.name}{'/' if item.type == 'dir' else ''}")
    if out.json:
        out.emit({"type": "summary", "matches": matches, "snapshots": searched})
    else:
        out.line(f"{matches} match(es) in {searched} snapshot(s)")
    return 0
