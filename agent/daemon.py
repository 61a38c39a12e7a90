"""The agent's loop (spec/agent.md §5): every job at its times, one run per job, timeouts, signals.

Each due run is a child process ``dtstore run JOB --mode M --scheduled-at T --config PATH``: the
child takes the job's host lock, snapshots, applies retention, records and notifies; a kill at
any moment leaves no snapshot (the manifest is the commit point).  The daemon itself only decides,
starts, watches and stops:

* **One run per job.** A run due while the job's previous run is still going is *skipped*: recorded
  (``result: "skipped"``) and notified, never started twice.
* **Catch-up.** Fire times missed while the agent was down collapse into one run (``schedule.due``).
* **Jitter.** A due run starts after a random delay of up to ``jitter``.
* **Timeouts.** The child stops itself at the job's ``timeout`` (recorded ``timeout``); if it is
  still running ``KILL_GRACE`` seconds later the daemon sends SIGTERM (Windows: CTRL_BREAK_EVENT),
  and SIGKILL (TerminateProcess) ``KILL_GRACE`` seconds after that, and records ``timeout`` itself
  when the child left no record.
* **Signals.** SIGTERM/SIGINT (Windows: Ctrl+C, Ctrl+Break): start nothing more, let the current
  runs finish for up to ``stop_timeout`` seconds, then stop them as a timeout would (recorded
  ``interrupted``); exit 0.  SIGHUP rereads the configuration (a bad one is reported and the old one
  kept).
* **RPO watch.** At every pass (and the loop wakes when a recovery point is about to pass its objective),
  per backup job, the age of its newest recovery point against ``rpo``: one ``rpo`` notification per
  breach, ``recovered`` when it is back.
* **systemd.** ``READY=1`` once the configuration is loaded, ``RELOADING=1``/``READY=1`` around a
  reload, ``WATCHDOG=1`` at half of ``WATCHDOG_USEC``, ``STATUS=…``, ``STOPPING=1``: datagrams to
  ``$NOTIFY_SOCKET`` (unix sockets only, so nothing is sent on Windows).

The loop takes an injected clock, sleeper and launcher, so tests drive it through days in seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dtstore import clock
from dtstore.agent.config import Config, Job
from dtstore.agent.run import Clock, deliver, host_name, skipped_record, state_dir
from dtstore.agent.state import StateDir, iso, parse_time

KILL_GRACE = 30.0
"""seconds between a run's own timeout and the daemon's SIGTERM, and between SIGTERM and SIGKILL"""
MAX_SLEEP = 60.0
POLL_WHILE_RUNNING = 0.25
"""how often children are polled while any runs (seconds)"""


# --- sd_notify ---------------------------------------------------------------------------------------------------

class SdNotify:
    """systemd's notification protocol: datagrams to the unix socket ``$NOTIFY_SOCKET`` (``@name``: the
    abstract namespace).  Without the variable, or on Windows, every call does nothing."""

    def __init__(self, address: str | None) -> None:
        self.address = address if address and hasattr(socket, "AF_UNIX") else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SdNotify:
        return cls((environ if environ is not None else os.environ).get("NOTIFY_SOCKET"))

    def send(self, *fields: str) -> bool:
        if not self.address:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # type: ignore[attr-defined,unused-ignore]
                sock.connect(target)
                sock.sendall("\n".join(fields).encode())
        except OSError:
            return False
        return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds (when ``WATCHDOG_PID`` is unset or this process)."""
    env = environ if environ is not None else os.environ
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2e6


# --- waiting ------------------------------------------------------------------------------------------------------

