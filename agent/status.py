"""Per-job status (spec/agent.md §10), pure: run records + the configured jobs + ``now`` → one
:class:`JobStatus` per job.  ``dtstore status`` prints it; :mod:`dtstore.agent.metrics` renders it.

* last run: the job's newest run record that is not ``skipped`` (a skip is shown beside it);
* last success: the newest with result ``ok`` or ``partial``;
* per mode, the newest run that took that mode (metrics label by the mode taken);
* next run per mode: :func:`dtstore.agent.schedule.next_runs` with the job's ``last_fired``;
* recovery point now: the newest ``recovery_point`` any of the job's records holds (runs record it
  from ``restore_points`` after each snapshot), its age at ``now`` and whether that is within the
  job's RPO (``rpo``, else 2 × the longest gap of its shortest schedule);
* last drill: for a drill job its own last run, for a backup job the newest run of a drill job
  whose ``of`` names it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dtstore.agent.state import StateDir, iso, parse_time, record_time

if TYPE_CHECKING:
    from dtstore.agent.config import Job

SUCCESS = frozenset({"ok", "partial"})

NextRuns = Callable[..., Mapping[str, dt.datetime]]
"""``schedule.next_runs(job, last_fired, now)``, replaceable in tests"""


@dataclass(frozen=True)
class RunInfo:
    """The parts of a run record that status shows."""

    job: str
    time: dt.datetime | None
    """when it finished (else started)"""
    started_at: dt.datetime | None
    kind: str
    mode: str | None
    requested_mode: str | None
    result: str
    bytes_added: int | None
    duration_seconds: float | None
    snapshot_id: str | None = None
    reason: str | None = None
    error: str | None = None
    restore_seconds: float | None = None
    check_seconds: float | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RunInfo:
        return cls(job=str(record.get("job", "")), time=record_time(record),
                   started_at=record_time(record, "started_at"), kind=str(record.get("kind") or "backup"),
                   mode=_text(record.get("mode")), requested_mode=_text(record.get("requested_mode")),
                   result=str(record.get("result") or "failed"), bytes_added=_int(record.get("bytes_added")),
                   duration_seconds=_float(record.get("duration_seconds")),
                   snapshot_id=_text(record.get("snapshot_id")), reason=_text(record.get("reason")),
                   error=_text(record.get("error")), restore_seconds=_float(record.get("restore_seconds")),
                   check_seconds=_float(record.get("check_seconds")))

    @property
    def ok(self) -> bool:
        return self.result in SUCCESS

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "job": self.job, "time": _iso(self.time), "started_at": _iso(self.started_at), "kind": self.kind,
            "mode": self.mode, "requested_mode": self.requested_mode, "result": self.result,
            "bytes_added": self.bytes_added, "duration_seconds": self.duration_seconds,
            "snapshot_id": self.snapshot_id, "reason": self.reason, "error": self.error}
        if self.kind == "drill":
            doc["restore_seconds"] = self.restore_seconds
            doc["check_seconds"] = self.check_seconds
        return doc


@dataclass(frozen=True)
class JobStatus:
    job: str
    kind: str
    last_run: RunInfo | None = None
    last_success: dt.datetime | None = None
    last_by_mode: Mapping[str, RunInfo] = field(default_factory=dict)
    last_skipped: dt.datetime | None = None
    """the newest skipped run, when it is newer than the last run"""
    next_runs: Mapping[str, dt.datetime] = field(default_factory=dict)
    recovery_point: dt.datetime | None = None
    recovery_point_age: dt.timedelta | None = None
    rpo: dt.timedelta | None = None
    last_drill: RunInfo | None = None
    running_pid: int | None = None

    @property
    def rpo_ok(self) -> bool | None:
        """Whether the recovery point is within the RPO (None: no RPO, or no recovery point yet)."""
        if self.rpo is None or self.recovery_point_age is None:
            return None
        return self.recovery_point_age <= self.rpo

    @property
    def next_run(self) -> tuple[str, dt.datetime] | None:
        """The earliest (mode, time) of :attr:`next_runs`."""
        if not self.next_runs:
            return None
        mode = min(self.next_runs, key=lambda m: self.next_runs[m])
        return mode, self.next_runs[mode]

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job, "kind": self.kind,
            "last_run": self.last_run.to_json() if self.last_run else None,
            "last_success": _iso(self.last_success),
            "last_skipped": _iso(self.last_skipped),
            "next_runs": {mode: iso(t) for mode, t in sorted(self.next_runs.items(), key=lambda kv: kv[1])},
            "recovery_point": _iso(self.recovery_point),
            "recovery_point_age_seconds": _seconds(self.recovery_point_age),
            "rpo_seconds": _seconds(self.rpo),
            "rpo_ok": self.rpo_ok,
            "last_drill": self.last_drill.to_json() if self.last_drill else None,
            "running_pid": self.running_pid,
        }


def effective_rpo(job: Job) -> dt.timedelta | None:
    """The job's ``rpo``, else 2 × the longest gap between fire times of its most frequent schedule
    (``every 15m`` → 30 m); None for a drill or a job without schedules."""
    rpo: dt.timedelta | None = job.rpo
    if rpo is not None:
        return rpo
    if job.kind == "drill" or not job.schedules:
        return None
    gaps: list[dt.timedelta] = [schedule.max_gap() for schedule in job.schedules.values()]
    return 2 * min(gaps)


class _Collect:
    """What the records of one job tell, filled newest first."""

    def __init__(self, job: str, kind: str, modes: Iterable[str]) -> None:
        self.job = job
        self.kind = kind
        self.modes = set(modes)
        self.last_run: RunInfo | None = None
        self.last_success: dt.datetime | None = None
        self.by_mode: dict[str, RunInfo] = {}
        self.last_skipped: dt.datetime | None = None
        self.recovery_point: dt.datetime | None = None
        self.last_drill: RunInfo | None = None
        self.wants_drill = kind == "drill"

    def take(self, record: Mapping[str, Any]) -> None:
        info = RunInfo.from_record(record)
        if info.result == "skipped":
            if self.last_run is None and self.last_skipped is None:
                self.last_skipped = info.time
            return
        if self.last_run is None:
            self.last_run = info
        if info.ok and self.last_success is None:
            self.last_success = info.time
        if info.mode and info.mode not in self.by_mode:
            self.by_mode[info.mode] = info
        point = record.get("recovery_point")
        if isinstance(point, str):
            try:
                moment = parse_time(point)
            except ValueError:
                moment = None
            if moment is not None and (self.recovery_point is None or moment > self.recovery_point):
                self.recovery_point = moment
        if self.kind == "drill" and self.last_drill is None:
            self.last_drill = info

    def take_drill(self, record: Mapping[str, Any]) -> None:
        if self.last_drill is None and record.get("result") != "skipped":
            self.last_drill = RunInfo.from_record(record)

    @property
    def complete(self) -> bool:
        return (self.last_run is not None and self.last_success is not None
                and (self.kind == "drill" or self.recovery_point is not None)
                and self.modes <= set(self.by_mode)
                and (not self.wants_drill or self.last_drill is not None))


def job_statuses(records: Iterable[Mapping[str, Any]], jobs: Mapping[str, Job], now: dt.datetime, *,
                 last_fired: Mapping[str, Mapping[str, dt.datetime]] | None = None,
                 next_runs: NextRuns | None = None,
                 running: Mapping[str, int] | None = None) -> list[JobStatus]:
    """One status per configured job, in the order of ``jobs``.

    ``records`` newest first (``StateDir.records()``; it is read only as far as needed); ``last_fired``
    job → mode → last fire time (``state.json``); ``next_runs`` defaults to
    ``schedule.next_runs``; ``running`` job → pid of a run going now (``StateDir.lock_holder``)."""
    if next_runs is None:
        from dtstore.agent.schedule import next_runs as schedule_next_runs

        next_runs = schedule_next_runs
    collect = {name: _Collect(name, job.kind, _taken_modes(job)) for name, job in jobs.items()}
    drill_of: dict[str, str] = {}  # drill job → the backup job it restores
    for name, job in jobs.items():
        if job.kind == "drill" and job.of:
            drill_of[name] = job.of
            if job.of in collect:
                collect[job.of].wants_drill = True
    for record in records:
        if record.get("type", "run") != "run":
            continue
        owner = record.get("job")
        if not isinstance(owner, str):
            continue
        if owner in collect:
            collect[owner].take(record)
        backup = drill_of.get(owner)
        if backup is None and record.get("kind") == "drill" and isinstance(record.get("of"), str):
            backup = str(record["of"])  # a drill job no longer configured
        if backup is not None and backup in collect:
            collect[backup].take_drill(record)
        if all(c.complete for c in collect.values()):
            break
    fired = last_fired or {}
    result = []
    for name, job in jobs.items():
        c = collect[name]
        age = now - c.recovery_point if c.recovery_point is not None else None
        result.append(JobStatus(
            job=name, kind=job.kind, last_run=c.last_run, last_success=c.last_success,
            last_by_mode=dict(c.by_mode), last_skipped=c.last_skipped,
            next_runs=dict(next_runs(job, fired.get(name, {}), now)) if job.schedules else {},
            recovery_point=c.recovery_point, recovery_point_age=age, rpo=effective_rpo(job),
            last_drill=c.last_drill, running_pid=(running or {}).get(name)))
    return result


def current(config: Any, state: StateDir, now: dt.datetime, *, with_running: bool = False) -> list[JobStatus]:
    """The statuses of every job of ``config`` from the state folder (the one impure helper here):
    the run log, ``state.json``'s fire times and, with ``with_running``, the holders of job locks."""
    fired = {name: dict(js.last_fired) for name, js in state.read_state().jobs.items()}
    running: dict[str, int] = {}
    if with_running:
        for name in config.jobs:
            pid = state.lock_holder(name)
            if pid is not None:
                running[name] = pid
    return job_statuses(state.records(types=("run",)), config.jobs, now, last_fired=fired, running=running)


def _taken_modes(job: Job) -> set[str]:
    """The modes the job's runs take (a MySQL ``diff`` schedule takes fulls): what ``last_by_mode`` fills."""
    if job.kind == "drill":
        return set()
    run_modes: Mapping[str, str] = getattr(job, "run_modes", None) or {}
    return {run_modes.get(mode, mode) for mode in job.schedules}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _iso(value: dt.datetime | None) -> str | None:
    return iso(value) if value is not None else None


def _seconds(value: dt.timedelta | None) -> float | None:
    return value.total_seconds() if value is not None else None
