"""The agent's schedules as OS scheduler entries (``spec/agent.md`` §9): systemd timers, crontab
lines, ``schtasks`` commands, each calling ``dtstore run JOB --mode M --config PATH``.

Planning is pure: :func:`systemd_install` and friends take the configuration (and what the OS holds
now: the unit files in the unit folder, the current crontab, the scheduled tasks) and return a
:class:`Plan`, the files to write and delete and the commands to run.  :func:`apply` carries a plan
out; ``--dry-run`` prints it instead.  What ``install`` writes is marked with the configuration's
path (a ``# dtstore-config: PATH`` line in each unit; ``# BEGIN dtstore PATH`` … ``# END dtstore
PATH`` around the crontab block; ``--config PATH`` in each task's command line), so ``remove``
deletes exactly that, and ``install`` first removes the entries of jobs and modes that are gone.

Entries: one per job and scheduled mode (``dtstore-JOB-MODE``), plus ``prune`` and ``retention``
when the job gives those a schedule of their own (``dtstore run JOB --mode prune``); a drill job's
entry (``dtstore-JOB``) calls ``dtstore drill JOB``.  Intervals are anchored at the Unix epoch in UTC for the agent;
systemd timers keep that exactly (``OnCalendar=… UTC``) when the interval divides a minute, an
hour or a day, crontab lines and schtasks count in the local zone from midnight.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import shlex
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtstore.agent.config import Config, Job
from dtstore.agent.schedule import MODE_ORDER, Schedule, format_duration
from dtstore.errors import DtstoreError, UsageError

MARKER = "# dtstore-config: "
BEGIN = "# BEGIN dtstore "
END = "# END dtstore "
TASK_FOLDER = "dtstore"
_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_WIN_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_WIN_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_UNSUPPORTED = re.compile(r"[LW#?]", re.IGNORECASE)


class InstallError(UsageError):
    """A schedule the chosen OS scheduler cannot express (exit 2)."""


@dataclass(frozen=True)
class Entry:
    """One scheduled command: ``job`` in ``mode`` at the times of ``schedule``."""

    job: Job
    mode: str
    schedule: Schedule
    argv: tuple[str, ...]

    @property
    def name(self) -> str:
        """``JOB-MODE``; a drill's is ``JOB``."""
        return self.job.name if self.mode == "drill" else f"{self.job.name}-{self.mode}"

    @property
    def where(self) -> str:
        """The configuration key the schedule comes from, for messages."""
        if self.mode in ("prune", "retention"):
            return f"jobs.{self.job.name}.{'prune' if self.mode == 'prune' else 'retention_after'}"
        if self.mode == "drill":
            return f"jobs.{self.job.name}.schedule"
        return f"jobs.{self.job.name}.schedule.{self.mode}"


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    input: str | None = None
    check: bool = True
    """a failure stops :func:`apply` (False: reported, then carried on)"""

    def __str__(self) -> str:
        text = shlex.join(self.argv) if not self.argv or self.argv[0] != "schtasks" else _cmdline(self.argv)
        return text + (" < (new crontab)" if self.input is not None else "")


@dataclass(frozen=True)
class Plan:
    """What to do: write ``files``, run ``commands`` (in order; ``before`` ones first), delete ``delete``."""

    files: Mapping[Path, str] = field(default_factory=dict)
    delete: tuple[Path, ...] = ()
    before: tuple[Command, ...] = ()
    commands: tuple[Command, ...] = ()
    notes: tuple[str, ...] = ()

    def describe(self) -> list[str]:
        """The plan as lines a person reads (``--dry-run``)."""
        out = [f"# note: {n}" for n in self.notes]
        out += [f"$ {c}" for c in self.before]
        out += [f"# remove {p}" for p in self.delete]
        for path, text in self.files.items():
            out.append(f"# write {path}")
            out += text.rstrip("\n").splitlines()
        for command in self.commands:
            out.append(f"$ {command}")
            if command.input is not None:
                out += command.input.rstrip("\n").splitlines()
        return out


