"""The agent's configuration file (``spec/agent.md`` §2): TOML read with ``tomllib``, validated whole.

:func:`load` reads the file and reports *every* problem at once in one :class:`ConfigError` (a
UsageError: exit 2), each naming its line: ``dtstore.toml:12: jobs.shop.schedule.log: bad schedule
"every 15x": …``.  Problems that need not stop a run (a diff schedule for a connector without diff
mode) are warnings, kept in :attr:`Config.warnings`.  :func:`check` adds what depends on the machine:
password sources and exclude files that do not exist, and a repository that cannot be opened.

Line numbers: ``tomllib`` gives none, so :class:`Lines` scans the text itself.  It follows table
headers (``[jobs.shop]``, ``[[…]]``) and ``key =`` lines (dotted and quoted keys too), skipping
multi-line strings and the continuation lines of multi-line arrays and inline tables, and maps each
dotted path (``jobs.shop.schedule``) to the line its key is on.  A problem is reported at the line
of the longest prefix of its path that is found, so a value inside an inline table
(``jobs.shop.schedule.log``) is reported at the line of ``schedule = {…}``, and a missing key at
its table's header.  The scanner does not validate TOML: ``tomllib`` has done that first.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dtstore.agent.schedule import (
    MODE_ORDER,
    Schedule,
    ScheduleError,
    Window,
    format_duration,
    max_gap,
    parse_duration,
    parse_schedule,
    parse_window,
)
from dtstore.errors import UsageError, WrongPassword
from dtstore.snapshots.retention import RetentionPolicy
from dtstore.snapshots.retention import parse_duration as parse_calendar_duration
from dtstore.sources.excludes import Excludes

if TYPE_CHECKING:
    from dtstore import Repository

DEFAULT_RUN_LOG_MAX_BYTES = 10 << 20
DEFAULT_RUN_LOG_KEEP = 5
DEFAULT_ON = frozenset({"failure", "rpo", "skipped"})
EVENTS = frozenset({"failure", "rpo", "skipped", "success", "drill", "recovered"})
DEFAULT_SMTP = "smtp://localhost:25"
PRUNE_CHOICES = ("after-retention", "never")
RETENTION_AFTER_CHOICES = ("full", "every")
POINT_CHOICES = ("latest", "random")
HOOKS = ("before", "after", "on_failure")
EMPTY: Mapping[str, Any] = MappingProxyType({})

AGENT_KEYS = ("state_dir", "timezone", "metrics_textfile", "metrics_listen", "run_log_max_bytes", "run_log_keep",
              "catch_up")
REPO_KEYS = ("url", "password_file", "password_command", "password_env", "limit_upload", "env")
PASSWORD_KEYS = ("password_file", "password_command", "password_env")
BACKUP_KEYS = ("kind", "repository", "source", "command", "stdin_name", "schedule", "retention", "prune",
               "retention_after", "rpo", "timeout", "window", "jitter", "full_every", "tags", "stage", "hooks",
               "notify", *Excludes.KEYS)
DRILL_KEYS = ("kind", "of", "schedule", "target", "point", "checks", "timeout", "window", "jitter", "notify")
NOTIFY_KEYS = ("webhook", "email", "smtp", "smtp_user", "smtp_password_file", "smtp_password_env", "from",
               "healthchecks", "on")
RETENTION_KEYS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
                  "keep_within", "keep_within_hourly", "keep_within_daily", "keep_within_weekly",
                  "keep_within_monthly", "keep_within_yearly", "keep_tags")
TOP_KEYS = ("agent", "repositories", "jobs", "notify")
FILE_MODES = ("full",)
"""what a files or command job can take: every snapshot of a path is a full one (deduplicated)"""


# --- problems --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One finding: ``file:line: key: message``; ``severity`` is ``error`` or ``warning``."""

    file: str
    line: int | None
    key: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        label = "warning: " if self.severity == "warning" else ""
        return f"{where}: {label}{self.key + ': ' if self.key else ''}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "key": self.key, "message": self.message,
                "severity": self.severity}


def dotted(path: Sequence[str]) -> str:
    """``jobs."a.b".schedule``: a key path as TOML writes it (names quoted where they must be)."""
    return ".".join(_toml_key(part) for part in path)


class ConfigError(UsageError):
    """A configuration with problems (exit 2); ``problems`` holds every error and warning found."""

    def __init__(self, problems: Sequence[Problem], config: Config | None = None) -> None:
        self.problems = tuple(problems)
        self.config = config
        """what could be read in spite of the problems (for ``config check`` to check the machine too)"""
        errors = [p for p in self.problems if p.severity == "error"] or list(self.problems)
        super().__init__("\n".join(str(p) for p in errors))

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")


# --- line numbers ----------------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*\[\[?\s*(?P<name>[^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*(?P<key>(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
                  r"""(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*'))*)\s*=""")
_PART = re.compile(r"""\s*(?:([A-Za-z0-9_-]+)|"((?:[^"\\]|\\.)*)"|'([^']*)')\s*(?:\.|$)""")


def _split_key(text: str) -> tuple[str, ...]:
    parts: list[str] = []
    pos = 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match or match.end() == pos:
            break
        bare, basic, literal = match.groups()
        parts.append(bare if bare is not None else (basic if basic is not None else literal or ""))
        pos = match.end()
    return tuple(parts)


def _depth_change(line: str) -> tuple[int, str | None]:
    """Bracket depth change of a line outside strings and comments, and a multi-line string left open."""
    depth, i, n = 0, 0, len(line)
    while i < n:
        c = line[i]
        if c == "#":
            break
        if line.startswith('"""', i) or line.startswith("'''", i):
            quote = line[i:i + 3]
            end = line.find(quote, i + 3)
            if end < 0:
                return depth, quote
            i = end + 3
            continue
        if c in "\"'":
            j = i + 1
            while j < n and line[j] != c:
                j += 2 if c == '"' and line[j] == "\\" else 1
            i = j + 1
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        i += 1
    return depth, None


