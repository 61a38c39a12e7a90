"""``python -m tests.sim.exchange --root DIR init|write|bin|tool …`` (see the package docstring)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.sim.exchange.store import SimServer
from tests.sim.exchange.tools import main as tool_main
from tests.sim.exchange.tools import write_bin


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "--root" and argv[2] == "tool":  # the fakes: arguments passed untouched
        return tool_main(Path(argv[1]), argv[3], argv[4:])
    p = argparse.ArgumentParser(prog="python -m tests.sim.exchange")
    p.add_argument("--root", required=True, type=Path)
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="lay out a new simulated server")
    init.add_argument("--era", choices=["2003", "2016"], default="2016")
    init.add_argument("--databases", help="DB1,DB2 (default: DB1,DB2; 2003: priv1,pub1)")
    init.add_argument("--log-size", type=int, help="bytes per log file (default: the era's, 1 MiB or 5 MiB)")
    init.add_argument("--page-size", type=int, help="database page size (default: 32 KiB; 2003: 4 KiB)")
    init.add_argument("--pages", type=int, default=16, help="data pages per database")
    write = sub.add_parser("write", help="Exchange writes N more log generations and changes the databases")
    write.add_argument("--generations", type=int, required=True)
    sub.add_parser("bin", help="print a folder with the fake tools, to put first on PATH")
    circular = sub.add_parser("circular", help="turn circular logging on or off for a database's log stream")
    circular.add_argument("database")
    circular.add_argument("state", choices=["on", "off"])
    args = p.parse_args(argv)
    if args.command == "init":
        names = [d for d in (args.databases or "").split(",") if d] or None
        SimServer.init(args.root, era=args.era, databases=names, log_size=args.log_size, page_size=args.page_size,
                       pages=args.pages)
        print(args.root)
    elif args.command == "write":
        SimServer(args.root).write(args.generations)
    elif args.command == "bin":
        print(write_bin(args.root.resolve()))
    elif args.command == "circular":
        SimServer(args.root).set_circular(args.database, args.state == "on")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
