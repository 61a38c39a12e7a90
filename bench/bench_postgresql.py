"""PostgreSQL benchmark: dtstore beside pgBackRest (Debian 2.45) on the same cluster.

Run from the repository root, as root (the server runs as ``postgres``)::

    python -m bench.bench_postgresql --scale 100      # pgbench scale 100, ~1.5 GB; about 15 minutes on 2 cores
    python -m bench.bench_postgresql --scale 10       # a quick run
    python -m bench.bench_postgresql --scale 100 --json results.json

One private PostgreSQL 15 cluster (unix socket in a temporary folder), initialised with
``pgbench -i -s SCALE`` while archiving is off, then:

1. full backup with each tool: ``dtstore snapshot postgresql://…`` and ``pgbackrest backup
   --type=full`` (``compress-type=zst``, level 3 like dtstore's zstd; ``process-max=2``), archiving
   to both (``archive_command = 'dtstore-wal-push %p && pgbackrest archive-push %p'``);
2. 1 % of ``pgbench_accounts`` rows updated at random (as pgbench does: rows spread over ~45 % of
   the pages), CHECKPOINT, then a second backup: dtstore full (unchanged files are not read) and
   pgBackRest ``--type=diff``; time and bytes added: dtstore's ``bytes_stored`` of the snapshot (its
   WAL snapshots apart), pgBackRest's ``backup/`` folder on disk (its ``archive/`` apart);
3. more pgbench, a moment T, more pgbench, ``pg_switch_wal()``; restore to T with each tool into a
   new data directory, start it and wait until it is promoted; ``pgbench_accounts`` checked equal;
4. WAL push rate, each tool alone as ``archive_command``: a backlog of ready segments made while
   archiving fails (a ``--backlog-mb`` bulk insert), then the time to clear it (segments/s); and a write-heavy
   ``pgbench -N -c 4`` for ``--wal-seconds`` with the ready backlog sampled each second (lag growth).
   pgBackRest pushes with ``archive-async=y`` (spool, ``process-max=2``), its fast mode.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tests.servers.postgresql import (
    Cluster,
    chown_postgres,
    ensure_venv,
    make_cluster,
    postgres_env,
    run_as_postgres,
)

CHECK = "SELECT count(*) || '/' || md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts"


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


class Bench:
    def __init__(self, cluster: Cluster, args: argparse.Namespace) -> None:
        self.c, self.args = cluster, args
        self.results: dict[str, Any] = {"scale": args.scale, "machine": f"{platform.machine()} {os.cpu_count()} cpu"}
        self.pgbr_repo = cluster.base / "pgbr"
        self.pgbr_conf = cluster.base / "pgbackrest.conf"

    def pgbr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_as_postgres(["pgbackrest", f"--config={self.pgbr_conf}", "--stanza=bench", *args],
                               env=postgres_env(), check=check, timeout=3600)

    def set_archive(self, command: str) -> None:
        self.c.psql(f"ALTER SYSTEM SET archive_command = '{command.replace(chr(39), chr(39) * 2)}'")
        self.c.psql("SELECT pg_reload_conf()")
        time.sleep(0.5)

    def dtstore_push(self) -> str:
        return f"{self.c.dtstore}-wal-push %p"

    def pgbr_push(self) -> str:
        return f"pgbackrest --config={self.pgbr_conf} --stanza=bench archive-push %p"

    def setup(self) -> None:
        c = self.c
        for d in ("pgbr", "pgbr-log", "pgbr-spool", "pgbr-lock"):
            (c.base / d).mkdir()
            chown_postgres(c.base / d)
        self.pgbr_conf.write_text(f"""[global]
