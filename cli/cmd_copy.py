"""dtstore copy: snapshots into another repository, re-encrypted with its keys (restic's copy)."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore import Repository
from dtstore.cli._repo import open_repo, password
from dtstore.cli._select import SNAPSHOT_HELP, add_filter_options, snapshot_filter
from dtstore.cli.output import Output, human_size
from dtstore.copy import CopyResult
from dtstore.snapshots import select


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("copy", parents=[common], help="copy snapshots into another repository",
                       description="Copy the SNAPSHOTs named (default: every snapshot that passes --host/--tag/"
                                   "--path/--source) from --repo into --to-repo, re-encrypted with the target's "
                                   "keys.  Only chunks the target lacks are stored; a snapshot copied before is "
                                   "skipped.  The target's password comes from DTSTORE_TO_PASSWORD_FILE, "
                                   "DTSTORE_TO_PASSWORD_COMMAND or DTSTORE_TO_PASSWORD.")
    p.add_argument("snapshots", nargs="*", metavar="SNAPSHOT", help=f"{SNAPSHOT_HELP}; default: all that pass")
    p.add_argument("--to-repo", metavar="URL", required=True, help="the repository to copy into (it must exist)")
    add_filter_options(p, what="which snapshots")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    flt = snapshot_filter(args)
    with open_repo(args) as source:
        if args.snapshots:
            chosen = list({s.id: s for s in (source.get_snapshot(ref, flt) for ref in args.snapshots)}.values())
        else:
            chosen = select.select(source.snapshots(), flt)
        target_password = password(prefix="DTSTORE_TO_", label="password of the target repository: ")
        with Repository.open(args.to_repo, target_password, limit_upload_kib=getattr(args, "limit_upload", None)) \
                as target, out.progress("copy") as progress:
            results = source.copy_to(target, chosen, progress=progress, on_result=lambda r: _report(out, r))
    copied = [r for r in results if not r.skipped]
    added = sum(r.bytes_added for r in results)
    if out.json:
        out.emit({"type": "summary", "copied": len(copied), "skipped": len(results) - len(copied),
                  "bytes_added": added, "bytes_read": sum(r.bytes_read for r in results)})
    else:
        out.line(f"{len(copied)} snapshot(s) copied, {len(results) - len(copied)} already there; "
                 f"{human_size(added)} added to the target")
    return 0


def _report(out: Output, result: CopyResult) -> None:
    if out.json:
        out.emit({"type": "copy", **result.to_json()})
    elif result.skipped:
        out.line(f"snapshot {result.source.short_id} of {out.when(result.source.time)}: already in the target "
                 f"as {result.copy.short_id}")
    else:
        out.line(f"snapshot {result.source.short_id} of {out.when(result.source.time)} → {result.copy.short_id}: "
                 f"{human_size(result.bytes_added)} added ({result.chunks_new} new chunk(s), "
                 f"{result.chunks_reused} already there)")
