"""dtstore forget: remove snapshots named on the command line, or those a retention policy does not keep."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from typing import Any

from dtstore import Repository, Snapshot, clock
from dtstore.cli._repo import open_repo
from dtstore.cli.output import Output
from dtstore.connectors import points
from dtstore.connectors.forgetting import ChainEffect, plan_named, plan_policy
from dtstore.errors import IntegrityError, UnsupportedFormat, UsageError
from dtstore.snapshots.retention import (
    Decision,
    GroupKey,
    RetentionPolicy,
    describe_group,
    parse_duration,
    parse_group_by,
)

BUCKETS = ("hourly", "daily", "weekly", "monthly", "yearly")
PERIODS = {"hourly": "hours", "daily": "days", "weekly": "ISO weeks", "monthly": "months", "yearly": "years"}

DESCRIPTION = """\
Remove snapshots: the ones named, or those a retention policy does not keep.  Without SNAPSHOT
arguments the snapshots are grouped (--group-by, default host,source) and the policy is applied to
each group on its own.  Buckets (hour, day, ISO week, month, year) are calendar periods in the local
time zone.  --keep-within keeps what is newer than the group's newest snapshot minus DURATION
(1y2m3d4h: years, months, days, hours).  N = -1 means unlimited.  An empty policy is refused.
Only the snapshot manifests go; their data stays until a prune (--prune).