repo1-path={self.pgbr_repo}
log-path={c.base}/pgbr-log
spool-path={c.base}/pgbr-spool
lock-path={c.base}/pgbr-lock
start-fast=y
compress-type=zst
compress-level=3
process-max=2
archive-async=y
log-level-console=warn
[bench]
pg1-path={c.data}
pg1-port={c.port}
pg1-socket-path={c.socket_dir}
""")
        chown_postgres(self.pgbr_conf)
        self.set_archive("true")
        t0 = time.monotonic()
        c.pgbench("-i", "-s", str(self.args.scale), "-q")
        c.psql("CHECKPOINT")
        self.results["init_seconds"] = round(time.monotonic() - t0, 1)
        self.results["database_bytes"] = int(c.psql("SELECT pg_database_size('postgres')"))
        self.pgbr("stanza-create")
        self.set_archive(f"{self.dtstore_push()} && {self.pgbr_push()}")
        c.switch_and_wait(timeout=300)

    def timed(self, fn: Any, *args: Any) -> float:
        t0 = time.monotonic()
        fn(*args)
        return round(time.monotonic() - t0, 2)

    def snapshot(self) -> tuple[float, dict[str, Any]]:
        """dtstore snapshot as postgres; (seconds, the summary: bytes_stored = what this snapshot added)."""
        t0 = time.monotonic()
        done = self.c.dt("--json", "snapshot", self.c.url)
        return round(time.monotonic() - t0, 2), json.loads(done.stdout.splitlines()[-1])

    def backups(self) -> None:
        c = self.c
        r: dict[str, Any] = {}
        r["dtstore_full_seconds"], summary = self.snapshot()
        r["dtstore_full_bytes"] = summary["bytes_stored"]
        before = du(self.pgbr_repo / "backup")
        r["pgbackrest_full_seconds"] = self.timed(self.pgbr, "--type=full", "backup")
        r["pgbackrest_full_bytes"] = du(self.pgbr_repo / "backup") - before
        rows = self.args.scale * 100_000 // 100
        c.psql(f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN "
               f"(SELECT (random() * {self.args.scale * 100_000 - 1})::int + 1 FROM generate_series(1, {rows}))")
        c.psql("CHECKPOINT")
        c.switch_and_wait(timeout=300)
        r["dtstore_second_seconds"], summary = self.snapshot()
        r["dtstore_second_bytes"] = summary["bytes_stored"]
        r["dtstore_second_bytes_read"] = summary["bytes_read"]
        r["dtstore_second_files_not_read"] = summary["files_unchanged"]
        before = du(self.pgbr_repo / "backup")
        r["pgbackrest_diff_seconds"] = self.timed(self.pgbr, "--type=diff", "backup")
        r["pgbackrest_diff_bytes"] = du(self.pgbr_repo / "backup") - before
        self.results["backups"] = r

    def pitr(self) -> None:
        c = self.c
        c.pgbench("-T", "10", "-c", "2")
        time.sleep(1.2)
        moment = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime())
        time.sleep(1.2)
        expected = c.psql(CHECK)
        c.pgbench("-T", "5", "-c", "2")
        c.switch_and_wait(timeout=300)
        time.sleep(2)  # pgBackRest's async push
        r: dict[str, Any] = {}
        for tool in ("dtstore", "pgbackrest"):
            parent = c.base / f"restore-{tool}"
            parent.mkdir()
            chown_postgres(parent)
            port = c.port + (1 if tool == "dtstore" else 2)
            t0 = time.monotonic()
            if tool == "dtstore":
                env = {**os.environ, "DTSTORE_REPOSITORY": str(c.repo), "DTSTORE_PASSWORD_FILE": str(c.password_file)}
                url = (f"postgresql:///?pgdata={parent}/data&port={port}&socket_dir={c.socket_dir}&start=yes"
                       f"&archive=off")
                done = subprocess.run(["python3", "-m", "dtstore.cli", "restore", "--to", url, "--until",
                                       moment.replace("+00", "Z").replace(" ", "T")], env=env, capture_output=True,
                                      text=True, check=False)
                if done.returncode:
                    raise RuntimeError(done.stdout + done.stderr)
            else:
                self.pgbr(f"--pg1-path={parent}/data", "--type=time", f"--target={moment}",
                          "--target-action=promote", "--archive-mode=off", "restore")
                with open(parent / "data" / "postgresql.auto.conf", "a") as conf:
                    conf.write(f"port = {port}\nunix_socket_directories = '{c.socket_dir}'\nlisten_addresses = ''\n")
                c.pg_ctl(parent / "data", "start", log=parent / "server.log", env=postgres_env())
                while (parent / "data" / "recovery.signal").exists():
                    time.sleep(0.2)
            r[f"{tool}_pitr_seconds"] = round(time.monotonic() - t0, 1)
            r[f"{tool}_pitr_correct"] = c.psql(CHECK, port=port) == expected
            c.stop(parent / "data")
        self.results["pitr"] = r

    def ready(self) -> int:
        status = self.c.data / "pg_wal" / "archive_status"
        return sum(1 for n in os.listdir(status) if n.endswith(".ready"))

    def wal(self) -> None:
        c = self.c
        r: dict[str, Any] = {}
        for tool, command in (("dtstore", self.dtstore_push()), ("pgbackrest", self.pgbr_push())):
            c.psql(f"ALTER SYSTEM SET archive_command = '{command}'")
            # backlog: archiving fails while pgbench writes, then the tool clears it
            self.set_archive("false")
            rows = self.args.backlog_mb * 10_000
            c.psql(f"CREATE TABLE walgen AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v "
                   f"FROM generate_series(1, {rows}) g")
            c.psql("DROP TABLE walgen")
            c.psql("SELECT pg_switch_wal()")
            time.sleep(1)
            backlog = self.ready()
            t0 = time.monotonic()
            self.set_archive(command)
            while self.ready() > 0:
                time.sleep(0.05)
            drain = time.monotonic() - t0
            r[f"{tool}_backlog_segments"] = backlog
            r[f"{tool}_segments_per_second"] = round(backlog / drain, 1)
            # write-heavy run: the ready backlog sampled each second
            samples: list[int] = []
            before = int(c.psql("SELECT archived_count FROM pg_stat_archiver"))
            load = threading.Thread(target=c.pgbench, args=("-N", "-c", "4", "-T", str(self.args.wal_seconds)))
            t0 = time.monotonic()
            load.start()
            while load.is_alive():
                samples.append(self.ready())
                time.sleep(1)
            load.join()
            c.switch_and_wait(timeout=600)
            archived = int(c.psql("SELECT archived_count FROM pg_stat_archiver")) - before
            r[f"{tool}_heavy_segments"] = archived
            r[f"{tool}_heavy_generated_per_second"] = round(archived / (time.monotonic() - t0), 2)
            r[f"{tool}_heavy_ready_max"] = max(samples or [0])
            half = len(samples) // 2
            r[f"{tool}_heavy_ready_first_half_mean"] = round(sum(samples[:half]) / max(half, 1), 2)
            r[f"{tool}_heavy_ready_second_half_mean"] = round(sum(samples[half:]) / max(len(samples) - half, 1), 2)
        self.results["wal"] = r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--wal-seconds", type=int, default=40)
    parser.add_argument("--backlog-mb", type=int, default=1200)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    dtstore = ensure_venv()
    gen = make_cluster(dtstore, settings="max_wal_size = 2GB\nshared_buffers = 256MB\n")
    cluster = next(gen)
    bench = Bench(cluster, args)
    try:
        bench.setup()
        print(json.dumps(bench.results), flush=True)
        bench.backups()
        print(json.dumps(bench.results["backups"]), flush=True)
        bench.pitr()
        print(json.dumps(bench.results["pitr"]), flush=True)
        bench.wal()
        print(json.dumps(bench.results["wal"]), flush=True)
    finally:
        print(json.dumps(bench.results, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(bench.results, indent=1))
        gen.close()


if __name__ == "__main__":
    main()
