"""dtstore mount: the snapshots as a read-only file system (FUSE; the mount extra)."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli._select import add_filter_options, snapshot_filter
from dtstore.cli.output import Output
from dtstore.snapshots import select


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("mount", parents=[common], help="browse snapshots as a read-only file system (FUSE)",
                       description="Mount the snapshots read-only at DIR until it is unmounted (fusermount3 -u DIR, "
                                   "or Ctrl-C): DIR/snapshots/<time>/, DIR/ids/<short id>/, DIR/hosts/<host>/<time>/, "
                                   "DIR/tags/<tag>/<time>/, each with a 'latest' symlink.  Times are local, or UTC "
                                   "with --utc.  Needs FUSE (/dev/fuse, the fuse3 package) and "
                                   "pip install 'dtstore[mount]'.")
    p.add_argument("mountpoint", metavar="DIR", help="an existing empty directory to mount on")
    p.add_argument("--allow-other", action="store_true",
                   help="let other users read the mount (needs user_allow_other in /etc/fuse.conf unless root)")
    add_filter_options(p, what="which snapshots")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    from dtstore.mount import mount

    flt = snapshot_filter(args)

    def name(moment: dt.datetime) -> str:
        return out.when(moment).replace(" ", "T")

    with open_repo(args) as repo:
        where = repo.store.describe()
        mount(repo, args.mountpoint, time_name=name, keep=lambda snaps: select.select(snaps, flt),
              allow_other=args.allow_other,
              ready=lambda: out.info(f"serving {where} at {args.mountpoint}; unmount with fusermount3 -u "
                                     f"{args.mountpoint} (or Ctrl-C)"))
    if out.json:
        out.emit({"type": "summary", "mountpoint": args.mountpoint})
    return 0
