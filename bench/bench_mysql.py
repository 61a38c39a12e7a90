"""MySQL connector benchmark: dtstore's streamed full snapshot against ``mariadb-dump | restic backup --stdin``.

Run from the repository root::

    python -m bench.bench_mysql --size 1G          # about 10 minutes on 2 cores
    python -m bench.bench_mysql --size 100M        # a quick run
    python -m bench.bench_mysql --size 1G --json results.json --workdir /var/tmp/b

What it does, in one run, on one private MariaDB server (``mariadbd --no-defaults``, unix socket):

1. generates sysbench-like tables (``id, k, c CHAR(120), pad CHAR(60)``, random digit groups) in two
   databases with ``INSERT … SELECT`` from the sequence engine, sized so the dump is about ``--size``;
2. ``mariadb-dump`` to ``/dev/null`` alone: the speed limit of any logical backup;
3. first full: dtstore (``Repository.snapshot`` of the mysql source, in process) and
   ``set -o pipefail; mariadb-dump … | restic backup --stdin`` with the same dump options;
4. changes 1 % of the rows (0.5 % updated in 20 clustered ranges, 0.5 % appended), then a second
   full with both tools: bytes added to each repository (size on disk before/after);
5. restore into a fresh server: ``dtstore restore --to`` (``restore_to``) and
   ``restic dump latest | mariadb``; both results are checked with ``CHECKSUM TABLE`` against the source.

Both repositories live on the same disk; restic uses its defaults (zstd auto) and dtstore its defaults
except a cheap KDF (key derivation is not what is measured).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dtstore
from dtstore.connectors import RestoreRequest, make_source, restore_to
from dtstore.crypto.keys import CHEAP_KDF
from tests.servers.mariadb import MariaDBServer, install_datadir

DATABASES = ("bench1", "bench2")
TABLES_PER_DB = 2
ROW_BYTES = 205  # a row's share of the dump, measured on MariaDB 10.11
BATCH = 200_000
FAST_SERVER = (
    "--innodb-buffer-pool-size=2G",
    "--innodb-log-file-size=512M",
    "--innodb-flush-log-at-trx-commit=2",
    "--sync-binlog=0",
    "--max-binlog-size=256M",
)
SOURCE_PASSWORD = "bench-src-pw"
TARGET_PASSWORD = "bench-dst-pw"
RESTIC_PASSWORD = "bench-restic-pw"


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 100M or 1G")
    return int(float(match.group(1)) * 1024 ** " KMGT".index(match.group(2) or " "))


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class Step:
    name: str
    seconds: float
    cpu_seconds: float | None = None
    bytes_in: int | None = None
    repo_growth: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def mib_per_s(self) -> float | None:
        return self.bytes_in / self.seconds / 2**20 if self.bytes_in and self.seconds else None


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    wall, cpu = time.monotonic(), time.process_time()
    children = os.times()
    yield out
    after = os.times()
    out["seconds"] = time.monotonic() - wall
    out["cpu"] = time.process_time() - cpu
    out["child_cpu"] = (after.children_user - children.children_user) + (
        after.children_system - children.children_system
    )


@contextmanager
def env(**values: str | None) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def shell(script: str, extra_env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail; " + script],
        env={**os.environ, **extra_env},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"failed ({result.returncode}): {script}\n{result.stderr[-3000:]}")
    return result.stdout


class Bench:
    def __init__(self, work: Path, size: int, zstd_level: int | None = None, restore: bool = True) -> None:
        self.work, self.size = work, size
        self.zstd_level, self.restore = zstd_level, restore
        self.compression = ""
        self.template = work / "template"
        self.steps: list[Step] = []
        self.source = self._server("src", 1, SOURCE_PASSWORD)
        self.dump_args = [
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--no-tablespaces",
            "--skip-dump-date",
            "--master-data=2",
            "--gtid",
            "--databases",
            *DATABASES,
        ]
        self.restic_env = {
            "RESTIC_REPOSITORY": str(work / "restic"),
            "RESTIC_PASSWORD": RESTIC_PASSWORD,
            "RESTIC_CACHE_DIR": str(work / "restic-cache"),
        }

    def _server(self, name: str, server_id: int, password: str) -> MariaDBServer:
        if not self.template.exists():
            install_datadir(self.template)
        base = self.work / name
        base.mkdir()
        shutil.copytree(self.template, base / "data")
        server = MariaDBServer(name, base, server_id=server_id, args=FAST_SERVER, max_binlog_size=256 << 20)
        server.start()
        server.set_root_password(password)
        return server

    def record(self, step: Step) -> Step:
        self.steps.append(step)
        rate = f"  {step.mib_per_s:.1f} MiB/s" if step.mib_per_s else ""
        growth = f"  repo +{human(step.repo_growth)}" if step.repo_growth is not None else ""
        print(f"  {step.name:<34} {step.seconds:8.1f} s{rate}{growth}", flush=True)
        return step

    # -- data ---------------------------------------------------------------------------------------

    def rows_per_table(self) -> int:
        return max(1000, self.size // ROW_BYTES // (len(DATABASES) * TABLES_PER_DB))

    def tables(self) -> list[str]:
        return [f"{db}.sbtest{i}" for db in DATABASES for i in range(1, TABLES_PER_DB + 1)]

    @staticmethod
    def digits(groups: int, salt: str) -> str:
        parts = ["LPAD(FLOOR(RAND() * 99999999999), 11, '0')" for _ in range(groups)]
        return f"CONCAT_WS('-', {', '.join(parts)}) /* {salt} */"

    def generate(self) -> None:
        rows = self.rows_per_table()
        with timed() as t:
            for db in DATABASES:
                self.source.sql(f"CREATE DATABASE {db}")
            for table in self.tables():
                self.source.sql(
                    f"CREATE TABLE {table} (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL, "
                    "pad CHAR(60) NOT NULL, KEY k_1 (k)) ENGINE=InnoDB"
                )
                for start in range(1, rows + 1, BATCH):
                    end = min(rows, start + BATCH - 1)
                    self.source.sql(
                        f"INSERT INTO {table} SELECT seq, FLOOR(1 + RAND() * {rows}), {self.digits(10, 'c')}, "
                        f"{self.digits(5, 'pad')} FROM {table.split('.')[0]}.seq_{start}_to_{end}"
                    )
        self.record(Step("generate data", t["seconds"], detail={"rows": rows * len(self.tables())}))

    def change_one_percent(self) -> None:
        rows = self.rows_per_table()
        span = max(1, rows // 200 // 20)  # 0.5 % of the rows, in 20 clustered ranges
        with timed() as t:
            for table in self.tables():
                for r in range(20):
                    lo = 1 + r * (rows // 20)
                    self.source.sql(
                        f"UPDATE {table} SET k = k + 1, c = {self.digits(10, 'u')} "
                        f"WHERE id BETWEEN {lo} AND {lo + span - 1}"
                    )
                extra = max(1, rows // 200)  # 0.5 % appended
                self.source.sql(
                    f"INSERT INTO {table} SELECT {rows} + seq, FLOOR(1 + RAND() * {rows}), {self.digits(10, 'n')}, "
                    f"{self.digits(5, 'p')} FROM {table.split('.')[0]}.seq_1_to_{extra}"
                )
        self.record(Step("change 1 % of rows", t["seconds"]))

    def checksums(self, server: MariaDBServer) -> list[tuple[str, ...]]:
        return server.rows(f"CHECKSUM TABLE {', '.join(self.tables())}")

    # -- backups ------------------------------------------------------------------------------------

    def dump_argv(self, server: MariaDBServer) -> list[str]:
        return ["mariadb-dump", f"--socket={server.socket}", "--user=root", *self.dump_args]

    def dump_only(self) -> int:
        argv = " ".join(self.dump_argv(self.source))
        with timed() as t:
            size = int(shell(f"{argv} | wc -c", {"MYSQL_PWD": SOURCE_PASSWORD}).strip())
        self.record(Step("mariadb-dump > /dev/null", t["seconds"], t["child_cpu"], size))
        return size

    def dtstore_full(self, repo: dtstore.Repository, label: str, dump_bytes: int) -> Step:
        before = tree_bytes(self.work / "dtstore")
        url = self.source.url(*DATABASES)
        with env(MYSQL_PWD=SOURCE_PASSWORD), timed() as t:
            snap = repo.snapshot([make_source(url, repo=repo, mode="full")])
        s = snap.summary
        return self.record(
            Step(
                f"dtstore {label}",
                t["seconds"],
                t["cpu"],
                dump_bytes,
                tree_bytes(self.work / "dtstore") - before,
                {
                    "bytes_read": s["bytes_read"],
                    "bytes_new": s["bytes_new"],
                    "bytes_stored": s["bytes_stored"],
                    "dtstore_cpu_s": round(t["cpu"], 1),
                    "dump_cpu_s": round(t["child_cpu"], 1),
                },
            )
        )

    def restic_full(self, label: str, dump_bytes: int) -> Step:
        before = tree_bytes(self.work / "restic")
        argv = " ".join(self.dump_argv(self.source))
        with timed() as t:
            out = shell(
                f"{argv} | restic backup --stdin --stdin-filename dump.sql --json --quiet",
                {**self.restic_env, "MYSQL_PWD": SOURCE_PASSWORD},
            )
        summary: dict[str, Any] = next((json.loads(line) for line in out.splitlines() if '"summary"' in line), {})
        return self.record(
            Step(
                f"mariadb-dump | restic {label}",
                t["seconds"],
                t["child_cpu"],
                dump_bytes,
                tree_bytes(self.work / "restic") - before,
                {"data_added": summary.get("data_added"), "cpu_s": round(t["child_cpu"], 1)},
            )
        )

    # -- restores -----------------------------------------------------------------------------------

    def dtstore_restore(self, repo: dtstore.Repository) -> Step:
        target = self._server("dst-dtstore", 2, TARGET_PASSWORD)
        with env(MYSQL_PWD=TARGET_PASSWORD), timed() as t:
            restore_to(RestoreRequest(target.url()), repo=repo)
        ok = self.checksums(target) == self.checksums(self.source)
        step = self.record(Step("dtstore restore --to", t["seconds"], t["cpu"], detail={"checksums_match": ok}))
        target.stop()
        return step

    def restic_restore(self) -> Step:
        target = self._server("dst-restic", 3, TARGET_PASSWORD)
        script = f"restic dump latest dump.sql | mariadb --socket={target.socket} --user=root"
        with timed() as t:
            shell(script, {**self.restic_env, "MYSQL_PWD": TARGET_PASSWORD})
        ok = self.checksums(target) == self.checksums(self.source)
        step = self.record(Step("restic dump | mariadb", t["seconds"], t["child_cpu"], detail={"checksums_match": ok}))
        target.stop()
        return step

    def run(self) -> dict[str, Any]:
        print(f"dtstore MySQL benchmark, target dump size {human(self.size)}, work dir {self.work}", flush=True)
        self.generate()
        dump_bytes = self.dump_only()
        shell("restic init --quiet", self.restic_env)
        repo = dtstore.Repository.init(
            str(self.work / "dtstore"), "bench", kdf=CHEAP_KDF, cache_dir=self.work / "dtstore-cache",
            zstd_level=self.zstd_level,
        )
        self.compression = repo.config.compression.describe()
        try:
            d1 = self.dtstore_full(repo, "full #1", dump_bytes)
            r1 = self.restic_full("full #1", dump_bytes)
            self.change_one_percent()
            dump2 = self.dump_only()
            d2 = self.dtstore_full(repo, "full #2 (1 % changed)", dump2)
            r2 = self.restic_full("full #2 (1 % changed)", dump2)
            dr, rr = (self.dtstore_restore(repo), self.restic_restore()) if self.restore else (None, None)
        finally:
            repo.close()
            self.source.stop()
        return self.report(dump_bytes, d1, r1, d2, r2, dr, rr)

    def report(self, dump_bytes: int, d1: Step, r1: Step, d2: Step, r2: Step,
               dr: Step | None, rr: Step | None) -> dict[str, Any]:
        dump = self.steps[1]
        lines = [
            "",
            f"dump size {human(dump_bytes)}; mariadb-dump alone {dump.seconds:.1f} s ({dump.mib_per_s:.0f} MiB/s)",
            f"{'':<28}{'dtstore':>14}{'restic':>14}",
            f"{'full #1 time':<28}{d1.seconds:>12.1f} s{r1.seconds:>12.1f} s",
            f"{'full #1 repo growth':<28}{human(d1.repo_growth or 0):>14}{human(r1.repo_growth or 0):>14}",
            f"{'full #2 time (1 % changed)':<28}{d2.seconds:>12.1f} s{r2.seconds:>12.1f} s",
            f"{'full #2 repo growth':<28}{human(d2.repo_growth or 0):>14}{human(r2.repo_growth or 0):>14}",
        ]
        if dr is not None and rr is not None:
            lines += [
                f"{'restore time':<28}{dr.seconds:>12.1f} s{rr.seconds:>12.1f} s",
                f"{'restore checksums match':<28}{dr.detail['checksums_match']!s:>14}"
                f"{rr.detail['checksums_match']!s:>14}",
            ]
        lines += [
            f"dtstore ({self.compression}) full #1 vs dump alone: "
            f"{d1.seconds / dump.seconds:.2f}x the time "
            f"(dtstore process CPU {d1.detail['dtstore_cpu_s']} s, dump CPU {d1.detail['dump_cpu_s']} s)",
        ]
        print("\n".join(lines), flush=True)
        return {
            "size_requested": self.size,
            "dump_bytes": dump_bytes,
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "compression": self.compression,
            "steps": [{**asdict(s), "mib_per_s": s.mib_per_s} for s in self.steps],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_mysql", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"), help="dump size, e.g. 100M or 1G")
    parser.add_argument("--workdir", type=Path, help="where servers and repositories live (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--compression-level", type=int,
                        help="a plain zstd level for dtstore's repository (default: what init gives a new one)")
    parser.add_argument("--no-restore", action="store_true", help="skip the two restores (the slowest steps)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dtstore-bench-mysql-", dir=args.workdir))
    bench = Bench(work, args.size, args.compression_level, restore=not args.no_restore)
    try:
        result = bench.run()
    finally:
        for server in (bench.source,):
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