class Lines:
    """Dotted key path → the line (1-based) it is defined on, from scanning the TOML text."""

    def __init__(self, text: str) -> None:
        self._where: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        depth = 0
        open_string: str | None = None
        for number, line in enumerate(text.splitlines(), 1):
            if open_string is not None:
                end = line.find(open_string)
                if end < 0:
                    continue
                open_string = None
                line = " " * (end + 3) + line[end + 3:]
                change, open_string = _depth_change(line)
                depth += change
                continue
            if depth == 0:
                header = _HEADER.match(line)
                if header and not _KEY.match(line):
                    table = _split_key(header.group("name"))
                    for k in range(1, len(table) + 1):
                        self._where.setdefault(table[:k], number)
                    continue
                key = _KEY.match(line)
                if key:
                    path = table + _split_key(key.group("key"))
                    self._where.setdefault(path, number)
                    for k in range(len(table) + 1, len(path)):
                        self._where.setdefault(path[:k], number)
                    self._inline_keys(path, line[key.end():], number)
            change, open_string = _depth_change(line)
            depth = max(0, depth + change)

    def _inline_keys(self, path: tuple[str, ...], rest: str, number: int) -> None:
        """``schedule = { full = "…", log = "…" }``: the inner keys are on this line too."""
        if rest.lstrip().startswith("{"):
            for match in re.finditer(r"""([A-Za-z0-9_-]+|"[^"]*"|'[^']*')\s*=""", rest):
                self._where.setdefault((*path, match.group(1).strip("\"'")), number)

    def line(self, path: Sequence[str]) -> int | None:
        """The line of ``path``, or of its longest prefix that is found; None if nothing is."""
        key = tuple(path)
        while key:
            if key in self._where:
                return self._where[key]
            key = key[:-1]
        return None


# --- the model -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AgentSettings:
    state_dir: Path
    timezone: str | None
    """the zone's name as configured; None: the machine's zone"""
    tz: dt.tzinfo
    metrics_textfile: Path | None = None
    metrics_listen: str | None = None
    run_log_max_bytes: int = DEFAULT_RUN_LOG_MAX_BYTES
    run_log_keep: int = DEFAULT_RUN_LOG_KEEP
    catch_up: bool = True


@dataclass(frozen=True)
class Repo:
    name: str
    url: str
    password_file: str | None = None
    password_command: str | None = None
    password_env: str | None = None
    limit_upload: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Notify:
    name: str
    webhook: str | None = None
    email: tuple[str, ...] = ()
    smtp: str | None = None
    smtp_user: str | None = None
    smtp_password_file: str | None = None
    smtp_password_env: str | None = None
    sender: str | None = None
    """``from`` in the file; None: dtstore@<hostname>"""
    healthchecks: str | None = None
    on: frozenset[str] = DEFAULT_ON


@dataclass(frozen=True)
class Job:
    name: str
    kind: str
    """``backup`` or ``drill``"""
    repository: str
    """a drill's is its ``of`` job's"""
    source: tuple[str, ...] = ()
    """paths, or one connector URL; empty for command and drill jobs"""
    command: str | None = None
    stdin_name: str | None = None
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    """mode → schedule; a drill's one schedule is under ``"drill"``"""
    retention: Mapping[str, Any] = field(default_factory=dict)
    """the forget options as written (snake_case); ``policy`` is the parsed form"""
    prune: str = "after-retention"
    """``after-retention``, ``never``, or a schedule's text (then ``prune_schedule``)"""
    retention_after: str = "full"
    """``full``, ``every``, or a schedule's text (then ``retention_schedule``)"""
    rpo: dt.timedelta | None = None
    """as configured, or derived (``rpo_derived``): 2 × the longest gap between the job's fire times"""
    timeout: dt.timedelta | None = None
    window: Window | None = None
    jitter: dt.timedelta = dt.timedelta(0)
    full_every: dt.timedelta | None = None
    tags: tuple[str, ...] = ()
    stage: str | None = None
    hooks: Mapping[str, str] = field(default_factory=dict)
    notify: tuple[str, ...] = ()
    excludes: Mapping[str, Any] = field(default_factory=dict)
    """the exclude keys as written; :meth:`make_excludes` builds ``dtstore.Excludes`` (reads exclude files)"""
    of: str | None = None
    target: str | None = None
    point: str = "latest"
    checks: tuple[str, ...] = ()
    # additions to the contract sketch
    policy: RetentionPolicy | None = None
    prune_schedule: Schedule | None = None
    retention_schedule: Schedule | None = None
    rpo_derived: bool = False
    connector: str | None = None
    """the connector scheme of a connector source (``mysql``), else None"""
    run_modes: Mapping[str, str] = field(default_factory=dict)
    """schedule mode → the mode the snapshot is taken with: itself, or ``full`` for a ``diff`` schedule
    of a source without diff mode (spec §2: the next larger mode, never a smaller one)"""

    @property
    def is_connector(self) -> bool:
        return self.connector is not None

    def snapshot_mode(self, mode: str) -> str:
        """The mode to ask the source for when ``mode`` is scheduled (or given to ``dtstore run --mode``)."""
        return self.run_modes.get(mode, mode)

    def make_excludes(self) -> Excludes:
        return Excludes.from_config(self.excludes)


@dataclass(frozen=True)
class Config:
    path: Path
    agent: AgentSettings
    repositories: Mapping[str, Repo]
    jobs: Mapping[str, Job]
    notify: Mapping[str, Notify]
    warnings: tuple[Problem, ...] = ()
    lines: Lines | None = field(default=None, compare=False, repr=False)

    def job(self, name: str) -> Job:
        """The job called ``name``, or a UsageError naming the jobs there are."""
        try:
            return self.jobs[name]
        except KeyError:
            hint = _did_you_mean(name, self.jobs)
            raise UsageError(f"no job {name!r} in {self.path}{hint}; jobs: {', '.join(self.jobs) or 'none'}") from None

    def line(self, *path: str) -> int | None:
        return self.lines.line(path) if self.lines is not None else None


# --- defaults by platform --------------------------------------------------------------------------