class Waker:
    """The loop's sleep: ``select`` on one end of a socket pair, woken by a byte on the other.  Signal
    handlers write no byte themselves: ``signal.set_wakeup_fd`` makes the C handler do it, so a signal
    ends the sleep at once and no Python lock is ever taken inside a handler."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def fileno(self) -> int:
        return self._w.fileno()

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            self._w.send(b"\0")

    def wait(self, seconds: float) -> None:
        with contextlib.suppress(OSError, ValueError):
            select.select([self._r], [], [], max(0.0, seconds))
        with contextlib.suppress(OSError):
            while self._r.recv(4096):
                pass

    def close(self) -> None:
        self._r.close()
        self._w.close()


# --- children ----------------------------------------------------------------------------------------------------

class Child(Protocol):
    """A started run."""

    pid: int

    def poll(self) -> int | None: ...

    def terminate(self) -> None:
        """Ask it to stop: SIGTERM to its process group (Windows: CTRL_BREAK_EVENT)."""
        ...

    def kill(self) -> None: ...


Launcher = Callable[[Any, str, dt.datetime], Child]
"""(job, mode, scheduled_at) → a started child"""


class ProcessChild:
    """A ``dtstore run`` subprocess, in its own process group (session on POSIX), so a terminal's Ctrl+C
    reaches the daemon only and a kill reaches the run's tools too."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":  # pragma: no cover - Windows
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        else:
            kwargs["start_new_session"] = True
        self.proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, env=dict(env) if env else None, **kwargs)
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def _signal_group(self, number: int) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, number)  # type: ignore[attr-defined,unused-ignore]

    def terminate(self) -> None:
        if sys.platform == "win32":  # pragma: no cover - Windows
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined,unused-ignore]
            return
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        if sys.platform == "win32":  # pragma: no cover - Windows
            with contextlib.suppress(OSError):
                self.proc.kill()
            return
        self._signal_group(signal.SIGKILL)  # type: ignore[attr-defined,unused-ignore]
        with contextlib.suppress(OSError):
            self.proc.kill()


def run_command(config_path: Path, job: str, mode: str, scheduled_at: dt.datetime) -> list[str]:
    """The child's argv: the config path, never a secret."""
    return [sys.executable, "-m", "dtstore.cli", "run", job, "--mode", mode, "--scheduled-at", iso(scheduled_at),
            "--config", str(config_path), "--quiet"]


def process_launcher(config_path: Path) -> Launcher:
    def launch(job: Job, mode: str, scheduled_at: dt.datetime) -> Child:
        return ProcessChild(run_command(config_path, job.name, mode, scheduled_at))

    return launch


# --- the loop ----------------------------------------------------------------------------------------------------

@dataclass
class Running:
    job: str
    mode: str
    scheduled_at: dt.datetime
    child: Child
    started: float
    """monotonic"""
    timeout: float | None
    term_at: float | None = None
    kill_at: float | None = None
    stop_reason: str | None = None
    """why the daemon stopped it: ``timeout`` or ``interrupted``"""


@dataclass
class Pending:
    job: str
    mode: str
    scheduled_at: dt.datetime
    start_at: dt.datetime


