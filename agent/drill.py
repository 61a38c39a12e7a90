"""Restore drills (spec/agent.md §8): prove that the newest backup of a job restores, and how long it takes.

A drill job names the backup job it proves (``of``) and a scratch ``target``:

* a connector source (``mysql://…``) is restored with ``restore_to`` into the scratch server the
  target URL names; the databases it would restore must not exist there (the drill refuses before
  touching anything, so it can never drop someone's data);
* a file or command source is restored into a new folder below the target folder.

Then the check: the job's ``checks`` queries (each must succeed and return at least one row), else
the application's own (MySQL/MariaDB: ``CHECK TABLE`` of every restored table; files: every file
was read back, chunk by chunk verified, by the restore, and each restored size must match the
manifest's).  The record has ``restore_seconds`` (the measured recovery time), ``check_seconds``
and ``duration_seconds``.  The scratch copy is always removed afterwards (``DROP DATABASE`` for each
database the drill created, the scratch folder), also when the restore or the check failed.

A damaged snapshot fails the drill with exit 16 (IntegrityError); a failing check with exit 1.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dtstore import Repository, Snapshot, clock
from dtstore.agent.config import Config, Job
from dtstore.agent.run import (
    Clock,
    RunResult,
    Stopper,
    base_record,
    conclude,
    connector_url,
    file_source_id,
    finish_record,
    open_repository,
    repository_env,
    result_of,
    skipped_record,
    state_dir,
    stop_leftovers,
    time_limit,
)
from dtstore.agent.state import StateDir, iso
from dtstore.errors import DtstoreError, RepositoryLocked, UsageError


class DrillCheckFailed(DtstoreError):
    """The restored copy did not pass the application's check (or a configured query)."""


@dataclass(frozen=True)
class Point:
    """What the drill restores: ``snapshot`` (latest or a random snapshot) or a moment ``until``."""

    snapshot: Snapshot | None
    until: dt.datetime | None
    describe: str


# --- the source and the point ------------------------------------------------------------------------------------

def source_of(config: Config, of_job: Job, repo: Repository, state: StateDir) -> tuple[str, str]:
    """(kind, source id) of the backup job ``of``: from its newest recorded snapshot if it is still in
    the repository, else from the job's source (a connector is asked, without touching its data)."""
    snapshots = {s.id: s for s in repo.snapshots()}
    for record in state.records(job=of_job.name, types=["run"]):
        snap = snapshots.get(str(record.get("snapshot_id") or ""))
        if snap is not None:
            return snap.source_kind, snap.source_id
    url = connector_url(of_job)
    if url is not None:
        from dtstore.connectors import make_source

        source = make_source(url, repo=None, mode="full")
        return source.kind, source.source_id
    if of_job.command:
        from dtstore import CommandSource

        command = CommandSource(of_job.command, of_job.stdin_name or "stdin")
        return command.kind, command.source_id
    return "files", file_source_id(list(of_job.source or ()))


def choose_point(snapshots: Sequence[Snapshot], kind: str, source_id: str, how: str,
                 rng: random.Random) -> Point:
    mine = sorted((s for s in snapshots if s.source_kind == kind and s.source_id == source_id),
                  key=lambda s: (s.time, s.id))
    if not mine:
        raise UsageError(f"the repository holds no snapshot of {source_id}: nothing to drill")
    from dtstore.connectors.points import CHAIN_MODULES, restore_points

    if kind not in CHAIN_MODULES:
        snap = rng.choice(mine) if how == "random" else mine[-1]
        return Point(snap, None, f"snapshot {snap.short_id} ({iso(snap.time)})")
    if how != "random":
        return Point(None, None, "the latest restorable point")
    windows = [w for points in restore_points(mine) for stream in points.streams for w in stream.windows]
    if not windows:
        raise UsageError(f"{source_id} has no restorable window")
    newest = max(windows, key=lambda w: w.end)
    # a restore stops at whole seconds (--until is truncated): choose among those inside the window
    first = newest.start.replace(microsecond=0) + dt.timedelta(seconds=1 if newest.start.microsecond else 0)
    last = newest.end.replace(microsecond=0)
    if last < first:
        return Point(None, None, f"the latest restorable point (the newest window, {iso(newest.start)} … "
                                 f"{iso(newest.end)}, holds no whole second)")
    moment = first + dt.timedelta(seconds=rng.randint(0, int((last - first).total_seconds())))
    return Point(None, moment, f"{iso(moment)} (random, in {iso(newest.start)} … {iso(newest.end)})")


# --- scratch targets -----------------------------------------------------------------------------------------

