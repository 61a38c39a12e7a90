"""Prometheus metrics (spec/agent.md §7): :func:`render` (pure), the textfile writer, the ``/metrics``
endpoint.

Text exposition format 0.0.4: per family a ``# HELP`` and a ``# TYPE … gauge`` line, then its
samples, families in a fixed order, samples in the order of the configured jobs.  A sample whose
value is unknown (no run yet, no recovery point yet) is left out rather than written as 0.  The
textfile is replaced atomically (node_exporter's textfile collector reads only ``*.prom``; the
temporary file is ``.NAME.*.tmp`` beside it).  The endpoint is a small ``http.server`` in a daemon
thread, bound to the configured address, rendering afresh for every request.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dtstore import clock
from dtstore.agent.state import StateDir, atomic_write
from dtstore.agent.status import JobStatus, current

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    labels: tuple[str, ...]


FAMILIES = (
    Family("dtstore_job_last_run_timestamp_seconds", "When the last run of the job in this mode finished.",
           ("job", "mode")),
    Family("dtstore_job_last_success_timestamp_seconds", "When the last successful run of the job finished.",
           ("job",)),
    Family("dtstore_job_last_run_duration_seconds", "How long the last run of the job in this mode took.",
           ("job", "mode")),
    Family("dtstore_job_last_run_bytes_added", "Bytes the job's last run added to the repository.", ("job",)),
    Family("dtstore_job_last_run_success", "1 if the job's last run succeeded (ok or partial), else 0.", ("job",)),
    Family("dtstore_job_recovery_point_age_seconds", "Age of the newest restorable point of the job's source.",
           ("job",)),
    Family("dtstore_job_rpo_seconds", "The job's recovery point objective.", ("job",)),
    Family("dtstore_drill_last_success", "1 if the drill job's last drill succeeded, else 0.", ("job",)),
    Family("dtstore_drill_last_duration_seconds", "How long the drill job's last drill took.", ("job",)),
    Family("dtstore_drill_last_timestamp_seconds", "When the drill job's last drill finished.", ("job",)),
    Family("dtstore_drill_last_restore_seconds", "The restore time (measured recovery time) of the last drill.",
           ("job",)),
)


def _samples(status: JobStatus) -> dict[str, list[tuple[tuple[str, ...], float]]]:
    """Family name → [(label values, value)] of one job."""
    out: dict[str, list[tuple[tuple[str, ...], float]]] = {}

    def add(family: str, labels: tuple[str, ...], value: float | None) -> None:
        if value is not None:
            out.setdefault(family, []).append((labels, value))

    job = status.job
    if status.kind == "drill":
        drill = status.last_drill or status.last_run
        if drill is not None:
            add("dtstore_drill_last_success", (job,), 1.0 if drill.ok else 0.0)
            add("dtstore_drill_last_duration_seconds", (job,), drill.duration_seconds)
            add("dtstore_drill_last_timestamp_seconds", (job,), _ts(drill.time))
            add("dtstore_drill_last_restore_seconds", (job,), drill.restore_seconds)
        return out
    for mode, info in sorted(status.last_by_mode.items()):
        add("dtstore_job_last_run_timestamp_seconds", (job, mode), _ts(info.time))
        add("dtstore_job_last_run_duration_seconds", (job, mode), info.duration_seconds)
    add("dtstore_job_last_success_timestamp_seconds", (job,), _ts(status.last_success))
    if status.last_run is not None:
        add("dtstore_job_last_run_bytes_added", (job,), status.last_run.bytes_added)
        add("dtstore_job_last_run_success", (job,), 1.0 if status.last_run.ok else 0.0)
    if status.recovery_point_age is not None:
        add("dtstore_job_recovery_point_age_seconds", (job,), status.recovery_point_age.total_seconds())
    if status.rpo is not None:
        add("dtstore_job_rpo_seconds", (job,), status.rpo.total_seconds())
    return out


def render(statuses: Iterable[JobStatus]) -> str:
    """The exposition text of every job's status (families without samples are left out)."""
    per_job = [_samples(s) for s in statuses]
    lines: list[str] = []
    for family in FAMILIES:
        samples = [sample for job in per_job for sample in job.get(family.name, ())]
        if not samples:
            continue
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} gauge")
        for labels, value in samples:
            pairs = ",".join(f'{k}="{escape_label(v)}"' for k, v in zip(family.labels, labels, strict=True))
            lines.append(f"{family.name}{{{pairs}}} {format_value(value)}")
    return "".join(line + "\n" for line in lines)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """Integers without a fraction (``1800``), others as Python's shortest repr, ``NaN``/``+Inf``/``-Inf``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _ts(moment: dt.datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def render_state(config: Any, state: StateDir, *, now: dt.datetime) -> str:
    """:func:`render` of the configuration's jobs as the state folder tells them at ``now``."""
    return render(current(config, state, now))


def write_text(path: Path, text: str) -> None:
    """Replace the textfile atomically (readable by the node exporter: mode 0644)."""
    atomic_write(Path(path), text.encode("utf-8"), mode=0o644)


def write_textfile(path: Path, config: Any, state: StateDir, *, now: dt.datetime) -> str:
    """Render the metrics of ``config``'s jobs and write them to ``path`` atomically; returns the text."""
    text = render_state(config, state, now=now)
    write_text(path, text)
    return text


# --- the /metrics endpoint ------------------------------------------------------------------------------------

def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9898"``, ``"[::1]:9898"``, ``"localhost:9898"`` or ``":9898"`` (every interface) →
    (host, port); ValueError for anything else."""
    text = listen.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"bad metrics_listen {listen!r}: use HOST:PORT, e.g. 127.0.0.1:9898")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"bad metrics_listen {listen!r}: port out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"bad metrics_listen {listen!r}: write an IPv6 address in brackets, e.g. [::1]:9898")
    return host, port


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], produce: Callable[[], str]) -> None:
        import socket

        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.produce = produce
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10
    server_version = "dtstore-metrics"

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/metrics":
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics\n", body)
            return
        try:
            data = self.server.produce().encode("utf-8")
        except Exception as exc:  # an error page, never a dead endpoint
            self._send(500, "text/plain; charset=utf-8", f"cannot render metrics: {type(exc).__name__}\n".encode(),
                       body)
            return
        self._send(200, CONTENT_TYPE, data, body)

    def _send(self, code: int, content_type: str, data: bytes, body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # the library never prints
        pass


class MetricsServer:
    """``/metrics`` on ``listen`` in a daemon thread; ``produce`` gives the text for each request.
    ``port`` is the bound port (useful with port 0); :meth:`close` stops it and frees the socket."""

    def __init__(self, listen: str, produce: Callable[[], str]) -> None:
        self.listen = listen
        host, port = parse_listen(listen)
        self._server = _Server((host, port), produce)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="dtstore-metrics", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    stop = close

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(listen: str, config: Callable[[], Any], state: Callable[[], StateDir | None], *,
          now: Callable[[], dt.datetime] = clock.now) -> MetricsServer:
    """The agent's endpoint: every request renders the current config's jobs from the state folder
    (callables, so a reloaded configuration is picked up; no state folder yet → an empty page)."""
    def produce() -> str:
        folder = state()
        return render_state(config(), folder, now=now()) if folder is not None else ""

    return MetricsServer(listen, produce)


__all__: Sequence[str] = ("CONTENT_TYPE", "FAMILIES", "MetricsServer", "escape_label", "format_value",
                          "parse_listen", "render", "render_state", "serve", "write_text", "write_textfile")
