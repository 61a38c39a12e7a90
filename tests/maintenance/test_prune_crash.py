"""Prune killed with SIGKILL at random points leaves a valid repository; locks of dead processes.

Each round adds snapshots and forgets others (so there is always something to mark, repack and
delete), starts ``dtstore prune`` in a subprocess and kills it after a random delay spread over a
whole prune's run time.  After every crash: the repository opens, every snapshot restores byte for
byte, ``check`` finds no missing data, and the next prune (which meets the killed one's lock)
completes.  A crash may leave packs in no index segment (repacked copies not yet indexed):
check counts them (``unindexed_packs``) but they are no problem, and nothing else may be found.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
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
from dtstore.storage.base import BlobInfo, BlobStore
from dtstore.storage.local import LocalStore
from tests.helpers import PASSWORD
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

    def add_partly_shared(self) -> str:
        """Two snapshots, the first of files X and Y, the second of X alone; returns the first, whose
        forgetting leaves packs that are partly used (worth repacking)."""
        x, y = self.rng.randbytes(150_000), self.rng.randbytes(150_000)
        ids = []
        for files in ({"x.bin": x, "y.bin": y}, {"x.bin": x}):
            self.counter += 1
            src = self.base / "src" / f"s{self.counter}"
            src.mkdir(parents=True)
            for name, data in files.items():
                (src / name).write_bytes(data)
            snap = self.repo.snapshot([FilesSource([str(src)])])
            self.expected[snap.id] = (src, tree_digest(src))
            ids.append(snap.id)
        return ids[0]

    def forget(self, snap_id: str) -> None:
        self.repo.forget([snap_id])
        del self.expected[snap_id]

    def forget_some(self, count: int) -> None:
        victims = self.rng.sample(sorted(self.expected), min(count, len(self.expected) - 1))
        self.repo.forget(victims)
        for v in victims:
            del self.expected[v]

    def verify(self, tag: str, *, restore: bool) -> int:
        """Every snapshot restores; check finds no problem.  Returns the number of unindexed packs."""
        cache = self.base / f"verify-{tag}"
        with open_repo(self.url, cache) as repo:
            assert {s.id for s in repo.snapshots()} == set(self.expected)
            for snap_id, (src, digest) in self.expected.items() if restore else ():
                got = restored_digest(repo, repo.get_snapshot(snap_id), self.base / "restore" / tag / snap_id[:8], src)
                assert got == digest, f"{tag}: snapshot {snap_id[:8]} does not restore"
            report = repo.check()
            assert report.ok, f"{tag}: {[p.to_json() for p in report.problems]}"
            return report.unindexed_packs


def lock_files(url: str) -> list[Path]:
    return [p for p in (Path(url) / layout.LOCKS).glob("*") if not p.name.startswith(".tmp-")]


def start_prune(url: str, cache: Path, args: list[str]) -> tuple[subprocess.Popen[bytes], float]:
    """Start a CLI prune and wait until it holds its lock (the interpreter's start-up is of no
    interest).  Returns the process and the monotonic time the lock appeared."""
    env = cli_env(cache)
    scratch = cache.parent / "prune-tmp"  # a killed prune leaves its scan's scratch here, not in /tmp
    scratch.mkdir(exist_ok=True)
    env["TMPDIR"] = str(scratch)
    proc = subprocess.Popen(cli_args(url, "prune", *args), env=env,
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
    fx.forget(fx.add_partly_shared())
    exclusive = ["--grace", "0", "--exclusive", "--max-unused", "0%"]
    two_phase = ["--grace", "1s", "--max-unused", "0%"]
    # how long a whole prune holds its lock here, measured on a copy
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", fx.url, str(copy)], check=True)
    full = locked_duration(str(copy), tmp_path / "copy-cache", exclusive)
    rng = random.Random(SEED)
    killed = 0
    unindexed = 0
    for round_no in range(8):
        fx.add_snapshots(1)
        fx.forget_some(2)
        fx.forget(fx.add_partly_shared())
        if round_no % 2 == 0:
            args = exclusive
        else:  # two-phase: earlier rounds' marks are past their 1 s grace, new ones are made
            time.sleep(1.1)
            args = two_phase
        killed += kill_prune_after(fx.url, tmp_path / "prune-cache", rng.uniform(0.0, full), args)
        locks = read_locks(fx.repo.store, fx.repo._sealer)
        assert len(locks) <= 1
        unindexed += fx.verify(f"crash{round_no}", restore=True)
        if round_no % 3 == 2 and locks:
            code, lines, err = run_cli(fx.url, tmp_path / "unlock-cache", "unlock")
            assert code == 0, err
            assert summary(lines)["removed"] == [locks[0].lock_id]
        # the next prune meets the dead prune's lock (same host, dead PID) and goes ahead
        code, lines, err = run_cli(fx.url, tmp_path / "prune-cache", "prune", *args)
        assert code == 0, f"round {round_no}: prune after a crash failed: {err}"
        assert read_locks(fx.repo.store, fx.repo._sealer) == []
        fx.verify(f"after{round_no}", restore=round_no == 7)
    assert killed >= 5, f"only {killed} of 8 kills hit a running prune"
    with open_repo(fx.url, tmp_path / "final-cache") as repo:
        report = repo.check(read_data=True)
        assert report.ok, [p.to_json() for p in report.problems]
        assert report.packs_read == report.packs - report.unindexed_packs
    fx.repo.close()


class Crash(BaseException):
    """The process died: raised by every storage call from the crash point on, never caught."""


class CrashingStore:
    """Lets ``crash_at`` writes (puts and deletes) through, then fails every call: the storage
    state of a process killed between two of its writes (local writes are atomic renames)."""

    def __init__(self, inner: BlobStore, crash_at: int) -> None:
        self._inner = inner
        self.capabilities = inner.capabilities
        self._crash_at = crash_at
        self._lock = threading.Lock()
        self.writes = 0
        self.crashed = False

    def _gate(self, write: bool) -> None:
        with self._lock:
            if not self.crashed and write and self.writes >= self._crash_at:
                self.crashed = True
            if self.crashed:
                raise Crash
            if write:
                self.writes += 1

    def describe(self) -> str:
        return self._inner.describe()

    def get(self, name: str) -> bytes:
        self._gate(False)
        return self._inner.get(name)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        self._gate(False)
        return self._inner.get_range(name, offset, length)

    def exists(self, name: str) -> bool:
        self._gate(False)
        return self._inner.exists(name)

    def size(self, name: str) -> int:
        self._gate(False)
        return self._inner.size(name)

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        self._gate(False)
        return iter(list(self._inner.list(prefix)))

    def put(self, name: str, data: bytes) -> None:
        self._gate(True)
        self._inner.put(name, data)

    def delete(self, name: str) -> None:
        self._gate(True)
        self._inner.delete(name)

    def close(self) -> None:
        self._inner.close()


@pytest.mark.parametrize("exclusive", [True, False], ids=["grace0-exclusive", "two-phase"])
def test_prune_crash_after_every_write(tmp_path: Path, exclusive: bool) -> None:
    """Deterministic companion of the SIGKILL test: for every N, a prune that dies right after its
    N-th write, on a fresh copy of one repository; then the next prune completes."""
    fx = Fixture(tmp_path, SEED + 50)
    fx.add_snapshots(4)
    fx.forget_some(1)
    if not exclusive:  # marks from an earlier prune, past their grace: this prune deletes and marks
        fx.repo.prune(grace=dt.timedelta(seconds=1), max_unused=0.0)
        time.sleep(1.1)
    fx.forget(fx.add_partly_shared())  # and something to repack
    kwargs = ({"grace": dt.timedelta(0), "exclusive": True} if exclusive
              else {"grace": dt.timedelta(seconds=1)})
    fx.repo.close()
    base = Path(fx.url)
    crash_at = 0
    leftovers: dict[int, int] = {}
    while True:
        copy = tmp_path / f"copy{crash_at}"
        shutil.copytree(base, copy)
        fx.url = str(copy)
        store = CrashingStore(LocalStore(copy), crash_at)
        repo = dtstore.Repository.open(store, PASSWORD, cache_dir=tmp_path / f"cache{crash_at}")
        try:
            plan = repo.prune(max_unused=0.0, **kwargs)  # type: ignore[arg-type]
        except Crash:
            pass
        finally:
            with suppress(Crash):
                repo.close()
        if not store.crashed:
            break
        # the dead prune's lock belongs to this (live) process: remove it as its death would allow
        with open_repo(fx.url, tmp_path / f"unlock{crash_at}") as r:
            r.unlock(all_locks=True)
        leftovers[crash_at] = fx.verify(f"w{crash_at}", restore=True)
        with open_repo(fx.url, tmp_path / f"next{crash_at}") as r:
            r.prune(max_unused=0.0, **kwargs)  # type: ignore[arg-type]
        fx.verify(f"n{crash_at}", restore=False)
        shutil.rmtree(copy)
        crash_at += 1
    assert plan.delete and plan.repack, "the prune under test did nothing worth crashing"
    assert crash_at >= 6, f"only {crash_at} writes"
    # the enumeration went through the gap between a repacked pack's upload and its index segment
    assert any(leftovers.values()), leftovers


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
