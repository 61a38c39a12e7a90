"""A fake SQL*Plus: ``sqlplus [-S] /nolog`` reading a script on standard input.

It understands ``CONNECT / AS SYSDBA`` (and ``CONNECT user/password AS SYSDBA``), ``WHENEVER SQLERROR
EXIT FAILURE``, ``SET …`` (ignored), ``STARTUP [MOUNT] [PFILE='f']``, ``SHUTDOWN [ABORT|IMMEDIATE]``,
``RECOVER …``, ``EXIT``, comments, and every statement of ``sql.py`` ended by ``;``.  The instance it
starts belongs to the tree the PFILE lies in (``DIR/dbs/init*.ora`` → ``DIR``), else to
``ORACLE_SIM_STATE``.  Errors print their ORA- stack; under WHENEVER SQLERROR EXIT the exit status is 1.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from tests.sim.oracle.db import Database, OraError, Tree, parse_params, root_of_pfile
from tests.sim.oracle.sql import execute, literal


def _startup(tree: Tree | None, words: str) -> Tree:
    m = re.search(r"PFILE\s*=\s*('[^']*'|\S+)", words, re.IGNORECASE)
    if m:
        pfile = Path(literal(m.group(1)) if m.group(1).startswith("'") else m.group(1))
        if not pfile.exists():
            raise OraError(1078, "failure in processing system parameters",
                           f"LRM-00109: could not open parameter file '{pfile}'")
        tree = Tree(root_of_pfile(pfile))
        params = parse_params(pfile.read_text())
    else:
        if tree is None:
            tree = Tree(Path(os.environ.get("ORACLE_SIM_STATE", ".")).absolute())
        spfile = tree.spfile() or tree.pfile()
        if spfile is None:
            raise OraError(1078, "failure in processing system parameters")
        params = parse_params(spfile.read_text())
    with tree.locked():
        if tree.instance() is not None:
            raise OraError(1081, "cannot start already-running ORACLE - shut it down first")
        db = Database(tree, params).load()
        tree.save_instance({"status": "MOUNTED", "params": params})
        print("ORACLE instance started.\nDatabase mounted.")
        del db
    if not re.search(r"\bMOUNT\b", words, re.IGNORECASE):
        execute(tree, "ALTER DATABASE OPEN")
        print("Database opened.")
    return tree


def run(script: str) -> int:
    tree: Tree | None = None
    if os.environ.get("ORACLE_SIM_STATE"):
        tree = Tree(Path(os.environ["ORACLE_SIM_STATE"]).absolute())
    exit_on_error = False
    buffer = ""
    for raw in script.splitlines():
        line = raw.strip()
        if not buffer:
            if not line or line.startswith(("--", "REM ")):
                continue
            upper = line.upper().rstrip(";")
            if upper.startswith(("SET ", "SPOOL", "PROMPT")):
                continue
            if upper.startswith("WHENEVER SQLERROR"):
                exit_on_error = "EXIT" in upper
                continue
            if upper.startswith("WHENEVER OSERROR"):
                continue
            if upper in ("EXIT", "QUIT"):
                return 0
            if upper.startswith("CONNECT"):
                print("Connected.")
                continue
            if upper.startswith(("STARTUP", "SHUTDOWN", "RECOVER")):
                try:
                    if upper.startswith("STARTUP"):
                        tree = _startup(tree, line)
                    elif upper.startswith("SHUTDOWN"):
                        if tree is not None:
                            tree.save_instance(None)
                        print("ORACLE instance shut down.")
                    else:
                        if tree is None:
                            raise OraError(1034, "ORACLE not available")
                        print(execute(tree, line).message)
                except OraError as exc:
                    print(exc.message)
                    if exit_on_error:
                        return 1
                continue
        buffer += (" " if buffer else "") + line
        if not buffer.rstrip().endswith(";"):
            continue
        statement, buffer = buffer.rstrip()[:-1], ""
        try:
            if tree is None:
                raise OraError(1034, "ORACLE not available")
            result = execute(tree, statement)
            for row in result.rows if result.columns else []:
                print("\t".join("" if v is None else str(v) for v in row))
            if result.message:
                print(result.message)
        except OraError as exc:
            print(exc.message)
            if exit_on_error:
                return 1
    return 0


def main(argv: list[str]) -> int:
    args = [a for a in argv if a not in ("-S", "-s", "-L")]
    if not args or args[0].lower() not in ("/nolog", "/", "/ as sysdba"):
        pass
    return run(sys.stdin.read())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
