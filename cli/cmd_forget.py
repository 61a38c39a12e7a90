"""dtstore forget: remove snapshots named on the command line, or those a retention policy does not keep."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from dtstore import Repository, Snapshot, clock
from dtstore.cli._repo import open_repo
from dtstore.cli.output import Output
from dtstore.errors import IntegrityError, UnsupportedFormat, UsageError
from dtstore.snapshots.retention import (
    Decision,
    GroupKey,
    RetentionPolicy,
    apply_policy,
    describe_group,
    group_snapshots,
    parse_duration,
    parse_group_by,
)

BUCKETS = ("hourly", "daily", "weekly", "monthly", "yearly")
PERIODS = {"hourly": "hours", "daily": "days", "weekly": "ISO weeks", "monthly": "months", "yearly": "years"}
EXPLICIT = "named on the command line"

DESCRIPTION = """\
Remove snapshots: the ones named, or those a retention policy does not keep.  Without SNAPSHOT
arguments the snapshots are grouped (--group-by, default host,source) and the policy is applied to
each group on its own.  Buckets (hour, day, ISO week, month, year) are calendar periods in the local
time zone.  --keep-within keeps what is newer than the group's newest snapshot minus DURATION
(1y2m3d4h: years, months, days, hours).  N = -1 means unlimited.  An empty policy is refused.
Only the snapshot manifests go; their data stays until a prune (--prune)."""


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
    group_by = parse_group_by(args.group_by)
    with open_repo(args) as repo:
        damaged: list[str] = []
        if args.snapshots:
            named, damaged = _named(repo, args.snapshots)
            plan: dict[GroupKey, list[Decision]] = {
                (): [Decision(s, False, [EXPLICIT])
                     for s in sorted(named.values(), key=lambda s: (s.time, s.id), reverse=True)]}
        else:
            chosen = [s for s in repo.snapshots()
                      if (not args.host or s.host == args.host)
                      and all(t in s.tags for t in args.tag)
                      and (not args.source or s.source_id == args.source)]
            now = clock.now()
            plan = {key: apply_policy(group, policy, now) for key, group in group_snapshots(chosen, group_by).items()}
        _report(plan, policy, out, explicit=bool(args.snapshots))
        for snap_id in damaged:
            out.info(f"snapshot {snap_id[:8]} has a damaged manifest; it is removed as named")
        remove = [d.snapshot.id for decisions in plan.values() for d in decisions if not d.keep] + damaged
        kept = sum(len(decisions) for decisions in plan.values()) - len(remove)
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


def _report(plan: dict[GroupKey, list[Decision]], policy: RetentionPolicy, out: Output, *, explicit: bool) -> None:
    for key, decisions in plan.items():
        if out.json:
            for d in decisions:
                s = d.snapshot
                out.emit({"type": "decision", "id": s.id, "short_id": s.short_id,
                          "time": s.time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
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