def entries(config: Config, config_path: str, program: Sequence[str]) -> list[Entry]:
    """Every scheduled command of the configuration, in the file's job order, modes largest first."""
    found: list[Entry] = []
    for job in config.jobs.values():
        if job.kind == "drill":
            for schedule in job.schedules.values():
                found.append(Entry(job, "drill", schedule, (*program, "drill", job.name, "--config", config_path)))
            continue
        modes = sorted(job.schedules, key=lambda m: MODE_ORDER.index(m) if m in MODE_ORDER else 9)
        extra = [("retention", job.retention_schedule), ("prune", job.prune_schedule)]
        for mode, schedule in [(m, job.schedules[m]) for m in modes] + [(m, s) for m, s in extra if s is not None]:
            found.append(Entry(job, mode, schedule,
                               (*program, "run", job.name, "--mode", mode, "--config", config_path)))
    return found


# --- cron expressions, field by field --------------------------------------------------------------

def _cron_fields(entry: Entry) -> list[list[int] | None]:
    """croniter's expansion of the five fields; None for ``*``."""
    from croniter import croniter

    expression = entry.schedule.cron or ""
    if _UNSUPPORTED.search(expression.replace("@", "")) and not expression.startswith("@"):
        raise InstallError(f"{entry.where}: \"{expression}\" uses a croniter extension (L, W, #, ?) that OS "
                           "schedulers do not have; the agent (dtstore agent) runs it")
    expanded = croniter(expression).expanded
    fields: list[list[int] | None] = []
    for values, (low, high) in zip(expanded, _FIELD_RANGES, strict=True):
        if values == ["*"]:
            fields.append(None)
            continue
        ints = sorted({int(v) % 7 if high == 6 else int(v) for v in values})
        fields.append(None if ints == list(range(low, high + 1)) else ints)
    return fields


def _progression(values: Sequence[int], low: int, high: int) -> int | None:
    """The step ``s`` if ``values`` are low, low+s, … up to ``high`` (s divides the range), else None."""
    if len(values) < 2 or values[0] != low:
        return None
    step = values[1] - values[0]
    if list(range(low, high + 1, step)) != list(values) or (high + 1 - low) % step:
        return None
    return step


# --- systemd ------------------------------------------------------------------------------------------

def _unit_name(text: str) -> str:
    return "".join(c if re.match(r"[A-Za-z0-9_.:-]", c) else f"\\x{ord(c):02x}" for c in text)


