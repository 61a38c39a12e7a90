"""``python -m tests.sim.oracle --state DIR init [--noarchivelog] | sql "STATEMENT" | switch-logfile``; ``… bin``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from tests.sim.oracle.db import OraError, Tree, create
from tests.sim.oracle.sql import execute

REPO = Path(__file__).resolve().parents[3]


def bin_dir() -> Path:
    """A folder holding the fake ``sqlplus`` (this interpreter and this checkout baked in)."""
    folder = Path(tempfile.gettempdir()) / f"dtstore-oracle-sim-{os.getuid()}" / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "sqlplus"
    text = (f"#!/bin/sh\nPYTHONPATH='{REPO}'${{PYTHONPATH:+:$PYTHONPATH}} exec '{sys.executable}' "
            "-m tests.sim.oracle.sqlplus \"$@\"\n")
    if not script.exists() or script.read_text() != text:
        tmp = folder / f".sqlplus.{os.getpid()}"
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, script)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.oracle")
    parser.add_argument("--state", help="the database's file tree (default: $ORACLE_SIM_STATE)")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create a new database ORCL")
    init.add_argument("--noarchivelog", action="store_true")
    sql = sub.add_parser("sql", help="run one statement; result rows as tab-separated lines")
    sql.add_argument("statement")
    sub.add_parser("switch-logfile", help="ALTER SYSTEM SWITCH LOGFILE")
    sub.add_parser("bin", help="print a folder holding the fake sqlplus")
    args = parser.parse_args(argv)
    if args.command == "bin":
        print(bin_dir())
        return 0
    state = args.state or os.environ.get("ORACLE_SIM_STATE")
    if not state:
        parser.error("--state DIR (or ORACLE_SIM_STATE) is needed")
    root = Path(state).absolute()
    try:
        if args.command == "init":
            create(root, archivelog=not args.noarchivelog)
            return 0
        statement = "ALTER SYSTEM SWITCH LOGFILE" if args.command == "switch-logfile" else args.statement
        result = execute(Tree(root), statement)
    except OraError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    for row in result.rows if result.columns else []:
        print("\t".join("" if v is None else str(v) for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
