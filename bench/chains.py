"""How long the chain planner takes over a year of log snapshots (``python -m bench.chains``).

A year of 15-minute log snapshots is 35,040 links.  ``forget`` calls ``windows`` (twice) and
``dependencies`` once per source, ``restore`` and ``restore-points`` call ``plan``/``windows``: all
must stay within seconds.  Two position models: MySQL binlogs (a log starts where the last ended:
looked up by key) and SQL Server LSNs (a log spans the end it continues: a sorted index).  Each
history has a daily full and one stream; ``--continuous`` makes the logs run through the fulls
(one window) instead of starting a new chain each day (a window and a gap per day).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable

from dtstore.connectors.chains import Link, Target, dependencies, plan, windows
from dtstore.connectors.positions import BinlogPosition, Lsn

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
PER_DAY = 96
Positions = Callable[[int, bool, bool], tuple[object, object]]


def binlog(i: int, full: bool, continuous: bool) -> tuple[object, object]:
    """Log i archives up to file i; a full's point lies in the file the previous log ended at.  For
    daily chains each full comes with a new GTID state (as after RESET MASTER), so only its own logs
    continue it."""
    def state(full_at: int) -> str:
        return "" if continuous else f"r{full_at}"

    if full:
        point = BinlogPosition(f"b.{i - 1:06d}", 100, state(i))
        return point, point
    if i % PER_DAY == 2:  # the first log after the full at i - 1 starts in the full's file
        return BinlogPosition(f"b.{i - 2:06d}", 0, state(i - 1)), BinlogPosition(f"b.{i:06d}")
    return BinlogPosition(f"b.{i - 1:06d}"), BinlogPosition(f"b.{i:06d}")


def lsn(i: int, full: bool, continuous: bool) -> tuple[object, object]:
    """Log i spans LSNs (100·(i-1), 100·i]; a full lies inside the span of the log after it."""
    if full:
        return Lsn(i * 100 - 50), Lsn(i * 100 - 50)
    after_full = i % PER_DAY == 2
    start = (i - 1) * 100 - 50 if after_full and not continuous else (i - 1) * 100
    if after_full and continuous:
        start = (i - 2) * 100
    return Lsn(start), Lsn(i * 100)


def history(count: int, positions: Positions, continuous: bool) -> list[Link]:
    links = []
    for i in range(1, count + 1):
        taken = T0 + dt.timedelta(minutes=15 * i)
        full = i % PER_DAY == 1
        start, end = positions(i, full, continuous)
        links.append(Link(f"s{i}", f"s{i}", taken, "full" if full else "log", start, end, taken))
    return links


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--links", type=int, default=365 * PER_DAY)
    args = parser.parse_args()
    print(f"{args.links} links, one stream, a full every {PER_DAY} snapshots")
    print("| positions | history | windows | gaps | windows s | dependencies s | plan latest s |")
    print("|---|---|---|---|---|---|---|")
    for name, positions in (("binlog", binlog), ("lsn", lsn)):
        for continuous in (False, True):
            links = history(args.links, positions, continuous)
            t0 = time.perf_counter()
            points = windows(links)
            t1 = time.perf_counter()
            dependencies(links)
            t2 = time.perf_counter()
            plan(links, Target())
            t3 = time.perf_counter()
            kind = "continuous" if continuous else "daily chains"
            print(f"| {name} | {kind} | {len(points.windows)} | {len(points.gaps)} | {t1 - t0:.2f} | {t2 - t1:.2f} "
                  f"| {t3 - t2:.2f} |")


if __name__ == "__main__":
    main()
