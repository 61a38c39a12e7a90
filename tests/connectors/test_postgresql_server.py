"""End to end against a real PostgreSQL 15 (Debian) run as ``postgres``, archiving with ``dtstore wal-push``.

Base backup, pgbench workload, a moment T, more workload and an incident (DROP TABLE), then
restores into new data directories: ``--until T`` equals the content at T exactly, latest equals
the final content; a WAL file under an archived name with other bytes is refused; kill -9 of the
pushers while the server archives loses nothing; a forgotten WAL snapshot is a gap (exit 17,
naming the segment).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.postgresql import Cluster, chown_postgres, make_cluster, pg_dtstore  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

TABLES = {
    "pgbench_accounts": "aid || ':' || bid || ':' || abalance",
    "pgbench_branches": "bid || ':' || bbalance",
    "pgbench_tellers": "tid || ':' || tbalance",
    "pgbench_history": "tid || ':' || bid || ':' || aid || ':' || delta || ':' || mtime",
    "marker": "id || ':' || note",
}


@pytest.fixture(scope="module")
def cluster(pg_dtstore: Path) -> Iterator[Cluster]:  # noqa: F811
    yield from make_cluster(pg_dtstore, push_args="--consolidate 4 ")


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    return {}


def content(cluster: Cluster, *, port: int | None = None) -> dict[str, str]:
    found = {}
    for table, row in TABLES.items():
        exists = cluster.psql(f"SELECT to_regclass('{table}') IS NOT NULL", port=port)
        digest = f"count(*) || '/' || coalesce(md5(string_agg({row}, ',' ORDER BY {row})), '')"
        found[table] = cluster.psql(f"SELECT {digest} FROM {table}", port=port) if exists == "t" else "absent"
    return found


def dtstore_root(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """dtstore as root (the restore side), with this interpreter."""
    env = {**os.environ, "DTSTORE_REPOSITORY": str(cluster.repo), "DTSTORE_PASSWORD_FILE": str(cluster.password_file)}
    return subprocess.run([sys.executable, "-m", "dtstore.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def restore_url(cluster: Cluster, name: str, port: int) -> str:
    parent = cluster.base / name
    parent.mkdir()
    chown_postgres(parent)
    return (f"postgresql:///?pgdata={parent}/data&port={port}&socket_dir={cluster.socket_dir}&start=yes"
            f"&archive=off&tablespace_dir={parent}/tblspc")


def test_base_backup_then_pitr_to_a_moment_and_to_latest(cluster: Cluster, state: dict[str, Any]) -> None:
    space = cluster.base / "ts1"
    space.mkdir()
    chown_postgres(space)
    cluster.psql(f"CREATE TABLESPACE ts1 LOCATION '{space}'")
    cluster.psql("CREATE TABLE marker (id serial PRIMARY KEY, note text) TABLESPACE ts1")
    cluster.pgbench("-i", "-s", "2", "-q")
    cluster.psql("INSERT INTO marker (note) VALUES ('before the base backup')")

    done = cluster.dt("--json", "snapshot", cluster.url)
    assert done.returncode == 0
    listed = cluster.dt("snapshots").stdout
    assert "full" in listed and "postgresql:" in listed

    cluster.pgbench("-t", "300", "-c", "2")
    cluster.psql("INSERT INTO marker (note) VALUES ('just before T')")
    time.sleep(1.2)
    moment = dt.datetime.now(dt.UTC).replace(microsecond=0)
    time.sleep(1.2)
    at_moment = content(cluster)
    cluster.pgbench("-t", "300", "-c", "2")
    cluster.psql("INSERT INTO marker (note) VALUES ('after T')")
    cluster.psql("DROP TABLE pgbench_history")  # the incident
    final = content(cluster)
    cluster.switch_and_wait()
    assert at_moment != final and final["pgbench_history"] == "absent"

    plan = dtstore_root(cluster, "--json", "restore", "--to", restore_url(cluster, "dry", cluster.port + 3),
                        "--until", moment.isoformat(), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    described = json.loads(plan.stdout.splitlines()[-1])["plan"]
    assert described["recovery"]["recovery_target_time"] == moment.strftime("%Y-%m-%d %H:%M:%S+00")
    assert not (cluster.base / "dry" / "data").exists(), "a dry run touches nothing"

    port = cluster.port + 1
    done = dtstore_root(cluster, "restore", "--to", restore_url(cluster, "at-t", port), "--until", moment.isoformat())
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        assert content(cluster, port=port) == at_moment
        assert cluster.psql("SELECT pg_is_in_recovery()", port=port) == "f"
        assert cluster.psql("SELECT spcname FROM pg_tablespace WHERE spcname = 'ts1'", port=port) == "ts1"
    finally:
        cluster.stop(cluster.base / "at-t" / "data")

    port = cluster.port + 2
    done = dtstore_root(cluster, "restore", "--to", restore_url(cluster, "latest", port))
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        assert content(cluster, port=port) == final
    finally:
        cluster.stop(cluster.base / "latest" / "data")
    state["moment"] = moment


def test_restore_refuses_a_non_empty_data_directory(cluster: Cluster) -> None:
    url = restore_url(cluster, "busy", cluster.port + 4)
    data = cluster.base / "busy" / "data"
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    done = dtstore_root(cluster, "restore", "--to", url)
    assert done.returncode == 1 and "not empty" in done.stderr
    assert sorted(p.name for p in data.iterdir()) == ["PG_VERSION"]


def _archived_segment(cluster: Cluster) -> str:
    return cluster.psql("SELECT last_archived_wal FROM pg_stat_archiver")[:24]


def test_wal_push_is_idempotent_and_never_overwrites(cluster: Cluster) -> None:
    name = _archived_segment(cluster)
    fake = cluster.base / "fake"
    (fake / "pg_wal").mkdir(parents=True)
    (fake / "global").mkdir()
    shutil.copyfile(cluster.data / "global" / "pg_control", fake / "global" / "pg_control")
    (fake / "pg_wal" / name).write_bytes(os.urandom(16 << 20))
    for path in (fake, fake / "pg_wal", fake / "global"):
        chown_postgres(path)
    for path in (fake / "pg_wal" / name, fake / "global" / "pg_control"):
        chown_postgres(path)
    refused = cluster.dt("wal-push", "--no-daemon", f"pg_wal/{name}", cwd=fake, check=False)
    assert refused.returncode == 1 and "different contents" in refused.stderr
    refused = cluster.dt("wal-push", f"pg_wal/{name}", cwd=fake, check=False)  # through the pusher too
    assert refused.returncode == 1 and "different contents" in refused.stderr

    (fake / "pg_wal" / name).unlink()
    fetched = cluster.dt("wal-fetch", "--source", _source_id(cluster), name, f"pg_wal/{name}", cwd=fake,
                         check=False)
    assert fetched.returncode == 0, fetched.stderr
    again = cluster.dt("--json", "wal-push", "--no-daemon", f"pg_wal/{name}", cwd=fake)
    assert "already archived" in json.loads(again.stdout.splitlines()[-1])["result"]
    missing = cluster.dt("wal-fetch", "--source", _source_id(cluster), "0000000100000000000000FF", "pg_wal/x",
                         cwd=fake, check=False)
    assert missing.returncode == 1 and not missing.stderr.strip()


def _source_id(cluster: Cluster) -> str:
    return "postgresql:" + cluster.psql("SELECT system_identifier FROM pg_control_system()")


def _pushers(cluster: Cluster) -> list[int]:
    """wal-push processes of THIS cluster (its spool folder is in their environment or argv)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"wal-push" in argv and str(cluster.spool).encode() in environ + b"\0".join(argv):
            found.append(int(entry.name))
    return found