def _unit_quote(arg: str) -> str:
    """One ExecStart= word: quoted when needed; ``%`` and ``$`` escaped for systemd."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not re.search(r"[\s\"'\\;]", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cal_list(values: Sequence[int] | None, width: int = 2) -> str:
    if values is None:
        return "*"
    return ",".join(f"{v:0{width}d}" for v in values)


def _cal_time(values: Sequence[int] | None, low: int, high: int) -> str:
    if values is None:
        return "*"
    step = _progression(values, low, high)
    if step is not None:
        return f"{low:02d}/{step}"
    return _cal_list(values)


def _cal_days(values: Sequence[int]) -> str:
    """``Mon..Fri``, ``Sun,Sat``: runs of consecutive weekdays as ranges (Monday first)."""
    order = [1, 2, 3, 4, 5, 6, 0]
    picked = [d for d in order if d in values]
    parts: list[str] = []
    run: list[int] = []
    for day in picked:
        if run and order.index(day) != order.index(run[-1]) + 1:
            parts.append(_day_run(run))
            run = []
        run.append(day)
    if run:
        parts.append(_day_run(run))
    return ",".join(parts)


def _day_run(run: Sequence[int]) -> str:
    if len(run) >= 3:
        return f"{_DAYS[run[0]]}..{_DAYS[run[-1]]}"
    return ",".join(_DAYS[d] for d in run)


def on_calendar(entry: Entry, timezone: str | None) -> list[str]:
    """The ``OnCalendar=`` values for a cron schedule (two when both day fields are restricted: cron
    fires when either matches, systemd only when both do)."""
    minute, hour, dom, month, dow = _cron_fields(entry)
    time = f"{_cal_time(hour, 0, 23)}:{_cal_time(minute, 0, 59)}:00"
    zone = f" {timezone}" if timezone else ""
    date_of = f"*-{_cal_list(month)}-"

    def spec(days: Sequence[int] | None, dates: Sequence[int] | None) -> str:
        prefix = f"{_cal_days(days)} " if days is not None else ""
        return f"{prefix}{date_of}{_cal_list(dates)} {time}{zone}"

    if dom is not None and dow is not None:
        return [spec(None, dom), spec(dow, None)]
    return [spec(dow, dom)]


def _interval_calendar(seconds: int) -> str | None:
    """An interval that divides a minute, an hour or a day as an epoch-anchored OnCalendar= value."""
    if seconds < 60 and 60 % seconds == 0:
        return f"*-*-* *:*:00/{seconds} UTC"
    if seconds % 60 == 0 and seconds < 3600 and 60 % (seconds // 60) == 0:
        return f"*-*-* *:00/{seconds // 60}:00 UTC"
    if seconds % 3600 == 0 and seconds < 86400 and 24 % (seconds // 3600) == 0:
        return f"*-*-* 00/{seconds // 3600}:00:00 UTC"
    if seconds == 86400:
        return "*-*-* 00:00:00 UTC"
    return None


def systemd_units(config: Config, config_path: str, program: Sequence[str]) -> dict[str, str]:
    """Unit file name → contents: ``dtstore-JOB-MODE.service`` and ``.timer`` for every entry."""
    units: dict[str, str] = {}
    for entry in entries(config, config_path, program):
        base = _unit_name(f"dtstore-{entry.name}")
        what = f"dtstore {'drill' if entry.mode == 'drill' else 'job'} {entry.job.name}" + (
            "" if entry.mode == "drill" else f" ({entry.mode})")
        header = (f"# Written by `dtstore schedule install --systemd`; `dtstore schedule remove --systemd` "
                  f"deletes it.\n{MARKER}{config_path}\n")
        service = [header + "[Unit]", f"Description={what}", "Wants=network-online.target",
                   "After=network-online.target", "", "[Service]", "Type=oneshot",
                   "ExecStart=" + " ".join(_unit_quote(a) for a in entry.argv)]
        if entry.job.timeout is not None:
            # the run stops itself at the job's timeout; this is the backstop if it cannot
            service.append(f"TimeoutStartSec={format_duration(entry.job.timeout + dt.timedelta(minutes=1))}")
        timer = [header + "[Unit]", f"Description={what}: {entry.schedule.text}", "", "[Timer]"]
        if entry.schedule.interval is not None:
            seconds = int(entry.schedule.interval.total_seconds())
            calendar = _interval_calendar(seconds)
            if calendar is not None:
                timer.append(f"OnCalendar={calendar}")
            else:
                timer += [f"OnActiveSec={seconds}s", f"OnUnitActiveSec={seconds}s"]
        else:
            timer += [f"OnCalendar={c}" for c in on_calendar(entry, config.agent.timezone)]
        timer += ["Persistent=true", "AccuracySec=1s"]
        if entry.job.jitter > dt.timedelta(0):
            timer.append(f"RandomizedDelaySec={format_duration(entry.job.jitter)}")
        timer += ["", "[Install]", "WantedBy=timers.target"]
        units[f"{base}.service"] = "\n".join(service) + "\n"
        units[f"{base}.timer"] = "\n".join(timer) + "\n"
    return units


def managed_units(existing: Mapping[str, str], config_path: str) -> list[str]:
    """The unit files among ``existing`` (name → contents) that install wrote for this configuration."""
    mark = f"{MARKER}{config_path}\n"
    return sorted(name for name, text in existing.items()
                  if name.startswith("dtstore-") and name.endswith((".service", ".timer")) and mark in text)


def _systemctl(user: bool, *args: str, check: bool = True) -> Command:
    return Command(("systemctl", *(("--user",) if user else ()), *args), check=check)


def systemd_install(config: Config, config_path: str, program: Sequence[str], unit_dir: Path,
                    existing: Mapping[str, str], *, user: bool, enable: bool = True) -> Plan:
    units = systemd_units(config, config_path, program)
    stale = [n for n in managed_units(existing, config_path) if n not in units]
    stale_timers = [n for n in stale if n.endswith(".timer")]
    before = (_systemctl(user, "disable", "--now", *stale_timers, check=False),) if stale_timers and enable else ()
    timers = [n for n in units if n.endswith(".timer")]
    commands = (_systemctl(user, "daemon-reload"), _systemctl(user, "enable", "--now", *timers)) if enable else ()
    notes = _interval_notes(config, config_path, program)
    return Plan(files={unit_dir / n: t for n, t in units.items()}, delete=tuple(unit_dir / n for n in stale),
                before=before, commands=commands if timers else commands[:1], notes=notes)


def _interval_notes(config: Config, config_path: str, program: Sequence[str]) -> tuple[str, ...]:
    notes = []
    for entry in entries(config, config_path, program):
        interval = entry.schedule.interval
        if interval is not None and _interval_calendar(int(interval.total_seconds())) is None:
            notes.append(f"{entry.where}: \"{entry.schedule.text}\" does not divide a day: the timer counts from "
                         "its last run (OnUnitActiveSec=), not from the epoch, and a missed run is not caught up")
        if entry.job.window is not None:
            notes.append(f"jobs.{entry.job.name}.window: OS schedulers start runs at their times; the window "
                         "applies under dtstore agent only")
    return tuple(dict.fromkeys(notes))


def systemd_remove(config_path: str, unit_dir: Path, existing: Mapping[str, str], *, user: bool,
                   enable: bool = True) -> Plan:
    names = managed_units(existing, config_path)
    timers = [n for n in names if n.endswith(".timer")]
    before = (_systemctl(user, "disable", "--now", *timers, check=False),) if timers and enable else ()
    commands = (_systemctl(user, "daemon-reload"),) if names and enable else ()
    return Plan(delete=tuple(unit_dir / n for n in names), before=before, commands=commands)


# --- cron -------------------------------------------------------------------------------------------

def _cron_interval(entry: Entry) -> str:
    assert entry.schedule.interval is not None
    seconds = int(entry.schedule.interval.total_seconds())
    minutes, rest = divmod(seconds, 60)
    if not rest:
        if minutes == 1:
            return "* * * * *"
        if minutes < 60 and 60 % minutes == 0:
            return f"*/{minutes} * * * *"
        hours, rest_m = divmod(minutes, 60)
        if not rest_m and hours < 24 and 24 % hours == 0:
            return f"0 */{hours} * * *" if hours > 1 else "0 * * * *"
        if minutes == 1440:
            return "0 0 * * *"
    raise InstallError(f"{entry.where}: \"{entry.schedule.text}\" cannot be a crontab line (cron counts whole "
                       "minutes, and */N must divide an hour or a day): use a cron expression or dtstore agent")


def cron_lines(config: Config, config_path: str, program: Sequence[str]) -> list[str]:
    """The crontab block, markers included."""
    lines = [f"{BEGIN}{config_path}",
             "# Written by `dtstore schedule install --cron`; `dtstore schedule remove --cron` deletes this block."]
    if config.agent.timezone:
        lines.append(f"# The configuration reads times in {config.agent.timezone}; cron reads them in its own zone.")
    for entry in entries(config, config_path, program):
        if entry.schedule.interval is not None:
            when = _cron_interval(entry)
        else:
            _cron_fields(entry)  # refuses croniter-only syntax
            when = entry.schedule.cron or ""
        command = " ".join(shlex.quote(a) for a in entry.argv).replace("%", "\\%")
        lines.append(f"{when} {command}")
    lines.append(f"{END}{config_path}")
    return lines


def _without_block(crontab: str, config_path: str) -> list[str]:
    kept: list[str] = []
    inside = False
    for line in crontab.splitlines():
        if line.strip() == f"{BEGIN}{config_path}":
            inside = True
            continue
        if inside and line.strip() == f"{END}{config_path}":
            inside = False
            continue
        if not inside:
            kept.append(line)
    if inside:
        raise UsageError(f"the crontab has \"{BEGIN}{config_path}\" without its end marker: fix it with crontab -e")
    return kept


def cron_install(config: Config, config_path: str, program: Sequence[str], crontab: str) -> Plan:
    """The new crontab: ``crontab`` without this configuration's old block, with the new block appended."""
    kept = _without_block(crontab, config_path)
    while kept and not kept[-1].strip():
        kept.pop()
    text = "\n".join([*kept, *([""] if kept else []), *cron_lines(config, config_path, program)]) + "\n"
    return Plan(commands=(Command(("crontab", "-"), input=text),),
                notes=tuple(n for n in _interval_notes(config, config_path, program) if "window" in n))