def _is_root() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return bool(geteuid is not None and geteuid() == 0)


def default_config_path() -> Path:
    """``/etc/dtstore/dtstore.toml`` as root on POSIX, ``~/.config/dtstore/dtstore.toml`` otherwise
    (``$XDG_CONFIG_HOME`` if set), ``%ProgramData%\\dtstore\\dtstore.toml`` on Windows."""
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "dtstore" / "dtstore.toml"
    if _is_root():
        return Path("/etc/dtstore/dtstore.toml")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dtstore" / "dtstore.toml"


def default_state_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "dtstore" / "state"
    if _is_root():
        return Path("/var/lib/dtstore")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "dtstore"


def find_config(arg: str | None) -> Path:
    """``--config PATH``, else ``$DTSTORE_CONFIG``, else the platform default (not checked to exist)."""
    if arg:
        return Path(arg)
    env = os.environ.get("DTSTORE_CONFIG")
    if env:
        return Path(env)
    return default_config_path()


def local_zone() -> tuple[str | None, dt.tzinfo]:
    """The machine's zone with its DST rules: ``$TZ``, the ``/etc/localtime`` link or file,
    ``/etc/timezone``; failing those, the current fixed offset."""
    tz_env = os.environ.get("TZ", "").lstrip(":")
    if tz_env:
        try:
            return tz_env, ZoneInfo(tz_env)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    localtime = Path("/etc/localtime")
    try:
        target = os.readlink(localtime)
        name = target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else None
        if name:
            return name, ZoneInfo(name)
    except (OSError, ZoneInfoNotFoundError, ValueError):
        pass
    try:
        name = Path("/etc/timezone").read_text().strip()
        if name:
            return name, ZoneInfo(name)
    except (OSError, ZoneInfoNotFoundError, ValueError):
        pass
    try:
        with open(localtime, "rb") as f:
            return None, ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        pass
    fixed = dt.datetime(2000, 1, 1, tzinfo=dt.UTC).astimezone().tzinfo
    return None, fixed or dt.UTC


# --- the parser ------------------------------------------------------------------------------------

