"""dtstore ls: list the items of a snapshot."""

from __future__ import annotations

import argparse
import datetime as dt
import stat
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli.output import Output

_TYPE_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ls", parents=[common], help="list the items of a snapshot")
    p.add_argument("snapshot", metavar="SNAPSHOT", help="ID, unique ID prefix or 'latest'")
    p.add_argument("--long", "-l", action="store_true", help="mode, size and time too")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        snap = repo.get_snapshot(args.snapshot)
        for item in repo.list_items(snap):
            when = dt.datetime.fromtimestamp(item.mtime_ns / 1e9, dt.UTC)
            if out.json:
                out.emit({"type": "item", "path": "/" + item.name, "kind": item.type, "size": item.size,
                          "mode": item.mode, "mtime": when.isoformat().replace("+00:00", "Z"),
                          "target": item.target.decode("utf-8", "surrogateescape") or None})
            elif args.long:
                mode = stat.filemode(_TYPE_BITS[item.type] | item.mode)
                local = when.astimezone().strftime("%Y-%m-%d %H:%M:%S")
                arrow = f" -> {item.target.decode('utf-8', 'surrogateescape')}" if item.type == "symlink" else ""
                out.line(f"{mode} {item.size:>14} {local} /{item.name}{arrow}")
            else:
                out.line("/" + item.name)
    return 0
