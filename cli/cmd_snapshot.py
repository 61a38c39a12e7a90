"""dtstore snapshot: back up paths, standard input, a command's output or a connector source."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dtstore import CommandSource, FilesSource, Source, StdinSource
from dtstore.cli._excludes import FILES_FROM, add_exclude_options, excludes_from_args, file_options_given, listed_paths
from dtstore.cli._repo import open_repo
from dtstore.cli.output import Output, human_size
from dtstore.errors import EXIT_PARTIAL, UsageError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("snapshot", parents=[common], help="take a snapshot",
                       description="SOURCE is a path, '-' for standard input (with --stdin-name), "
                                   "or a connector URL such as mysql://user@host/db")
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="a path (file or tree), '-' for standard input, or a connector URL")
    p.add_argument("--tag", action="append", default=[], metavar="T", help="record tag T (repeatable)")
    p.add_argument("--host", metavar="H", help="host name recorded in the snapshot")
    p.add_argument("--stdin-name", metavar="NAME", help="file name for '-' or --from-command")
    p.add_argument("--from-command", metavar="CMD", help="store this command's standard output")
    p.add_argument("--mode", choices=["full", "diff", "log", "auto"], default=None,
                   help="connector URL only: full (default), diff, log (only what is new since the last "
                        "snapshot), or auto (log when the chain allows it, else a full, saying why)")
    p.add_argument("--stage", metavar="DIR", help="connector URL only: dump to DIR first, then upload")
    p.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS",
                   help="connector URL only: wait this long for another run of the same source to end "
                        "(default: fail at once with exit 11)")
    add_exclude_options(p)
    p.set_defaults(run=run)


def _refuse_connector_options(args: argparse.Namespace) -> None:
    """--mode, --stage and --lock-wait mean nothing for files, '-' or a command: a usage error, not ignored."""
    given = [flag for flag, value in (("--mode", args.mode), ("--stage", args.stage),
                                      ("--lock-wait", args.lock_wait or None)) if value is not None]
    if given and (args.from_command or not any("://" in s for s in args.sources)):
        raise UsageError(f"{', '.join(given)}: only for a connector URL (e.g. mysql://…), not for "
                         "paths, '-' or --from-command")


def build_sources(args: argparse.Namespace, repo: Any) -> list[Source]:
    _refuse_connector_options(args)
    file_options = file_options_given(args)
    if file_options and (args.from_command or any(s == "-" or "://" in s for s in args.sources)):
        raise UsageError(f"{', '.join(file_options)}: only for file paths, not for '-', --from-command or a URL")
    if args.from_command:
        if args.sources:
            raise UsageError("--from-command takes no other SOURCE")
        if not args.stdin_name:
            raise UsageError("--from-command needs --stdin-name NAME")
        return [CommandSource(args.from_command, args.stdin_name)]
    if not args.sources and not any(getattr(args, key) for key, _ in FILES_FROM):
        raise UsageError("nothing to back up: give a path, '-' or --from-command")
    if args.sources == ["-"]:
        if not args.stdin_name:
            raise UsageError("'-' needs --stdin-name NAME")
        return [StdinSource(args.stdin_name)]
    if "-" in args.sources:
        raise UsageError("'-' cannot be combined with other sources")
    urls = [s for s in args.sources if "://" in s]
    if urls:
        if len(args.sources) != 1:
            raise UsageError("a connector URL must be the only SOURCE")
        from dtstore.connectors import make_source

        stage = Path(args.stage) if args.stage else None
        return [make_source(urls[0], repo=repo, mode=args.mode or "full", stage_dir=stage)]
    return [FilesSource(args.sources + listed_paths(args), excludes_from_args(args))]


def run(args: argparse.Namespace, out: Output) -> int:
    # paths need no repository: their first file is being read while the repository opens (its KDF)
    early = None if any("://" in s for s in args.sources) else build_sources(args, None)
    for source in early or ():
        start = getattr(source, "read_ahead", None)
        if start is not None:
            start()
    with open_repo(args) as repo:
        sources = early or build_sources(args, repo)
        with out.progress("snapshot") as progress:
            snap = repo.snapshot(sources, tags=args.tag, host=args.host, progress=progress,
                                 lock_wait=args.lock_wait)
    summary = snap.summary
    warnings = summary.get("warnings", [])
    if out.json:
        out.emit({"type": "summary", "snapshot_id": snap.id, "short_id": snap.short_id, **summary})
    else:
        unchanged = summary["files_unchanged"]
        out.line(f"snapshot {snap.short_id} saved: {summary['files']} file(s), {human_size(summary['bytes_total'])}"
                 f" ({human_size(summary['bytes_read'])} read, {unchanged} unchanged file(s) not read again); "
                 f"{human_size(summary['bytes_stored'])} added to the repository")
        if warnings:
            out.info(f"{len(warnings)} source(s) could not be read; see the warnings above")
    return EXIT_PARTIAL if warnings else 0
