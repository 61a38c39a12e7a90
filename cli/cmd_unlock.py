"""dtstore unlock: remove stale locks (dead processes, no heartbeat), or all with --remove-all."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli.output import Output


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("unlock", parents=[common], help="remove stale locks")
    p.add_argument("--remove-all", action="store_true", help="also remove locks that look alive")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        removed = repo.unlock(all_locks=args.remove_all)
    if out.json:
        out.emit({"type": "summary", "removed": [lock.lock_id for lock in removed]})
    else:
        for lock in removed:
            out.line(f"removed {lock.describe()}")
        out.line(f"{len(removed)} lock(s) removed")
    return 0
