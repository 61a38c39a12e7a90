"""The state folder: run log rotation and reading back, state.json, the per-job host lock."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dtstore.agent.state import JobState, StateDir, atomic_write, iso, parse_time
from dtstore.errors import RepositoryLocked

T0 = dt.datetime(2026, 12, 2, 6, 0, tzinfo=dt.UTC)


def record(n: int, job: str = "shop", **extra: object) -> dict[str, object]:
    return {"type": "run", "job": job, "n": n, "result": "ok", "finished_at": iso(T0 + dt.timedelta(minutes=n)),
            **extra}


def test_times_round_trip() -> None:
    assert iso(T0) == "2026-12-02T06:00:00Z"
    assert parse_time("2026-12-02T06:00:00Z") == T0
    assert parse_time("2026-12-02T07:00:00+01:00") == T0
    assert parse_time("2026-12-02T06:00:00") == T0  # no zone = UTC
    assert iso(dt.datetime(2026, 12, 2, 6, 0)) == "2026-12-02T06:00:00Z"


def test_append_and_read_back_newest_first(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    assert list(state.records()) == []
    for n in range(5):
        state.append(record(n, job="shop" if n % 2 == 0 else "files"))
    state.append({"type": "notify_failed", "job": "shop", "error": "x"})
    assert [r.get("n") for r in state.records()] == [None, 4, 3, 2, 1, 0]
    assert [r["n"] for r in state.records(job="shop", types=["run"])] == [4, 2, 0]
    assert [r["type"] for r in state.records(types=("notify_failed",))] == ["notify_failed"]
    lines = state.run_log.read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line) for line in lines)


def test_rotation_by_size_keeps_run_log_keep_files(tmp_path: Path) -> None:
    one = len(json.dumps(record(10)) + "\n")
    state = StateDir(tmp_path, max_bytes=3 * one, keep=2)
    for n in range(10, 30):
        state.append(record(n))
    files = state.run_logs()
    assert [p.name for p in files] == ["runs.jsonl", "runs.jsonl.1", "runs.jsonl.2"]
    assert not (tmp_path / "runs.jsonl.3").exists()
    for path in files:
        assert path.stat().st_size <= 3 * one
    got = [r["n"] for r in state.records()]
    assert got == list(range(29, 29 - len(got), -1))  # newest first, contiguous across the files
    assert len(got) == 2 + 3 + 3  # 20 records, 3 a file: the current holds 2, the oldest were dropped


def test_rotation_with_keep_zero_and_a_smaller_keep_later(tmp_path: Path) -> None:
    one = len(json.dumps(record(10)) + "\n")
    StateDir(tmp_path, max_bytes=one, keep=4).append(record(10))
    for n in range(11, 16):
        StateDir(tmp_path, max_bytes=one, keep=4).append(record(n))
    assert len(StateDir(tmp_path).run_logs()) == 5
    StateDir(tmp_path, max_bytes=one, keep=1).append(record(16))
    assert [p.name for p in StateDir(tmp_path).run_logs()] == ["runs.jsonl", "runs.jsonl.1"]
    StateDir(tmp_path, max_bytes=one, keep=0).append(record(17))
    assert [r["n"] for r in StateDir(tmp_path).records()] == [17, 15]  # .1 is left from before, not rotated into


def test_a_record_larger_than_max_bytes_is_still_written(tmp_path: Path) -> None:
    state = StateDir(tmp_path, max_bytes=10, keep=1)
    state.append(record(1))
    state.append(record(2))
    assert [r["n"] for r in state.records()] == [2, 1]


def test_torn_and_foreign_lines_are_skipped(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.append(record(1))
    with open(state.run_log, "a") as f:
        f.write('{"type": "run", "job": "sh\n[1, 2]\n\n')
    state.append(record(2))
    assert [r["n"] for r in state.records()] == [2, 1]


def test_state_json_fired_result_and_flags(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    assert state.read_state().job("shop") == JobState()
    state.update_job("shop", fired={"log": T0, "full": T0 - dt.timedelta(days=1)})
    state.update_job("shop", fired={"log": T0 - dt.timedelta(minutes=15)})  # never goes back
    state.update_job("files", fired={"full": T0})
    new = state.update_job("shop", rpo_breached=True)
    assert new.last_fired == {"log": T0, "full": T0 - dt.timedelta(days=1)} and new.rpo_breached
    state.record_run(record(3))
    again = StateDir(tmp_path).read_state()
    assert again.job("shop").last_fired["log"] == T0
    assert again.job("shop").last_result == record(3)
    assert again.job("shop").rpo_breached is True
    assert again.job("files").last_fired == {"full": T0} and again.job("files").last_result is None
    doc = json.loads(state.state_file.read_text())
    assert doc["format"] == 1 and doc["jobs"]["shop"]["last_fired"]["log"] == "2026-12-02T06:00:00Z"
    assert [r["n"] for r in state.records()] == [3]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_damaged_state_json_reads_as_empty(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.state_file.write_text("{not json")
    assert state.read_state().jobs == {}
    state.update_job("shop", fired={"log": T0})
    assert state.read_state().job("shop").last_fired == {"log": T0}


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.prom"
    atomic_write(target, b"one\n")
    atomic_write(target, b"two\n")
    assert target.read_bytes() == b"two\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.prom"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_atomic_write_failure_keeps_the_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b"old")

    def broken(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def _hold_lock(root: str, ready: multiprocessing.synchronize.Event, done: multiprocessing.synchronize.Event) -> None:
    with StateDir(root).job_lock("shop"):
        ready.set()
        done.wait(30)


def test_job_lock_second_holder_is_refused_with_the_pid(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, done))
    child.start()
    try:
        assert ready.wait(30)
        state = StateDir(tmp_path)
        assert state.lock_holder("shop") == child.pid
        lock = state.job_lock("shop")
        lock.wait = 0.1
        with pytest.raises(RepositoryLocked, match=rf"^job shop is already running \(pid {child.pid}\)$") as info:
            lock.acquire()
        assert info.value.exit_code == 11
        assert not lock.held
        with state.job_lock("files"):  # another job is not blocked
            pass
    finally:
        done.set()
        child.join(30)
    assert StateDir(tmp_path).lock_holder("shop") is None
    with StateDir(tmp_path).job_lock("shop") as lock:  # free once the holder is gone
        assert lock.held
        assert (tmp_path / "locks" / "shop.lock").read_text().strip() == str(os.getpid())
    assert (tmp_path / "locks" / "shop.lock").read_text() == ""


def test_job_lock_of_a_killed_process_is_free(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import os, sys
        from dtstore.agent.state import StateDir
        lock = StateDir({str(tmp_path)!r}).job_lock("shop").acquire()
        print("locked", flush=True)
        os._exit(0) if sys.stdin.readline() == "" else os.kill(os.getpid(), 9)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "locked"
    assert StateDir(tmp_path).lock_holder("shop") == child.pid
    child.stdin.write("die\n")
    child.stdin.flush()
    child.wait(30)
    assert StateDir(tmp_path).lock_holder("shop") is None  # the OS released it; the stale pid is not believed
    with StateDir(tmp_path).job_lock("shop"):
        pass


def test_job_lock_in_one_process_twice_is_refused(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    with state.job_lock("a/b"):
        other = state.job_lock("a/b")
        other.wait = 0
        with pytest.raises(RepositoryLocked, match=rf"pid {os.getpid()}"):
            other.acquire()
    assert (tmp_path / "locks" / "a_b.lock").exists()


def test_the_module_imports_without_fcntl(tmp_path: Path) -> None:
    """Windows has no fcntl: the module must import (the lock functions import it lazily)."""
    code = ("import sys; sys.modules['fcntl'] = None\n"
            "import dtstore.agent.state as s\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.strip() == "ok", done.stderr
