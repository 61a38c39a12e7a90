"""One run of a job (spec/agent.md §4): what ``dtstore run JOB`` and every run of the agent do.

1. the job's host lock (``state_dir/locks/JOB.lock``): a second run of the job exits 11 and is
   recorded as ``skipped``;
2. the ``before`` hook (a failure fails the run before anything is read);
3. promotion: a connector's ``log`` run is made in ``auto`` mode (a broken chain, a missing base or
   a break the server reports takes a full and says why), a ``diff`` run falls back to a full when
   its check fails, and ``full_every`` promotes a run whose newest full is older;
4. the snapshot (``Repository.snapshot``, which holds the source lock);
5. retention (the job's policy over the job's source on this host, keeping restore chains whole)
   and prune as configured;
6. the ``after`` or ``on_failure`` hook;
7. the run record (run log + ``state.json``), metrics, notifications.

The run stops itself at the job's ``timeout`` (a timer; also for runs started by cron or systemd
timers) and on SIGTERM / SIGINT / CTRL_BREAK: the snapshot is abandoned before its manifest is
written (the manifest is the commit point), so no snapshot is made and no chain changes.  The
record then says ``timeout`` or ``interrupted``.

Passwords never appear in argv, records, messages or hook environments: the repository password
comes from the configured file, command or variable and goes straight to ``Repository.open``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dtstore import CommandSource, FilesSource, Repository, Snapshot, Source, clock
from dtstore.agent.config import Config, Job, Repo
from dtstore.agent.state import StateDir, iso, parse_time
from dtstore.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_PARTIAL,
    ChainError,
    DtstoreError,
    RepositoryLocked,
    UsageError,
)

MODE_ORDER = ("full", "diff", "log")
"""largest first: when no mode is given, the largest the job schedules runs"""
MAINTENANCE_MODES = ("retention", "prune")
"""runs that make no snapshot: retention (and prune after it, if so configured), or prune alone"""
LOCK_WAIT_SECONDS = 60.0
"""how long a run waits for the source lock another host's run of the same source holds"""
HOOK_TIMEOUT_SECONDS = 3600.0


class Clock(Protocol):
    """What the agent reads time from: ``dtstore.clock`` itself, or a test's fake."""

    def now(self) -> dt.datetime: ...

    def monotonic(self) -> float: ...


class RunStopped(KeyboardInterrupt):
    """Raised in the main thread when the run must stop (its timeout, or a signal): a KeyboardInterrupt,
    so every cleanup path the core has for Ctrl-C (kill the dump, write no manifest) applies."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        """``timeout`` or ``interrupted``"""


@dataclass
class RunResult:
    """The outcome of one run: its record (as appended to the run log) and the exit code."""

    record: dict[str, Any]
    exit_code: int
    snapshot: Snapshot | None = None
    lines: list[str] = field(default_factory=list)
    """what the run did, in sentences (the CLI prints them)"""


# --- small helpers ---------------------------------------------------------------------------------------------

def host_name() -> str:
    return platform.node() or "localhost"


def state_dir(config: Config) -> StateDir:
    agent = config.agent
    return StateDir(Path(agent.state_dir), max_bytes=agent.run_log_max_bytes, keep=agent.run_log_keep)


def size_text(size: int) -> str:
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


def seconds(value: dt.timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def time_limit(job: Job, timeout: float | str | None) -> float | None:
    """``"job"``: the job's own timeout; else the seconds given (None: no limit)."""
    if isinstance(timeout, str):
        return seconds(job.timeout)
    return timeout


def default_mode(job: Job) -> str:
    """The mode ``dtstore run JOB`` takes without ``--mode``: the largest the job schedules (else full)."""
    scheduled = set(job.schedules)
    return next((m for m in MODE_ORDER if m in scheduled), "full")


