"""Per-job status from run records (agent/status.py) and ``dtstore status`` over a state folder."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from dtstore.agent.config import Config, load
from dtstore.agent.state import StateDir, iso
from dtstore.agent.status import JobStatus, current, effective_rpo, job_statuses
from dtstore.cli import cmd_status
from dtstore.cli.output import Output

NOW = dt.datetime(2026, 12, 2, 7, 0, tzinfo=dt.UTC)  # a Wednesday

CONFIG = """
[agent]
state_dir = "{state}"
timezone = "UTC"

[repositories.main]
url = "/srv/repo"
password_env = "DTSTORE_TEST_PW"

[jobs.shop]
repository = "main"
source = "mysql://backup@localhost/?socket=/run/mysqld/mysqld.sock"
schedule = {{ full = "0 1 * * 0", diff = "0 1 * * 1-6", log = "every 15m" }}

[jobs.files]
repository = "main"
source = "/etc"
schedule = {{ full = "0 3 * * *" }}
rpo = "36h"

[jobs.shop-drill]
kind = "drill"
of = "shop"
schedule = "0 4 * * 6"
target = "mysql://root@localhost/?socket=/run/mysqld/scratch.sock"
"""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "dtstore.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state"))
    return path


@pytest.fixture
def config(config_path: Path) -> Config:
    return load(config_path)


def at(h: int, m: int = 0, s: int = 0, day: int = 2) -> dt.datetime:
    return dt.datetime(2026, 12, day, h, m, s, tzinfo=dt.UTC)


def run(job: str, finished: dt.datetime, *, mode: str | None = "log", result: str = "ok",
        recovery: dt.datetime | None = None, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"type": "run", "job": job, "kind": "backup", "requested_mode": mode, "mode": mode,
                              "started_at": iso(finished - dt.timedelta(seconds=10)), "finished_at": iso(finished),
                              "duration_seconds": 10.0, "result": result, "bytes_added": 1000,
                              "recovery_point": iso(recovery) if recovery else None, "error": None}
    record.update(extra)
    return record


def history() -> list[dict[str, Any]]:
    """Oldest first."""
    return [
        run("shop", at(1, 0, 30), mode="full", recovery=at(1, 0, 5), bytes_added=5 << 20, duration_seconds=30.0),
        run("files", at(3, 1), mode="full", result="failed", error="permission denied", bytes_added=None),
        run("shop", at(6, 30, 5), result="failed", error="mysqlbinlog exited with status 1", bytes_added=None),
        {"type": "notify_failed", "job": "shop", "error": "x"},
        run("shop", at(6, 45, 5), recovery=at(6, 45, 2), bytes_added=2048),
        run("shop-drill", at(4, 5), mode=None, kind="drill", duration_seconds=300.0, restore_seconds=240.5,
            check_seconds=50.0),
        run("gone", at(6, 50), recovery=at(6, 50)),  # a job no longer configured
        run("shop", at(7, 0), result="skipped", error="the previous run is still going", duration_seconds=None),
    ]


def statuses(config: Config, records: list[dict[str, Any]], now: dt.datetime = NOW,
             **kw: Any) -> dict[str, JobStatus]:
    return {s.job: s for s in job_statuses(reversed(records), config.jobs, now, **kw)}


def test_without_records(config: Config) -> None:
    rows = job_statuses([], config.jobs, NOW)
    assert [r.job for r in rows] == ["shop", "files", "shop-drill"]
    shop, files, drill = rows
    assert shop.last_run is None and shop.last_success is None and shop.recovery_point is None
    assert shop.rpo == dt.timedelta(minutes=30) and shop.rpo_ok is None  # derived: 2 × every 15m
    assert shop.next_runs == {"log": at(7, 15), "diff": at(1, day=3), "full": at(1, day=6)}
    assert shop.next_run == ("log", at(7, 15))
    assert files.rpo == dt.timedelta(hours=36)
    assert drill.rpo is None and drill.next_runs == {"drill": at(4, day=5)}


def test_last_run_success_modes_recovery_point_and_drill(config: Config) -> None:
    rows = statuses(config, history())
    shop = rows["shop"]
    assert shop.last_run is not None
    assert (shop.last_run.time, shop.last_run.mode, shop.last_run.result) == (at(6, 45, 5), "log", "ok")
    assert shop.last_run.bytes_added == 2048 and shop.last_run.duration_seconds == 10.0
    assert shop.last_skipped == at(7)
    assert shop.last_success == at(6, 45, 5)
    assert set(shop.last_by_mode) == {"log", "full"}
    assert shop.last_by_mode["full"].bytes_added == 5 << 20
    assert shop.recovery_point == at(6, 45, 2)
    assert shop.recovery_point_age == dt.timedelta(minutes=14, seconds=58) and shop.rpo_ok is True
    assert shop.last_drill is not None and shop.last_drill.job == "shop-drill"
    assert shop.last_drill.restore_seconds == 240.5 and shop.last_drill.ok
    files = rows["files"]
    assert files.last_run is not None and files.last_run.result == "failed"
    assert files.last_run.error == "permission denied" and files.last_success is None
    assert files.recovery_point is None and files.last_drill is None
    drill = rows["shop-drill"]
    assert drill.last_run is not None and drill.last_drill == drill.last_run
    assert drill.last_run.kind == "drill" and drill.last_run.check_seconds == 50.0
    assert "gone" not in rows


def test_recovery_point_against_rpo_moves_with_now(config: Config) -> None:
    assert statuses(config, history(), now=at(7, 15, 2))["shop"].rpo_ok is True  # exactly 30m old
    late = statuses(config, history(), now=at(7, 15, 3))["shop"]
    assert late.recovery_point_age == dt.timedelta(minutes=30, seconds=1) and late.rpo_ok is False


def test_recovery_point_is_the_newest_not_the_last_record(config: Config) -> None:
    records = [run("shop", at(6), recovery=at(5, 59)), run("shop", at(6, 15), recovery=None, result="failed")]
    assert statuses(config, records)["shop"].recovery_point == at(5, 59)
    records = [run("shop", at(6), recovery=at(5, 59)), run("shop", at(6, 15), recovery=at(5, 30))]
    assert statuses(config, records)["shop"].recovery_point == at(5, 59)


def test_records_are_read_only_as_far_as_needed(config: Config) -> None:
    newest_first = list(reversed([
        run("shop", at(1), mode="full", recovery=at(1)),
        run("files", at(3), mode="full", recovery=at(3)),
        run("shop-drill", at(4), mode=None, kind="drill"),
        run("shop", at(6), mode="log", recovery=at(6)),
    ]))
    read: list[int] = []

    def records() -> Iterator[Mapping[str, Any]]:
        for n, record in enumerate(newest_first):
            read.append(n)
            yield record
        yield {"type": "run", "job": "shop", "finished_at": "boom"}
        raise AssertionError("read past what was needed")

    # the mysql diff schedule takes fulls: full and log are all the modes there are
    rows = {s.job: s for s in job_statuses(records(), config.jobs, NOW)}
    assert read == [0, 1, 2, 3]
    assert rows["shop"].last_by_mode.keys() == {"full", "log"}


def test_last_fired_gives_a_pending_run_and_running_pids(config: Config) -> None:
    rows = statuses(config, [], last_fired={"shop": {"log": at(6, 30)}}, running={"files": 4242})
    assert rows["shop"].next_runs["log"] == at(7)  # 06:45 and 07:00 fired since: due now
    assert rows["files"].running_pid == 4242 and rows["shop"].running_pid is None


def test_effective_rpo(config: Config) -> None:
    assert effective_rpo(config.jobs["shop"]) == dt.timedelta(minutes=30)
    assert effective_rpo(config.jobs["files"]) == dt.timedelta(hours=36)
    assert effective_rpo(config.jobs["shop-drill"]) is None


def test_to_json(config: Config) -> None:
    doc = statuses(config, history())["shop"].to_json()
    assert doc["job"] == "shop" and doc["kind"] == "backup"
    assert doc["last_run"]["time"] == "2026-12-02T06:45:05Z" and doc["last_run"]["mode"] == "log"
    assert doc["last_success"] == "2026-12-02T06:45:05Z" and doc["last_skipped"] == "2026-12-02T07:00:00Z"
    assert list(doc["next_runs"]) == ["log", "diff", "full"]  # soonest first
    assert doc["recovery_point"] == "2026-12-02T06:45:02Z"
    assert doc["recovery_point_age_seconds"] == 898.0 and doc["rpo_seconds"] == 1800.0 and doc["rpo_ok"] is True
    assert doc["last_drill"]["restore_seconds"] == 240.5
    json.dumps(doc)


def test_current_reads_the_state_folder(config: Config) -> None:
    state = StateDir(config.agent.state_dir)
    for record in history():
        state.append(record)
    state.update_job("shop", fired={"log": at(6, 45)})
    with state.job_lock("files"):
        rows = {s.job: s for s in current(config, state, NOW, with_running=True)}
    assert rows["files"].running_pid is not None
    assert rows["shop"].next_runs["log"] == at(7)
    assert rows["shop"].recovery_point == at(6, 45, 2)


# --- the command ---------------------------------------------------------------------------------------------------

def _status(config_path: Path, *args: str, monkeypatch: pytest.MonkeyPatch, as_json: bool = False) -> str:
    import argparse

    from dtstore import clock

    monkeypatch.setattr(clock, "now", lambda: NOW)
    buffer = io.StringIO()
    out = Output(as_json=as_json, stream=buffer, utc=True)
    namespace = argparse.Namespace(config=str(config_path), jobs=list(args))
    assert cmd_status.run(namespace, out) == 0
    return buffer.getvalue()


def test_status_text(config: Config, config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = StateDir(config.agent.state_dir)
    for record in history():
        state.append(record)
    text = _status(config_path, monkeypatch=monkeypatch)
    assert text.splitlines() == [
        "shop (backup)",
        "  last run        2026-12-02 06:45:05Z  log, ok, 2.0 KiB added, 10.0 s",
        "  last success    2026-12-02 06:45:05Z",
        "  skipped         2026-12-02 07:00:00Z (the previous run was still going)",
        "  next run        log 2026-12-02 07:15:00Z; diff 2026-12-03 01:00:00Z; full 2026-12-06 01:00:00Z",
        "  recovery point  2026-12-02 06:45:02Z, 14m 58s ago (rpo 30m: ok)",
        "  last drill      2026-12-02 04:05:00Z  ok, restore 240.5 s, 300.0 s in all (shop-drill)",
        "",
        "files (backup)",
        "  last run        2026-12-02 03:01:00Z  full, failed, 10.0 s: permission denied",
        "  last success    never",
        "  next run        full 2026-12-03 03:00:00Z",
        "  recovery point  none yet (rpo 1d 12h)",
        "",
        "shop-drill (drill)",
        "  last run        2026-12-02 04:05:00Z  ok, restore 240.5 s, 300.0 s in all",
        "  next run        drill 2026-12-05 04:00:00Z",
    ]


def test_status_json_and_a_job_filter(config: Config, config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = StateDir(config.agent.state_dir)
    for record in history():
        state.append(record)
    lines = [json.loads(line) for line in _status(config_path, "shop", monkeypatch=monkeypatch,
                                                   as_json=True).splitlines()]
    assert [line["type"] for line in lines] == ["job", "summary"]
    assert lines[0]["job"] == "shop" and lines[0]["rpo_ok"] is True
    assert lines[1] == {"type": "summary", "jobs": 1, "time": "2026-12-02T07:00:00Z", "rpo_missed": 0}


def test_status_of_an_unknown_job_is_a_usage_error(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dtstore.errors import UsageError

    with pytest.raises(UsageError, match="no job nope"):
        _status(config_path, "nope", monkeypatch=monkeypatch)


def test_status_through_main(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dtstore.cli.main import main

    assert main(["status", "--config", str(config_path), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line.get("job") for line in lines[:-1]] == ["shop", "files", "shop-drill"]
    assert lines[-1]["type"] == "summary"