def cron_remove(config_path: str, crontab: str) -> Plan:
    kept = _without_block(crontab, config_path)
    if kept == crontab.splitlines():
        return Plan()
    while kept and not kept[-1].strip():
        kept.pop()
    return Plan(commands=(Command(("crontab", "-"), input="\n".join(kept) + "\n" if kept else ""),))


# --- Windows: schtasks -------------------------------------------------------------------------------

def _cmdline(argv: Sequence[str]) -> str:
    return subprocess.list2cmdline(list(argv))


def _task_name(text: str) -> str:
    return re.sub(r'[\\/:*?"<>|]', "_", text)


def _triggers(entry: Entry) -> list[list[str]]:
    """The /SC … arguments of the tasks for one entry (several when one task cannot hold the times)."""
    if entry.schedule.interval is not None:
        seconds = int(entry.schedule.interval.total_seconds())
        if seconds % 60:
            raise InstallError(f"{entry.where}: \"{entry.schedule.text}\": schtasks counts whole minutes")
        minutes = seconds // 60
        if minutes < 1440 and minutes % 60:
            return [["/SC", "MINUTE", "/MO", str(minutes), "/ST", "00:00"]]
        if minutes < 1440:
            return [["/SC", "HOURLY", "/MO", str(minutes // 60), "/ST", "00:00"]]
        if minutes % 1440 == 0:
            return [["/SC", "DAILY", "/MO", str(minutes // 1440), "/ST", "00:00"]]
        raise InstallError(f"{entry.where}: \"{entry.schedule.text}\": schtasks has no interval of days and hours")
    minute, hour, dom, month, dow = _cron_fields(entry)
    if dom is None and month is None and dow is None:
        if hour is None:
            step = 1 if minute is None else _progression(minute, 0, 59)
            if step is not None:
                return [["/SC", "MINUTE", "/MO", str(step), "/ST", "00:00"]]
            if minute is not None and len(minute) == 1:
                return [["/SC", "HOURLY", "/MO", "1", "/ST", f"00:{minute[0]:02d}"]]
        elif minute is not None and len(minute) == 1:
            step = _progression(hour, 0, 23)
            if step is not None:
                return [["/SC", "HOURLY", "/MO", str(step), "/ST", f"00:{minute[0]:02d}"]]
    times = [f"{h:02d}:{m:02d}" for h in (hour if hour is not None else range(24))
             for m in (minute if minute is not None else range(60))]
    if len(times) > 24:
        raise InstallError(f"{entry.where}: \"{entry.schedule.text}\" needs {len(times)} tasks a day for schtasks: "
                           "use every N{m,h} or dtstore agent")
    days: list[list[str]] = []
    if dow is not None and month is not None:
        raise InstallError(f"{entry.where}: \"{entry.schedule.text}\": schtasks cannot limit weekdays to months")
    if dow is not None:
        days.append(["/SC", "WEEKLY", "/D", ",".join(_WIN_DAYS[d] for d in dow)])
    if dom is not None or (month is not None and dow is None):
        monthly = ["/SC", "MONTHLY", "/D", ",".join(str(d) for d in dom) if dom is not None else "*"]
        if month is not None:
            monthly += ["/M", ",".join(_WIN_MONTHS[m - 1] for m in month)]
        days.append(monthly)
    if not days:
        days.append(["/SC", "DAILY"])
    return [[*d, "/ST", t] for d in days for t in times]


def windows_tasks(config: Config, config_path: str, program: Sequence[str]) -> dict[str, list[str]]:
    """Task name (``dtstore\\JOB-MODE``, numbered when one entry needs several) → schtasks /Create argv."""
    tasks: dict[str, list[str]] = {}
    for entry in entries(config, config_path, program):
        triggers = _triggers(entry)
        for i, trigger in enumerate(triggers, 1):
            name = f"{TASK_FOLDER}\\{_task_name(entry.name)}" + (f"-{i}" if len(triggers) > 1 else "")
            tasks[name] = ["schtasks", "/Create", "/F", "/TN", name, "/TR", _cmdline(entry.argv), *trigger,
                           "/RU", "SYSTEM"]
    return tasks


def parse_task_query(text: str) -> list[tuple[str, str]]:
    """``schtasks /Query /FO CSV /NH /V``: (task name, task to run) for each task (columns 2 and 9)."""
    rows = []
    for row in csv.reader(io.StringIO(text)):
        if len(row) > 8 and row[1] != "TaskName":
            rows.append((row[1].lstrip("\\"), row[8]))
    return rows


def managed_tasks(existing: Iterable[tuple[str, str]], config_path: str) -> list[str]:
    folder = TASK_FOLDER + "\\"
    return sorted({name for name, command in existing
                   if name.startswith(folder) and f"--config {_cmdline([config_path])}" in command})


def windows_install(config: Config, config_path: str, program: Sequence[str],
                    existing: Iterable[tuple[str, str]]) -> Plan:
    tasks = windows_tasks(config, config_path, program)
    stale = [n for n in managed_tasks(existing, config_path) if n not in tasks]
    before = tuple(Command(("schtasks", "/Delete", "/F", "/TN", n), check=False) for n in stale)
    notes = list(_interval_notes(config, config_path, program))
    if config.agent.timezone:
        notes.append(f"agent.timezone is {config.agent.timezone}; scheduled tasks run in the machine's zone")
    return Plan(before=before, commands=tuple(Command(tuple(argv)) for argv in tasks.values()), notes=tuple(notes))


def windows_remove(config_path: str, existing: Iterable[tuple[str, str]]) -> Plan:
    return Plan(commands=tuple(Command(("schtasks", "/Delete", "/F", "/TN", n))
                               for n in managed_tasks(existing, config_path)))


# --- carrying a plan out -----------------------------------------------------------------------------

Runner = Callable[..., Any]


def apply(plan: Plan, *, run: Runner = subprocess.run) -> list[str]:
    """Run ``before``, delete, write, run ``commands``; returns what was done, one line each.  A failing
    command with ``check`` raises DtstoreError (exit 1) with its output."""
    done: list[str] = []

    def execute(command: Command) -> None:
        result = run(list(command.argv), input=command.input, capture_output=True, text=True, check=False)
        if result.returncode != 0 and command.check:
            message = (result.stderr or result.stdout or "").strip()
            raise DtstoreError(f"{shlex.join(command.argv)} exited with status {result.returncode}"
                             + (f": {message}" if message else ""))
        done.append(f"ran {command}" + ("" if result.returncode == 0 else f" (status {result.returncode})"))

    for command in plan.before:
        execute(command)
    for path in plan.delete:
        path.unlink(missing_ok=True)
        done.append(f"removed {path}")
    for path, text in plan.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        done.append(f"wrote {path}")
    for command in plan.commands:
        execute(command)
    return done


def read_unit_dir(unit_dir: Path) -> dict[str, str]:
    """The ``dtstore-*`` unit files in ``unit_dir`` (name → contents)."""
    found: dict[str, str] = {}
    if unit_dir.is_dir():
        for path in sorted(unit_dir.glob("dtstore-*")):
            if path.suffix in (".service", ".timer") and path.is_file():
                found[path.name] = path.read_text(encoding="utf-8", errors="replace")
    return found


def read_crontab(*, run: Runner = subprocess.run) -> str:
    """The user's crontab (empty when there is none)."""
    try:
        result = run(["crontab", "-l"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UsageError("crontab is not installed: use --systemd, or dtstore agent") from None
    if result.returncode != 0:
        if "no crontab" in (result.stderr or "").lower():
            return ""
        raise DtstoreError(f"crontab -l exited with status {result.returncode}: {(result.stderr or '').strip()}")
    return str(result.stdout)


def query_tasks(*, run: Runner = subprocess.run) -> list[tuple[str, str]]:
    result = run(["schtasks", "/Query", "/FO", "CSV", "/NH", "/V"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DtstoreError(f"schtasks /Query exited with status {result.returncode}: {(result.stderr or '').strip()}")
    return parse_task_query(str(result.stdout))


__all__ = ["Command", "Entry", "InstallError", "Plan", "apply", "cron_install", "cron_lines", "cron_remove",
           "entries", "managed_tasks", "managed_units", "on_calendar", "parse_task_query", "query_tasks",
           "read_crontab", "read_unit_dir", "systemd_install", "systemd_remove", "systemd_units", "windows_install",
           "windows_remove", "windows_tasks"]
