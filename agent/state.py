"""The agent's state folder (spec/agent.md §4, §10).

Layout of ``state_dir``::

    runs.jsonl, runs.jsonl.1 … runs.jsonl.N   the run log, newest file first (JSON lines, rotated by size)
    state.json                               per job: last fire time of each mode, the last run record,
                                             whether an RPO breach was notified (written atomically)
    state.lock                               serialises run-log appends/rotation and state.json updates
    locks/JOB.lock                           the per-job host lock (an OS file lock holding the pid)

Every writer (the daemon and each ``dtstore run`` child) goes through :class:`StateDir`; the short
``state.lock`` makes a read-modify-write of ``state.json`` and a rotation safe between processes.
Times are stored as UTC ISO 8601 with a ``Z``.  Nothing here reads the wall clock: callers pass times in.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dtstore.errors import RepositoryLocked

RUN_LOG = "runs.jsonl"
STATE_FILE = "state.json"
STATE_LOCK = "state.lock"
LOCKS = "locks"
DEFAULT_MAX_BYTES = 10 << 20
DEFAULT_KEEP = 5
_FORMAT = 1
_WINDOWS_LOCK_OFFSET = 1 << 20
"""msvcrt locks a byte range that other processes then cannot read: lock one far past the pid"""


def iso(value: dt.datetime) -> str:
    """UTC ISO 8601 with a ``Z`` (naive times are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> dt.datetime:
    """The inverse of :func:`iso`; a time without a zone is UTC."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def record_time(record: Mapping[str, Any], *keys: str) -> dt.datetime | None:
    """The first of ``keys`` that holds a parseable time (default: finished_at, started_at, time)."""
    for key in keys or ("finished_at", "started_at", "time"):
        value = record.get(key)
        if isinstance(value, str):
            try:
                return parse_time(value)
            except ValueError:
                continue
    return None


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``path`` so a reader sees the old content or the new, never a part: a temporary file in
    the same folder, fsync, rename over the target, fsync of the folder (POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    if sys.platform == "win32":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- OS file locks ------------------------------------------------------------------------------------------------

def _try_lock(f: IO[bytes], *, blocking: bool, shared: bool = False) -> bool:
    """Lock the open file (exclusively, or shared on POSIX); False when another process holds it
    (non-blocking only)."""
    if sys.platform == "win32":
        import msvcrt

        f.seek(_WINDOWS_LOCK_OFFSET)
        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)
        except OSError:
            if blocking:
                raise
            return False
        finally:
            f.seek(0)
        return True
    import fcntl

    flags = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        fcntl.flock(f.fileno(), flags if blocking else flags | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(f: IO[bytes]) -> None:
    if sys.platform == "win32":
        import msvcrt

        f.seek(_WINDOWS_LOCK_OFFSET)
        with contextlib.suppress(OSError):
            msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        f.seek(0)
        return
    import fcntl

    fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    """A short blocking exclusive lock on ``path`` (state.lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        _try_lock(f, blocking=True)
        try:
            yield
        finally:
            _unlock(f)


class JobLock:
    """The per-job host lock ``locks/JOB.lock``: an OS lock (released by the OS when the process dies,
    so a crash leaves nothing stale), the holder's pid written into the file for the message."""

    def __init__(self, path: Path, job: str, *, wait: float = 0.5) -> None:
        self.path = path
        self.job = job
        self.wait = wait
        """seconds to retry a held lock before giving up (covers a ``lock_holder`` probe)"""
        self._file: IO[bytes] | None = None

    def acquire(self) -> JobLock:
        """Take the lock or raise :class:`RepositoryLocked` (exit 11) naming the holder's pid."""
        if self._file is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+b")  # noqa: SIM115 - held until release()
        try:
            deadline = time.monotonic() + self.wait
            while not (locked := _try_lock(f, blocking=False)) and time.monotonic() < deadline:
                time.sleep(0.05)  # a status probe holds it for an instant
            if not locked:
                f.seek(0)
                pid = f.read(32).decode("ascii", "replace").strip()
                holder = f"pid {pid}" if pid.isdigit() else "pid unknown"
                raise RepositoryLocked(f"job {self.job} is already running ({holder})")
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n".encode())
            f.flush()
        except BaseException:
            f.close()
            raise
        self._file = f
        return self

    def release(self) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        try:
            with contextlib.suppress(OSError):
                f.seek(0)
                f.truncate()
                f.flush()
            _unlock(f)
        finally:
            f.close()

    @property
    def held(self) -> bool:
        return self._file is not None

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# --- state.json ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobState:
    """What the agent remembers of one job between runs and restarts."""

    last_fired: Mapping[str, dt.datetime] = field(default_factory=dict)
    """mode → the fire time last run (or counted as fired); ``schedule.due`` reads it"""
    last_result: Mapping[str, Any] | None = None
    """the job's newest run record (as appended to the run log)"""
    rpo_breached: bool = False
    """an ``rpo`` notification was sent and no ``recovered`` since"""

    def to_json(self) -> dict[str, Any]:
        return {"last_fired": {mode: iso(t) for mode, t in sorted(self.last_fired.items())},
                "last_result": dict(self.last_result) if self.last_result is not None else None,
                "rpo_breached": self.rpo_breached}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> JobState:
        fired: dict[str, dt.datetime] = {}
        for mode, text in (doc.get("last_fired") or {}).items():
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                fired[str(mode)] = parse_time(text)
        result = doc.get("last_result")
        return cls(last_fired=fired, last_result=dict(result) if isinstance(result, dict) else None,
                   rpo_breached=bool(doc.get("rpo_breached", False)))


@dataclass(frozen=True)
class State:
    """The whole of ``state.json``."""

    jobs: Mapping[str, JobState] = field(default_factory=dict)

    def job(self, name: str) -> JobState:
        """The job's state; an empty one (never fired) for a job not seen yet."""
        return self.jobs.get(name) or JobState()

    def to_json(self) -> dict[str, Any]:
        return {"format": _FORMAT, "jobs": {name: s.to_json() for name, s in sorted(self.jobs.items())}}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> State:
        jobs = doc.get("jobs") or {}
        return cls(jobs={str(name): JobState.from_json(s) for name, s in jobs.items() if isinstance(s, dict)})


_UNSET: Any = object()


class StateDir:
    """The state folder: run log, ``state.json``, job locks."""

    def __init__(self, root: Path | str, *, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.keep = max(0, keep)

    @property
    def run_log(self) -> Path:
        return self.root / RUN_LOG

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    def run_logs(self) -> list[Path]:
        """The run log files that exist, newest first (runs.jsonl, runs.jsonl.1, …)."""
        found = [self.run_log] if self.run_log.exists() else []
        n = 1
        while (path := self.root / f"{RUN_LOG}.{n}").exists():
            found.append(path)
            n += 1
        return found

    # the run log

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record (one JSON line) to the run log, rotating first when the line would take
        ``runs.jsonl`` past ``max_bytes``: runs.jsonl → runs.jsonl.1 → … → runs.jsonl.KEEP (dropped beyond)."""
        line = (json.dumps(dict(record), default=str, sort_keys=False) + "\n").encode()
        self.root.mkdir(parents=True, exist_ok=True)
        with _held(self.root / STATE_LOCK):
            try:
                size = self.run_log.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(line) > self.max_bytes:
                self._rotate()
            fd = os.open(self.run_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0), 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def _rotate(self) -> None:
        if self.keep == 0:
            self.run_log.unlink(missing_ok=True)
            return
        # drop everything past KEEP (also leftovers of a larger keep before)
        n = self.keep
        while (path := self.root / f"{RUN_LOG}.{n}").exists():
            path.unlink()
            n += 1
        for n in range(self.keep - 1, 0, -1):
            path = self.root / f"{RUN_LOG}.{n}"
            if path.exists():
                os.replace(path, self.root / f"{RUN_LOG}.{n + 1}")
        os.replace(self.run_log, self.root / f"{RUN_LOG}.1")

    def records(self, *, job: str | None = None, types: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """The run log's records, newest first across the rotated files; lines that do not parse (a torn
        write) are skipped.  ``job`` and ``types`` filter on the record's ``job`` and ``type``."""
        wanted = set(types) if types is not None else None
        for path in self.run_logs():
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # rotated away while we read
                continue
            for raw in reversed(data.splitlines()):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(record, dict):
                    continue
                if job is not None and record.get("job") != job:
                    continue
                if wanted is not None and record.get("type") not in wanted:
                    continue
                yield record

    # state.json

    def read_state(self) -> State:
        """``state.json`` (an empty state when it is missing or unreadable)."""
        try:
            doc = json.loads(self.state_file.read_bytes())
        except (FileNotFoundError, ValueError):
            return State()
        return State.from_json(doc) if isinstance(doc, dict) else State()

    def update_job(self, job: str, *, fired: Mapping[str, dt.datetime] | None = None,
                   result: Mapping[str, Any] | None = _UNSET, rpo_breached: bool | None = None) -> JobState:
        """Change one job's entry in ``state.json`` (under ``state.lock``, written atomically): ``fired``
        merges mode → fire time (a time never goes back), ``result`` replaces the last run record,
        ``rpo_breached`` sets the flag.  Returns the job's new state."""
        self.root.mkdir(parents=True, exist_ok=True)
        with _held(self.root / STATE_LOCK):
            state = self.read_state()
            old = state.job(job)
            last_fired = dict(old.last_fired)
            for mode, moment in (fired or {}).items():
                moment = parse_time(iso(moment))
                if mode not in last_fired or moment > last_fired[mode]:
                    last_fired[mode] = moment
            new = JobState(last_fired=last_fired,
                           last_result=old.last_result if result is _UNSET else (dict(result) if result else None),
                           rpo_breached=old.rpo_breached if rpo_breached is None else rpo_breached)
            jobs = dict(state.jobs)
            jobs[job] = new
            atomic_write(self.state_file, (json.dumps(State(jobs=jobs).to_json(), indent=1, default=str)
                                           + "\n").encode())
        return new

    def record_run(self, record: Mapping[str, Any]) -> None:
        """Append a run record to the run log and make it the job's ``last_result``."""
        self.append(record)
        job = record.get("job")
        if isinstance(job, str) and record.get("type", "run") == "run":
            self.update_job(job, result=record)

    # locks

    def lock_path(self, job: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job)
        return self.root / LOCKS / f"{safe}.lock"

    def job_lock(self, job: str) -> JobLock:
        """The job's host lock, not yet taken: ``with state.job_lock("shop"): …`` raises
        :class:`RepositoryLocked` when another process holds it."""
        return JobLock(self.lock_path(job), job)

    def lock_holder(self, job: str) -> int | None:
        """The pid of the process holding the job's lock (-1 when it cannot be read), or None when
        nobody runs the job.  The probe takes a shared lock for an instant and writes nothing."""
        path = self.lock_path(job)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return None
        with f:
            if _try_lock(f, blocking=False, shared=True):
                _unlock(f)
                return None
            try:
                text = f.read(32).decode("ascii", "replace").strip()
            except OSError:
                return -1
        return int(text) if text.isdigit() else -1
