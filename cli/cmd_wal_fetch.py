"""dtstore wal-fetch: PostgreSQL's restore_command (``dtstore wal-fetch %f %p``); exit 1: not archived."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli.output import Output
from dtstore.errors import UsageError

NOT_ARCHIVED = 1


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("wal-fetch", parents=[common], help="fetch one archived PostgreSQL WAL file (restore_command)",
                       description="Write the archived WAL file NAME to PATH, checked against its recorded "
                                   "SHA-256.  Exit 1 (quietly) when the archive does not have it, as "
                                   "PostgreSQL's recovery expects.")
    p.add_argument("name", metavar="NAME", help="the WAL file name (%%f)")
    p.add_argument("path", metavar="PATH", help="where to write it (%%p)")
    p.add_argument("--source", metavar="ID",
                   help="the PostgreSQL source (default: postgresql:<system identifier> of the data directory "
                        "it runs in, else the only PostgreSQL source)")
    p.add_argument("--from", dest="from_dir", metavar="DIR",
                   help="serve from this folder of prefetched files instead of the repository")
    p.set_defaults(run=run)


def _source_id(args: argparse.Namespace) -> str | None:
    from dtstore.connectors.postgresql.server import read_system_identifier

    if args.source:
        return str(args.source)
    try:
        return f"postgresql:{read_system_identifier(Path.cwd())}"
    except OSError:
        return None


def run(args: argparse.Namespace, out: Output) -> int:
    from dtstore.connectors.base import pick_source_id, snapshots_of
    from dtstore.connectors.fetch import StoredFile, fetch
    from dtstore.connectors.postgresql.chain import KIND, wal_archive
    from dtstore.connectors.postgresql.meta import SEGMENT_NAME, parse_segment, wal_file_kind

    wal_file_kind(args.name)  # refuse names that are no WAL file (usage, not "missing")
    dest = Path(args.path)
    if args.from_dir:
        src = Path(args.from_dir) / args.name
        if not src.is_file():
            return NOT_ARCHIVED
        shutil.copyfile(src, dest)
        return 0
    with open_repo(args) as repo:
        snaps = repo.snapshots()
        history = snapshots_of(snaps, KIND)
        wanted = _source_id(args)
        if not history:
            return NOT_ARCHIVED
        if wanted and not any(s.source_id == wanted for s in history):
            if args.source:
                raise UsageError(f"no PostgreSQL snapshots with source id {wanted}")
            wanted = None
        source = pick_source_id(history, wanted, KIND)
        archive = wal_archive([s for s in history if s.source_id == source])
        if SEGMENT_NAME.match(args.name):
            seg = parse_segment(args.name, archive.segment_size)
            stored = archive.segments.get((seg.timeline, seg.segment))
        else:
            stored = archive.others.get(args.name)
        if stored is None:
            return NOT_ARCHIVED
        snapshot = next(s for s in snaps if s.id == stored.snapshot.id)
        fetch(repo, StoredFile(snapshot, stored.path, stored.file.size, stored.file.sha256), dest.absolute())
    if not args.quiet and out.json:
        out.emit({"type": "summary", "file": args.name, "snapshot": stored.snapshot.id})
    return 0
