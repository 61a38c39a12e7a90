"""dtstore ls: list the items of a snapshot, or of some directories in it."""

from __future__ import annotations

import argparse
import datetime as dt
import stat
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli._select import SNAPSHOT_HELP, add_filter_options, snapshot_filter
from dtstore.cli.output import Output
from dtstore.errors import ItemNotFound
from dtstore.restore import normalize_include
from dtstore.snapshots.manifest import Item

_TYPE_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ls", parents=[common], help="list the items of a snapshot",
                       description="List every item of SNAPSHOT, or only PATH and (for a directory) the items "
                                   "directly in it; with --recursive, everything below it.")
    p.add_argument("snapshot", metavar="SNAPSHOT", help=SNAPSHOT_HELP)
    p.add_argument("paths", nargs="*", metavar="PATH", help="list only this item and what it directly holds")
    p.add_argument("--long", "-l", action="store_true", help="mode, owner (uid/gid), size and time too")
    p.add_argument("--recursive", action="store_true", help="with PATH: everything below it, not only its children")
    add_filter_options(p)
    p.set_defaults(run=run)


def selector(paths: list[str], *, recursive: bool) -> Any:
    """A predicate over item paths: under one of ``paths`` (a child only, unless recursive)."""
    wanted = [normalize_include(p) for p in paths]

    def keep(path: bytes) -> bool:
        for top in wanted:
            if top == b"":
                return recursive or b"/" not in path
            if path == top:
                return True
            if path.startswith(top + b"/"):
                return recursive or b"/" not in path[len(top) + 1 :]
        return False

    return keep


def run(args: argparse.Namespace, out: Output) -> int:
    keep = selector(args.paths, recursive=args.recursive) if args.paths else None
    with open_repo(args) as repo:
        snap = repo.get_snapshot(args.snapshot, snapshot_filter(args))
        shown = 0
        for item in repo.list_items(snap):
            if keep is not None and not keep(item.path):
                continue
            shown += 1
            _show(item, args.long, out)
        if keep is not None and not shown:
            raise ItemNotFound(f"snapshot {snap.short_id} has no item {', '.join(args.paths)}")
    return 0


def _show(item: Item, long: bool, out: Output) -> None:
    when = dt.datetime.fromtimestamp(item.mtime_ns / 1e9, dt.UTC)
    target = item.target.decode("utf-8", "surrogateescape")
    if out.json:
        out.emit({"type": "item", "path": "/" + item.name, "kind": item.type, "size": item.size,
                  "mode": item.mode, "uid": item.uid, "gid": item.gid,
                  "mtime": when.isoformat().replace("+00:00", "Z"), "target": target or None})
    elif long:
        mode = stat.filemode(_TYPE_BITS[item.type] | item.mode)
        arrow = f" -> {target}" if item.type == "symlink" else ""
        out.line(f"{mode} {item.uid:>5} {item.gid:>5} {item.size:>14} {out.when(when)} /{item.name}{arrow}")
    else:
        out.line("/" + item.name)
