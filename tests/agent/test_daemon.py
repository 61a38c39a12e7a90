"""The agent's loop driven by a fake clock through days in seconds (overlaps, catch-up, timeouts, stop,
SIGHUP, RPO, jitter, promotion after a chain break), sd_notify with a socket the test binds, and a real
``dtstore agent`` process that takes snapshots every 2 s and stops cleanly on SIGTERM."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dtstore.agent import config as agent_config
from dtstore.agent.daemon import Daemon, SdNotify, run_command, watchdog_interval
from dtstore.agent.run import run_job
from dtstore.agent.state import StateDir, iso
from tests.agent.runhelp import Agent, defaults_file, make_agent

if TYPE_CHECKING:
    from tests.servers.mariadb import MariaDBFactory

T0 = dt.datetime(2026, 12, 7, 0, 0, 30, tzinfo=dt.UTC)


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Agent:
    return make_agent(tmp_path, monkeypatch)


class FakeClock:
    def __init__(self, start: dt.datetime = T0) -> None:
        self.wall = start
        self.mono = 1000.0

    def now(self) -> dt.datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += dt.timedelta(seconds=seconds)
        self.mono += seconds


@dataclass
class FakeChild:
    """A run that takes ``duration`` fake seconds, then writes its record (as ``dtstore run`` would)."""

    world: World
    job: str
    mode: str
    scheduled_at: dt.datetime
    duration: float | None
    """None: never ends by itself"""
    honours_terminate: bool = True
    pid: int = 0
    started: float = 0.0
    code: int | None = None
    terminated: int = 0
    killed: bool = False

    def poll(self) -> int | None:
        if self.code is None and self.duration is not None and self.world.clock.mono >= self.started + self.duration:
            self._finish(0, "ok")
        return self.code

    def _finish(self, code: int, result: str) -> None:
        self.code = code
        point = self.world.clock.now() if result == "ok" and self.world.recovery else None
        StateDir(self.world.agent.state_dir).record_run({
            "type": "run", "job": self.job, "kind": "backup", "requested_mode": self.mode, "mode": self.mode,
            "scheduled_at": iso(self.scheduled_at), "started_at": iso(self.world.clock.now()),
            "finished_at": iso(self.world.clock.now()), "result": result, "exit_code": code,
            "recovery_point": iso(point) if point else None})

    def terminate(self) -> None:
        self.terminated += 1
        if self.honours_terminate and self.code is None:
            self._finish(130, "interrupted")

    def kill(self) -> None:
        self.killed = True
        if self.code is None:
            self.code = -9  # no record: the daemon writes one


@dataclass
class World:
    agent: Agent
    clock: FakeClock = field(default_factory=FakeClock)
    durations: dict[str, float | None] = field(default_factory=dict)
    honours_terminate: bool = True
    recovery: bool = True
    children: list[FakeChild] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def launch(self, job: Any, mode: str, scheduled_at: dt.datetime) -> FakeChild:
        child = FakeChild(self, job.name, mode, scheduled_at, self.durations.get(job.name, 60.0),
                          self.honours_terminate, pid=10_000 + len(self.children), started=self.clock.mono)
        self.children.append(child)
        return child

    def send(self, event: Any, names: Any) -> list[Any]:
        self.events.append(event)
        return []

    def start(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def daemon(self, **kwargs: Any) -> Daemon:
        options: dict[str, Any] = {"clk": self.clock, "launch": self.launch, "notifier": self, "poll": 60.0,
                                   "log": self.lines.append, "sd": SdNotify(None), "watchdog": None,
                                   "max_sleep": 86400.0}
        options.update(kwargs)
        daemon = Daemon(self.agent.config_path, agent_config.load, **options)
        daemon.start()
        return daemon

    def drive(self, daemon: Daemon, seconds: float, at: Callable[[dt.datetime], None] | None = None) -> None:
        """Step the loop until ``seconds`` of fake time have passed (``at`` is called before each step)."""
        end = self.clock.now() + dt.timedelta(seconds=seconds)
        idle = 0
        while True:
            if at is not None:
                at(self.clock.now())
            delay = daemon.step()
            if self.clock.now() >= end:
                return
            idle = idle + 1 if delay <= 0 else 0
            assert idle < 50, "the loop does not advance"
            self.clock.advance(min(delay, (end - self.clock.now()).total_seconds()) if delay > 0 else 0.0)

    def records(self, job: str, result: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.agent.records(job) if result is None or r["result"] == result]

    def event_types(self) -> list[str]:
        return [e.type for e in self.events]


def job_toml(name: str, schedule: str, extra: str = "", source: str | None = None) -> str:
    return (f'[jobs.{name}]\nrepository = "main"\nsource = "{source or "/tmp"}"\nschedule = {schedule}\n{extra}\n')


def test_every_job_runs_at_its_times_through_days(agent: Agent) -> None:
    agent.write(job_toml("hourly", '{ full = "every 1h" }') + job_toml("daily", '{ full = "0 3 * * *" }'))
    world = World(agent)
    daemon = world.daemon()
    world.drive(daemon, 3 * 86400)
    hourly = [c.scheduled_at for c in world.children if c.job == "hourly"]
    assert len(hourly) == 72 and hourly[0] == dt.datetime(2026, 12, 7, 1, tzinfo=dt.UTC)
    assert all(b - a == dt.timedelta(hours=1) for a, b in itertools.pairwise(hourly))
    daily = [c.scheduled_at for c in world.children if c.job == "daily"]
    assert daily == [dt.datetime(2026, 12, d, 3, tzinfo=dt.UTC) for d in (7, 8, 9)]
    assert len(world.records("hourly", "ok")) == 71 and world.events == []  # the 72nd is still going


def test_a_run_due_while_the_last_one_goes_on_is_skipped_and_reported(agent: Agent) -> None:
    agent.write(job_toml("db", '{ full = "every 15m" }'))
    world = World(agent, durations={"db": 40 * 60.0})
    daemon = world.daemon()
    world.drive(daemon, 60 * 60)
    started = [c.scheduled_at.strftime("%H:%M") for c in world.children]
    assert started == ["00:15", "01:00"]  # 00:30 and 00:45 fell inside the 40-minute run
    skipped = world.records("db", "skipped")
    assert [r["scheduled_at"] for r in skipped] == ["2026-12-07T00:30:00Z", "2026-12-07T00:45:00Z"]
    assert "still going" in skipped[0]["error"]
    assert [t for t in world.event_types() if t == "skipped"] == ["skipped", "skipped"]


def test_missed_runs_after_downtime_are_caught_up_once(agent: Agent) -> None:
    agent.write(job_toml("db", '{ full = "every 1h" }'))
    StateDir(agent.state_dir).update_job("db", fired={"full": T0 - dt.timedelta(days=3)})  # down for 3 days
    world = World(agent)
    daemon = world.daemon()
    world.drive(daemon, 30 * 60)
    assert [c.scheduled_at for c in world.children] == [dt.datetime(2026, 12, 7, 0, tzinfo=dt.UTC)]
    assert any("71 missed full run(s) collapse into one" in line for line in world.lines)
    world.drive(daemon, 60 * 60)
    assert len(world.children) == 2


def test_no_catch_up_when_it_is_off(agent: Agent) -> None:
    agent.write(job_toml("db", '{ full = "every 1h" }'), agent="catch_up = false")
    StateDir(agent.state_dir).update_job("db", fired={"full": T0 - dt.timedelta(days=3)})
    world = World(agent, clock=FakeClock(T0.replace(minute=10)))  # the missed 00:00 run is 10 minutes late
    daemon = world.daemon()
    world.drive(daemon, 40 * 60)
    assert world.children == []
    world.drive(daemon, 11 * 60)
    assert [c.scheduled_at.strftime("%H:%M") for c in world.children] == ["01:00"]


def test_the_timeout_is_enforced_when_the_run_does_not_stop_itself(agent: Agent) -> None:
    agent.write(job_toml("db", '{ full = "every 1d" }', 'timeout = "10m"'))
    world = World(agent, durations={"db": None}, honours_terminate=False)
    daemon = world.daemon(poll=1.0)
    world.drive(daemon, 86400 - 30 + 10 * 60 + 29)  # the run starts at midnight; its own timeout passes
    child = world.children[0]
    assert child.terminated == 0
    world.drive(daemon, 2)  # timeout + 30 s: SIGTERM
    assert child.terminated == 1 and not child.killed
    world.drive(daemon, 31)  # ignored: SIGKILL 30 s later
    assert child.killed
    record = world.records("db")[-1]
    assert record["result"] == "timeout" and "killed" in record["error"]
    assert world.event_types() == ["failure"]
    assert daemon.running == {}


def test_a_run_that_records_its_own_timeout_is_not_recorded_twice(agent: Agent) -> None:
    agent.write(job_toml("db", '{ full = "every 1d" }', 'timeout = "10m"'))
    world = World(agent, durations={"db": None})
    daemon = world.daemon(poll=1.0)
    world.drive(daemon, 86400 + 11 * 60)
    assert [r["result"] for r in world.records("db")] == ["interrupted"]  # the child's own record


def test_stop_lets_runs_finish_then_stops_them_and_exits_0(agent: Agent) -> None:
    agent.write(job_toml("quick", '{ full = "every 1h" }') + job_toml("slow", '{ full = "every 1h" }'))
    world = World(agent, durations={"quick": 40.0, "slow": None})
    daemon = world.daemon(stop_timeout=60.0, poll=1.0)
    world.drive(daemon, 59 * 60 + 35)  # 01:00:05: both started at 01:00
    quick, slow = (next(c for c in world.children if c.job == name) for name in ("quick", "slow"))
    assert quick.code is None and slow.code is None
    stop_at = world.clock.mono
    daemon.sleep = world.clock.advance
    daemon.request_stop()
    assert daemon.run_loop() == 0
    assert quick.code == 0 and quick.terminated == 0  # finished within the stop timeout
    assert slow.terminated == 1 and 60 <= world.clock.mono - stop_at <= 62  # stopped after it
    assert [r["result"] for r in world.records("slow")] == ["interrupted"]
    assert [r["result"] for r in world.records("quick")] == ["ok"]
    assert len(world.children) == 2  # nothing started after the stop


def test_sighup_rereads_the_configuration_and_keeps_the_old_one_when_bad(agent: Agent) -> None:
    agent.write(job_toml("a", '{ full = "every 1h" }'))
    world = World(agent)
    daemon = world.daemon()
    world.drive(daemon, 3600)
    agent.write(job_toml("a", '{ full = "every 1h" }') + job_toml("b", '{ full = "every 30m" }'))
    daemon.request_reload()
    world.drive(daemon, 3600)
    assert {c.job for c in world.children} == {"a", "b"}
    agent.config_path.write_text(agent.config_path.read_text() + '\n[jobs.c]\nrepository = "nope"\n')
    daemon.request_reload()
    world.drive(daemon, 3600)
    assert "b" in daemon.config.jobs and "c" not in daemon.config.jobs
    assert any("the old one stays" in line for line in world.lines)
    assert agent.records(types=("config_error",))


def test_rpo_breach_is_notified_once_and_recovery_too(agent: Agent) -> None:
    agent.write(job_toml("db", '{ full = "every 15m" }', 'rpo = "30m"'))
    world = World(agent)
    daemon = world.daemon()
    world.drive(daemon, 3600)
    assert world.event_types() == []
    world.recovery = False  # the runs go on but record no recovery point
    world.drive(daemon, 3 * 3600)
    assert world.event_types() == ["rpo"]
    world.recovery = True
    world.drive(daemon, 3600)
    assert world.event_types() == ["rpo", "recovered"]
    assert [r["type"] for r in agent.records("db", types=("rpo", "recovered"))] == ["rpo", "recovered"]


def test_jitter_delays_each_run_within_its_bound(agent: Agent) -> None:
    agent.write(job_toml("db", '{ full = "every 1h" }', 'jitter = "5m"'))
    world = World(agent)
    world.drive(world.daemon(poll=1.0, rng=random.Random(7)), 6 * 3600 + 600)
    lags = [(T0 + dt.timedelta(seconds=c.started - 1000.0) - c.scheduled_at).total_seconds() for c in world.children]
    assert len(lags) == 6 and all(0 <= lag <= 301 for lag in lags), lags
    assert len({round(lag) for lag in lags}) > 1


def test_retention_on_its_own_schedule_waits_for_the_job(agent: Agent) -> None:
    agent.write(job_toml("db", '{ full = "every 1h" }', 'retention = { keep_last = 3 }\n'
                                                        'retention_after = "0 */2 * * *"'))
    world = World(agent, durations={"db": 600.0})
    world.drive(world.daemon(poll=60.0), 4 * 3600 + 1800)
    modes = [(c.scheduled_at.strftime("%H:%M"), c.mode) for c in world.children]
    assert modes == [("01:00", "full"), ("02:00", "full"), ("02:00", "retention"), ("03:00", "full"),
                     ("04:00", "full"), ("04:00", "retention")]
    assert world.records("db", "skipped") == []


# --- sd_notify -------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="unix sockets only")
def test_sd_notify_datagrams_reach_the_socket(agent: Agent, tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(5)
        agent.write(job_toml("db", '{ full = "every 1h" }'))
        world = World(agent)
        daemon = world.daemon(sd=SdNotify(str(path)), watchdog=10.0)
        assert server.recv(4096).decode().split("\n")[0] == "READY=1"
        world.drive(daemon, 1)
        assert server.recv(4096) == b"WATCHDOG=1"
        daemon.request_reload()
        world.drive(daemon, 1)
        assert server.recv(4096).startswith(b"RELOADING=1")
        assert server.recv(4096).startswith(b"READY=1")
        daemon.sleep = world.clock.advance
        daemon.request_stop()
        assert daemon.run_loop() == 0
        received = []
        with pytest.raises(TimeoutError):
            while True:
                received.append(server.recv(4096))
                server.settimeout(0.2)
        assert any(d.startswith(b"STOPPING=1") for d in received)
    assert SdNotify(None).send("READY=1") is False
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None


def test_the_child_gets_the_config_path_and_no_secret(agent: Agent) -> None:
    argv = run_command(agent.config_path, "db", "log", T0)
    assert argv[1:] == ["-m", "dtstore.cli", "run", "db", "--mode", "log", "--scheduled-at", "2026-12-07T00:00:30Z",
                        "--config", str(agent.config_path), "--quiet"]


# --- promotion after an injected chain break ------------------------------------------------------------------

@dataclass
class InlineChild:
    """A run done in this process, at once (``run_job`` with the fake clock for its scheduled time)."""

    code: int
    pid: int = os.getpid()

    def poll(self) -> int | None:
        return self.code

    def terminate(self) -> None:
        pass

    def kill(self) -> None:
        pass


@pytest.mark.slow
def test_promotion_after_a_chain_break_in_the_loop(agent: Agent, mariadb_factory: MariaDBFactory) -> None:
    server = mariadb_factory("src", password="src-Secret-1")
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY) ENGINE=InnoDB")
    url = server.url(defaults_file=str(defaults_file(agent.base / "my.cnf", server.password)))
    agent.write(f'[jobs.db]\nrepository = "main"\nsource = "{url}"\n'
                'schedule = { full = "0 1 * * 0", log = "every 15m" }\n')
    world = World(agent)
    counter = iter(range(1, 1000))

    def launch(job: Any, mode: str, scheduled_at: dt.datetime) -> InlineChild:
        server.sql(f"INSERT INTO shop.t VALUES ({next(counter)})")
        config = agent_config.load(agent.config_path)
        return InlineChild(run_job(config, config.job(job.name), mode, scheduled_at=scheduled_at).exit_code)

    daemon = world.daemon(launch=launch)

    def breaks(now: dt.datetime) -> None:
        if now >= T0 + dt.timedelta(minutes=50) and not getattr(breaks, "done", False):
            server.sql("RESET MASTER")  # the chain the archive needs is gone
            breaks.done = True  # type: ignore[attr-defined]

    world.drive(daemon, 90 * 60, at=breaks)
    runs = [(r["scheduled_at"][11:16], r["requested_mode"], r["mode"], r["result"]) for r in world.records("db")]
    assert runs == [("00:15", "log", "full", "ok"), ("00:30", "log", "log", "ok"), ("00:45", "log", "log", "ok"),
                    ("01:00", "log", "full", "ok"), ("01:15", "log", "log", "ok"), ("01:30", "log", "log", "ok")], runs
    promoted = world.records("db")[3]
    assert "no log" in promoted["reason"], promoted


# --- a real agent process ---------------------------------------------------------------------------------------

def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_real_agent_snapshots_every_2s_reloads_on_sighup_and_stops_on_sigterm(agent: Agent,
                                                                                tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("payload\n")
    agent.write(job_toml("files", '{ full = "every 2s" }', source=str(data)))
    notify = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sd:
        sd.bind(str(notify))
        sd.settimeout(20)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify)}
        proc = subprocess.Popen([sys.executable, "-m", "dtstore.cli", "agent", "--config", str(agent.config_path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            assert sd.recv(4096).startswith(b"READY=1")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(agent.records("files", types=("run",))) < 2:
                time.sleep(0.2)
            assert len([r for r in agent.records("files") if r["result"] == "ok"]) >= 2, agent.records()
            other = tmp_path / "other"
            other.mkdir()
            (other / "g.txt").write_text("more\n")
            agent.write(job_toml("files", '{ full = "every 2s" }', source=str(data))
                        + job_toml("other", '{ full = "every 2s" }', source=str(other)))
            proc.send_signal(signal.SIGHUP)  # reread: the new job runs too
            while time.monotonic() < deadline and not [r for r in agent.records("other") if r["result"] == "ok"]:
                time.sleep(0.2)
            assert [r for r in agent.records("other") if r["result"] == "ok"], agent.records()
            children = _children_of(proc.pid)
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err.decode()
    assert b"dtstore agent: stopped" in err and b"configuration reloaded, 2 job(s)" in err
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    snaps = [s for s in agent.snapshots() if s.paths == [str(data)]]
    ok = [r for r in agent.records("files") if r["result"] == "ok"]
    assert len(snaps) >= 2 and {r["snapshot_id"] for r in ok} <= {s.id for s in snaps}
    assert all(r["scheduled_at"] for r in ok)
    assert json.dumps(agent.records()).count("password") == 0


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_real_agent_runs_drills_and_stops_a_run_at_its_timeout(agent: Agent, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("payload\n" * 100)
    started = tmp_path / "slow-started"
    agent.write(job_toml("files", '{ full = "every 2s" }', source=str(data))
                + f'[jobs.files-drill]\nkind = "drill"\nof = "files"\nschedule = "every 3s"\n'
                  f'target = "{tmp_path / "scratch"}"\n\n'
                  f'[jobs.slow]\nrepository = "main"\ncommand = "touch {started}; sleep 60"\nstdin_name = "s.txt"\n'
                  'schedule = { full = "every 4s" }\ntimeout = "1s"\n')
    proc = subprocess.Popen([sys.executable, "-m", "dtstore.cli", "agent", "--config", str(agent.config_path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90

        def results(job: str) -> list[str]:
            return [r["result"] for r in agent.records(job)]

        while time.monotonic() < deadline and not ("ok" in results("files-drill") and "timeout" in results("slow")):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert "ok" in results("files-drill"), agent.records("files-drill")
    drill = next(r for r in agent.records("files-drill") if r["result"] == "ok")
    assert drill["restore_seconds"] is not None and drill["requested_mode"] == "drill"
    assert "timeout" in results("slow") and started.exists()
    slow_pids = {r["pid"] for r in agent.records("slow") if r.get("pid")}
    assert slow_pids
    for pid in slow_pids:  # each run led its own session; nothing of it is left
        assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _session_of(p) == pid]
    assert not any(s.paths == ["s.txt"] for s in agent.snapshots())  # a stopped run commits nothing
    assert list((tmp_path / "scratch").iterdir()) == []


def _session_of(proc_dir: Path) -> int | None:
    try:
        fields = (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[3]) if fields[0] != "Z" else None


def test_the_metrics_endpoint_is_served_while_the_agent_runs(agent: Agent) -> None:
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    agent.write(job_toml("db", '{ full = "every 1h" }'), agent=f'metrics_listen = "127.0.0.1:{free}"')
    world = World(agent)
    daemon = world.daemon()
    world.drive(daemon, 3600 + 120)
    port = daemon._metrics_server.port
    assert port == free
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    assert 'dtstore_job_last_run_success{job="db"} 1' in text
    daemon.sleep = world.clock.advance
    daemon.request_stop()
    assert daemon.run_loop() == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
