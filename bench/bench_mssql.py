"""SQL Server benchmark on the TDS simulator: dtstore's mssql connector against ``.bak`` files stored with restic.

Run from the repository root (needs pyodbc and FreeTDS, as the tests do)::

    python -m bench.bench_mssql --size 1G            # several minutes on 2 cores
    python -m bench.bench_mssql --size 100M --json out.json

One run, one simulator (``tests/sim/mssql``), one database ``bench``:

1. generates a table of ~``--size`` (deterministic rows, built inside the simulator's sqlite);
2. first full: ``dtstore`` (``Repository.snapshot`` of ``mssql://…/bench --mode full``, in process) and
   ``BACKUP DATABASE … WITH COPY_ONLY`` to a file + ``restic backup FILE``;
3. changes 1 % of the rows (0.5 % updated in 20 clustered ranges, 0.5 % appended);
4. second full with both; then a differential with both (dtstore ``--mode diff``);
5. reports bytes added to each repository per run and the throughput.

**What this measures and what it does not.**  The simulator's full ``.bak`` is the database file
(sqlite pages) plus a header, so "the second full of a barely changed database adds little" is a
statement about content-defined chunking over a page-structured image, which a real SQL Server
``.bak`` also is (8 KiB pages in 64 KiB extents, uncompressed).  The simulator's differential holds
the changed *statements*, not changed extents: its size says nothing about a real differential
(which holds every extent touched since the full).  Throughput is the simulator's, not SQL Server's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import dtstore
from dtstore.connectors import make_source
from dtstore.crypto.keys import CHEAP_KDF
from tests.sim.mssql.fixture import Simulator, available, simulator

ROW_BYTES = 220  # what one row costs in the sqlite file (measured)
RESTIC_PASSWORD = "bench-restic-pw"


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


ROW_SQL = ("printf('%010d-%s-%s', x, hex(substr(x * 2654435761 % 4294967291 || x * 40503 % 65521 || "
           "x * 69069 % 2147483647, 1, 24)), substr('abcdefghijklmnopqrstuvwxyz0123456789', 1 + x % 30, 6) || "
           "hex(x * 1103515245 % 2147483648) || hex(x * 134775813 % 4294967296) || "
           "printf('%080d', x * 7919 % 1000003))")


def generate(sim: Simulator, rows: int) -> None:
    sim.sql("CREATE DATABASE bench")
    sim.sql("CREATE TABLE bench.dbo.t (id INTEGER PRIMARY KEY, k INTEGER, c TEXT)")
    step = 200_000
    for start in range(0, rows, step):
        end = min(rows, start + step)
        sim.sql(f"INSERT INTO bench.dbo.t SELECT x, x % 1000, {ROW_SQL} FROM (WITH RECURSIVE n(x) AS "
                f"(SELECT {start + 1} UNION ALL SELECT x + 1 FROM n WHERE x < {end}) SELECT x FROM n)")


def change(sim: Simulator, rows: int) -> None:
    """0.5 % of the rows updated in 20 clustered ranges, 0.5 % appended."""
    per = max(1, rows // 200 // 20)
    for i in range(20):
        first = 1 + i * (rows // 20)
        sim.sql(f"UPDATE bench.dbo.t SET c = 'changed ' || c, k = k + 1 WHERE id BETWEEN {first} AND "
                f"{first + per - 1}")
    extra = max(1, rows // 200)
    sim.sql(f"INSERT INTO bench.dbo.t SELECT x, x % 1000, {ROW_SQL} FROM (WITH RECURSIVE n(x) AS "
            f"(SELECT {rows + 1} UNION ALL SELECT x + 1 FROM n WHERE x < {rows + extra}) SELECT x FROM n)")


class Run:
    def __init__(self, sim: Simulator, work: Path) -> None:
        self.sim, self.work = sim, work
        self.repo_dir, self.restic_dir = work / "dtstore-repo", work / "restic-repo"
        self.repo = dtstore.Repository.init(str(self.repo_dir), "bench", kdf=CHEAP_KDF,  # type: ignore[arg-type]
                                            cache_dir=work / "cache")
        self.restic_env = {**os.environ, "RESTIC_REPOSITORY": str(self.restic_dir), "RESTIC_PASSWORD": RESTIC_PASSWORD}
        subprocess.run(["restic", "init"], env=self.restic_env, check=True, capture_output=True)
        self.results: list[dict[str, Any]] = []

    def dtstore(self, label: str, mode: str) -> None:
        before, start = tree_bytes(self.repo_dir), time.monotonic()
        os.environ.update(self.sim.env())
        snap = self.repo.snapshot([make_source(self.sim.url("bench"), repo=self.repo, mode=mode)])
        seconds = time.monotonic() - start
        size = sum(d["bytes"] for d in (snap.source_metadata or {})["databases"])
        self.results.append({"tool": "dtstore", "run": label, "bak_bytes": size, "seconds": round(seconds, 2),
                             "added": tree_bytes(self.repo_dir) - before})

    def restic(self, label: str, diff: bool = False) -> None:
        path = self.work / f"restic-{label}.bak"
        start = time.monotonic()
        self.sim.sql(f"BACKUP DATABASE bench TO DISK = N'{path}' WITH COPY_ONLY, CHECKSUM, INIT, FORMAT"
                     + (", DIFFERENTIAL" if diff else ""))
        staged = time.monotonic() - start
        stable = self.work / "restic-src" / "bench.bak"  # the same path every night, as a DBA's job would write it
        stable.parent.mkdir(exist_ok=True)
        os.replace(path, stable)
        before, start = tree_bytes(self.restic_dir), time.monotonic()
        subprocess.run(["restic", "backup", "--quiet", str(stable)], env=self.restic_env, check=True,
                       capture_output=True)
        seconds = time.monotonic() - start + staged
        self.results.append({"tool": "restic (.bak files)", "run": label, "bak_bytes": stable.stat().st_size,
                             "seconds": round(seconds, 2), "added": tree_bytes(self.restic_dir) - before})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_mssql", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1G", help="database size (100M, 1G)")
    p.add_argument("--workdir", type=Path, help="default: a temporary folder, removed afterwards")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    reason = available()
    if reason is not None or shutil.which("restic") is None:
        p.error(reason or "restic is not installed")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dtstore-bench-mssql-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = max(1000, parse_size(args.size) // ROW_BYTES)
    try:
        with simulator(work / "sim", step_delay=0.0) as sim:
            start = time.monotonic()
            generate(sim, rows)
            generated = time.monotonic() - start
            run = Run(sim, work)
            run.dtstore("full 1", "full")
            run.restic("full 1")
            change(sim, rows)
            run.dtstore("full 2 (1 % changed)", "full")
            run.restic("full 2 (1 % changed)")
            run.dtstore("diff", "diff")
            run.restic("diff", diff=True)
            run.repo.close()
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"database: {rows} rows, generated in {generated:.1f} s (simulator, sqlite underneath)")
    print(f"{'tool':<22} {'run':<22} {'.bak':>11} {'added':>11} {'seconds':>8} {'MiB/s':>7}")
    for r in run.results:
        rate = r["bak_bytes"] / max(r["seconds"], 1e-3) / 2**20
        print(f"{r['tool']:<22} {r['run']:<22} {human(r['bak_bytes']):>11} {human(r['added']):>11} "
              f"{r['seconds']:>8.2f} {rate:>7.1f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "results": run.results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
