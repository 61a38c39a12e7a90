"""Prometheus metrics: the exact exposition text, the atomic textfile, /metrics over HTTP on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dtstore.agent import metrics
from dtstore.agent.config import Config, load
from dtstore.agent.metrics import MetricsServer, escape_label, format_value, parse_listen, render
from dtstore.agent.state import StateDir, iso
from dtstore.agent.status import JobStatus, RunInfo

NOW = dt.datetime(2026, 12, 2, 7, 0, tzinfo=dt.UTC)
T_LOG = dt.datetime(2026, 12, 2, 6, 45, 5, 250000, tzinfo=dt.UTC)
T_FULL = dt.datetime(2026, 12, 2, 1, 0, 30, tzinfo=dt.UTC)
T_DRILL = dt.datetime(2026, 11, 28, 4, 5, tzinfo=dt.UTC)


def info(job: str, time: dt.datetime, mode: str | None, result: str = "ok", *, kind: str = "backup",
         bytes_added: int | None = 2048, duration: float | None = 12.5, restore: float | None = None) -> RunInfo:
    return RunInfo(job=job, time=time, started_at=time, kind=kind, mode=mode, requested_mode=mode, result=result,
                   bytes_added=bytes_added, duration_seconds=duration, restore_seconds=restore)


def sample_statuses() -> list[JobStatus]:
    log = info("shop", T_LOG, "log")
    full = info("shop", T_FULL, "full", bytes_added=5 << 20, duration=30.0)
    drill = info("shop-drill", T_DRILL, None, kind="drill", bytes_added=None, duration=300.25, restore=240.5)
    failed = info("fi\"les\\x", T_FULL, "full", "failed", bytes_added=None, duration=3.0)
    return [
        JobStatus(job="shop", kind="backup", last_run=log, last_success=T_LOG, last_by_mode={"log": log, "full": full},
                  recovery_point=T_LOG, recovery_point_age=NOW - T_LOG, rpo=dt.timedelta(minutes=30),
                  last_drill=drill),
        JobStatus(job='fi"les\\x', kind="backup", last_run=failed, last_by_mode={"full": failed},
                  rpo=dt.timedelta(hours=36)),
        JobStatus(job="new", kind="backup", rpo=dt.timedelta(hours=2)),
        JobStatus(job="shop-drill", kind="drill", last_run=drill, last_success=T_DRILL, last_drill=drill),
    ]


GOLDEN = """\
# HELP dtstore_job_last_run_timestamp_seconds When the last run of the job in this mode finished.
# TYPE dtstore_job_last_run_timestamp_seconds gauge
dtstore_job_last_run_timestamp_seconds{job="shop",mode="full"} 1796173230
dtstore_job_last_run_timestamp_seconds{job="shop",mode="log"} 1796193905.25
dtstore_job_last_run_timestamp_seconds{job="fi\\"les\\\\x",mode="full"} 1796173230
# HELP dtstore_job_last_success_timestamp_seconds When the last successful run of the job finished.
# TYPE dtstore_job_last_success_timestamp_seconds gauge
dtstore_job_last_success_timestamp_seconds{job="shop"} 1796193905.25
# HELP dtstore_job_last_run_duration_seconds How long the last run of the job in this mode took.
# TYPE dtstore_job_last_run_duration_seconds gauge
dtstore_job_last_run_duration_seconds{job="shop",mode="full"} 30
dtstore_job_last_run_duration_seconds{job="shop",mode="log"} 12.5
dtstore_job_last_run_duration_seconds{job="fi\\"les\\\\x",mode="full"} 3
# HELP dtstore_job_last_run_bytes_added Bytes the job's last run added to the repository.
# TYPE dtstore_job_last_run_bytes_added gauge
dtstore_job_last_run_bytes_added{job="shop"} 2048
# HELP dtstore_job_last_run_success 1 if the job's last run succeeded (ok or partial), else 0.
# TYPE dtstore_job_last_run_success gauge
dtstore_job_last_run_success{job="shop"} 1
dtstore_job_last_run_success{job="fi\\"les\\\\x"} 0
# HELP dtstore_job_recovery_point_age_seconds Age of the newest restorable point of the job's source.
# TYPE dtstore_job_recovery_point_age_seconds gauge
dtstore_job_recovery_point_age_seconds{job="shop"} 894.75
# HELP dtstore_job_rpo_seconds The job's recovery point objective.
# TYPE dtstore_job_rpo_seconds gauge
dtstore_job_rpo_seconds{job="shop"} 1800
dtstore_job_rpo_seconds{job="fi\\"les\\\\x"} 129600
dtstore_job_rpo_seconds{job="new"} 7200
# HELP dtstore_drill_last_success 1 if the drill job's last drill succeeded, else 0.
# TYPE dtstore_drill_last_success gauge
dtstore_drill_last_success{job="shop-drill"} 1
# HELP dtstore_drill_last_duration_seconds How long the drill job's last drill took.
# TYPE dtstore_drill_last_duration_seconds gauge
dtstore_drill_last_duration_seconds{job="shop-drill"} 300.25
# HELP dtstore_drill_last_timestamp_seconds When the drill job's last drill finished.
# TYPE dtstore_drill_last_timestamp_seconds gauge
dtstore_drill_last_timestamp_seconds{job="shop-drill"} 1795838700
# HELP dtstore_drill_last_restore_seconds The restore time (measured recovery time) of the last drill.
# TYPE dtstore_drill_last_restore_seconds gauge
dtstore_drill_last_restore_seconds{job="shop-drill"} 240.5
"""


def test_render_is_exactly_the_exposition_text() -> None:
    assert render(sample_statuses()) == GOLDEN


def test_render_nothing_known_is_empty() -> None:
    assert render([]) == ""
    assert render([JobStatus(job="x", kind="backup")]) == ""


def test_render_parses_as_prometheus_text() -> None:
    """Every sample line is NAME{LABELS} VALUE and every family is contiguous, after its HELP and TYPE."""
    seen: list[str] = []
    for line in render(sample_statuses()).splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in seen
            seen.append(name)
        elif line.startswith("# TYPE "):
            assert line == f"# TYPE {seen[-1]} gauge"
        else:
            name, rest = line.split("{", 1)
            labels, value = rest.rsplit("} ", 1)
            assert name == seen[-1] and float(value) == float(value)
            assert labels.startswith('job="')


def test_values_and_labels() -> None:
    assert format_value(1800.0) == "1800" and format_value(0.1) == "0.1" and format_value(1e20) == "1e+20"
    assert format_value(float("nan")) == "NaN" and format_value(float("-inf")) == "-Inf"
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9898") == ("127.0.0.1", 9898)
    assert parse_listen("[::1]:9898") == ("::1", 9898)
    assert parse_listen(":9898") == ("", 9898)
    for bad in ("9898", "host:", "::1:9898", "h:99999"):
        with pytest.raises(ValueError, match="metrics_listen"):
            parse_listen(bad)


# --- the textfile --------------------------------------------------------------------------------------------------

CONFIG = """
[agent]
state_dir = "{state}"
metrics_textfile = "{textfile}"
timezone = "UTC"
[repositories.main]
url = "/srv/repo"
password_env = "DTSTORE_TEST_PW"
[jobs.files]
repository = "main"
source = "/etc"
schedule = {{ full = "every 1h" }}
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "dtstore.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state", textfile=tmp_path / "prom" / "dtstore.prom"))
    return load(path)


def _record(finished: dt.datetime) -> dict[str, object]:
    return {"type": "run", "job": "files", "kind": "backup", "mode": "full", "requested_mode": "full",
            "finished_at": iso(finished), "result": "ok", "duration_seconds": 4.0, "bytes_added": 100,
            "recovery_point": iso(finished)}


def test_textfile_is_written_atomically(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    state = StateDir(config.agent.state_dir)
    state.append(_record(NOW - dt.timedelta(minutes=10)))
    path = config.agent.metrics_textfile
    assert path is not None
    text = metrics.write_textfile(path, config, state, now=NOW)
    assert path.read_text() == text
    assert 'dtstore_job_recovery_point_age_seconds{job="files"} 600\n' in text
    assert 'dtstore_job_rpo_seconds{job="files"} 7200\n' in text
    assert sorted(p.name for p in path.parent.iterdir()) == ["dtstore.prom"]
    assert path.stat().st_mode & 0o777 == 0o644

    def broken(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        metrics.write_textfile(path, config, state, now=NOW + dt.timedelta(hours=1))
    assert path.read_text() == text  # the old file, whole; no temporary left for the collector to read
    assert sorted(p.name for p in path.parent.iterdir()) == ["dtstore.prom"]


# --- /metrics --------------------------------------------------------------------------------------------------

def _get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read()


def test_metrics_endpoint_over_http() -> None:
    text = render(sample_statuses())
    with MetricsServer("127.0.0.1:0", lambda: text) as server:
        host, port = server.address
        assert host == "127.0.0.1" and port > 0
        base = f"http://127.0.0.1:{port}"
        status, content_type, body = _get(base + "/metrics")
        assert status == 200 and content_type == "text/plain; version=0.0.4; charset=utf-8"
        assert body.decode() == GOLDEN
        assert _get(base + "/metrics?x=1")[0] == 200
        status, _, body = _get(base + "/metrics", "HEAD")
        assert status == 200 and body == b""
        assert _get(base + "/")[0] == 404
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # closed: nothing listens any more


def test_metrics_endpoint_renders_afresh_and_survives_errors() -> None:
    calls = [0]

    def produce() -> str:
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("password=hunter2")  # an exception's text never reaches the page
        return f"n {calls[0]}\n"

    server = MetricsServer("127.0.0.1:0", produce)
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        assert _get(url)[2] == b"n 1\n"
        status, _, body = _get(url)
        assert status == 500 and b"hunter2" not in body and b"RuntimeError" in body
        assert _get(url)[2] == b"n 3\n"
    finally:
        server.close()
    server.close()  # twice is fine


def test_serve_renders_the_config_from_the_state_folder(config: Config) -> None:
    state = StateDir(config.agent.state_dir)
    state.append(_record(NOW - dt.timedelta(minutes=5)))
    folder: list[StateDir | None] = [None]
    server = metrics.serve("127.0.0.1:0", lambda: config, lambda: folder[0], now=lambda: NOW)
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        assert _get(url)[:1] == (200,) and _get(url)[2] == b""  # no state folder yet
        folder[0] = state
        body = _get(url)[2].decode()
        assert 'dtstore_job_recovery_point_age_seconds{job="files"} 300\n' in body
        assert server.listen == "127.0.0.1:0"
    finally:
        server.close()


def test_a_taken_address_raises(config: Config) -> None:
    with MetricsServer("127.0.0.1:0", lambda: "") as first, pytest.raises(OSError):
        MetricsServer(f"127.0.0.1:{first.port}", lambda: "")
