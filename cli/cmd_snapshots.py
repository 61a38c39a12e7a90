"""dtstore snapshots: list snapshots."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli.output import Output, human_size


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("snapshots", parents=[common], help="list snapshots")
    p.add_argument("--host", metavar="H", help="only this host's snapshots")
    p.add_argument("--tag", action="append", default=[], metavar="T", help="only snapshots with tag T")
    p.add_argument("--source", metavar="ID", help="only snapshots of this source ID")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        snaps = [s for s in repo.snapshots()
                 if (not args.host or s.host == args.host)
                 and all(t in s.tags for t in args.tag)
                 and (not args.source or s.source_id == args.source)]
    if out.json:
        for snap in snaps:
            out.emit({"type": "snapshot", **snap.to_json()})
        return 0
    out.line(f"{'ID':8}  {'Time':19}  {'Host':12}  {'Source':28}  {'Size':>10}  {'Tags':12}  Paths")
    for s in snaps:
        when = s.time.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        size = human_size(s.summary.get("bytes_total", 0))
        out.line(f"{s.short_id:8}  {when:19}  {s.host[:12]:12}  {s.source_id[:28]:28}  {size:>10}  "
                 f"{','.join(s.tags)[:12]:12}  {' '.join(s.paths)}")
    out.line(f"{len(snaps)} snapshot(s)")
    return 0