class Scratch(Protocol):
    """One scratch target: restore into it, check it, remove what the drill made."""

    restored: list[str]
    """what the drill created (databases, the folder), for the record and the cleanup"""

    def restore(self, repo: Repository, kind: str, source_id: str, point: Point) -> None: ...

    def check(self, queries: Sequence[str]) -> list[str]: ...

    def cleanup(self) -> None: ...


class MysqlScratch:
    """A scratch MySQL/MariaDB server (``target = "mysql://…"``)."""

    def __init__(self, url: str) -> None:
        from dtstore.connectors.mysql.url import parse_url

        self.url = url
        self.parsed = parse_url(url)
        self.restored: list[str] = []

    def _server(self) -> Any:
        from dtstore.connectors.mysql.server import Server

        return Server(self.parsed)

    def restore(self, repo: Repository, kind: str, source_id: str, point: Point) -> None:
        from dtstore.connectors import RestoreRequest, restore_to
        from dtstore.connectors.mysql.server import list_databases

        request = RestoreRequest(self.url, source_id=source_id, until=iso(point.until) if point.until else None,
                                 snapshot_id=point.snapshot.id if point.snapshot else None)
        plan = restore_to(_replace(request, dry_run=True), repo=repo)
        wanted = [name for name, _ in getattr(plan, "databases", [])]
        with self._server() as server:
            present = set(list_databases(server))
        clash = sorted(set(wanted) & present)
        if clash:
            raise UsageError(f"the drill target {self.parsed.display()} already has database(s) {', '.join(clash)}: "
                             "a drill restores only into a scratch server that does not hold them")
        self.restored = wanted  # from here on they are the drill's to drop, restored or half-restored
        restore_to(request, repo=repo)

    def check(self, queries: Sequence[str]) -> list[str]:
        from dtstore.connectors.mysql.server import quote_ident

        done: list[str] = []
        with self._server() as server:
            if queries:
                for query in queries:
                    rows = server.query(query)
                    if not rows:
                        raise DrillCheckFailed(f"check query returned no rows: {query}")
                    done.append(f"{query}: {len(rows)} row(s)")
                return done
            problems: list[str] = []
            for database in self.restored:
                tables = server.query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                                      "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME", (database,))
                for (table,) in tables:
                    name = f"{quote_ident(database)}.{quote_ident(str(table))}"
                    for _tbl, _op, kind, text in server.query(f"CHECK TABLE {name}"):
                        if str(kind).lower() == "error" or (str(kind).lower() == "status" and
                                                            str(text) not in ("OK", "Table is already up to date")):
                            problems.append(f"{database}.{table}: {text}")
                done.append(f"CHECK TABLE {database}: {len(tables)} table(s)")
            if problems:
                raise DrillCheckFailed("CHECK TABLE found problems: " + "; ".join(problems))
        return done

    def cleanup(self) -> None:
        from dtstore.connectors.mysql.server import quote_ident

        if not self.restored:
            return
        with self._server() as server:
            for database in self.restored:
                server.query(f"DROP DATABASE IF EXISTS {quote_ident(database)}")


