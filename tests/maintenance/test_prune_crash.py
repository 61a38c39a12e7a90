"""Prune killed with SIGKILL at random points leaves a valid repository; locks of dead processes.

Each round adds snapshots and forgets others (so there is always something to mark, repack and
delete), starts ``dtstore prune`` in a subprocess and kills it after a random delay spread over a
whole prune's run time.  After every crash: the repository opens, every snapshot restores byte for
byte, ``check`` finds no missing data, and the next prune (which meets the killed one's lock)
completes.  Packs left in no index by a prune killed while repacking are the only finding check
may make (see ``ALLOWED``).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import msgpack
import pytest

import dtstore
from dtstore import FilesSource, clock
from dtstore.backup import default_host
from dtstore.format import AAD_LOCK, AAD_SESSION
from dtstore.maintenance.locks import hold_lock, read_locks
from dtstore.sessions import WriterSession
from dtstore.storage import layout
from tests.maintenance.common import (
    cli_args,
    cli_env,
    make_repo,
    open_repo,
    restored_digest,
    run_cli,
    summary,
    tree_digest,
)

ALLOWED = {"unindexed-pack"}
"""A prune killed between uploading repacked packs and indexing them leaves those packs in no
index segment.  They hold only copies, so nothing is lost; check still counts them as problems."""

SEED = int(os.environ.get("DTSTORE_TEST_SEED", "1"))


class Fixture:
    """A repository plus the model: snapshot ID → (source directory, expected digest)."""

    def __init__(self, base: Path, seed: int) -> None:
        self.base = base
        self.url = str(base / "repo")
        self.rng = random.Random(seed)
        self.expected: dict[str, tuple[Path, dict[str, str]]] = {}
        self.counter = 0
        self.pool = [self.rng.randbytes(40_000) for _ in range(8)]
        make_repo(self.url, base / "init-cache").close()
        self.repo = open_repo(self.url, base / "main-cache")

    def add_snapshots(self, count: int) -> None:
        for _ in range(count):
            self.counter += 1
            src = self.base / "src" / f"s{self.counter}"
            src.mkdir(parents=True)
            for k in range(3):
                (src / f"own-{k}.bin").write_bytes(self.rng.randbytes(self.rng.randrange(20_000, 90_000)))
            (src / "shared.bin").write_bytes(b"".join(self.rng.sample(self.pool, 2)))
            snap = self.repo.snapshot([FilesSource([str(src)])])
            self.expected[snap.id] = (src, tree_digest(src))

    def forget_some(self, count: int) -> None:
        victims = self.rng.sample(sorted(self.expected), min(count, len(self.expected) - 1))
        self.repo.forget(victims)
        for v in victims:
            del self.expected[v]

    def verify(self, tag: str, *, restore: bool) -> list[str]:
        """Every snapshot restores; check finds nothing but ALLOWED.  Returns the kinds found."""
        cache = self.base / f"verify-{tag}"
        with open_repo(self.url, cache) as repo:
            assert {s.id for s in repo.snapshots()} == set(self.expected)
            for snap_id, (src, digest) in self.expected.items() if restore else ():
                got = restored_digest(repo, repo.get_snapshot(snap_id), self.base / "restore" / tag / snap_id[:8], src)
                assert got == digest, f"{tag}: snapshot {snap_id[:8]} does not restore"
            report = repo.check()
            kinds = [p.kind for p in report.problems]
            assert set(kinds) <= ALLOWED, f"{tag}: {[p.to_json() for p in report.problems]}"
            return kinds


def lock_files(url: str) -> list[Path]:
    return [p for p in (Path(url) / layout.LOCKS).glob("*") if not p.name.startswith(".tmp-")]


def start_prune(url: str, cache: Path, args: list[str]) -> tuple[subprocess.Popen[bytes], float]:
    """Start a CLI prune and wait until it holds its lock (the interpreter's start-up is of no
    interest).  Returns the process and the monotonic time the lock appeared."""
    proc = subprocess.Popen(cli_args(url, "prune", *args), env=cli_env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not lock_files(url):
        assert proc.poll() is None, f"prune ended before taking its lock: {proc.stderr.read()!r}"  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.001)
    return proc, time.monotonic()


def locked_duration(url: str, cache: Path, args: list[str]) -> float:
    """How long a whole prune holds its lock on this repository."""
    proc, locked_at = start_prune(url, cache, args)
    while lock_files(url):
        time.sleep(0.001)
    held = time.monotonic() - locked_at
    assert proc.wait(60) == 0
    return held


def kill_prune_after(url: str, cache: Path, delay: float, args: list[str]) -> bool:
    """Start a CLI prune and SIGKILL it ``delay`` seconds after it took its lock.  Returns whether it
    was still running."""
    proc, _ = start_prune(url, cache, args)
    try:
        proc.wait(delay)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        return True


def test_prune_killed_at_random_points(tmp_path: Path) -> None:
    fx = Fixture(tmp_path, SEED)
    fx.add_snapshots(6)
    fx.forget_some(2)
    exclusive = ["--grace", "0", "--exclusive", "--max-unused", "0%"]
    two_phase = ["--grace", "1s", "--max-unused", "0%"]
    # how long a whole prune holds its lock here, measured on a copy
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", fx.url, str(copy)], check=True)
    full = locked_duration(str(copy), tmp_path / "copy-cache", exclusive)
    rng = random.Random(SEED)
    killed = 0
    findings: list[str] = []
    for round_no in range(8):
        fx.add_snapshots(2)
        fx.forget_some(2)
        if round_no % 2 == 0:
            args = exclusive
        else:  # two-phase: earlier rounds' marks are past their 1 s grace, new ones are made
            time.sleep(1.1)
            args = two_phase
        killed += kill_prune_after(fx.url, tmp_path / "prune-cache", rng.uniform(0.0, full), args)
        locks = read_locks(fx.repo.store, fx.repo._sealer)
        assert len(locks) <= 1
        findings += fx.verify(f"crash{round_no}", restore=True)
        if round_no % 3 == 2 and locks:
            code, lines, err = run_cli(fx.url, tmp_path / "unlock-cache", "unlock")
            assert code == 0, err
            assert summary(lines)["removed"] == [locks[0].lock_id]
        # the next prune meets the dead prune's lock (same host, dead PID) and goes ahead
        code, lines, err = run_cli(fx.url, tmp_path / "prune-cache", "prune", *args)
        assert code == 0, f"round {round_no}: prune after a crash failed: {err}"
        assert read_locks(fx.repo.store, fx.repo._sealer) == []
        findings += fx.verify(f"after{round_no}", restore=round_no == 7)
    print("KILLED", killed, "FINDINGS", findings, "FULL", full)
    assert killed >= 5, f"only {killed} of 8 kills hit a running prune"
    with open_repo(fx.url, tmp_path / "final-cache") as repo:
        report = repo.check(read_data=True)
        assert {p.kind for p in report.problems} <= ALLOWED
    fx.repo.close()


# --- locks ------------------------------------------------------------------------------------------


def plant_lock(repo: dtstore.Repository, *, kind: str, pid: int, host: str,
               heartbeat: dt.datetime | None = None) -> str:
    """Write a lock object as hold_lock does, for a process that is not ours."""
    lock_id = os.urandom(16).hex()
    when = heartbeat or clock.now()
    doc = {"id": lock_id, "kind": kind, "host": host, "pid": pid, "created": when.isoformat(),
           "heartbeat": when.isoformat()}
    repo.store.put(layout.lock_name(lock_id), repo._sealer.seal(msgpack.packb(doc), AAD_LOCK))
    return lock_id


def plant_session(repo: dtstore.Repository, *, pid: int, host: str) -> None:
    now = clock.now().isoformat()
    doc = {"id": os.urandom(16).hex(), "host": host, "pid": pid, "kind": "backup", "started": now, "heartbeat": now}
    repo.store.put(layout.session_name(doc["id"]), repo._sealer.seal(msgpack.packb(doc), AAD_SESSION))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def small_repo(tmp_path: Path) -> dtstore.Repository:
    fx = Fixture(tmp_path, 5)
    fx.add_snapshots(2)
    fx.forget_some(1)
    return fx.repo


def test_lock_of_a_dead_process_on_this_host_is_ignored(small_repo: dtstore.Repository, tmp_path: Path) -> None:
    url = str(tmp_path / "repo")
    for kind in ("prune", "exclusive"):
        plant_lock(small_repo, kind=kind, pid=dead_pid(), host=default_host())
        code, _, err = run_cli(url, tmp_path / "c", "prune", "--grace", "0", "--exclusive")
        assert code == 0, err
        assert read_locks(small_repo.store, small_repo._sealer) == []
    # a backup is not held up by a dead exclusive lock either
    plant_lock(small_repo, kind="exclusive", pid=dead_pid(), host=default_host())
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "f").write_bytes(b"x" * 1000)
    code, _, err = run_cli(url, tmp_path / "c", "snapshot", str(tmp_path / "more"))
    assert code == 0, err


def test_unlock_removes_stale_locks_and_remove_all_the_rest(small_repo: dtstore.Repository, tmp_path: Path) -> None:
    url = str(tmp_path / "repo")
    stale_here = plant_lock(small_repo, kind="prune", pid=dead_pid(), host=default_host())
    old = clock.now() - dt.timedelta(hours=1)
    stale_away = plant_lock(small_repo, kind="prune", pid=1, host="elsewhere.example", heartbeat=old)
    live_away = plant_lock(small_repo, kind="exclusive", pid=1, host="elsewhere.example")
    code, lines, err = run_cli(url, tmp_path / "c", "unlock")
    assert code == 0, err
    assert set(summary(lines)["removed"]) == {stale_here, stale_away}
    # a fresh lock of another host is respected: prune and backups refuse (exit 11)
    code, _, err = run_cli(url, tmp_path / "c", "prune", "--grace", "1h")
    assert code == 11, err
    assert "locked" in err or "lock" in err
    code, _, err = run_cli(url, tmp_path / "c", "snapshot", str(tmp_path / "src"))
    assert code == 11, err
    code, lines, err = run_cli(url, tmp_path / "c", "unlock", "--remove-all")
    assert code == 0, err
    assert summary(lines)["removed"] == [live_away]
    code, _, err = run_cli(url, tmp_path / "c", "prune", "--grace", "1h")
    assert code == 0, err


def test_live_lock_of_this_process_blocks_prune_until_released(small_repo: dtstore.Repository,
                                                                tmp_path: Path) -> None:
    url = str(tmp_path / "repo")
    with hold_lock(small_repo.store, small_repo._sealer, default_host(), "prune"):
        code, _, err = run_cli(url, tmp_path / "c", "prune", "--grace", "1h")
        assert code == 11, err
        code, lines, _ = run_cli(url, tmp_path / "c", "unlock")
        assert summary(lines)["removed"] == []  # alive: not stale
        # a prune lock does not stop backups
        code, _, err = run_cli(url, tmp_path / "c", "snapshot", str(tmp_path / "src"))
        assert code == 0, err
    code, _, err = run_cli(url, tmp_path / "c", "prune", "--grace", "1h")
    assert code == 0, err


def test_exclusive_prune_refuses_live_writers_but_not_dead_ones(small_repo: dtstore.Repository,
                                                                 tmp_path: Path) -> None:
    url = str(tmp_path / "repo")
    code, _, err = run_cli(url, tmp_path / "c", "prune", "--grace", "0")
    assert code == 2 and "--exclusive" in err
    with WriterSession(small_repo.store, small_repo._sealer, default_host()):
        code, _, err = run_cli(url, tmp_path / "c", "prune", "--grace", "0", "--exclusive")
        assert code == 11, err
        code, _, err = run_cli(url, tmp_path / "c", "prune", "--grace", "1h")  # beside a backup: fine
        assert code == 0, err
    assert read_locks(small_repo.store, small_repo._sealer) == []
    plant_session(small_repo, pid=dead_pid(), host=default_host())  # a backup that was killed
    code, lines, err = run_cli(url, tmp_path / "c", "prune", "--grace", "0", "--exclusive")
    assert code == 0, err
    assert summary(lines)["delete_packs"] > 0
    code, _, err = run_cli(url, tmp_path / "c", "check", "--read-data")
    assert code == 0, err


def test_backup_refused_while_an_exclusive_lock_is_held(small_repo: dtstore.Repository, tmp_path: Path) -> None:
    url = str(tmp_path / "repo")
    with hold_lock(small_repo.store, small_repo._sealer, default_host(), "exclusive"):
        code, _, err = run_cli(url, tmp_path / "c", "snapshot", str(tmp_path / "src"))
        assert code == 11, err
        assert {b.name for b in small_repo.store.list(layout.SESSIONS)} == set()  # it withdrew its session
    code, _, err = run_cli(url, tmp_path / "c", "snapshot", str(tmp_path / "src"))
    assert code == 0, err
