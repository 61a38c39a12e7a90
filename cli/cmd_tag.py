"""dtstore tag: add, remove or replace the tags of snapshots (restic's tag: manifests are rewritten)."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli._select import add_filter_options, snapshot_filter
from dtstore.cli.output import Output
from dtstore.errors import UsageError
from dtstore.snapshots import select


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tag", parents=[common], help="change the tags of snapshots",
                       description="Change the tags of the SNAPSHOTs named, or of every snapshot that passes "
                                   "--host/--tag/--path/--source.  A changed snapshot gets a new manifest and so "
                                   "a new ID (the first ID is kept as its 'original'); the old manifest is deleted "
                                   "once every new one is written.  Snapshots whose tags do not change keep their ID.")
    p.add_argument("snapshots", nargs="*", metavar="SNAPSHOT",
                   help="ID, unique prefix or 'latest' (default: every snapshot that passes the filters)")
    p.add_argument("--add", action="append", default=[], metavar="T", help="add tag T (repeatable, or T1,T2)")
    p.add_argument("--remove", action="append", default=[], metavar="T", help="remove tag T (repeatable, or T1,T2)")
    p.add_argument("--set", action="append", default=None, metavar="T",
                   help="replace all tags with these (repeatable, or T1,T2; --set '' removes every tag)")
    add_filter_options(p, what="which snapshots")
    p.set_defaults(run=run)


def _split(values: list[str] | None) -> list[str] | None:
    return None if values is None else [t for v in values for t in v.split(",") if t]


def run(args: argparse.Namespace, out: Output) -> int:
    add, remove, set_tags = _split(args.add) or [], _split(args.remove) or [], _split(args.set)
    if set_tags is not None and (add or remove):
        raise UsageError("--set cannot be combined with --add or --remove")
    if set_tags is None and not add and not remove:
        raise UsageError("nothing to do: give --add, --remove or --set")
    flt = snapshot_filter(args)
    with open_repo(args) as repo:
        if args.snapshots:
            chosen = {s.id: s for s in (repo.get_snapshot(ref, flt) for ref in args.snapshots)}.values()
            snaps = list(chosen)
        else:
            snaps = select.select(repo.snapshots(), flt)
        changed = repo.retag(snaps, add=add, remove=remove, set_tags=set_tags)
    if out.json:
        out.emit({"type": "summary", "changed": [{"old": old.id, "new": new.id, "tags": new.tags}
                                                 for old, new in changed],
                  "unchanged": len(snaps) - len(changed)})
    else:
        for old, new in changed:
            out.line(f"snapshot {old.short_id} → {new.short_id}: tags {','.join(new.tags) or '(none)'}")
        out.line(f"{len(changed)} snapshot(s) changed, {len(snaps) - len(changed)} unchanged")
    return 0
