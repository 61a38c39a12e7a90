"""The Domino backup-task backend: the simulated Domino Backup task (``tests/sim/domino/task.py``) runs
the commands of the configuration dtstore ships (``connectors/domino/config/dtstore_linux.dxl``) as
real ``dtstore`` processes, and marks an extent archived only when its command reports success.

What this proves: the commands do what spec/connectors-domino.md §5 says when called the way we read
HCL's documentation (parameters appended, OK/Error strings).  It does not prove that a real Domino
calls them that way."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import dtstore
from dtstore.connectors import RestoreRequest, restore_points, restore_to
from dtstore.connectors.base import SnapshotInfo
from dtstore.connectors.domino.chain import links
from dtstore.connectors.domino.task import Call, backup_translog
from dtstore.errors import ConnectorError
from tests.helpers import PASSWORD, init_repo
from tests.servers.flaky import FlakyProxy
from tests.sim.domino.server import DominoSim, tree
from tests.sim.domino.task import BackupTask, read_config

SMALL = 64 << 10


def script_dir(tmp_path: Path) -> Path:
    """``ScriptDir`` with a ``dtstore`` that records its PID (so a test can kill -9 it) and runs this checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "dtstore"
    wrapper.write_text(f'#!/bin/sh\necho $$ >> "{bin_dir}/pids"\nexec {sys.executable} -m dtstore.cli "$@"\n')
    wrapper.chmod(0o755)
    return bin_dir


def environment(repo: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "DTSTORE_REPOSITORY": repo, "DTSTORE_PASSWORD": PASSWORD,
            "DTSTORE_CACHE_DIR": str(tmp_path / "task-cache")}


@pytest.fixture
def sim(tmp_path: Path) -> DominoSim:
    server = DominoSim(tmp_path / "srv")
    server.init(extent_size=SMALL, db_size=SMALL, mail_users=1)
    for name in server.databases():  # two databases keep the number of dtstore processes small
        if name not in ("names.nsf", "mail/user000.nsf"):
            (server.data / name).unlink()
    server.write(extents=2)
    return server


def task(sim: DominoSim, tmp_path: Path, repo: str, **config: str) -> BackupTask:
    fields = read_config()
    fields.update(config)
    return BackupTask(sim, config=fields, script_dir=str(script_dir(tmp_path)), env=environment(repo, tmp_path))


def history(repo_url: str, tmp_path: Path) -> list[SnapshotInfo]:
    with dtstore.Repository.open(repo_url, PASSWORD, cache_dir=tmp_path / "check-cache") as repo:
        return sorted((SnapshotInfo.of(s) for s in repo.snapshots()), key=lambda s: s.time)


