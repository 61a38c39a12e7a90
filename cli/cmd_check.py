"""dtstore check: verify the repository's structure, and with --read-data its data."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore.cli._repo import open_repo
from dtstore.cli.output import Output, human_size
from dtstore.errors import IntegrityError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("check", parents=[common], help="verify the repository")
    p.add_argument("--read-data", action="store_true", help="download and verify every blob")
    p.add_argument("--read-data-subset", metavar="N%|N/M|SIZE",
                   help="verify part of the data, least recently verified packs first")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        report = repo.check(read_data=args.read_data, subset=args.read_data_subset, progress=out.info)
    if out.json:
        for problem in report.problems:
            out.emit({"type": "problem", **problem.to_json()})
        for healed in report.healed:
            out.emit({"type": "healed", **healed.to_json()})
        out.emit({"type": "summary", "ok": report.ok, "snapshots": report.snapshots, "packs": report.packs,
                  "packs_read": report.packs_read, "bytes_read": report.bytes_read,
                  "problems": len(report.problems), "healed": len(report.healed)})
    else:
        for problem in report.problems:
            out.line(f"problem: {problem.message}")
            for snap in problem.snapshots:
                out.line(f"  affects snapshot {snap[:8]}")
            for path in problem.paths[:20]:
                out.line(f"  affects {path}")
        for healed in report.healed:
            out.line(f"healed: {healed.message}")
        read = f", read {report.packs_read} pack(s) ({human_size(report.bytes_read)})" if report.packs_read else ""
        verdict = "no problems found" if report.ok else f"{len(report.problems)} problem(s) found"
        out.line(f"checked {report.snapshots} snapshot(s) and {report.packs} pack(s){read}: {verdict}")
    return 0 if report.ok else IntegrityError.exit_code