@dataclass
class Daemon:
    """The agent.  ``load(path)`` reads the configuration; ``clk`` gives time, ``sleep(seconds)`` waits
    (and may return early: a signal, a child); ``launch`` starts a run."""

    config_path: Path
    load: Callable[[Path], Any]
    clk: Clock = clock
    sleep: Callable[[float], None] | None = None
    launch: Launcher | None = None
    stop_timeout: float = 60.0
    kill_grace: float = KILL_GRACE
    rng: random.Random = field(default_factory=random.Random)
    sd: SdNotify = field(default_factory=SdNotify.from_env)
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))
    notifier: Any = None
    watchdog: float | None = field(default_factory=watchdog_interval)
    poll: float = POLL_WHILE_RUNNING
    """seconds between two polls of the running children"""
    max_sleep: float = MAX_SLEEP
    """the longest sleep between two passes (a safety net: every wake-up is computed)"""

    def __post_init__(self) -> None:
        self.config: Any = None
        self.state: StateDir | None = None
        self.running: dict[str, Running] = {}
        self.pending: dict[str, Pending] = {}
        self.maintenance: dict[str, Pending] = {}
        """retention or prune runs on schedules of their own: they wait for the job's runs, never skipped"""
        self.started_at: dt.datetime | None = None
        self._stop = False
        self._stopping_since: float | None = None
        self._reload = False
        self._waker = Waker()
        self._next_watchdog = 0.0
        self._metrics_server: Any = None
        self._metrics_listen: str | None = None
        self._points: dict[str, dt.datetime | None] = {}
        self._breached: set[str] = set()
        if self.launch is None:
            self.launch = process_launcher(self.config_path)

    # requests (signal handlers, tests)

    def request_stop(self) -> None:
        """Safe in a signal handler: sets a flag and writes one byte, takes no lock."""
        self._stop = True
        self._waker.wake()

    def request_reload(self) -> None:
        self._reload = True
        self._waker.wake()

    @property
    def stopping(self) -> bool:
        return self._stop

    # configuration

    def start(self) -> None:
        """Load the configuration (errors propagate: the agent does not start on a bad file)."""
        self._apply(self.load(self.config_path))
        self.started_at = self.clk.now()
        self.log(f"dtstore agent: {len(self.config.jobs)} job(s) from {self.config_path}")
        self.sd.send("READY=1", f"STATUS=running {len(self.config.jobs)} job(s)")

    def _apply(self, config: Config) -> None:
        self.config = config
        self.state = state_dir(config)
        self.state.root.mkdir(parents=True, exist_ok=True)
        self._points.clear()
        self._breached = {name for name, s in self.state.read_state().jobs.items() if s.rpo_breached}
        for pending in (self.pending, self.maintenance):
            for name in list(pending):
                if name not in config.jobs:
                    del pending[name]
        self._restart_metrics()

    def reload(self) -> bool:
        self._reload = False
        self.sd.send("RELOADING=1", "STATUS=rereading the configuration")
        try:
            config = self.load(self.config_path)
        except Exception as exc:
            self.log(f"dtstore agent: the configuration was not reloaded, the old one stays: {exc}")
            if self.state is not None:
                self.state.append({"type": "config_error", "time": iso(self.clk.now()), "error": str(exc)})
            self.sd.send("READY=1", "STATUS=reload failed; running the old configuration")
            return False
        self._apply(config)
        self.log(f"dtstore agent: configuration reloaded, {len(config.jobs)} job(s)")
        self.sd.send("READY=1", f"STATUS=running {len(config.jobs)} job(s)")
        return True

    def _restart_metrics(self) -> None:
        listen = self.config.agent.metrics_listen
        if self._metrics_server is not None and self._metrics_listen == listen:
            return
        self._stop_metrics()
        if not listen:
            return
        try:
            from dtstore.agent import metrics

            self._metrics_server = metrics.serve(listen, lambda: self.config, self._state, now=self.clk.now)
            self._metrics_listen = listen
        except Exception as exc:
            self.log(f"dtstore agent: cannot serve metrics on {listen}: {exc}")

    def _stop_metrics(self) -> None:
        server, self._metrics_server = self._metrics_server, None
        if server is not None:
            with contextlib.suppress(Exception):
                server.close()

    # one pass

    def step(self) -> float:
        """Reap, enforce timeouts, start what is due, watch RPOs; the seconds until the next pass."""
        if self._reload and not self._stop:
            self.reload()
        now, mono = self.clk.now(), self.clk.monotonic()
        self._reap(now)
        self._enforce(mono)
        if self._stop:
            self._stop_all(mono)
            return self.poll if self.running else 0.0
        self._decide(now)
        self._start_pending(now, mono)
        self.watch_rpo(now)
        if self.watchdog is not None and mono >= self._next_watchdog:
            self._next_watchdog = mono + self.watchdog
            self.sd.send("WATCHDOG=1")
        return self._until_next(now, mono)

    def _state(self) -> StateDir:
        if self.state is None:
            raise RuntimeError("the agent has not started")
        return self.state

    def _decide(self, now: dt.datetime) -> None:
        from dtstore.agent.schedule import due

        state = self._state()
        fired_state = state.read_state()
        catch_up = self.config.agent.catch_up
        for name, job in self.config.jobs.items():
            maintenance = maintenance_job(job)
            if maintenance is not None:
                for run in due(maintenance, fired_state.job(name), now, catch_up=catch_up, since=self.started_at):
                    state.update_job(name, fired=run.fired)
                    self.maintenance.setdefault(name, Pending(name, run.mode, run.scheduled_at, now))
            for run in due(job, fired_state.job(name), now, catch_up=catch_up, since=self.started_at):
                state.update_job(name, fired=run.fired)
                busy = self.running.get(name)
                if busy is not None or name in self.pending:
                    self._skip(job, run.mode, run.scheduled_at, now, busy)
                    continue
                if run.missed:
                    self.log(f"dtstore agent: {name}: {run.missed} missed {run.mode} run(s) collapse into one")
                delay = job.jitter.total_seconds() if job.jitter else 0.0
                start_at = now + dt.timedelta(seconds=self.rng.uniform(0, delay)) if delay > 0 else now
                self.pending[name] = Pending(name, run.mode, run.scheduled_at, start_at)

    def _skip(self, job: Job, mode: str, scheduled_at: dt.datetime, now: dt.datetime, busy: Running | None) -> None:
        if busy is not None:
            why = (f"the {busy.mode} run due at {iso(busy.scheduled_at)} is still going (pid {busy.child.pid}); "
                   "a job never runs twice at once")
        else:
            why = "the previous run of the job has not started yet (jitter)"
        record = skipped_record(job, requested=mode, scheduled_at=scheduled_at, now=now, why=why)
        record["pid"] = None
        self.log(f"dtstore agent: {job.name}: {mode} run due at {iso(scheduled_at)} skipped: {why}")
        state = self._state()
        state.record_run(record)
        deliver(self.config, state, job, record, now=now, notifier=self.notifier)

    def _start_pending(self, now: dt.datetime, mono: float) -> None:
        for name, pending in list(self.pending.items()):
            if pending.start_at > now or name in self.running:
                continue
            del self.pending[name]
            self._launch(name, pending, now, mono)
        for name, pending in list(self.maintenance.items()):  # waits for the job's own runs, never skipped
            if name in self.running or name in self.pending:
                continue
            del self.maintenance[name]
            self._launch(name, pending, now, mono)

    def _launch(self, name: str, pending: Pending, now: dt.datetime, mono: float) -> None:
        job = self.config.jobs.get(name)
        if job is None:
            return
        if self.launch is None:
            raise RuntimeError("no launcher")
        try:
            child = self.launch(job, pending.mode, pending.scheduled_at)
        except OSError as exc:
            self.log(f"dtstore agent: {name}: cannot start the run: {exc}")
            self._record_lost(job, pending.mode, pending.scheduled_at, now, "failed", 1,
                              f"the run could not be started: {exc}")
            return
        timeout = job.timeout.total_seconds() if job.timeout else None
        self.running[name] = Running(name, pending.mode, pending.scheduled_at, child, mono, timeout)
        self.log(f"dtstore agent: {name}: {pending.mode} run due at {iso(pending.scheduled_at)} started "
                 f"(pid {child.pid})")

    def _enforce(self, mono: float) -> None:
        for run in self.running.values():
            if run.timeout is not None and run.term_at is None and mono >= run.started + run.timeout + self.kill_grace:
                self._terminate(run, mono, "timeout")
            if run.kill_at is not None and mono >= run.kill_at:
                self.log(f"dtstore agent: {run.job}: pid {run.child.pid} did not stop; killing it")
                run.child.kill()
                run.kill_at = None

    def _terminate(self, run: Running, mono: float, reason: str) -> None:
        if run.term_at is not None:
            return
        run.stop_reason = run.stop_reason or reason
        run.term_at = mono
        run.kill_at = mono + self.kill_grace
        self.log(f"dtstore agent: {run.job}: stopping pid {run.child.pid} ({reason})")
        run.child.terminate()

    def _stop_all(self, mono: float) -> None:
        self.pending.clear()
        self.maintenance.clear()
        if self._stopping_since is None:
            self._stopping_since = mono
            self.sd.send("STOPPING=1", f"STATUS=stopping; waiting for {len(self.running)} run(s)")
            if self.running:
                self.log(f"dtstore agent: stopping; waiting up to {self.stop_timeout:.0f} s for "
                         f"{', '.join(sorted(self.running))}")
        if mono >= self._stopping_since + self.stop_timeout:
            for run in self.running.values():
                self._terminate(run, mono, "interrupted")

    def _reap(self, now: dt.datetime) -> None:
        for name, run in list(self.running.items()):
            code = run.child.poll()
            if code is None:
                continue
            del self.running[name]
            self._points.pop(name, None)
            self.log(f"dtstore agent: {name}: {run.mode} run ended (exit {code})")
            if not self._has_record(name, run.scheduled_at):
                job = self.config.jobs.get(name)
                if job is not None:
                    result = run.stop_reason or "failed"
                    error = {"timeout": "the run did not finish within its timeout and was killed",
                             "interrupted": "the agent stopped and the run was killed"}.get(
                                 result, f"the run ended with exit status {code} and left no record")
                    self._record_lost(job, run.mode, run.scheduled_at, now, result, code, error)

    def _has_record(self, job: str, scheduled_at: dt.datetime) -> bool:
        wanted = iso(scheduled_at)
        for n, record in enumerate(self._state().records(job=job, types=["run"])):
            if record.get("scheduled_at") == wanted:
                return True
            if n >= 50:
                break
        return False

    def _record_lost(self, job: Job, mode: str, scheduled_at: dt.datetime, now: dt.datetime, result: str,
                     code: int, error: str) -> None:
        record = skipped_record(job, requested=mode, scheduled_at=scheduled_at, now=now, why=error)
        record.update(result=result, exit_code=code, pid=None)
        state = self._state()
        state.record_run(record)
        deliver(self.config, state, job, record, now=now, notifier=self.notifier)

    # RPO

    def recovery_point(self, job: str) -> dt.datetime | None:
        """The job's newest recorded recovery point (cached; refreshed when one of its runs ends)."""
        if job not in self._points:
            self._points[job] = None
            for record in self._state().records(job=job, types=["run"]):
                point = record.get("recovery_point")
                if isinstance(point, str):
                    with contextlib.suppress(ValueError):
                        self._points[job] = parse_time(point)
                        break
        return self._points[job]

    def watch_rpo(self, now: dt.datetime) -> None:
        state = self._state()
        flags: Any = None
        for name, job in self.config.jobs.items():
            if job.kind != "backup" or job.rpo is None:
                continue
            point = self.recovery_point(name)
            reference = point or self.started_at or now
            age = now - reference
            if age <= job.rpo and name not in self._breached:
                continue
            if flags is None:
                flags = state.read_state()
            breached = flags.job(name).rpo_breached
            if breached:
                self._breached.add(name)
            if age > job.rpo and not breached:
                since = (f"the newest recovery point is {iso(point)}" if point
                         else "no run has recorded a recovery point")
                message = f"{name}: recovery point objective {job.rpo} missed: {since} ({_age(age)} old)"
                self._event(job, "rpo", message, now)
                state.update_job(name, rpo_breached=True)
                self._breached.add(name)
            elif age <= job.rpo and breached:
                self._event(job, "recovered", f"{name}: back within the recovery point objective {job.rpo} "
                                              f"(newest recovery point {iso(reference)})", now)
                state.update_job(name, rpo_breached=False)
                self._breached.discard(name)

    def _event(self, job: Job, kind: str, message: str, now: dt.datetime) -> None:
        from dtstore.agent.notify import Event, Notifier

        self.log(f"dtstore agent: {message}")
        state = self._state()
        state.append({"type": kind, "job": job.name, "time": iso(now), "message": message, "host": host_name()})
        with contextlib.suppress(Exception):
            notifier = self.notifier or Notifier(self.config.notify, log=state.append)
            notifier.send(Event(type=kind, job=job.name, time=now, message=message, host=host_name()), job.notify)

    # timing

    def _until_next(self, now: dt.datetime, mono: float) -> float:
        from dtstore.agent.schedule import next_wakeup

        fired = self._state().read_state()
        waits = [self.max_sleep]
        for name, job in self.config.jobs.items():  # wake when a recovery point would pass its objective
            if job.kind == "backup" and job.rpo is not None and name not in self._breached:
                reference = self.recovery_point(name) or self.started_at or now
                waits.append((reference + job.rpo - now).total_seconds() + 1.0)
        for name, job in self.config.jobs.items():
            for one in (job, maintenance_job(job)):
                if one is None:
                    continue
                wake = next_wakeup(one, fired.job(name), now, since=self.started_at)
                if wake is not None:
                    waits.append((wake - now).total_seconds())
                # and every next fire time itself: a run dropped for lateness (catch_up = false) must not
                # keep the loop from waking for the next one
                waits += [(schedule.next_fire(now) - now).total_seconds() for schedule in one.schedules.values()]
        waits += [(p.start_at - now).total_seconds() for p in self.pending.values()]
        if self.watchdog is not None:
            waits.append(self._next_watchdog - mono)
        for run in self.running.values():
            waits.append(self.poll)
            if run.timeout is not None and run.term_at is None:
                waits.append(run.started + run.timeout + self.kill_grace - mono)
            if run.kill_at is not None:
                waits.append(run.kill_at - mono)
        return max(0.0, min(waits))

    # the loop

    def _wait(self, seconds: float) -> None:
        if self.sleep is not None:
            self.sleep(seconds)
            return
        self._waker.wait(seconds)

    def run_loop(self) -> int:
        """Run until stopped (``request_stop``) and every run has ended; 0."""
        if self.config is None:
            self.start()
        try:
            while True:
                delay = self.step()
                if self._stop and not self.running:
                    break
                self._wait(delay)
        finally:
            self._stop_metrics()
            self._waker.close()
        self.log("dtstore agent: stopped")
        return 0

    def serve(self) -> int:
        """``run_loop`` with the signal handlers installed (main thread only)."""
        with handle_signals(self):
            return self.run_loop()


