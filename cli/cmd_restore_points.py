"""dtstore restore-points: for every connector source, the windows it can be restored to, and the gaps."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli.output import Output
from dtstore.errors import UsageError

EXAMPLES = """examples:
  dtstore restore-points                      every database source's restorable windows
  dtstore restore-points --source mysql:3f9c  one source (an ID or a unique prefix)
  dtstore restore-points --json               one JSON object per source, then a summary"""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("restore-points", parents=[common], help="show when each database can be restored to",
                       description="For every connector source: its restorable windows (from, to), the full "
                                   "snapshots they start from, and the gaps with their reasons.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", metavar="ID", help="only the source with this ID (or unique prefix)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    from dtstore.connectors import restore_points

    with open_repo(args) as repo:
        sources = restore_points(repo.snapshots(), source_id=args.source)
    if args.source and not sources:
        raise UsageError(f"no connector source with ID {args.source!r} in this repository")
    if out.json:
        for source in sources:
            out.emit({"type": "source", **source.to_json()})
        out.emit({"type": "summary", "sources": len(sources)})
    else:
        for source in sources:
            for line in source.describe(when=out.when):
                out.line(line)
        if not sources:
            out.line("no connector sources in this repository")
    return 0
