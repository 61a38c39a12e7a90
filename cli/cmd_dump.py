"""dtstore dump: write one stored file to standard output."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli._select import SNAPSHOT_HELP, add_filter_options, snapshot_filter
from dtstore.cli.output import Output


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("dump", parents=[common], help="write one stored file to standard output")
    p.add_argument("snapshot", metavar="SNAPSHOT", help=SNAPSHOT_HELP)
    p.add_argument("path", metavar="PATH", help="the stored file (the leading / is optional)")
    add_filter_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        snap = repo.get_snapshot(args.snapshot, snapshot_filter(args))
        repo.dump(snap, args.path, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    return 0