def test_translog_full_and_restore_through_the_commands(sim: DominoSim, tmp_path: Path) -> None:
    repo_url = str(tmp_path / "repo")
    init_repo(repo_url, tmp_path / "cache").close()
    run = task(sim, tmp_path, repo_url)
    log = run.translog()
    assert log.failed == [] and log.archived == [1, 2] and sim.archived_through() == 2
    assert all(r.output.count("Return: PROCESSED") == 1 and "BackupRef: " in r.output for r in log.results)
    again = task(sim, tmp_path, repo_url).translog()  # nothing new: no command
    assert again.results == []
    extents = {seq: sim.extent_path(seq).read_bytes() for seq in (1, 2)}

    full = task(sim, tmp_path, repo_url).full()
    assert full.failed == [], full.failed
    modes = [r.command[8] for r in full.results]  # parameter 6, BackupMode, after `dtstore domino backup-db`
    assert [r.command[2] for r in full.results] == ["backup-db"] * 4 and modes.count("FULL") == 2
    sim.write(extents=1)
    assert task(sim, tmp_path, repo_url).translog().archived == [3]

    found = history(repo_url, tmp_path)
    kinds = [link.kind for link in links(found)]
    assert kinds.count("log") == 3 and kinds.count("full") == 1 and kinds.count("diff") == 3
    with dtstore.Repository.open(repo_url, PASSWORD, cache_dir=tmp_path / "p-cache") as repo:
        [points] = restore_points(repo.snapshots())
    assert points.source_id == "domino:sim1" and points.streams[0].windows

    # Domino's restore asks for the database, its .DELTA and the extents by name
    target = tmp_path / "restored"
    back = task(sim, tmp_path, repo_url).restore(target, ["names.nsf"], [1, 2], start=full_start(found))
    assert back.failed == [], back.failed
    assert (target / "names.nsf.DAD").read_bytes() == (sim.data / "names.nsf").read_bytes()
    assert {n: (target / f"S{n:07d}.TXN").read_bytes() for n in (1, 2)} == extents
    refused = task(sim, tmp_path, repo_url).restore(target, [], [1])  # never over an existing file
    assert refused.failed and "Return: ERROR" in refused.results[0].output

    # and dtstore's own restore picks the base and every extent recovery needs
    with dtstore.Repository.open(repo_url, PASSWORD, cache_dir=tmp_path / "r-cache") as repo:
        plan = restore_to(RestoreRequest(f"domino://{tmp_path / 'r2'}"), repo=repo)
    restored = tree(tmp_path / "r2")
    assert restored["names.nsf"] == (sim.data / "names.nsf").read_bytes()
    assert "names.nsf.DELTA" in restored
    # extents 1 and 2 were complete before the backup started; 3 was being written during it
    assert [f["dest"] for f in plan.to_json()["files"] if f["area"] == "translog"] == ["S0000003.TXN"]


def full_start(found: list[SnapshotInfo]) -> str:
    return str(next(s.meta["task"]["set"] for s in found if s.meta["mode"] == "task-db"))


def test_snapshot_mode_sends_the_file_list_in_one_snapshot(sim: DominoSim, tmp_path: Path) -> None:
    repo_url = str(tmp_path / "repo")
    init_repo(repo_url, tmp_path / "cache").close()
    run = task(sim, tmp_path, repo_url, BackupSnapshotMode="1")
    log = run.full()
    assert log.failed == [], log.failed
    assert [r.command[2] for r in log.results] == ["backup-snapshot", "backup-db", "backup-db"]
    assert not list(sim.root.glob("dominobackup_*.lst"))  # the command removed the file list
    found = history(repo_url, tmp_path)
    snap = next(s for s in found if s.meta["mode"] == "task-snapshot")
    assert sorted(f["file"] for f in snap.meta["task"]["files"]) == ["mail/user000.nsf", "names.nsf"]
    assert snap.meta["databases"][0]["dbiid"]


def test_an_extent_sent_again_is_done_at_once_and_other_bytes_are_refused(sim: DominoSim, tmp_path: Path) -> None:
    with init_repo(str(tmp_path / "repo"), tmp_path / "cache") as repo:
        state = sim.load()
        path = sim.extent_path(1)
        call = Call.of([str(path), path.name, state.log_id, "sim1", "Default", "TRANSLOG", "T1", "x", "30"])
        first, _ = backup_translog(repo, call)
        second, note2 = backup_translog(repo, call)
        assert second.id == first.id and note2 == "already archived"
        with open(path, "r+b") as f:
            f.seek(100)
            f.write(b"other bytes")
        with pytest.raises(ConnectorError, match="other content"):
            backup_translog(repo, call)
        assert len(repo.snapshots()) == 1