class PostgresScratch:
    """A scratch PostgreSQL data directory (``target = "postgresql://postgres@/?pgdata=DIR&port=P&socket_dir=S"``):
    the restore lays it down and starts a server on it (``start=yes`` and ``archive=off`` are implied, so
    the copy never archives into the source's WAL), the check connects to that server, and the cleanup
    stops it (``pg_ctl stop -m fast``, as the data directory's owner) and removes the directory."""

    def __init__(self, url: str) -> None:
        from dtstore.connectors.postgresql.url import parse_url

        extra = [f"{key}={value}" for key, value in (("start", "yes"), ("archive", "off"))
                 if f"{key}=" not in url.partition("?")[2]]
        self.url = url + ("&" if "?" in url else "?") + "&".join(extra) if extra else url
        self.parsed = parse_url(self.url, restore=True)
        self.pgdata = self.parsed.pgdata
        self.restored: list[str] = []
        self._existed = self.pgdata.exists()

    def _owner(self) -> dict[str, Any]:
        """Run a tool as the data directory's owner when we are root (pg_ctl refuses root)."""
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            return {}
        probe = self.pgdata if self.pgdata.exists() else self.pgdata.parent
        st = probe.stat()
        return {} if st.st_uid == 0 else {"user": st.st_uid, "group": st.st_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        env = self.parsed.env()
        env.pop("PGDATABASE", None)
        if self._owner():
            import pwd

            env["HOME"] = pwd.getpwuid(self._owner()["user"]).pw_dir
        return {k: v for k, v in env.items() if not k.startswith("DTSTORE_")}

    def restore(self, repo: Repository, kind: str, source_id: str, point: Point) -> None:
        from dtstore.connectors import RestoreRequest, restore_to

        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise UsageError(f"the drill target {self.pgdata} is not empty: a drill restores only into an empty "
                             "or new data directory")
        request = RestoreRequest(self.url, source_id=source_id, until=iso(point.until) if point.until else None)
        self.restored = [str(self.pgdata)]  # from here on it is the drill's to stop and remove
        restore_to(request, repo=repo)

    def _run(self, argv: list[str], what: str) -> str:
        import subprocess

        done = subprocess.run(argv, env=self._env(), capture_output=True, text=True, check=False, cwd="/",
                              stdin=subprocess.DEVNULL, timeout=3600, **self._owner())
        if done.returncode != 0:
            raise DrillCheckFailed(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-1500:]}")
        return str(done.stdout)

    def check(self, queries: Sequence[str]) -> list[str]:
        from dtstore.connectors.postgresql.server import pg_tool

        if queries:
            done = []
            psql = [pg_tool("psql", self.parsed.bindir()), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                    "-d", self.parsed.dbname or "postgres"]
            for query in queries:
                rows = [line for line in self._run([*psql, "-c", query], f"check query {query}").splitlines() if line]
                if not rows:
                    raise DrillCheckFailed(f"check query returned no rows: {query}")
                done.append(f"{query}: {len(rows)} row(s)")
            return done
        amcheck = [pg_tool("pg_amcheck", self.parsed.bindir()), "--all", "--install-missing", "--heapallindexed"]
        self._run(amcheck, "pg_amcheck")
        return ["pg_amcheck --all: no corruption found"]

    def cleanup(self) -> None:
        import subprocess

        from dtstore.connectors.postgresql.server import pg_tool

        if not self.restored:
            return
        if (self.pgdata / "postmaster.pid").exists():
            done = subprocess.run([pg_tool("pg_ctl", self.parsed.bindir()), "-D", str(self.pgdata), "-m", "fast",
                                   "-w", "-t", "120", "stop"], env=self._env(), capture_output=True, text=True,
                                  check=False, cwd="/", stdin=subprocess.DEVNULL, **self._owner())
            if done.returncode != 0 and (self.pgdata / "postmaster.pid").exists():
                raise DtstoreError(f"the scratch server on {self.pgdata} did not stop: {done.stderr.strip()[-500:]}")
        if self._existed:
            for entry in self.pgdata.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        else:
            shutil.rmtree(self.pgdata)


