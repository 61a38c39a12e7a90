"""dtstore restore: a snapshot (or part of it) into a directory, or a database to a server."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli.output import Output
from dtstore.errors import UsageError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("restore", parents=[common], help="restore files or a database",
                       description="With --target: files into a directory.  With --to URL: replay a "
                                   "database to a server, optionally to a point in time.")
    p.add_argument("snapshot", nargs="?", metavar="SNAPSHOT", help="ID, ID prefix or 'latest'")
    p.add_argument("--target", metavar="DIR")
    p.add_argument("--include", action="append", default=[], metavar="PATH")
    p.add_argument("--to", metavar="URL", help="restore into this database server")
    p.add_argument("--until", metavar="TIME", help="ISO 8601; naive = local time of this machine")
    p.add_argument("--until-position", metavar="FILE:POS")
    p.add_argument("--databases", metavar="A,B")
    p.add_argument("--source", metavar="ID", help="the source ID when the repository holds several")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    if args.to:
        return _restore_to_server(args, out)
    if not args.target or not args.snapshot:
        raise UsageError("restore needs SNAPSHOT and --target DIR (or --to URL for a database)")
    with open_repo(args) as repo:
        snap = repo.get_snapshot(args.snapshot)
        with out.progress("restore") as progress:
            repo.restore(snap, args.target, include=args.include, progress=progress)
    if out.json:
        out.emit({"type": "summary", "snapshot_id": snap.id, "target": args.target})
    else:
        out.line(f"restored snapshot {snap.short_id} to {args.target}")
    return 0


def _restore_to_server(args: argparse.Namespace, out: Output) -> int:
    from dtstore.connectors import restore_to

    if args.target:
        raise UsageError("--to and --target exclude each other")
    databases = [d for d in (args.databases or "").split(",") if d] or None
    with open_repo(args) as repo:
        source_id = args.source
        if args.snapshot and not source_id:
            source_id = repo.get_snapshot(args.snapshot).source_id
        plan = restore_to(args.to, repo=repo, until=args.until, until_position=args.until_position,
                          databases=databases, source_id=source_id, dry_run=args.dry_run,
                          progress=(out.emit if out.json else None))
    if out.json:
        out.emit({"type": "summary", "dry_run": args.dry_run, "plan": plan.to_json()})
    else:
        for line in plan.describe():
            out.line(line)
        out.line("dry run: nothing was restored" if args.dry_run else "restore complete")
    return 0
