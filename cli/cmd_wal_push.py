"""dtstore wal-push: PostgreSQL's archive_command (``dtstore wal-push %p``), idempotent, via a persistent pusher."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from dtstore.cli._repo import open_repo, repo_url
from dtstore.cli.output import Output
from dtstore.errors import ConnectorError, UsageError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("wal-push", parents=[common], help="archive one PostgreSQL WAL file (archive_command)",
                       description="Store a WAL file (segment, .history, .backup or .partial) in the repository; "
                                   "exit 0 only once it is durable.  The same file again is a success; another "
                                   "file under an archived name is refused.")
    p.add_argument("path", nargs="?", metavar="PATH", help="the file to archive (%%p: pg_wal/NAME)")
    p.add_argument("--spool", metavar="DIR",
                   help="the pusher's folder (socket, lock, log); default $DTSTORE_WAL_SPOOL or a private "
                        "folder under /tmp per data directory and repository")
    p.add_argument("--no-daemon", action="store_true",
                   help="push in this process (opens the repository each time: slow, for tests and debugging)")
    p.add_argument("--batch", type=int, default=64, metavar="N",
                   help="at most N ready WAL files per snapshot (look-ahead in archive_status; default 64)")
    p.add_argument("--idle-exit", type=float, default=600.0, metavar="SECONDS",
                   help="a pusher exits after this long without a request (default 600)")
    p.add_argument("--consolidate", type=int, default=32, metavar="N",
                   help="once N small WAL snapshots exist, the pusher replaces them by one (0: never; default 32)")
    p.add_argument("--serve", action="store_true", help="run the pusher itself (started by wal-push)")
    p.set_defaults(run=run)


def _spool(args: argparse.Namespace, pgdata: Path) -> Path:
    from dtstore.connectors.postgresql.pushd import default_spool

    given = args.spool or os.environ.get("DTSTORE_WAL_SPOOL")
    return Path(given) if given else default_spool(pgdata, repo_url(args))


def run(args: argparse.Namespace, out: Output) -> int:
    from dtstore.connectors.postgresql import pushd

    if args.serve:
        if not args.spool:
            raise UsageError("wal-push --serve needs --spool DIR")
        def log(text: str) -> None:
            print(f"[{os.getpid()}] {text}", file=sys.stderr, flush=True)

        return pushd.serve(Path(args.spool), lambda: open_repo(args), batch=args.batch, idle_exit=args.idle_exit,
                           consolidate=args.consolidate, log=log)
    if not args.path:
        raise UsageError("wal-push needs PATH (in archive_command: dtstore wal-push %p)")
    path = Path(args.path)
    absolute = path if path.is_absolute() else Path.cwd() / path
    if not absolute.is_file():
        raise UsageError(f"{args.path} is not a file")
    pgdata = pushd.pgdata_of(absolute)
    if args.no_daemon:
        with open_repo(args) as repo:
            message = pushd.Pusher(repo, batch=1).push(absolute, pgdata)
    else:
        spool = _spool(args, pgdata)
        argv = [sys.executable, "-m", "dtstore.cli", "wal-push", "--serve", "--spool", str(spool),
                "--batch", str(args.batch), "--idle-exit", str(args.idle_exit),
                "--consolidate", str(args.consolidate)]
        if args.repo:
            argv[4:4] = ["--repo", args.repo]
        reply = pushd.request(spool, {"op": "push", "path": str(absolute), "pgdata": str(pgdata)},
                              pushd.spawner(spool, argv))
        if not reply.get("ok"):
            raise ConnectorError(f"wal-push {absolute.name}: {reply.get('message')}")
        message = str(reply.get("message"))
    if out.json:
        out.emit({"type": "summary", "file": absolute.name, "result": message})
    # success is quiet: the archive_command's output ends up in the server's log once per WAL file
    return 0
