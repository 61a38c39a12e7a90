"""The snapshot filter options every command that takes a SNAPSHOT shares (``dtstore.SnapshotFilter``)."""

from __future__ import annotations

import argparse
import os

from dtstore import SnapshotFilter

SNAPSHOT_HELP = "snapshot ID, unique ID prefix, or 'latest' (the newest that passes --host/--tag/--path/--source)"


def add_filter_options(p: argparse.ArgumentParser, *, source: bool = True, what: str = "'latest'") -> None:
    """``--host``, ``--tag``, ``--path`` and (unless the command has its own) ``--source``."""
    p.add_argument("--host", action="append", default=[], metavar="H",
                   help=f"{what}: only snapshots of host H (repeatable: any of them)")
    p.add_argument("--tag", action="append", default=[], metavar="T",
                   help=f"{what}: only snapshots carrying tag T (repeatable, or T1,T2: all of them)")
    p.add_argument("--path", action="append", default=[], metavar="PATH", dest="filter_path",
                   help=f"{what}: only snapshots whose paths include PATH (repeatable: all of them)")
    if source:
        p.add_argument("--source", action="append", default=[], metavar="ID",
                       help=f"{what}: only snapshots of this source ID (repeatable: any of them)")


def snapshot_filter(args: argparse.Namespace) -> SnapshotFilter:
    source = getattr(args, "source", None) or []
    sources = [source] if isinstance(source, str) else list(source)
    tags = [t for value in (getattr(args, "tag", None) or []) for t in value.split(",") if t]
    return SnapshotFilter(hosts=tuple(getattr(args, "host", None) or []), tags=tuple(tags),
                          paths=tuple(_abspath(p) for p in getattr(args, "filter_path", None) or []),
                          sources=tuple(sources))


def _abspath(path: str) -> str:
    return path if path == "-" or "://" in path else os.path.abspath(path)