def _did_you_mean(word: str, choices: Sequence[str] | Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Reader:
    """Collects problems while building the model; every check goes through :meth:`error`."""

    def __init__(self, path: Path, text: str) -> None:
        self.file = str(path)
        self.lines = Lines(text)
        self.problems: list[Problem] = []

    def report(self, path: Sequence[str], message: str, severity: str = "error") -> None:
        self.problems.append(Problem(self.file, self.lines.line(path), dotted(path), message, severity))

    def error(self, path: Sequence[str], message: str) -> None:
        self.report(path, message)

    def warn(self, path: Sequence[str], message: str) -> None:
        self.report(path, message, "warning")

    def keys(self, table: Mapping[str, Any], path: Sequence[str], allowed: Sequence[str], what: str) -> None:
        for key in table:
            if key not in allowed:
                self.error([*path, key], f"unknown key in {what}{_did_you_mean(key, allowed)}; "
                                         f"known: {', '.join(allowed)}")

    def table(self, doc: Mapping[str, Any], key: str, path: Sequence[str]) -> Mapping[str, Any]:
        value = doc.get(key, EMPTY)
        if not isinstance(value, Mapping):
            self.error([*path, key], f"must be a table, not {_type(value)}")
            return EMPTY
        return value

    def string(self, table: Mapping[str, Any], key: str, path: Sequence[str], *,
               required: bool = False) -> str | None:
        value = table.get(key)
        if value is None:
            if required:
                self.error(path, f"{key} is required")
            return None
        if not isinstance(value, str) or (required and not value.strip()):
            self.error([*path, key], f"must be a non-empty string, not {_type(value)}" if not isinstance(value, str)
                       else "must not be empty")
            return None
        return value

    def strings(self, table: Mapping[str, Any], key: str, path: Sequence[str]) -> tuple[str, ...]:
        """A string or a list of strings."""
        value = table.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        self.error([*path, key], f"must be a string or a list of strings, not {_type(value)}")
        return ()

    def boolean(self, table: Mapping[str, Any], key: str, path: Sequence[str], default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.error([*path, key], f"must be true or false, not {_type(value)}")
            return default
        return value

    def integer(self, table: Mapping[str, Any], key: str, path: Sequence[str], default: int, *,
                minimum: int = 0) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.error([*path, key], f"must be a whole number ≥ {minimum}, not {value!r}")
            return default
        return value

    def duration(self, table: Mapping[str, Any], key: str, path: Sequence[str], *,
                 positive: bool = True) -> dt.timedelta | None:
        if key not in table:
            return None
        try:
            value = parse_duration(table[key])
        except ScheduleError as exc:
            self.error([*path, key], str(exc))
            return None
        if positive and value <= dt.timedelta(0):
            self.error([*path, key], f"must be longer than 0s, not {table[key]!r}")
            return None
        return value


def _type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def load(path: Path, *, text: str | None = None) -> Config:
    """Read and validate the configuration file; :class:`ConfigError` lists every problem, by line."""
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError([Problem(str(path), None, "", "no configuration file here: give --config PATH "
                                                            "or set DTSTORE_CONFIG")]) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError([Problem(str(path), None, "", f"cannot read the configuration: {reason}")]) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = int(match.group(1)) if match else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        if match:
            message += f" (column {match.group(2)})"
        raise ConfigError([Problem(str(path), line, "", f"not valid TOML: {message}")]) from None
    reader = _Reader(path, text)
    config = _build(reader, path, doc)
    if any(p.severity == "error" for p in reader.problems):
        raise ConfigError(reader.problems, config)
    return config


def _build(r: _Reader, path: Path, doc: Mapping[str, Any]) -> Config:
    for key, value in doc.items():
        if key not in TOP_KEYS:
            r.error([key], f"unknown table{_did_you_mean(key, TOP_KEYS)}; known: {', '.join(TOP_KEYS)}")
        elif not isinstance(value, Mapping):
            r.error([key], f"must be a table ([{key}]), not {_type(value)}")
    agent = _agent(r, r.table(doc, "agent", []))
    repositories = {}
    for name, table in r.table(doc, "repositories", []).items():
        if isinstance(table, Mapping):
            repositories[name] = _repo(r, name, table)
        else:
            r.error(["repositories", name], f"must be a table ([repositories.{name}]), not {_type(table)}")
    notify = {}
    for name, table in r.table(doc, "notify", []).items():
        if isinstance(table, Mapping):
            notify[name] = _notify(r, name, table)
        else:
            r.error(["notify", name], f"must be a table ([notify.{name}]), not {_type(table)}")
    jobs_doc = r.table(doc, "jobs", [])
    if not jobs_doc and "jobs" not in doc:
        r.warn([], "no [jobs.NAME] table: the agent has nothing to run")
    jobs: dict[str, Job] = {}
    for name, table in jobs_doc.items():
        if not isinstance(table, Mapping):
            r.error(["jobs", name], f"must be a table ([jobs.{name}]), not {_type(table)}")
            continue
        job = _job(r, name, table, agent, repositories, notify)
        if job is not None:
            jobs[name] = job
    for name, job in list(jobs.items()):
        if job.kind == "drill":
            jobs[name] = _link_drill(r, job, jobs_doc, jobs)
    return Config(path=path, agent=agent, repositories=MappingProxyType(repositories), jobs=MappingProxyType(jobs),
                  notify=MappingProxyType(notify), warnings=tuple(p for p in r.problems if p.severity == "warning"),
                  lines=r.lines)


def _agent(r: _Reader, t: Mapping[str, Any]) -> AgentSettings:
    p = ["agent"]
    r.keys(t, p, AGENT_KEYS, "[agent]")
    zone_name = r.string(t, "timezone", p)
    if zone_name:
        try:
            tz: dt.tzinfo = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            r.error([*p, "timezone"], f"unknown time zone {zone_name!r}: use an IANA name such as \"Europe/Berlin\"")
            zone_name, tz = None, local_zone()[1]
    else:
        tz = local_zone()[1]
    state_dir = r.string(t, "state_dir", p)
    textfile = r.string(t, "metrics_textfile", p)
    listen = r.string(t, "metrics_listen", p)
    if listen is not None:
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            r.error([*p, "metrics_listen"], f"must be HOST:PORT (e.g. \"127.0.0.1:9898\"), not {listen!r}")
            listen = None
        del host
    max_bytes: int = DEFAULT_RUN_LOG_MAX_BYTES
    if "run_log_max_bytes" in t:
        raw = t["run_log_max_bytes"]
        try:
            from dtstore.sources.excludes import parse_size

            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise UsageError(f"must be a size such as 10485760 or \"10M\", not {_type(raw)}")
            max_bytes = parse_size(raw)
            if max_bytes < 4096:
                raise UsageError("must be at least 4096 bytes")
        except UsageError as exc:
            r.error([*p, "run_log_max_bytes"], str(exc))
            max_bytes = DEFAULT_RUN_LOG_MAX_BYTES
    return AgentSettings(
        state_dir=Path(state_dir).expanduser() if state_dir else default_state_dir(),
        timezone=zone_name, tz=tz,
        metrics_textfile=Path(textfile).expanduser() if textfile else None,
        metrics_listen=listen,
        run_log_max_bytes=max_bytes,
        run_log_keep=r.integer(t, "run_log_keep", p, DEFAULT_RUN_LOG_KEEP),
        catch_up=r.boolean(t, "catch_up", p, True),
    )


def _repo(r: _Reader, name: str, t: Mapping[str, Any]) -> Repo:
    p = ["repositories", name]
    r.keys(t, p, REPO_KEYS, f"[repositories.{name}]")
    url = r.string(t, "url", p, required=True) or ""
    given = [k for k in PASSWORD_KEYS if k in t]
    if not given:
        r.error(p, f"no password source: set one of {', '.join(PASSWORD_KEYS)}")
    elif len(given) > 1:
        r.error([*p, given[1]], f"give one password source, not {' and '.join(given)}")
    password_file = r.string(t, "password_file", p, required="password_file" in t)
    password_command = r.string(t, "password_command", p, required="password_command" in t)
    password_env = r.string(t, "password_env", p, required="password_env" in t)
    limit: float | None = None
    if "limit_upload" in t:
        value = t["limit_upload"]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            r.error([*p, "limit_upload"], f"must be a number of KiB/s ≥ 0 (0: no cap), not {value!r}")
        elif value:
            limit = float(value)
    env: dict[str, str] = {}
    raw_env = t.get("env", EMPTY)
    if not isinstance(raw_env, Mapping) or not all(isinstance(v, str) for v in raw_env.values()):
        r.error([*p, "env"], "must be a table of strings, e.g. env = { AWS_PROFILE = \"backup\" }")
    else:
        env = dict(raw_env)
    return Repo(name=name, url=url, password_file=password_file, password_command=password_command,
                password_env=password_env, limit_upload=limit, env=MappingProxyType(env))


def _notify(r: _Reader, name: str, t: Mapping[str, Any]) -> Notify:
    p = ["notify", name]
    r.keys(t, p, NOTIFY_KEYS, f"[notify.{name}]")
    webhook = r.string(t, "webhook", p)
    healthchecks = r.string(t, "healthchecks", p)
    for key, url in (("webhook", webhook), ("healthchecks", healthchecks)):
        if url is not None and urlsplit(url).scheme not in ("http", "https"):
            r.error([*p, key], f"must be an http:// or https:// URL, not {url!r}")
    email = r.strings(t, "email", p)
    for address in email:
        if "@" not in address:
            r.error([*p, "email"], f"{address!r} is not an email address")
    smtp = r.string(t, "smtp", p)
    if smtp is not None and (urlsplit(smtp).scheme not in ("smtp", "smtps") or not urlsplit(smtp).hostname):
        r.error([*p, "smtp"], f"must be smtp://HOST[:PORT] or smtps://HOST[:PORT], not {mask_url(smtp)!r}")
    if email and smtp is None:
        smtp = DEFAULT_SMTP
    if not (webhook or email or healthchecks):
        r.error(p, "no target: set webhook, email or healthchecks")
    if "smtp_password_file" in t and "smtp_password_env" in t:
        r.error([*p, "smtp_password_env"], "give smtp_password_file or smtp_password_env, not both")
    on = r.strings(t, "on", p) if "on" in t else tuple(DEFAULT_ON)
    for event in on:
        if event not in EVENTS:
            r.error([*p, "on"], f"unknown event {event!r}{_did_you_mean(event, sorted(EVENTS))}; "
                                f"known: {', '.join(sorted(EVENTS))}")
    return Notify(name=name, webhook=webhook, email=email, smtp=smtp, smtp_user=r.string(t, "smtp_user", p),
                  smtp_password_file=r.string(t, "smtp_password_file", p),
                  smtp_password_env=r.string(t, "smtp_password_env", p), sender=r.string(t, "from", p),
                  healthchecks=healthchecks, on=frozenset(e for e in on if e in EVENTS))


def _schedule(r: _Reader, value: object, path: Sequence[str], tz: dt.tzinfo) -> Schedule | None:
    try:
        return parse_schedule(value, tz)
    except ScheduleError as exc:
        r.error(path, str(exc))
        return None


def _job(r: _Reader, name: str, t: Mapping[str, Any], agent: AgentSettings, repositories: Mapping[str, Repo],
         notify: Mapping[str, Notify]) -> Job | None:
    p = ["jobs", name]
    kind = t.get("kind", "backup")
    if kind not in ("backup", "drill"):
        r.error([*p, "kind"], f"must be \"backup\" or \"drill\", not {kind!r}")
        return None
    common = _common(r, p, t, agent, notify)
    if kind == "drill":
        r.keys(t, p, DRILL_KEYS, f"a drill job ([jobs.{name}])")
        return _drill(r, name, p, t, agent, common)
    r.keys(t, p, BACKUP_KEYS, f"a backup job ([jobs.{name}])")
    repository = r.string(t, "repository", p, required=True) or ""
    if repository and repository not in repositories:
        r.error([*p, "repository"], f"no [repositories.{repository}]{_did_you_mean(repository, repositories)}; "
                                    f"known: {', '.join(repositories) or 'none'}")
    source = r.strings(t, "source", p)
    command = r.string(t, "command", p)
    stdin_name = r.string(t, "stdin_name", p)
    connector: str | None = None
    modes: tuple[str, ...] = FILE_MODES
    if "source" in t and "command" in t:
        r.error([*p, "command"], "give source or command, not both")
    elif not source and command is None:
        r.error(p, "no source: set source (a path, a list of paths or a connector URL) or command")
    from dtstore import connectors

    urls = [s for s in source if connectors.scheme_of(s) is not None and not s.startswith("file://")]
    if urls:
        scheme = connectors.scheme_of(urls[0]) or ""
        if len(source) > 1:
            r.error([*p, "source"], "a connector URL must be the job's only source (make one job per database server)")
        elif scheme not in connectors.REGISTRY:
            r.error([*p, "source"], f"no connector for {scheme}://{_did_you_mean(scheme, connectors.REGISTRY)}; "
                                    f"known: {', '.join(sorted(connectors.REGISTRY))}")
        else:
            connector = scheme
            try:
                modes = tuple(connectors.load(scheme).modes)
            except UsageError as exc:  # the connector's extra is not installed
                r.error([*p, "source"], str(exc))
                modes = ("full", "diff", "log")
    if command is not None and not stdin_name:
        r.error(p, "a command job needs stdin_name (the file name its output is stored as)")
    if stdin_name is not None and command is None:
        r.error([*p, "stdin_name"], "stdin_name is only for command jobs")
    schedules, run_modes = _backup_schedules(r, p, t, agent.tz, modes, connector)
    excludes = {k: t[k] for k in Excludes.KEYS if k in t}
    if excludes and (connector is not None or command is not None):
        r.error([*p, next(iter(excludes))], "exclude options are only for file sources")
    elif excludes:
        try:
            Excludes.from_config({k: v for k, v in excludes.items() if k not in ("exclude_file", "iexclude_file")})
            for key in ("exclude_file", "iexclude_file"):
                if key in excludes:
                    r.strings(excludes, key, p)
        except UsageError as exc:
            r.error([*p, next(iter(excludes))], str(exc))
    policy, retention = _retention(r, p, t)
    prune, prune_schedule = _choice_or_schedule(r, p, t, "prune", PRUNE_CHOICES, agent.tz)
    retention_after, retention_schedule = _choice_or_schedule(r, p, t, "retention_after", RETENTION_AFTER_CHOICES,
                                                              agent.tz)
    if "prune" in t and policy is None and prune != "never":
        r.warn([*p, "prune"], "the job has no retention: nothing is forgotten, so prune finds nothing to remove")
    full_every = r.duration(t, "full_every", p)
    if full_every is not None and connector is None:
        r.warn([*p, "full_every"], "only connector jobs take log or diff snapshots: every run is a full one")
    rpo = r.duration(t, "rpo", p)
    derived = False
    if rpo is None and schedules:
        rpo, derived = 2 * max_gap(schedules.values()), True
    hooks = _hooks(r, p, t)
    return Job(name=name, kind="backup", repository=repository, source=source, command=command,
               stdin_name=stdin_name, schedules=MappingProxyType(schedules), retention=MappingProxyType(retention),
               prune=prune, retention_after=retention_after, rpo=rpo, timeout=common.timeout, window=common.window,
               jitter=common.jitter, full_every=full_every, tags=_tags(r, p, t), stage=r.string(t, "stage", p),
               hooks=MappingProxyType(hooks), notify=common.notify, excludes=MappingProxyType(excludes),
               policy=policy, prune_schedule=prune_schedule, retention_schedule=retention_schedule,
               rpo_derived=derived, connector=connector, run_modes=MappingProxyType(run_modes))


@dataclass(frozen=True)
class _Common:
    timeout: dt.timedelta | None
    window: Window | None
    jitter: dt.timedelta
    notify: tuple[str, ...]


def _common(r: _Reader, p: list[str], t: Mapping[str, Any], agent: AgentSettings,
            notify: Mapping[str, Notify]) -> _Common:
    window: Window | None = None
    if "window" in t:
        try:
            window = parse_window(t["window"], agent.tz)
        except ScheduleError as exc:
            r.error([*p, "window"], str(exc))
    targets = r.strings(t, "notify", p)
    for target in targets:
        if target not in notify:
            r.error([*p, "notify"], f"no [notify.{target}]{_did_you_mean(target, notify)}; "
                                    f"known: {', '.join(notify) or 'none'}")
    return _Common(timeout=r.duration(t, "timeout", p), window=window,
                   jitter=r.duration(t, "jitter", p, positive=False) or dt.timedelta(0), notify=targets)


def _backup_schedules(r: _Reader, p: list[str], t: Mapping[str, Any], tz: dt.tzinfo, modes: Sequence[str],
                      connector: str | None) -> tuple[dict[str, Schedule], dict[str, str]]:
    raw = t.get("schedule")
    schedules: dict[str, Schedule] = {}
    run_modes: dict[str, str] = {}
    if raw is None:
        r.error(p, "no schedule: set schedule = { full = \"0 1 * * 0\" } (modes full, diff, log), "
                   "or a single schedule for full runs")
        return schedules, run_modes
    single = isinstance(raw, str)
    if isinstance(raw, str):
        raw = {"full": raw}
    if not isinstance(raw, Mapping):
        r.error([*p, "schedule"], f"must be a schedule string or a table of mode = schedule, not {_type(raw)}")
        return schedules, run_modes
    what = f"the {connector} connector" if connector else "a files or command job"
    for mode, text in raw.items():
        where = [*p, "schedule"] if single else [*p, "schedule", mode]
        if mode not in MODE_ORDER:
            r.error(where, f"unknown mode{_did_you_mean(mode, MODE_ORDER)}; modes: {', '.join(MODE_ORDER)}")
            continue
        schedule = _schedule(r, text, where, tz)
        if schedule is None:
            continue
        if mode in modes:
            run_modes[mode] = mode
        elif mode == "diff":
            run_modes[mode] = "full"
            r.warn(where, f"{what} has no diff mode: these runs take a full snapshot (the next larger mode)")
        else:
            r.error(where, f"{what} has no {mode} mode; it takes {', '.join(modes)}")
            continue
        schedules[mode] = schedule
    if not schedules and isinstance(raw, Mapping) and not raw:
        r.error([*p, "schedule"], "is empty: give at least one mode = schedule")
    return schedules, run_modes


def _choice_or_schedule(r: _Reader, p: list[str], t: Mapping[str, Any], key: str, choices: Sequence[str],
                        tz: dt.tzinfo) -> tuple[str, Schedule | None]:
    value = t.get(key, choices[0])
    if value in choices:
        return str(value), None
    if not isinstance(value, str):
        r.error([*p, key], f"must be {' or '.join(repr(c) for c in choices)} or a schedule, not {_type(value)}")
        return choices[0], None
    try:
        schedule = parse_schedule(value, tz)
    except ScheduleError as exc:
        r.error([*p, key], f"must be {' or '.join(repr(c) for c in choices)} or a schedule: {exc}")
        return choices[0], None
    return schedule.text, schedule


def _retention(r: _Reader, p: list[str], t: Mapping[str, Any]) -> tuple[RetentionPolicy | None, dict[str, Any]]:
    raw = t.get("retention")
    if raw is None:
        return None, {}
    where = [*p, "retention"]
    if not isinstance(raw, Mapping):
        r.error(where, f"must be a table of forget options, e.g. {{ keep_daily = 7 }}, not {_type(raw)}")
        return None, {}
    r.keys(raw, where, RETENTION_KEYS, "retention (the forget options, snake_case)")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in RETENTION_KEYS:
            continue
        try:
            if key == "keep_tags":
                values[key] = tuple(r.strings(raw, key, where))
            elif key.startswith("keep_within"):
                if not isinstance(value, str):
                    raise UsageError(f"must be a duration such as \"1y2m3d4h\", not {_type(value)}")
                values[key] = parse_calendar_duration(value)
            else:
                values[key] = value
            RetentionPolicy(**{key: values[key]})
        except UsageError as exc:
            r.error([*where, key], str(exc).replace("--" + key.replace("_", "-"), key))
            values.pop(key, None)
    try:
        policy = RetentionPolicy(**values)
    except UsageError as exc:
        r.error(where, str(exc))
        return None, dict(raw)
    if policy.is_empty():
        r.error(where, "keeps nothing: it would remove every snapshot; set keep_last, keep_daily, … or leave "
                       "retention out")
        return None, dict(raw)
    return policy, dict(raw)


def _hooks(r: _Reader, p: list[str], t: Mapping[str, Any]) -> dict[str, str]:
    raw = t.get("hooks")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        r.error([*p, "hooks"], f"must be a table {{ before = \"…\", after = \"…\", on_failure = \"…\" }}, "
                               f"not {_type(raw)}")
        return {}
    r.keys(raw, [*p, "hooks"], HOOKS, "hooks")
    hooks = {}
    for key in HOOKS:
        value = r.string(raw, key, [*p, "hooks"], required=key in raw)
        if value is not None:
            hooks[key] = value
    return hooks


def _tags(r: _Reader, p: list[str], t: Mapping[str, Any]) -> tuple[str, ...]:
    tags = r.strings(t, "tags", p)
    for tag in tags:
        if not tag or "," in tag:
            r.error([*p, "tags"], f"bad tag {tag!r}: tags are non-empty and hold no comma")
    return tags


def _drill(r: _Reader, name: str, p: list[str], t: Mapping[str, Any], agent: AgentSettings,
           common: _Common) -> Job:
    of = r.string(t, "of", p, required=True)
    target = r.string(t, "target", p, required=True)
    point = t.get("point", "latest")
    if point not in POINT_CHOICES:
        r.error([*p, "point"], f"must be \"latest\" or \"random\", not {point!r}")
        point = "latest"
    schedules: dict[str, Schedule] = {}
    raw = t.get("schedule")
    if raw is None:
        r.error(p, "no schedule: a drill has one, e.g. schedule = \"0 4 * * 6\"")
    elif isinstance(raw, Mapping):
        r.error([*p, "schedule"], "a drill has one schedule (a string), not a table of modes")
    else:
        schedule = _schedule(r, raw, [*p, "schedule"], agent.tz)
        if schedule is not None:
            schedules["drill"] = schedule
    return Job(name=name, kind="drill", repository="", schedules=MappingProxyType(schedules),
               timeout=common.timeout, window=common.window, jitter=common.jitter, notify=common.notify,
               of=of, target=target, point=str(point), checks=r.strings(t, "checks", p))


def _link_drill(r: _Reader, job: Job, jobs_doc: Mapping[str, Any], jobs: Mapping[str, Job]) -> Job:
    """A drill's repository is its ``of`` job's; ``of`` must name a backup job."""
    from dataclasses import replace

    p = ["jobs", job.name, "of"]
    of = job.of or ""
    base = jobs.get(of)
    if base is None:
        if of and of not in jobs_doc:
            backups = [n for n, j in jobs.items() if j.kind == "backup"]
            r.error(p, f"no [jobs.{of}]{_did_you_mean(of, backups)}; backup jobs: {', '.join(backups) or 'none'}")
        return job
    if base.kind != "backup":
        r.error(p, f"jobs.{of} is a drill; a drill restores a backup job")
        return job
    if base.command is not None:
        r.error(p, f"jobs.{of} is a command job: a drill restores a connector or files job")
    if job.target:
        from dtstore import connectors

        target_is_url = connectors.scheme_of(job.target) is not None
        if base.connector is not None and not target_is_url:
            r.error(["jobs", job.name, "target"], f"jobs.{of} backs up a database: the target must be a scratch "
                                                  f"server's URL ({base.connector}://…)")
        elif base.connector is None and target_is_url:
            r.error(["jobs", job.name, "target"], f"jobs.{of} backs up files: the target must be a folder")
    if job.checks and base.connector is None:
        r.error(["jobs", job.name, "checks"], "checks are SQL queries: only for drills of connector jobs")
    return replace(job, repository=base.repository)


# --- the machine: password sources, files, the repository ------------------------------------------

def password(repo: Repo, *, environ: Mapping[str, str] | None = None) -> str:
    """The repository's password from its source (file, command, environment variable)."""
    import subprocess

    env = os.environ if environ is None else environ
    if repo.password_file:
        try:
            with open(os.path.expanduser(repo.password_file), encoding="utf-8") as f:
                return f.read().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"repositories.{repo.name}: cannot read password_file {repo.password_file}: "
                             f"{exc.strerror}") from None
    if repo.password_command:
        done = subprocess.run(repo.password_command, shell=True, capture_output=True, text=True, check=False,
                              env={**os.environ, **repo.env})
        if done.returncode != 0:
            raise UsageError(f"repositories.{repo.name}: password_command exited with status {done.returncode}")
        return done.stdout.rstrip("\r\n")
    if repo.password_env:
        if repo.password_env not in env:
            raise UsageError(f"repositories.{repo.name}: the environment variable {repo.password_env} "
                             "(password_env) is not set")
        return env[repo.password_env]
    raise UsageError(f"repositories.{repo.name}: no password source")


@contextmanager
def repo_environment(repo: Repo) -> Iterator[None]:
    """``repo.env`` set in ``os.environ`` for the duration (the storage libraries read it there)."""
    saved = {k: os.environ.get(k) for k in repo.env}
    os.environ.update(repo.env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def open_repository(repo: Repo) -> Repository:
    """Open ``repo`` with its password and upload limit (inside :func:`repo_environment`)."""
    from dtstore import Repository

    with repo_environment(repo):
        return Repository.open(repo.url, password(repo), limit_upload_kib=repo.limit_upload)


def check(config: Config, *, offline: bool = False, known: Sequence[Problem] = ()) -> list[Problem]:
    """What :func:`load` cannot see: password sources and exclude files that do not exist (warnings
    with ``offline``: the file may be checked on another machine), and unless ``offline`` a
    repository that cannot be opened (not one with problems among ``known``, those :func:`load`
    found).  Returns the problems found, warnings included."""
    problems: list[Problem] = []
    severity = "warning" if offline else "error"

    def report(path: Sequence[str], message: str, level: str = severity) -> None:
        problems.append(Problem(str(config.path), config.line(*path), dotted(path), message, level))

    for repo in config.repositories.values():
        p = ["repositories", repo.name]
        if repo.password_file and not os.path.isfile(os.path.expanduser(repo.password_file)):
            report([*p, "password_file"], f"{repo.password_file} does not exist")
        elif repo.password_file and not os.access(os.path.expanduser(repo.password_file), os.R_OK):
            report([*p, "password_file"], f"{repo.password_file} is not readable by this user")
        if repo.password_env and repo.password_env not in os.environ:
            report([*p, "password_env"], f"the environment variable {repo.password_env} is not set")
    for target in config.notify.values():
        if target.smtp_password_file and not os.path.isfile(os.path.expanduser(target.smtp_password_file)):
            report(["notify", target.name, "smtp_password_file"], f"{target.smtp_password_file} does not exist")
    for job in config.jobs.values():
        for key in ("exclude_file", "iexclude_file"):
            value = job.excludes.get(key, ())
            for name in (value,) if isinstance(value, str) else value:
                if name != "-" and not os.path.isfile(os.path.expanduser(name)):
                    report(["jobs", job.name, key], f"{name} does not exist")
        if job.kind == "backup" and job.connector is None and job.command is None:
            for source in job.source:
                if not os.path.lexists(source):
                    report(["jobs", job.name, "source"], f"{source} does not exist", "warning")
    if not offline:
        used = {job.repository for job in config.jobs.values()}
        for repo in config.repositories.values():
            if repo.name not in used and config.jobs:
                continue
            prefix = dotted(["repositories", repo.name]) + "."
            if any(p.severity == "error" and (p.key + ".").startswith(prefix) for p in (*known, *problems)):
                continue
            source_key = next((k for k in PASSWORD_KEYS if getattr(repo, k)), "url")
            try:
                with open_repository(repo):
                    pass
            except WrongPassword as exc:
                report(["repositories", repo.name, source_key], f"cannot open {mask_url(repo.url)}: {exc}")
            except UsageError as exc:
                report(["repositories", repo.name, source_key], str(exc))
            except Exception as exc:  # any failure to open is reported, with the library's message
                report(["repositories", repo.name, "url"], f"cannot open {mask_url(repo.url)}: {exc}")
    return problems


# --- config show -----------------------------------------------------------------------------------

MASK = "***"
_SECRET_ENV = re.compile(r"PASS|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)


def mask_url(url: str, *, query: bool = False) -> str:
    """``scheme://user:***@host/…``: the password of a URL masked; with ``query`` its query string too."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:{MASK}@{host}"
    q = MASK if (query and parts.query) else parts.query
    if netloc == parts.netloc and q == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, q, parts.fragment))


def _span(delta: dt.timedelta | None) -> str | None:
    return None if delta is None else format_duration(delta)


def resolved(config: Config, now: dt.datetime | None = None, *, secrets: bool = False) -> dict[str, Any]:
    """The configuration with defaults filled in, derived RPOs and (given ``now``) the next fire
    times, as plain data for ``config show``; secrets masked unless ``secrets``."""
    def url(text: str | None, *, query: bool = False) -> str | None:
        return text if secrets or text is None else mask_url(text, query=query)

    def secret(text: str | None) -> str | None:
        return text if secrets or text is None else MASK

    a = config.agent
    out: dict[str, Any] = {"agent": {
        "state_dir": str(a.state_dir), "timezone": a.timezone or f"{local_zone()[0] or a.tz} (the machine's)",
        "metrics_textfile": str(a.metrics_textfile) if a.metrics_textfile else None,
        "metrics_listen": a.metrics_listen, "run_log_max_bytes": a.run_log_max_bytes,
        "run_log_keep": a.run_log_keep, "catch_up": a.catch_up}}
    out["repositories"] = {name: {
        "url": url(r.url), "password_file": secret(r.password_file), "password_command": secret(r.password_command),
        "password_env": secret(r.password_env), "limit_upload": r.limit_upload,
        "env": {k: (MASK if not secrets and _SECRET_ENV.search(k) else v) for k, v in r.env.items()},
    } for name, r in config.repositories.items()}
    jobs: dict[str, Any] = {}
    for name, j in config.jobs.items():
        entry: dict[str, Any] = {"kind": j.kind, "repository": j.repository}
        if j.kind == "backup":
            entry |= {"source": [url(s) or "" for s in j.source], "command": j.command, "stdin_name": j.stdin_name,
                      "connector": j.connector}
        else:
            entry |= {"of": j.of, "target": url(j.target), "point": j.point, "checks": list(j.checks)}
        entry["schedule"] = {m: s.text for m, s in j.schedules.items()}
        if j.kind == "backup":
            entry["run_modes"] = {m: j.snapshot_mode(m) for m in j.schedules if j.snapshot_mode(m) != m}
            entry |= {"retention": {k: (list(v) if isinstance(v, list | tuple) else v) for k, v in j.retention.items()},
                      "prune": j.prune, "retention_after": j.retention_after, "rpo": _span(j.rpo),
                      "rpo_derived": j.rpo_derived, "full_every": _span(j.full_every), "tags": list(j.tags),
                      "stage": j.stage, "hooks": dict(j.hooks), "excludes": dict(j.excludes)}
        entry |= {"timeout": _span(j.timeout), "window": j.window.text if j.window else None,
                  "jitter": _span(j.jitter), "notify": list(j.notify)}
        if now is not None:
            entry["next"] = {m: s.next_fire(now).isoformat().replace("+00:00", "Z") for m, s in j.schedules.items()}
        jobs[name] = {k: v for k, v in entry.items() if v not in (None, [], {})}
    out["jobs"] = jobs
    out["notify"] = {name: {k: v for k, v in {
        "webhook": url(n.webhook, query=True),
        "email": list(n.email), "smtp": url(n.smtp), "smtp_user": n.smtp_user,
        "smtp_password_file": secret(n.smtp_password_file), "smtp_password_env": secret(n.smtp_password_env),
        "from": n.sender, "healthchecks": url(n.healthchecks, query=True),
        "on": sorted(n.on)}.items() if v not in (None, [])} for name, n in config.notify.items()}
    out["agent"] = {k: v for k, v in out["agent"].items() if v is not None}
    for repo in out["repositories"].values():
        for key in [k for k, v in repo.items() if v in (None, {})]:
            del repo[key]
    return out


def mask(config: Config, now: dt.datetime | None = None) -> dict[str, Any]:
    """:func:`resolved` with every secret masked: what ``config show`` prints."""
    return resolved(config, now, secrets=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }" if value \
            else "{}"
    return _toml_value(str(value))


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def to_toml(data: Mapping[str, Any]) -> str:
    """``config show``'s text: the resolved data as TOML (two levels of tables, inline below)."""
    lines: list[str] = []
    for top, body in data.items():
        if not isinstance(body, Mapping):
            continue
        if top == "agent":
            lines.append("[agent]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in body.items()]
            lines.append("")
            continue
        for name, table in body.items():
            lines.append(f"[{top}.{_toml_key(name)}]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
            lines.append("")
    return "\n".join(lines)


__all__ = ["AgentSettings", "Config", "ConfigError", "Job", "Lines", "Notify", "Problem", "Repo", "Schedule",
           "Window", "check", "default_config_path", "default_state_dir", "find_config", "load", "local_zone",
           "mask", "mask_url", "open_repository", "password", "repo_environment", "resolved", "to_toml"]