def repository_password(repo: Repo, *, environ: Mapping[str, str] | None = None) -> str:
    """The repository password from ``password_file``, ``password_command`` or ``password_env``."""
    env = os.environ if environ is None else environ
    if repo.password_file:
        try:
            with open(repo.password_file, encoding="utf-8") as f:
                return f.read().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"repositories.{repo.name}.password_file {repo.password_file}: cannot read it "
                             f"({exc.strerror})") from None
    if repo.password_command:
        done = subprocess.run(repo.password_command, shell=True, capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise UsageError(f"repositories.{repo.name}.password_command exited with status {done.returncode}")
        return done.stdout.rstrip("\r\n")
    if repo.password_env:
        if repo.password_env not in env:
            raise UsageError(f"repositories.{repo.name}.password_env: ${repo.password_env} is not set")
        return env[repo.password_env]
    raise UsageError(f"repositories.{repo.name} has no password_file, password_command or password_env")


@contextlib.contextmanager
def repository_env(repo: Repo) -> Iterator[None]:
    """The repository's ``env`` table set for the duration of a run (restored afterwards)."""
    saved = {name: os.environ.get(name) for name in (repo.env or {})}
    os.environ.update({str(k): str(v) for k, v in (repo.env or {}).items()})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def open_repository(config: Config, name: str) -> Repository:
    repo = config.repositories[name]
    return Repository.open(repo.url, repository_password(repo), limit_upload_kib=repo.limit_upload or None)


def connector_url(job: Job) -> str | None:
    """The job's connector URL, if its source is one (a single ``scheme://`` the registry knows)."""
    from dtstore.connectors import is_connector_url

    sources = list(job.source or ())
    if job.command is None and len(sources) == 1 and is_connector_url(sources[0]):
        return str(sources[0])
    return None


def file_source_id(paths: Sequence[str]) -> str:
    """What ``FilesSource(paths).source_id`` is, without needing the paths to exist."""
    return "files:" + ",".join(sorted(os.path.abspath(p) for p in paths))


# --- stopping: the timeout and signals ------------------------------------------------------------------------

class Stopper:
    """Turns the job's timeout and SIGTERM/SIGINT/CTRL_BREAK into :class:`RunStopped` in the main thread.

    Signals are handled only when used from the main thread (``signal.signal`` needs it).  The
    timeout sends this process SIGTERM on POSIX, so a main thread blocked in a system call wakes
    up; on Windows ``_thread.interrupt_main`` raises it at the next bytecode."""

    STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGBREAK")

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.reason: str | None = None
        self.stopping = False
        self._timer: threading.Timer | None = None
        self._saved: dict[int, Any] = {}
        self._armed = False

    def _raise(self, signum: int, _frame: Any) -> None:
        if self.reason is None:
            self.reason = "interrupted"
        if self._armed and not self.stopping:
            self.stopping = True
            raise RunStopped(self.reason)

    def _expire(self) -> None:
        if self.reason is not None:
            return
        self.reason = "timeout"
        if not self._armed:
            return
        if sys.platform != "win32":
            os.kill(os.getpid(), signal.SIGTERM)
        else:  # pragma: no cover - Windows
            import _thread

            _thread.interrupt_main(signal.SIGTERM)

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():
            for name in self.STOP_SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    with contextlib.suppress(OSError, ValueError):
                        self._saved[number] = signal.signal(number, self._raise)
            self._armed = True
        if self.timeout is not None and self.timeout > 0:
            self._timer = threading.Timer(self.timeout, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def disarm(self) -> None:
        """No more stops from here on (the snapshot is committed: what follows must run to its end)."""
        if self._timer is not None:
            self._timer.cancel()
        self._armed = False

    def __exit__(self, *exc: object) -> None:
        self.disarm()
        for number, handler in self._saved.items():
            with contextlib.suppress(OSError, ValueError):
                signal.signal(number, handler)
        self._saved.clear()

    def check(self) -> None:
        """Raise RunStopped if a stop was asked for while signals were not armed."""
        if self.reason is not None and not self.stopping:
            self.stopping = True
            raise RunStopped(self.reason)


def stop_leftovers() -> None:
    """After a stopped run: SIGTERM to what the run started and left behind (a command source's shell
    kills only itself; ``sleep`` under it would live on).  Only when this process leads its own session,
    as every run the agent starts does, so a shell's job or a pipeline is never signalled."""
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        return
    try:
        if os.getsid(0) != os.getpid():  # type: ignore[attr-defined,unused-ignore]
            return
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            os.killpg(os.getpgrp(), signal.SIGTERM)  # type: ignore[attr-defined,unused-ignore]
        finally:
            signal.signal(signal.SIGTERM, previous)
    except (OSError, ValueError):
        pass


# --- hooks -----------------------------------------------------------------------------------------------------

class HookFailed(DtstoreError):
    pass


def run_hook(name: str, command: str, env: Mapping[str, str], *, timeout: float = HOOK_TIMEOUT_SECONDS) -> None:
    """Run a hook through the shell; a non-zero exit is HookFailed.  The hook's text is not repeated in
    the message (it may hold credentials).  Stopping the run kills the hook."""
    proc = subprocess.Popen(command, shell=True, env={**os.environ, **env}, stdin=subprocess.DEVNULL)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise HookFailed(f"the {name} hook did not finish within {timeout:.0f} s") from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        reason = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        raise HookFailed(f"the {name} hook {reason}")


# --- sources and promotion -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """The sources of one run and the mode asked of the connector."""

    sources: list[Source]
    source_mode: str
    """what the connector source was made with (``full``, ``diff``, ``auto``), or ``full`` for files"""
    reason: str | None
    """why the run is a full although a smaller mode was requested (known before the snapshot)"""
    connector_kind: str | None = None


def build_plain_sources(job: Job) -> list[Source]:
    if job.command:
        if not job.stdin_name:
            raise UsageError(f"jobs.{job.name}: command needs stdin_name")
        return [CommandSource(job.command, job.stdin_name)]
    paths = list(job.source or ())
    if not paths:
        raise UsageError(f"jobs.{job.name} has no source")
    return [FilesSource(paths, job.make_excludes())]


def newest_full(snapshots: Sequence[Snapshot], kind: str, source_id: str) -> dt.datetime | None:
    """The time of the newest full of a connector source (from its chain links)."""
    from dtstore.connectors.points import source_links

    links = source_links([s for s in snapshots if s.source_kind == kind and s.source_id == source_id])
    fulls = [link.taken for chain in links.values() for link in chain if link.kind == "full"]
    return max(fulls) if fulls else None


def plan_sources(job: Job, mode: str, repo: Repository, *, now: dt.datetime) -> Plan:
    """Sources for a run of ``mode``, with promotion decided as far as it can be before the snapshot."""
    url = connector_url(job)
    stage = Path(job.stage) if job.stage else None
    if url is None:
        return Plan(build_plain_sources(job), "full", None)
    from dtstore.connectors import load, make_source, scheme_of

    connector = load(scheme_of(url) or "")
    reason: str | None = None
    if mode == "full":
        source_mode = "full"
    elif mode == "diff" and "diff" not in connector.modes:
        source_mode, reason = "full", f"the {connector.kind} connector has no diff mode"
    else:
        source_mode = "auto" if mode == "log" else mode
    source = make_source(url, repo=repo, mode=source_mode, stage_dir=stage)
    if source_mode != "full" and job.full_every is not None:
        base = newest_full(repo.snapshots(), connector.kind, source.source_id)
        if base is not None and now - base > job.full_every:
            age = _span(now - base)
            reason = f"the newest full ({iso(base)}) is {age} old, older than full_every {_span(job.full_every)}"
            source_mode = "full"
            source = make_source(url, repo=repo, mode="full", stage_dir=stage)
    return Plan([source], source_mode, reason, connector.kind)


def _span(delta: dt.timedelta) -> str:
    total = int(delta.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return "".join(parts) or "0s"


def taken_mode(snap: Snapshot, plan: Plan, requested: str) -> tuple[str, str | None]:
    """The mode the snapshot was taken in and why it is larger than the one requested (if it is)."""
    if plan.connector_kind is None:
        return "full", None if requested == "full" else "files and command output are always stored whole"
    meta = snap.source_metadata or {}
    mode = str(meta.get("mode") or plan.source_mode)
    reason = plan.reason or meta.get("auto_reason")
    if mode == requested:
        reason = None
    return mode, (str(reason) if reason else None)


# --- retention ---------------------------------------------------------------------------------------------------

def apply_retention(repo: Repository, policy: Any, *, source_id: str, host: str,
                    now: dt.datetime) -> tuple[list[str], list[str]]:
    """Forget what the policy does not keep of one source on one host (as ``forget --host H --source ID``
    with the policy would, through the same ``connectors.forgetting.plan_policy``): a kept snapshot keeps
    every snapshot it needs to be restorable, and what other hosts or sources need stays too.
    Returns the IDs removed and, per connector stream whose restorable time shrinks, a sentence."""
    from dtstore.connectors.forgetting import plan_policy

    everything = repo.snapshots()
    chosen = [s for s in everything if s.source_id == source_id and s.host == host]
    if not chosen:
        return [], []
    plan = plan_policy(everything, chosen, policy, now, ())
    repo.forget(plan.remove)
    return list(plan.remove), [change.describe() for change in plan.effect.streams if change.lost]


def retention_due(job: Job, mode: str) -> bool:
    """Whether retention follows a snapshot taken in ``mode`` (``retention_after``)."""
    if job.policy is None:
        return False
    after = job.retention_after or "full"
    if after == "every":
        return True
    if after == "full":
        return mode == "full"
    return False  # a schedule of its own: the agent runs ``--mode retention`` at its times


# --- the recovery point -----------------------------------------------------------------------------------------

def recovery_point(snapshots: Sequence[Snapshot], kind: str, source_id: str) -> dt.datetime | None:
    """The newest restorable moment of a source: a connector's newest window end (the oldest of those
    of its streams), else the newest snapshot's time."""
    mine = [s for s in snapshots if s.source_id == source_id and s.source_kind == kind]
    if not mine:
        return None
    from dtstore.connectors.points import CHAIN_MODULES, restore_points

    if kind in CHAIN_MODULES:
        ends = [max(w.end for w in stream.windows)
                for points in restore_points(mine) for stream in points.streams if stream.windows]
        return min(ends) if ends else None
    return max(s.time for s in mine)


# --- records, metrics, notifications ---------------------------------------------------------------------------

def base_record(job: Job, *, kind: str, requested: str | None, scheduled_at: dt.datetime | None,
                started: dt.datetime) -> dict[str, Any]:
    return {"type": "run", "job": job.name, "kind": kind, "requested_mode": requested, "mode": None,
            "reason": None, "scheduled_at": iso(scheduled_at) if scheduled_at else None, "started_at": iso(started),
            "finished_at": None, "duration_seconds": None, "result": None, "exit_code": None,
            "snapshot_id": None, "bytes_added": None, "recovery_point": None, "error": None,
            "host": host_name(), "pid": os.getpid()}


def finish_record(record: dict[str, Any], *, result: str, exit_code: int, error: str | None,
                  started: dt.datetime, started_mono: float, clk: Clock) -> None:
    record.update(result=result, exit_code=exit_code, error=error, finished_at=iso(clk.now()),
                  duration_seconds=round(clk.monotonic() - started_mono, 3))
    if record["started_at"] is None:
        record["started_at"] = iso(started)


def notifier_for(config: Config, state: StateDir) -> Any:
    from dtstore.agent.notify import Notifier

    return Notifier(config.notify, log=state.append)


def deliver(config: Config, state: StateDir, job: Job, record: Mapping[str, Any], *, now: dt.datetime,
            notifier: Any = None) -> None:
    """Notify about a finished run (never raises: notify failures go to the run log)."""
    from dtstore.agent.notify import event_for_run

    try:
        notifier = notifier or notifier_for(config, state)
        notifier.send(event_for_run(record, now=now, host=record.get("host")), job.notify)
    except Exception as exc:
        with contextlib.suppress(Exception):
            state.append({"type": "notify_failed", "job": job.name, "target": "*", "channel": "*",
                          "event": str(record.get("result")), "time": iso(now), "error": str(exc)})


def write_metrics(config: Config, state: StateDir, *, now: dt.datetime) -> None:
    """Rewrite the metrics text file, if one is configured (never raises)."""
    path = config.agent.metrics_textfile
    if not path:
        return
    try:
        from dtstore.agent import metrics

        metrics.write_textfile(Path(path), config, state, now=now)
    except Exception as exc:
        with contextlib.suppress(Exception):
            state.append({"type": "metrics_failed", "time": iso(now), "error": str(exc)})


def conclude(config: Config, state: StateDir, job: Job, record: dict[str, Any], *, clk: Clock,
             notifier: Any = None) -> None:
    state.record_run(record)
    write_metrics(config, state, now=clk.now())
    deliver(config, state, job, record, now=clk.now(), notifier=notifier)


def result_of(exc: BaseException) -> tuple[str, int, str]:
    """(result, exit code, message) of a run that raised."""
    if isinstance(exc, RunStopped):
        if exc.reason == "timeout":
            return "timeout", EXIT_ERROR, "the run did not finish within its timeout; nothing was committed"
        return "interrupted", EXIT_INTERRUPTED, "the run was stopped; nothing was committed"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED, "the run was stopped; nothing was committed"
    if isinstance(exc, DtstoreError):
        return "failed", exc.exit_code, str(exc)
    if isinstance(exc, OSError):
        where = f": {os.fsdecode(exc.filename)}" if exc.filename else ""
        return "failed", EXIT_ERROR, f"{exc.strerror or exc}{where}"
    return "failed", EXIT_ERROR, f"{type(exc).__name__}: {exc}"


def skipped_record(job: Job, *, requested: str | None, scheduled_at: dt.datetime | None, now: dt.datetime,
                   why: str, kind: str | None = None) -> dict[str, Any]:
    record = base_record(job, kind=kind or job.kind, requested=requested, scheduled_at=scheduled_at, started=now)
    record.update(result="skipped", exit_code=None, error=why, finished_at=iso(now), duration_seconds=0.0)
    return record


# --- the run -----------------------------------------------------------------------------------------------------

def run_job(config: Config, job: Job, mode: str | None = None, *, scheduled_at: dt.datetime | None = None,
            clk: Clock = clock, timeout: float | str | None = "job", notifier: Any = None,
            progress: Any = None) -> RunResult:
    """Run ``job`` once (a drill job runs its drill).  Never raises for what the run itself does: the
    outcome is the returned record and exit code, and it has been recorded and notified."""
    if job.kind == "drill":
        from dtstore.agent.drill import run_drill

        return run_drill(config, job, scheduled_at=scheduled_at, clk=clk, timeout=timeout, notifier=notifier)
    requested = mode or default_mode(job)
    if requested not in (*MODE_ORDER, *MAINTENANCE_MODES):
        raise UsageError(f"unknown mode {requested!r}: use {', '.join((*MODE_ORDER, *MAINTENANCE_MODES))}")
    state = state_dir(config)
    limit = time_limit(job, timeout)
    started, started_mono = clk.now(), clk.monotonic()
    record = base_record(job, kind=job.kind, requested=requested, scheduled_at=scheduled_at, started=started)
    lock = state.job_lock(job.name)
    try:
        lock.acquire()
    except RepositoryLocked as exc:
        record = skipped_record(job, requested=requested, scheduled_at=scheduled_at, now=clk.now(), why=str(exc))
        record["exit_code"] = exc.exit_code
        conclude(config, state, job, record, clk=clk, notifier=notifier)
        return RunResult(record, exc.exit_code)
    try:
        return _locked_run(config, job, requested, state, record, started, started_mono, clk, limit, notifier,
                           progress)
    finally:
        lock.release()


def _locked_run(config: Config, job: Job, requested: str, state: StateDir, record: dict[str, Any],
                started: dt.datetime, started_mono: float, clk: Clock, limit: float | None, notifier: Any,
                progress: Any) -> RunResult:
    with contextlib.suppress(Exception):
        (notifier or notifier_for(config, state)).start(job.name, job.notify, now=started)
    hooks = dict(job.hooks or {})
    lines: list[str] = []
    snap: Snapshot | None = None
    result, exit_code, error = "ok", 0, None
    with Stopper(limit) as stopper:
        try:
            if "before" in hooks:
                run_hook("before", hooks["before"], _hook_env(job, record, None))
            stopper.check()
            snap = _snapshot_and_retention(config, job, requested, record, lines, clk, stopper, progress)
            if snap is not None and snap.summary.get("warnings"):
                result, exit_code = "partial", EXIT_PARTIAL
        except BaseException as exc:
            stopper.disarm()
            result, exit_code, error = result_of(exc)
            if isinstance(exc, KeyboardInterrupt):
                stop_leftovers()
            if not isinstance(exc, KeyboardInterrupt | DtstoreError | OSError):
                lines.append(f"unexpected error: {error}")
        finally:
            stopper.disarm()
    finish_record(record, result=result, exit_code=exit_code, error=error, started=started,
                  started_mono=started_mono, clk=clk)
    hook = "after" if result in ("ok", "partial") else "on_failure"
    if hook in hooks:
        try:
            run_hook(hook, hooks[hook], _hook_env(job, record, snap))
        except (HookFailed, OSError) as exc:
            record["hook_error"] = str(exc)
            if result in ("ok", "partial"):
                record.update(result="failed", exit_code=EXIT_ERROR, error=str(exc))
    conclude(config, state, job, record, clk=clk, notifier=notifier)
    return RunResult(record, int(record["exit_code"]), snap, lines)


def _hook_env(job: Job, record: Mapping[str, Any], snap: Snapshot | None) -> dict[str, str]:
    return {"DTSTORE_JOB": job.name, "DTSTORE_RESULT": str(record.get("result") or "running"),
            "DTSTORE_ERROR": str(record.get("error") or ""), "DTSTORE_SNAPSHOT": snap.id if snap else "",
            "DTSTORE_MODE": str(record.get("mode") or record.get("requested_mode") or "")}


def _snapshot_and_retention(config: Config, job: Job, requested: str, record: dict[str, Any], lines: list[str],
                            clk: Clock, stopper: Stopper, progress: Any) -> Snapshot | None:
    repo_cfg = config.repositories[job.repository]
    with repository_env(repo_cfg), open_repository(config, job.repository) as repo:
        snap: Snapshot | None = None
        if requested in MAINTENANCE_MODES:
            record["mode"] = requested
            source_id, kind = _job_source(job, repo)
            host = host_name_of(repo)
        else:
            plan = plan_sources(job, requested, repo, now=clk.now())
            try:
                snap, plan = _take(repo, job, plan, requested, progress)
            except RunStopped:
                # a stop that lands after the manifest was written (while the snapshot's bookkeeping
                # finishes) must not be recorded as "nothing committed"
                found = committed_since(repo, plan, parse_time(record["started_at"]))
                if found is None:
                    raise
                snap, record["note"] = found, "stopped after the snapshot was committed; no retention"
            stopper.disarm()  # committed: retention and prune run to their end
            mode, reason = taken_mode(snap, plan, requested)
            record.update(mode=mode, reason=reason, snapshot_id=snap.id,
                          bytes_added=int(snap.summary.get("bytes_stored", 0)))
            why = f" (not {requested}: {reason})" if reason else ""
            lines.append(f"job {job.name}: {mode} snapshot {snap.short_id} saved, "
                         f"{size_text(record['bytes_added'])} added{why}")
            source_id, kind, host = snap.source_id, snap.source_kind, snap.host
        stopper.disarm()
        removed: list[str] = []
        wanted = "note" not in record and (
            requested == "retention" or (requested in MODE_ORDER and retention_due(job, record["mode"])))
        if wanted and job.policy is not None and getattr(repo, "append_only", False):
            # a backup key can neither read old manifests nor delete: retention runs on the admin host
            record["note_retention"] = "retention skipped: this host holds a backup key (run it with an admin key)"
            lines.append(f"job {job.name}: {record['note_retention']}")
        elif wanted and job.policy is not None:  # config.load parsed the retention table
            policy = job.policy
            removed, shrunk = apply_retention(repo, policy, source_id=source_id, host=host, now=clk.now())
            record["forgotten"] = len(removed)
            if shrunk:
                record["restorable"] = shrunk
            lines.append(f"job {job.name}: retention removed {len(removed)} snapshot(s)")
        if requested == "prune" or (removed and (job.prune or "after-retention") == "after-retention"):
            plan_done = repo.prune()
            record["pruned_bytes"] = int(getattr(plan_done, "bytes_delete", 0) or 0)
            lines.append(f"job {job.name}: prune done")
        point = recovery_point(repo.snapshots(), kind, source_id) if source_id else None
        record["recovery_point"] = iso(point) if point else None
        return snap


def committed_since(repo: Repository, plan: Plan, since: dt.datetime) -> Snapshot | None:
    """The snapshot of the plan's source this host committed at or after ``since``, if any."""
    source_id = "+".join(s.source_id for s in plan.sources)
    host = host_name_of(repo)
    try:
        mine = [s for s in repo.snapshots() if s.source_id == source_id and s.host == host and s.time >= since]
    except DtstoreError:
        return None
    return max(mine, key=lambda s: s.time) if mine else None


def host_name_of(repo: Repository) -> str:
    """The host name snapshots of this machine record (the core's default)."""
    from dtstore.backup import default_host

    return default_host()


def _job_source(job: Job, repo: Repository) -> tuple[str, str]:
    """(source id, kind) of a job without taking a snapshot (for maintenance runs)."""
    url = connector_url(job)
    if url is not None:
        from dtstore.connectors import make_source

        source = make_source(url, repo=None, mode="full")
        return source.source_id, source.kind
    source = build_plain_sources(job)[0]
    return source.source_id, source.kind


def _take(repo: Repository, job: Job, plan: Plan, requested: str, progress: Any) -> tuple[Snapshot, Plan]:
    """The snapshot; a ``diff`` whose check fails is taken again as a full (nothing was committed)."""
    extra = {"progress": progress} if progress is not None else {}
    try:
        return repo.snapshot(plan.sources, tags=list(job.tags or ()), lock_wait=LOCK_WAIT_SECONDS, **extra), plan
    except ChainError as exc:
        if plan.connector_kind is None or plan.source_mode != "diff":
            raise
        from dtstore.connectors import make_source

        url = connector_url(job) or ""
        source = make_source(url, repo=repo, mode="full", stage_dir=Path(job.stage) if job.stage else None)
        why = str(exc).split(". A full snapshot is needed")[0]
        full = Plan([source], "full", why, plan.connector_kind)
        return repo.snapshot(full.sources, tags=list(job.tags or ()), lock_wait=LOCK_WAIT_SECONDS, **extra), full