Connector sources (mysql://…) are kept restorable: a kept snapshot keeps every snapshot it needs
(a log snapshot its full and the logs between them), and the output shows each source's restorable
windows before → after.  Naming by ID a snapshot that snapshots which stay need is refused unless
--force."""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("forget", parents=[common], help="remove snapshots by ID or by a retention policy",
                       description=DESCRIPTION)
    p.add_argument("snapshots", nargs="*", metavar="SNAPSHOT", help="snapshot IDs (or unique prefixes) to remove")
    p.add_argument("--keep-last", type=int, metavar="N", help="keep the N newest snapshots")
    for bucket in BUCKETS:
        p.add_argument(f"--keep-{bucket}", type=int, metavar="N",
                       help=f"keep the newest snapshot in each of the N newest {PERIODS[bucket]} with one")
    p.add_argument("--keep-within", metavar="DURATION", help="keep snapshots newer than newest − DURATION")
    for bucket in BUCKETS:
        p.add_argument(f"--keep-within-{bucket}", metavar="DURATION",
                       help=f"keep {bucket} snapshots newer than newest − DURATION")
    p.add_argument("--keep-tag", action="append", default=[], metavar="T",
                   help="keep snapshots with tag T (T1,T2: with all of them); repeatable")
    p.add_argument("--group-by", default="host,source", metavar="KEYS",
                   help="group by these of host,source,tags,paths ('' for one group; default host,source)")
    p.add_argument("--host", metavar="H", help="only consider this host's snapshots")
    p.add_argument("--tag", action="append", default=[], metavar="T", help="only consider snapshots with tag T")
    p.add_argument("--source", metavar="ID", help="only consider snapshots of this source ID")
    p.add_argument("--dry-run", "-n", action="store_true", help="show what would be removed and why; remove nothing")
    p.add_argument("--prune", action="store_true", help="run prune after removing snapshots")
    p.add_argument("--force", action="store_true",
                   help="remove snapshots named by ID even if snapshots that stay need them to be restorable")
    p.set_defaults(run=run)


def policy_from_args(args: argparse.Namespace) -> RetentionPolicy:
    def span(value: str | None) -> Any:
        return None if value is None else parse_duration(value)

    return RetentionPolicy(
        keep_last=args.keep_last,
        **{f"keep_{b}": getattr(args, f"keep_{b}") for b in BUCKETS},
        keep_within=span(args.keep_within),
        **{f"keep_within_{b}": span(getattr(args, f"keep_within_{b}")) for b in BUCKETS},
        keep_tags=tuple(args.keep_tag),
    )


def run(args: argparse.Namespace, out: Output) -> int:
    policy = policy_from_args(args)
    if args.snapshots and (not policy.is_empty() or args.host or args.tag or args.source):
        raise UsageError("give either snapshot IDs or a policy (--keep-*, --host, --tag, --source), not both")
    if not args.snapshots and policy.is_empty():
        raise UsageError("refusing to forget with an empty policy, which would remove every snapshot: "
                         "give snapshot IDs or at least one --keep-* option")
    if args.force and not args.snapshots:
        raise UsageError("--force only applies to snapshots named by ID: a policy always keeps what kept "
                         "snapshots need")
    group_by = parse_group_by(args.group_by)
    with open_repo(args) as repo:
        if args.snapshots:
            named, damaged = _named(repo, args.snapshots)
            planned = plan_named(_chain_context(repo, named), named, damaged)
        else:
            everything = repo.snapshots()
            chosen = [s for s in everything
                      if (not args.host or s.host == args.host)
                      and all(t in s.tags for t in args.tag)
                      and (not args.source or s.source_id == args.source)]
            planned = plan_policy(everything, chosen, policy, clock.now(), group_by)
        plan, remove, effect = planned.decisions, planned.remove, planned.effect
        _report(plan, policy, out, explicit=bool(args.snapshots))
        _report_windows(effect, out)
        for snap_id in planned.damaged:
            out.info(f"snapshot {snap_id[:8]} has a damaged manifest; it is removed as named")
        planned.refuse_stranding(force=args.force)
        if effect.stranded:
            out.info(f"--force: {effect.describe_loss(done=not args.dry_run)}")
        kept = planned.kept
        if not args.dry_run:
            repo.forget(remove)
            if args.prune and remove:
                repo.prune()
        elif args.prune:
            out.info("dry run: prune not run")
    if out.json:
        out.emit({"type": "summary", "kept": kept, "removed": len(remove), "dry_run": bool(args.dry_run)})
    elif args.dry_run:
        out.line(f"dry run: would remove {len(remove)} snapshot(s), keep {kept}; nothing was removed")
    else:
        out.line(f"removed {len(remove)} snapshot(s), kept {kept}")
    return 0


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _ids(ids: Sequence[str]) -> str:
    return ", ".join(i[:8] for i in ids)


def _report_windows(effect: ChainEffect, out: Output) -> None:
    if out.json:
        for change in effect.streams:
            out.emit(change.to_json())
        return
    if effect.streams:
        out.line("restorable (before → after)")
        for change in effect.streams:
            out.line(f"  {change.describe()}")
        out.line("")


def _named(repo: Repository, refs: list[str]) -> tuple[dict[str, Snapshot], list[str]]:
    """Snapshots named on the command line; damaged manifests can still be forgotten by ID."""
    named: dict[str, Snapshot] = {}
    damaged: list[str] = []
    for snap_id in repo.resolve_snapshot_ids(refs):
        try:
            named[snap_id] = repo.load_snapshot(snap_id)
        except (IntegrityError, UnsupportedFormat):
            damaged.append(snap_id)
    return named, damaged


def _chain_context(repo: Repository, named: dict[str, Snapshot]) -> list[Snapshot]:
    """The snapshots ``plan_named`` needs to see: every snapshot if a named one is of a connector
    source with restore chains (its chain may run through any other), else the named ones alone
    (only those sources' windows are shown, and other kinds have none): a removal by ID then reads
    no other manifest."""
    if any(s.source_kind in points.CHAIN_MODULES for s in named.values()):
        return repo.snapshots()
    return list(named.values())


def _report(plan: dict[GroupKey, list[Decision]], policy: RetentionPolicy, out: Output, *, explicit: bool) -> None:
    for key, decisions in plan.items():
        if out.json:
            for d in decisions:
                s = d.snapshot
                out.emit({"type": "decision", "id": s.id, "short_id": s.short_id,
                          "time": iso(s.time),
                          "host": s.host, "source": s.source_id, "tags": s.tags, "group": dict(key),
                          "keep": d.keep, "reasons": d.reasons})
            continue
        heading = "snapshots named on the command line" if explicit else f"{describe_group(key)}  ({policy})"
        out.line(heading)
        out.line(f"  {'ID':8}  {'Time':19}  {'Host':12}  {'Tags':12}  {'Action':6}  Reasons")
        for d in decisions:
            s = d.snapshot
            when = s.time.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            out.line(f"  {s.short_id:8}  {when:19}  {s.host[:12]:12}  {','.join(s.tags)[:12]:12}  "
                     f"{'keep' if d.keep else 'remove':6}  {', '.join(d.reasons)}")
        kept = sum(d.keep for d in decisions)
        out.line(f"  {kept} kept, {len(decisions) - kept} to remove")
        out.line("")