def test_kill_9_during_wal_push_loses_nothing(cluster: Cluster) -> None:
    cluster.psql("CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, "
                 "filler char(22))")
    # the slower client (dtstore wal-push imports dtstore: ~0.25 s) is easier to hit than dtstore-wal-push
    cluster.psql(f"ALTER SYSTEM SET archive_command = '{cluster.dtstore} wal-push %p'")
    cluster.psql("SELECT pg_reload_conf()")
    load = threading.Thread(target=cluster.pgbench, args=("-T", "12", "-c", "2"))
    load.start()
    killed = {"pusher": 0, "client": 0}
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline and not all(killed.values()):
        cluster.psql("SELECT pg_switch_wal()")
        for pid in _pushers(cluster):
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                role = "pusher" if b"--serve" in Path(f"/proc/{pid}/cmdline").read_bytes() else "client"
                os.kill(pid, signal.SIGKILL)
                killed[role] += 1
        time.sleep(0.2)
    load.join()
    assert killed["client"] > 0, killed
    cluster.psql("ALTER SYSTEM RESET archive_command")
    cluster.psql("SELECT pg_reload_conf()")
    cluster.switch_and_wait(timeout=120)
    log = (cluster.base / "server.log").read_text()
    # a killed wal-push: the archiver logs the failure (the shell's 137), restarts and retries the file
    assert "exit code 137" in log or "signal 9" in log
    plan = dtstore_root(cluster, "--json", "restore", "--to", "postgresql:///?pgdata=/nonexistent/x", "--dry-run")
    assert plan.returncode == 0, plan.stderr  # latest is reachable: no segment is missing
    names = [w["name"] for w in json.loads(plan.stdout.splitlines()[-1])["plan"]["wal"]]
    assert names[-1] >= _archived_segment(cluster)


def test_restore_points_and_a_forgotten_wal_snapshot_is_a_gap(cluster: Cluster) -> None:
    text = cluster.dt("restore-points").stdout
    assert "timeline 1 restorable" in text and "gap" not in text
    log = (cluster.spool / "pushd.log").read_text()
    assert "consolidated" in log  # small WAL snapshots were replaced by bigger ones
    listing = [json.loads(line) for line in cluster.dt("snapshots", "--json").stdout.splitlines()]
    wal = [s for s in listing if s.get("type") == "snapshot" and s.get("paths", [""])[0].startswith("wal 00")]
    fulls = [s for s in listing if s.get("type") == "snapshot" and s.get("paths", [""])[0].startswith("postgresql:")]
    later = [s for s in wal if s["time"] > fulls[0]["time"]]
    victim = later[-2]
    missing = victim["paths"][0].split()[1]
    refused = cluster.dt("forget", victim["id"], check=False)
    assert refused.returncode == 2 and "would lose" in refused.stderr  # retention knows the WAL chain
    cluster.dt("forget", "--force", victim["id"])
    done = dtstore_root(cluster, "restore", "--to", "postgresql:///?pgdata=/nonexistent/x", "--dry-run")
    assert done.returncode == 17, done.stdout + done.stderr
    assert missing in done.stderr
    text = cluster.dt("restore-points").stdout
    assert "gap" in text and missing in text
