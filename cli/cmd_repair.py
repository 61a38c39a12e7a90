"""dtstore repair index|snapshots|packs: rebuild the index, rewrite snapshots that lost data, salvage
damaged packs.  Every sub-command takes --dry-run; none deletes what it cannot replace."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli.output import Output, human_size
from dtstore.errors import IntegrityError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("repair", parents=[common], help="repair the index, snapshots or packs",
                       description="index: rebuild the index from the pack trailers.  snapshots: write "
                                   "a replacement for every snapshot that refers to lost data.  packs: copy "
                                   "what still verifies out of damaged packs.  Run 'check --read-data' first.")
    actions = p.add_subparsers(dest="action", metavar="WHAT", parser_class=type(p))
    actions.required = True
    index = actions.add_parser("index", parents=[common], help="rebuild the index from the pack trailers")
    index.add_argument("--dry-run", "-n", action="store_true", help="read everything, write nothing")
    snaps = actions.add_parser("snapshots", parents=[common], help="rewrite snapshots that refer to lost data")
    snaps.add_argument("snapshots", nargs="*", metavar="SNAPSHOT", help="ID, ID prefix or 'latest' (default: all)")
    snaps.add_argument("--forget", action="store_true", help="forget each original once it is replaced")
    snaps.add_argument("--drop-files", action="store_true",
                       help="leave files with lost data out (default: truncate them before the first lost chunk)")
    snaps.add_argument("--dry-run", "-n", action="store_true", help="say what would change, write nothing")
    packs = actions.add_parser("packs", parents=[common], help="salvage the readable blobs of damaged packs")
    packs.add_argument("packs", nargs="*", metavar="PACK_ID",
                       help="pack ID or unique prefix (default: every pack the damage records name)")
    packs.add_argument("--dry-run", "-n", action="store_true", help="read the packs, write nothing")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    if args.action == "index":
        return _index(args, out)
    if args.action == "snapshots":
        return _snapshots(args, out)
    return _packs(args, out)


def _index(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        report = repo.repair_index(dry_run=args.dry_run, progress=out.info)
    if out.json:
        out.emit({"type": "summary", "command": "repair index", "dry_run": args.dry_run, "packs": report.packs,
                  "entries": report.entries, "segments_written": report.segments_written,
                  "segments_removed": report.segments_removed, "unreadable": report.unreadable})
    else:
        for problem in report.unreadable:
            out.line(f"unreadable pack: {problem}")
        verb = "would be replaced" if args.dry_run else "replaced"
        out.line(f"index {'read' if args.dry_run else 'rebuilt'} from {report.packs} pack(s), {report.entries} "
                 f"chunk(s); {report.segments_removed} old segment(s) {verb} by {report.segments_written}")
    return 1 if report.unreadable else 0


def _snapshots(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        repairs = repo.repair_snapshots(args.snapshots, forget=args.forget, drop_files=args.drop_files,
                                        dry_run=args.dry_run, progress=out.info)
    left = [r for r in repairs if r.unrepairable and not r.forgotten]
    if out.json:
        for repair in repairs:
            out.emit({"type": "repair", "dry_run": args.dry_run, **repair.to_json()})
        out.emit({"type": "summary", "command": "repair snapshots", "dry_run": args.dry_run,
                  "snapshots_repaired": sum(1 for r in repairs if not r.unrepairable),
                  "snapshots_unrepairable": sum(1 for r in repairs if r.unrepairable),
                  "forgotten": sum(1 for r in repairs if r.forgotten)})
    else:
        would = "would be " if args.dry_run else ""
        for repair in repairs:
            short = repair.snapshot_id[:8]
            for change in repair.changes:
                if change.action == "dropped":
                    out.line(f"snapshot {short}: {change.path} {would}dropped ({change.lost_chunks} lost chunk(s))")
                else:
                    out.line(f"snapshot {short}: {change.path} {would}truncated from {change.size} to "
                             f"{change.new_size} bytes ({change.lost_chunks} lost chunk(s))")
            if repair.items_dropped_with_item_list:
                out.line(f"snapshot {short}: its item list lost a chunk; {repair.items_dropped_with_item_list} of "
                         f"{repair.items_before} item(s) after it {would}dropped")
            if repair.unrepairable:
                out.line(f"snapshot {short}: cannot be repaired: {repair.unrepairable}")
            elif repair.new_id:
                out.line(f"snapshot {short}: saved as {repair.new_id[:8]} (tag 'repaired')")
            if repair.forgotten:
                out.line(f"snapshot {short}: forgotten")
        if not repairs:
            out.line("no snapshot refers to lost data")
        else:
            done = sum(1 for r in repairs if not r.unrepairable)
            out.line(f"{done} snapshot(s) {'would be repaired' if args.dry_run else 'repaired'}"
                     + ("" if args.forget or args.dry_run else "; the originals stay until you forget them"))
    return IntegrityError.exit_code if left else 0


def _packs(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        repairs = repo.repair_packs(args.packs, dry_run=args.dry_run, progress=out.info)
    if out.json:
        for repair in repairs:
            out.emit({"type": "pack", "dry_run": args.dry_run, **repair.to_json()})
        out.emit({"type": "summary", "command": "repair packs", "dry_run": args.dry_run, "packs": len(repairs),
                  "salvaged_chunks": sum(len(r.copy) for r in repairs),
                  "lost_chunks": sum(len(r.lost) for r in repairs)})
        return 0
    for repair in repairs:
        short = repair.pack_id[:16]
        if not repair.exists or repair.error:
            out.line(f"pack {short}: nothing to salvage: {repair.error}")
            continue
        verb = "would be copied" if args.dry_run else "copied"
        out.line(f"pack {short}: {len(repair.copy)} chunk(s) ({human_size(repair.bytes_copy)}) {verb} to a new "
                 f"pack, {repair.already_elsewhere} already elsewhere, {len(repair.lost)} lost"
                 + ("" if repair.trailer == "ok" else f"; its trailer is unreadable ({repair.trailer})"))
    lost = sum(len(r.lost) for r in repairs)
    if not repairs:
        out.line("no damaged pack to repair")
    elif lost:
        out.line(f"{lost} chunk(s) cannot be salvaged; 'dtstore repair snapshots' rewrites the snapshots "
                 "that need them")
    if repairs and not args.dry_run:
        out.line("the repaired packs are no longer used; prune deletes them once no snapshot needs them")
    return 0
