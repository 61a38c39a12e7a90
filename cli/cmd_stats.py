"""dtstore stats: repository size, deduplication ratio, what each snapshot added."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli.output import Output, human_size


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("stats", parents=[common], help="repository statistics",
                       description="Repository size, deduplication ratio, and each snapshot's size and what it "
                                   "added (times local, or UTC with --utc; always UTC in --json).")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        stats = repo.stats()
    if out.json:
        out.emit({"type": "summary", **stats})
        return 0
    out.line(f"snapshots:      {stats['snapshots']}")
    out.line(f"stored:         {human_size(stats['stored_bytes'])} in {stats['packs']} pack(s)")
    out.line(f"logical size:   {human_size(stats['logical_bytes'])}")
    ratio = stats["dedup_ratio"]
    out.line(f"dedup ratio:    {ratio:.2f}x" if ratio else "dedup ratio:    -")
    for snap in stats["per_snapshot"]:
        when = out.when(dt.datetime.fromisoformat(snap["time"].replace("Z", "+00:00")))
        out.line(f"  {snap['id'][:8]}  {when}  {human_size(snap['bytes_total']):>10} "
                 f"added {human_size(snap['bytes_added'])}")
    return 0