@pytest.mark.slow
def test_archive_marking_never_happens_for_a_failed_snapshot(
    sim: DominoSim, tmp_path: Path, s3_env: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch,
    flaky_proxy_factory: Any,
) -> None:
    init_repo(s3_env, tmp_path / "cache").close()
    host, port = s3_server.endpoint_url.removeprefix("http://").split(":")
    proxy: FlakyProxy = flaky_proxy_factory(host, int(port))
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url())
    assert task(sim, tmp_path, s3_env).translog().archived == [1, 2]
    sim.write(extents=1)

    # S3 unavailable: the command fails, Domino is told nothing good, the extent stays unarchived
    proxy.pause()
    failed = task(sim, tmp_path, s3_env).translog()
    assert failed.archived == [] and sim.archived_through() == 2
    assert "Return: ERROR" in failed.results[0].output and "Return: PROCESSED" not in failed.results[0].output

    # kill -9 of the command while it waits for S3: no output, no marking
    pids = script_dir(tmp_path) / "pids"
    pids.unlink(missing_ok=True)
    runner = task(sim, tmp_path, s3_env)
    done = threading.Thread(target=runner.translog)
    done.start()
    deadline = time.monotonic() + 30
    while not pids.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)
    os.kill(int(pids.read_text().split()[0]), signal.SIGKILL)
    done.join(60)
    assert runner.log.results[0].exit_status == -signal.SIGKILL and runner.log.archived == []
    assert sim.archived_through() == 2

    proxy.resume()
    healed = task(sim, tmp_path, s3_env).translog()
    assert healed.archived == [3] and sim.archived_through() == 3
    found = history(s3_env, tmp_path)
    assert sorted(s.meta["extent"]["name"] for s in found) == ["S0000001.TXN", "S0000002.TXN", "S0000003.TXN"]


def _info(n: int, mode: str, **meta: Any) -> SnapshotInfo:
    import datetime as dt

    when = dt.datetime(2026, 12, 1, tzinfo=dt.UTC) + dt.timedelta(hours=n)
    return SnapshotInfo(f"{n:064x}", f"{n:08x}", when, "domino:sim1", "domino",
                        {"format": 1, "transport": "task", "mode": mode, "consistent_at": None, **meta})


def _db(n: int, start: str, backup_mode: str, name: str) -> SnapshotInfo:
    files = [{"file": name, "item": f"domino/data/{name}", "size": 1}]
    return _info(n, "task-db", task={"set": start, "backup_mode": backup_mode, "files": files})


def _txn(n: int, seq: int) -> SnapshotInfo:
    return _info(n, "task-log", log={"log_id": "AB"}, extent={"name": f"S{seq:07d}.TXN", "sequence": seq,
                                                              "item": f"domino/translog/S{seq:07d}.TXN", "size": 1})


def test_an_incremental_set_joins_its_full_and_keeps_every_extent_since_it() -> None:
    from dtstore.connectors.chains import Target
    from dtstore.connectors.domino.plan import plan_restore

    history = [_db(1, "T1", "FULL", "a.nsf"), _db(2, "T1", "FULL", "b.nsf"), _txn(3, 5), _txn(4, 6),
               _db(5, "T2", "INCR", "b.nsf"), _txn(6, 7)]
    kinds = [(link.kind, link.base_ref and link.base_ref[-1:]) for link in links(history)]
    assert kinds == [("full", None), ("diff", "1"), ("log", None), ("log", None), ("diff", "1"), ("log", None)]
    plan = plan_restore(history, target=Target(), databases=None, source_id="domino:sim1", target_display="x")
    files = {(f.area, f.dest): f.snapshot_id[-1:] for f in plan.files}
    assert files == {("data", "a.nsf"): "1", ("data", "b.nsf"): "5", ("translog", "S0000005.TXN"): "3",
                     ("translog", "S0000006.TXN"): "4", ("translog", "S0000007.TXN"): "6"}


def test_the_simulator_command_line(tmp_path: Path) -> None:
    import subprocess

    root = tmp_path / "srv"
    run = [sys.executable, "-m", "tests.sim.domino", "--root", str(root)]
    subprocess.run([*run, "init", "--extent-size", "65536", "--db-size", "65536", "--mail-users", "1"], check=True,
                   capture_output=True)
    subprocess.run([*run, "write", "--extents", "2", "--compact", "mail/user000.nsf"], check=True, capture_output=True)
    repo_url = str(tmp_path / "repo")
    init_repo(repo_url, tmp_path / "cache").close()
    done = subprocess.run([*run, "backup-task", "translog", "--script-dir", str(script_dir(tmp_path))],
                          env=environment(repo_url, tmp_path), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"archived": [1, 2]' in done.stdout and DominoSim(root).archived_through() == 2
