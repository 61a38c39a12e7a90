"""dtstore prune: remove data no snapshot needs, while backups keep running."""

from __future__ import annotations

import argparse
import datetime as dt
import re
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli.output import Output, human_size
from dtstore.errors import UsageError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("prune", parents=[common], help="remove unreferenced data",
                       description="Marks unreferenced packs; packs marked at least --grace ago are deleted.")
    add_prune_options(p)
    p.add_argument("--dry-run", action="store_true", help="show what would happen")
    p.set_defaults(run=run)


def add_prune_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grace", default="24h", metavar="DURATION",
                   help="how long marked packs wait before deletion (default 24h; 0 needs --exclusive)")
    p.add_argument("--max-unused", default="5%", metavar="N%", help="repack until at most this much is unused")
    p.add_argument("--exclusive", action="store_true", help="refuse to run beside backups; allows --grace 0")


def parse_grace(text: str) -> dt.timedelta:
    if text.strip() == "0":
        return dt.timedelta(0)
    total = dt.timedelta(0)
    parts = re.findall(r"(\d+)(d|h|min|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise UsageError(f"--grace {text!r}: use a duration such as 24h, 90min, 30s or 2d")
    units = {"d": "days", "h": "hours", "min": "minutes", "s": "seconds"}
    for number, unit in parts:
        total += dt.timedelta(**{units[unit]: int(number)})
    return total


def parse_percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise UsageError(f"--max-unused {text!r}: use a percentage such as 5%") from None
    if not 0 <= value <= 100:
        raise UsageError("--max-unused must be between 0% and 100%")
    return value / 100


def run_prune(repo: Any, args: argparse.Namespace, out: Output, dry_run: bool) -> None:
    plan = repo.prune(grace=parse_grace(args.grace), max_unused=parse_percent(args.max_unused),
                      exclusive=args.exclusive, dry_run=dry_run, progress=out.info)
    if out.json:
        out.emit({"type": "summary", "command": "prune", "dry_run": dry_run, **plan.to_json()})
        return
    verb = "would" if dry_run else "did"
    out.line(f"repository: {human_size(plan.bytes_total)}, unused {human_size(plan.bytes_unused)}")
    out.line(f"{verb} delete {len(plan.delete)} pack(s) ({human_size(plan.bytes_delete)}), "
             f"mark {len(plan.mark)} ({human_size(plan.bytes_mark)}), repack {len(plan.repack)}, "
             f"unmark {len(plan.unmark)}; {len(plan.waiting)} marked pack(s) wait for their grace period")


def run(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        run_prune(repo, args, out, args.dry_run)
    return 0
