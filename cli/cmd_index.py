"""dtstore index rebuild: the remote index from pack trailers, or only the local cache."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli.output import Output


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("index", parents=[common], help="rebuild the index")
    p.add_argument("action", choices=["rebuild"], help="rebuild: write the index anew from the pack trailers")
    p.add_argument("--cache-only", action="store_true", help="only rebuild the local cache from the remote index")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        if args.cache_only:
            segments = repo.rebuild_cache()
            if out.json:
                out.emit({"type": "summary", "segments_loaded": segments})
            else:
                out.line(f"local cache rebuilt from {segments} index segment(s)")
            return 0
        report = repo.rebuild_index(progress=out.info)
    if out.json:
        out.emit({"type": "summary", "packs": report.packs, "entries": report.entries,
                  "segments_written": report.segments_written, "segments_removed": report.segments_removed,
                  "unreadable": report.unreadable})
    else:
        for problem in report.unreadable:
            out.line(f"unreadable pack: {problem}")
        out.line(f"index rebuilt from {report.packs} pack(s), {report.entries} chunk(s); "
                 f"{report.segments_removed} old segment(s) replaced by {report.segments_written}")
    return 1 if report.unreadable else 0
