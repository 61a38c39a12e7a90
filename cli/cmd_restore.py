"""dtstore restore: a snapshot (or part of it) into a directory, or a database to a server."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli._select import SNAPSHOT_HELP, add_filter_options, snapshot_filter
from dtstore.cli.output import Output
from dtstore.errors import IntegrityError, UsageError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("restore", parents=[common], help="restore files or a database",
                       description="With --target: files into a directory.  With --to URL: replay a "
                                   "database to a server, optionally to a point in time.")
    p.add_argument("snapshot", nargs="?", metavar="SNAPSHOT", help=SNAPSHOT_HELP)
    p.add_argument("--target", metavar="DIR", help="restore files below DIR (created if missing)")
    p.add_argument("--include", action="append", default=[], metavar="PATH",
                   help="with --target: only this item and what is below it (repeatable)")
    p.add_argument("--to", metavar="URL", help="restore into this database server")
    p.add_argument("--until", metavar="TIME", help="ISO 8601; naive = local time of this machine")
    p.add_argument("--until-position", metavar="KIND:POS",
                   help="with --to: stop at this log position (mysql: FILE:POS, e.g. mysql-bin.000042:1337; "
                        "mssql: lsn:N)")
    p.add_argument("--until-name", metavar="NAME",
                   help="with --to postgresql://: stop at this restore point (pg_create_restore_point)")
    p.add_argument("--until-xid", metavar="XID", help="with --to postgresql://: stop after this transaction id")
    p.add_argument("--timeline", metavar="T", help="with --to postgresql://: recover along this timeline")
    p.add_argument("--target-dir", metavar="DIR",
                   help="with --to oracle://: lay the database's files out below DIR on its host (paths converted)")
    p.add_argument("--as", dest="as_name", metavar="NEW_NAME",
                   help="with --to mssql://: restore the database (one, see --databases) under this name")
    p.add_argument("--move-to", metavar="DIR",
                   help="with --to mssql://: put the restored database's files in DIR (a folder on the server)")
    p.add_argument("--replace", action="store_true",
                   help="with --to mssql://: overwrite an existing database of that name (RESTORE … WITH REPLACE)")
    p.add_argument("--allow-gap", action="store_true",
                   help="with --to: if later snapshots cannot be reached, restore to the last reachable point")
    p.add_argument("--databases", metavar="A,B", help="restore only these databases")
    p.add_argument("--source", metavar="ID",
                   help="with --to: the source (ID or unique prefix); with --target: 'latest' among its snapshots")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    add_filter_options(p, source=False)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    if args.to:
        return _restore_to_server(args, out)
    if not args.target or not args.snapshot:
        raise UsageError("restore needs SNAPSHOT and --target DIR (or --to URL for a database)")
    _refuse_server_options(args)
    with open_repo(args) as repo:
        snap = repo.get_snapshot(args.snapshot, snapshot_filter(args))
        with out.progress("restore") as progress:
            try:
                repo.restore(snap, args.target, include=args.include, progress=progress)
            except IntegrityError as exc:
                for path in exc.paths:  # every file the damage cost; everything else was restored
                    out.warning(path, "not restored: its data is damaged or missing")
                raise
    if out.json:
        out.emit({"type": "summary", "snapshot_id": snap.id, "target": args.target})
    else:
        out.line(f"restored snapshot {snap.short_id} to {args.target}")
    return 0


def _restore_to_server(args: argparse.Namespace, out: Output) -> int:
    from dtstore.connectors import RestoreRequest, restore_to

    if args.target:
        raise UsageError("--to and --target exclude each other")
    scope = tuple(d for d in (args.databases or "").split(",") if d) if args.databases is not None else None
    with open_repo(args) as repo:
        snapshot_id = repo.get_snapshot(args.snapshot).id if args.snapshot else None
        request = RestoreRequest(args.to, until=args.until, until_position=args.until_position, scope=scope,
                                 source_id=args.source, snapshot_id=snapshot_id, dry_run=args.dry_run,
                                 allow_gap=args.allow_gap, options=_connector_options(args))
        with out.progress("restore") as progress:
            plan = restore_to(request, repo=repo, progress=progress)
    if out.json:
        out.emit({"type": "summary", "dry_run": args.dry_run, "plan": plan.to_json()})
    else:
        for line in plan.describe():
            out.line(line)
        out.line("dry run: nothing was restored" if args.dry_run else "restore complete")
    return 0


def _connector_options(args: argparse.Namespace) -> dict[str, str]:
    """Options only some connectors read (RestoreRequest.options)."""
    given = {"until_name": args.until_name, "until_xid": args.until_xid, "timeline": args.timeline,
             "target_dir": args.target_dir, "as": args.as_name, "move_to": args.move_to,
             "replace": "1" if args.replace else None}
    return {key: str(value) for key, value in given.items() if value is not None}


def _refuse_server_options(args: argparse.Namespace) -> None:
    """Options that only make sense with --to are usage errors with --target (never silently ignored)."""
    given = [flag for flag, value in (("--until", args.until), ("--until-position", args.until_position),
                                      ("--databases", args.databases), ("--until-name", args.until_name),
                                      ("--until-xid", args.until_xid), ("--timeline", args.timeline),
                                      ("--target-dir", args.target_dir), ("--as", args.as_name),
                                      ("--move-to", args.move_to), ("--replace", args.replace or None),
                                      ("--allow-gap", args.allow_gap or None),
                                      ("--dry-run", args.dry_run or None)) if value is not None]
    if given:
        raise UsageError(f"{', '.join(given)} only apply with --to URL (a database restore), not with --target")