def maintenance_job(job: Job) -> Any:
    """The job's retention and prune schedules as a job of their own (modes ``retention``, ``prune``), or None."""
    schedules = {mode: schedule for mode, schedule in (("retention", job.retention_schedule),
                                                       ("prune", job.prune_schedule)) if schedule is not None}
    if not schedules or job.kind != "backup":
        return None
    return dataclasses.replace(job, schedules=schedules, jitter=dt.timedelta(0))


def _age(delta: dt.timedelta) -> str:
    from dtstore.agent.schedule import format_duration

    return format_duration(dt.timedelta(seconds=int(delta.total_seconds())))


@contextlib.contextmanager
def handle_signals(daemon: Daemon) -> Any:
    """SIGTERM/SIGINT (and SIGBREAK on Windows) stop the agent, SIGHUP reloads it; handlers put back after."""
    saved: dict[int, Any] = {}

    def stop(_signum: int, _frame: Any) -> None:
        daemon.request_stop()

    def reload(_signum: int, _frame: Any) -> None:
        daemon.request_reload()

    handlers = {"SIGTERM": stop, "SIGINT": stop, "SIGBREAK": stop, "SIGHUP": reload}
    previous_fd: int | None = None
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(OSError, ValueError):
            previous_fd = signal.set_wakeup_fd(daemon._waker.fileno(), warn_on_full_buffer=False)
        for name, handler in handlers.items():
            number = getattr(signal, name, None)
            if number is not None:
                with contextlib.suppress(OSError, ValueError):
                    saved[number] = signal.signal(number, handler)
    try:
        yield daemon
    finally:
        for number, handler in saved.items():
            with contextlib.suppress(OSError, ValueError):
                signal.signal(number, handler)
        if previous_fd is not None:
            with contextlib.suppress(OSError, ValueError):
                signal.set_wakeup_fd(previous_fd)