class FolderScratch:
    """A scratch folder for file and command jobs (``target = "/var/tmp/drill"``): the drill restores into
    a new folder below it and removes that folder afterwards."""

    def __init__(self, target: str, job: str) -> None:
        self.base = Path(target)
        self.job = job
        self.folder: Path | None = None
        self.restored: list[str] = []
        self._snapshot: Snapshot | None = None
        self._repo: Repository | None = None

    def restore(self, repo: Repository, kind: str, source_id: str, point: Point) -> None:
        if point.snapshot is None:
            raise UsageError("a folder drill restores a snapshot")
        self.base.mkdir(parents=True, exist_ok=True)
        stamp = clock.now().strftime("%Y%m%dT%H%M%S")
        self.folder = self.base / f"dtstore-drill-{self.job}-{stamp}-{os.getpid()}"
        self.folder.mkdir()
        self.restored = [str(self.folder)]
        self._snapshot, self._repo = point.snapshot, repo
        repo.restore(point.snapshot, self.folder)

    def check(self, queries: Sequence[str]) -> list[str]:
        if queries:
            raise UsageError("checks (queries) are for database drills; a folder drill compares every file")
        if self.folder is None or self._snapshot is None or self._repo is None:
            return []
        wrong: list[str] = []
        files = 0
        for item in self._repo.list_items(self._snapshot):
            if item.type != "file":
                continue
            files += 1
            path = os.path.join(os.fsencode(self.folder), item.path.lstrip(b"/"))
            try:
                size = os.lstat(path).st_size
            except OSError:
                wrong.append(f"{item.name}: missing")
                continue
            if size != item.size:
                wrong.append(f"{item.name}: {size} bytes, the snapshot says {item.size}")
        if wrong:
            raise DrillCheckFailed(f"{len(wrong)} restored file(s) differ: " + "; ".join(wrong[:10]))
        return [f"{files} file(s) restored and verified"]

    def cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _replace(request: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(request, **changes)


def scratch_for(job: Job, kind: str) -> Scratch:
    target = job.target
    if not target:
        raise UsageError(f"jobs.{job.name}: a drill needs a target")
    from dtstore.connectors import is_connector_url
    from dtstore.connectors.points import CHAIN_MODULES

    if kind in CHAIN_MODULES:
        if not is_connector_url(target):
            raise UsageError(f"jobs.{job.name}: the target of a {kind} drill is a scratch server URL, not {target!r}")
        if kind == "mysql":
            return MysqlScratch(target)
        if kind == "postgresql":
            return PostgresScratch(target)
        raise UsageError(f"drills of {kind} sources are not supported yet")
    if is_connector_url(target):
        raise UsageError(f"jobs.{job.name}: the target of a {kind} drill is a folder, not a server URL")
    return FolderScratch(target, job.name)


# --- the drill ---------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _timed(record: dict[str, Any], key: str, clk: Clock) -> Iterator[None]:
    start = clk.monotonic()
    try:
        yield
    finally:
        record[key] = round(clk.monotonic() - start, 3)


def run_drill(config: Config, job: Job, *, scheduled_at: dt.datetime | None = None, clk: Clock = clock,
              timeout: float | str | None = "job", notifier: Any = None, point: str | None = None,
              rng: random.Random | None = None) -> RunResult:
    """Run the drill ``job`` once: restore, check, time, clean up, record, notify."""
    if job.kind != "drill":
        raise UsageError(f"job {job.name} is not a drill (kind = \"{job.kind}\")")
    of_job = config.jobs.get(job.of or "")
    if of_job is None:
        raise UsageError(f"jobs.{job.name}.of: no backup job {job.of!r}")
    state = state_dir(config)
    limit = time_limit(job, timeout)
    started, started_mono = clk.now(), clk.monotonic()
    record = base_record(job, kind="drill", requested="drill", scheduled_at=scheduled_at, started=started)
    record.update(mode="drill", of=of_job.name, target=_masked(job.target), point=None, restore_seconds=None,
                  check_seconds=None, restored=[], checks=[])
    lock = state.job_lock(job.name)
    try:
        lock.acquire()
    except RepositoryLocked as exc:
        skipped = skipped_record(job, requested="drill", scheduled_at=scheduled_at, now=clk.now(), why=str(exc),
                                 kind="drill")
        skipped["exit_code"] = exc.exit_code
        conclude(config, state, job, skipped, clk=clk, notifier=notifier)
        return RunResult(skipped, exc.exit_code)
    lines: list[str] = []
    result, code, error = "ok", 0, None
    try:
        with contextlib.suppress(Exception):
            from dtstore.agent.run import notifier_for

            (notifier or notifier_for(config, state)).start(job.name, job.notify, now=started)
        with Stopper(limit) as stopper:
            try:
                _drill(config, job, of_job, state, record, lines, clk, point or job.point or "latest",
                       rng or random.Random())
            except BaseException as exc:
                stopper.disarm()
                result, code, error = result_of(exc)
                if isinstance(exc, KeyboardInterrupt):
                    stop_leftovers()
    finally:
        lock.release()
    finish_record(record, result=result, exit_code=code, error=error, started=started, started_mono=started_mono,
                  clk=clk)
    conclude(config, state, job, record, clk=clk, notifier=notifier)
    if not error:
        lines.append(f"drill {job.name}: ok, restored in {record['restore_seconds']} s, checked in "
                     f"{record['check_seconds']} s ({record['duration_seconds']} s in all)")
    return RunResult(record, code, lines=lines)


def _drill(config: Config, job: Job, of_job: Job, state: StateDir, record: dict[str, Any], lines: list[str],
           clk: Clock, how: str, rng: random.Random) -> None:
    repo_cfg = config.repositories[of_job.repository]
    with repository_env(repo_cfg), open_repository(config, of_job.repository) as repo:
        kind, source_id = source_of(config, of_job, repo, state)
        chosen = choose_point(repo.snapshots(), kind, source_id, how, rng)
        record["point"] = chosen.describe
        record["snapshot_id"] = chosen.snapshot.id if chosen.snapshot else None
        scratch = scratch_for(job, kind)
        try:
            with _timed(record, "restore_seconds", clk):
                scratch.restore(repo, kind, source_id, chosen)
            record["restored"] = list(scratch.restored)
            lines.append(f"drill {job.name}: restored {chosen.describe} of {source_id}")
            with _timed(record, "check_seconds", clk):
                record["checks"] = scratch.check(list(job.checks or ()))
        except BaseException:
            _cleanup(scratch, record, quiet=True)  # the first error is the one to report
            raise
        _cleanup(scratch, record, quiet=False)


def _cleanup(scratch: Scratch, record: dict[str, Any], *, quiet: bool) -> None:
    record["restored"] = list(scratch.restored)
    try:
        scratch.cleanup()
        record["cleaned_up"] = True
    except Exception as exc:
        record["cleaned_up"] = False
        record["cleanup_error"] = str(exc)
        if not quiet:
            raise DtstoreError(f"the scratch copy could not be removed: {exc}") from exc


def _masked(target: str | None) -> str | None:
    if target is None:
        return None
    from dtstore.agent.notify import mask_url

    return mask_url(target) if "://" in target else target
