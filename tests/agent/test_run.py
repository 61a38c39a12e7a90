"""``dtstore run JOB`` / ``agent.run.run_job``: one run with the host lock, hooks, promotion, retention,
the record, metrics and notifications, against a real local repository (and real MariaDB servers for
promotion)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dtstore.agent.run import run_job
from dtstore.agent.state import StateDir
from dtstore.cli.main import main
from tests.agent.runhelp import Agent, defaults_file, make_agent
from tests.helpers import PASSWORD

if TYPE_CHECKING:
    from tests.servers.mariadb import MariaDBFactory


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Agent:
    return make_agent(tmp_path, monkeypatch)


def files_job(agent: Agent, extra: str = "", name: str = "files") -> Path:
    data = agent.base / "data"
    data.mkdir(exist_ok=True)
    (data / "a.txt").write_text("hello\n")
    return agent.write(f'[jobs.{name}]\nrepository = "main"\nsource = "{data}"\nschedule = {{ full = "every 1d" }}\n'
                       f"{extra}\n")


def test_a_file_job_runs_snapshots_and_is_recorded(agent: Agent) -> None:
    files_job(agent, 'tags = ["nightly"]')
    config = agent.config()
    result = run_job(config, config.job("files"))
    assert result.exit_code == 0, result.record
    snaps = agent.snapshots()
    assert len(snaps) == 1 and snaps[0].tags == ["nightly"]
    record = result.record
    assert record["result"] == "ok" and record["mode"] == "full" and record["requested_mode"] == "full"
    assert record["snapshot_id"] == snaps[0].id and record["bytes_added"] > 0
    assert record["recovery_point"] is not None and record["duration_seconds"] >= 0
    assert agent.records("files") == [record]
    assert StateDir(agent.state_dir).read_state().job("files").last_result == record
    assert not StateDir(agent.state_dir).job_lock("files").path.read_text().strip()  # released


def test_a_second_run_of_the_job_exits_11_and_is_recorded_as_skipped(agent: Agent) -> None:
    files_job(agent)
    config = agent.config()
    with StateDir(agent.state_dir).job_lock("files"):
        result = run_job(config, config.job("files"))
    assert result.exit_code == 11
    assert result.record["result"] == "skipped"
    assert f"job files is already running (pid {os.getpid()})" in result.record["error"]
    assert agent.snapshots() == []


def test_a_failing_before_hook_fails_the_run_and_on_failure_sees_why(agent: Agent) -> None:
    seen = agent.base / "seen"
    files_job(agent, f'hooks = {{ before = "exit 3", after = "touch {agent.base / "after"}", '
                     f'on_failure = "env | grep ^DTSTORE_ > {seen}" }}')
    config = agent.config()
    result = run_job(config, config.job("files"))
    assert result.exit_code == 1
    assert result.record["result"] == "failed" and result.record["error"] == "the before hook exited with status 3"
    assert agent.snapshots() == [] and not (agent.base / "after").exists()
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines())
    assert env["DTSTORE_JOB"] == "files" and env["DTSTORE_RESULT"] == "failed"
    assert env["DTSTORE_ERROR"] == "the before hook exited with status 3" and env["DTSTORE_SNAPSHOT"] == ""


def test_the_after_hook_gets_the_snapshot(agent: Agent) -> None:
    seen = agent.base / "seen"
    files_job(agent, f'hooks = {{ after = "echo $DTSTORE_SNAPSHOT $DTSTORE_RESULT > {seen}" }}')
    config = agent.config()
    result = run_job(config, config.job("files"))
    assert seen.read_text().split() == [result.record["snapshot_id"], "ok"]


def test_the_timeout_stops_the_run_with_nothing_committed(agent: Agent) -> None:
    marker = agent.base / "still-running"
    agent.write(f'[jobs.slow]\nrepository = "main"\ncommand = "echo start; sleep 30; touch {marker}"\n'
                'stdin_name = "slow.txt"\nschedule = { full = "every 1d" }\ntimeout = "1s"\n')
    config = agent.config()
    started = time.monotonic()
    result = run_job(config, config.job("slow"))
    took = time.monotonic() - started
    assert took < 10, took
    assert result.record["result"] == "timeout" and result.exit_code == 1
    assert "nothing was committed" in result.record["error"]
    assert agent.snapshots() == []
    time.sleep(0.5)
    assert not marker.exists()


def test_retention_after_every_full_keeps_the_policy_and_prunes(agent: Agent) -> None:
    files_job(agent, 'retention = { keep_last = 2 }')
    config = agent.config()
    ids = []
    for n in range(3):
        (agent.base / "data" / f"f{n}").write_bytes(os.urandom(20_000))
        result = run_job(config, config.job("files"))
        assert result.exit_code == 0, result.record
        ids.append(result.record["snapshot_id"])
    assert [s.id for s in agent.snapshots()] == ids[1:]
    assert result.record["forgotten"] == 1 and "pruned_bytes" in result.record


def test_retention_alone_makes_no_snapshot(agent: Agent) -> None:
    files_job(agent, 'retention = { keep_last = 1 }\nretention_after = "0 3 * * *"')
    config = agent.config()
    for _ in range(2):
        assert run_job(config, config.job("files")).exit_code == 0
    assert len(agent.snapshots()) == 2  # retention runs on its own schedule, not after each full
    result = run_job(config, config.job("files"), "retention")
    assert result.exit_code == 0 and result.record["mode"] == "retention" and result.record["snapshot_id"] is None
    assert len(agent.snapshots()) == 1 and result.record["forgotten"] == 1


def test_no_password_in_records_state_or_output(agent: Agent, capsys: pytest.CaptureFixture[str]) -> None:
    files_job(agent)
    code = main(["--json", "run", "files", "--config", str(agent.config_path)])
    out = capsys.readouterr()
    assert code == 0
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert lines[0]["type"] == "run" and lines[0]["result"] == "ok" and lines[-1]["type"] == "summary"
    for path in agent.state_dir.rglob("*"):
        if path.is_file():
            assert PASSWORD not in path.read_text()
    assert PASSWORD not in out.out + out.err


def test_the_cli_reports_a_failed_run_with_its_exit_code(agent: Agent, capsys: pytest.CaptureFixture[str]) -> None:
    files_job(agent, 'hooks = { before = "false" }')
    assert main(["run", "files", "--config", str(agent.config_path)]) == 1
    assert "job files: failed: the before hook exited with status 1" in capsys.readouterr().err
    assert main(["run", "nope", "--config", str(agent.config_path)]) == 2


def test_metrics_are_rewritten_after_the_run(agent: Agent) -> None:
    prom = agent.base / "dtstore.prom"
    data = agent.base / "data"
    data.mkdir()
    agent.write(f'[jobs.files]\nrepository = "main"\nsource = "{data}"\nschedule = {{ full = "every 1d" }}\n',
                agent=f'metrics_textfile = "{prom}"')
    config = agent.config()
    assert run_job(config, config.job("files")).exit_code == 0
    assert 'dtstore_job_last_run_success{job="files"} 1' in prom.read_text()


# --- promotion against a real MariaDB -------------------------------------------------------------------------

@pytest.mark.slow
def test_promotion_no_base_broken_chain_and_full_every(agent: Agent, mariadb_factory: MariaDBFactory) -> None:
    server = mariadb_factory("src", password="src-Secret-1")
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY) ENGINE=InnoDB; "
               "INSERT INTO shop.t VALUES (1)")
    url = server.url(defaults_file=str(defaults_file(agent.base / "my.cnf", server.password)))
    agent.write(f'[jobs.db]\nrepository = "main"\nsource = "{url}"\n'
                'schedule = { full = "0 1 * * 0", log = "every 15m" }\nfull_every = "7d"\n')
    config = agent.config()
    job = config.job("db")

    first = run_job(config, job, "log").record  # no base yet: a full, saying why
    assert (first["result"], first["requested_mode"], first["mode"]) == ("ok", "log", "full"), first
    assert first["reason"] and "no log" in first["reason"]

    server.sql("INSERT INTO shop.t VALUES (2)")
    second = run_job(config, job, "log").record
    assert (second["mode"], second["reason"]) == ("log", None), second

    server.sql("RESET MASTER")  # the binlogs the chain needs are gone: the server reports the break
    server.sql("INSERT INTO shop.t VALUES (3)")
    third = run_job(config, job, "log").record
    assert third["mode"] == "full" and "no log" in third["reason"], third

    short = agent.base / "short.toml"
    short.write_text(agent.config_path.read_text().replace('full_every = "7d"', 'full_every = "1s"'))
    time.sleep(1.2)
    from dtstore.agent.config import load

    fourth = run_job(load(short), load(short).job("db"), "log").record
    assert fourth["mode"] == "full" and "full_every 1s" in fourth["reason"], fourth
    modes = [s.source_metadata["mode"] for s in agent.snapshots()]
    assert modes == ["full", "log", "full", "full"]
    assert server.password not in agent.config_path.read_text() + json.dumps(agent.records())


def live_group_members(pgid: int, wait: float = 5.0) -> list[int]:
    """The processes of group ``pgid`` that are not zombies (waiting up to ``wait`` s for them to go)."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[2]) == pgid and fields[0] != "Z":
                    found.append(int(entry.name))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_sigterm_stops_a_real_run_with_nothing_committed(agent: Agent) -> None:
    started = agent.base / "started"
    agent.write(f'[jobs.slow]\nrepository = "main"\ncommand = "touch {started}; sleep 30"\n'
                'stdin_name = "slow.txt"\nschedule = { full = "every 1d" }\n')
    proc = subprocess.Popen([sys.executable, "-m", "dtstore.cli", "run", "slow", "--config", str(agent.config_path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # as the agent starts its runs
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err.decode()
    assert live_group_members(proc.pid) == []  # the command's sleep did not outlive the run
    (record,) = agent.records("slow")
    assert record["result"] == "interrupted" and "nothing was committed" in record["error"]
    assert agent.snapshots() == []
    assert not StateDir(agent.state_dir).job_lock("slow").path.read_text().strip()


def test_the_agent_modules_import_without_posix_only_modules() -> None:
    """In a fresh interpreter (so this one's modules stay as they are): the stdlib and the core first,
    then fcntl & co blocked and sys.platform = "win32", then the agent modules and their commands."""
    program = textwrap.dedent("""
        import subprocess, socket, select, signal, threading, random, platform, shutil, tempfile, smtplib, ssl
        import urllib.request, http.server, email.message, email.utils, tomllib, zoneinfo, importlib.resources
        import sys
        import dtstore, dtstore.connectors, dtstore.connectors.points, dtstore.connectors.forgetting
        import dtstore.cli.output, dtstore.cli.helptext
        for name in ("fcntl", "resource", "termios", "pwd", "grp"):
            sys.modules[name] = None
        sys.platform = "win32"
        for name in ("dtstore.agent.state", "dtstore.agent.run", "dtstore.agent.daemon", "dtstore.agent.drill",
                     "dtstore.cli.cmd_agent", "dtstore.cli.cmd_run", "dtstore.cli.cmd_drill"):
            sys.modules.pop(name, None)
            __import__(name)
        print("imported")
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "imported", done.stderr[-3000:]


def test_a_stop_after_the_commit_records_the_snapshot(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    import dtstore
    from dtstore.agent import run as run_module

    class SlowAfterCommit(dtstore.FilesSource):
        def committed(self, snapshot: dtstore.Snapshot) -> None:
            time.sleep(5)  # the timeout fires here, after the manifest was written

    monkeypatch.setattr(run_module, "build_plain_sources",
                        lambda job: [SlowAfterCommit(list(job.source), job.make_excludes())])
    files_job(agent, 'timeout = "1s"\nretention = { keep_last = 1 }')
    config = agent.config()
    result = run_job(config, config.job("files"))
    (snap,) = agent.snapshots()
    assert result.record["result"] == "ok" and result.record["snapshot_id"] == snap.id, result.record
    assert "stopped after the snapshot was committed" in result.record["note"]
    assert "forgotten" not in result.record


@pytest.mark.slow
def test_retention_keeps_restore_chains_whole(agent: Agent, mariadb_factory: MariaDBFactory) -> None:
    server = mariadb_factory("src", password="src-Secret-1")
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY) ENGINE=InnoDB")
    url = server.url(defaults_file=str(defaults_file(agent.base / "my.cnf", server.password)))
    agent.write(f'[jobs.db]\nrepository = "main"\nsource = "{url}"\n'
                'schedule = { full = "0 1 * * 0", log = "every 15m" }\n'
                'retention = { keep_last = 1 }\nretention_after = "every"\n')
    config = agent.config()
    job = config.job("db")
    for n, mode in enumerate(["full", "log", "log"]):
        server.sql(f"INSERT INTO shop.t VALUES ({n})")
        record = run_job(config, job, mode).record
        assert record["mode"] == mode and record["forgotten"] == 0, record  # the newest log needs them all
    assert len(agent.snapshots()) == 3
    time.sleep(1.1)
    server.sql("INSERT INTO shop.t VALUES (10)")
    record = run_job(config, job, "full").record
    assert record["forgotten"] == 3 and len(agent.snapshots()) == 1
    assert record["restorable"] and "no longer restorable" in record["restorable"][0]
