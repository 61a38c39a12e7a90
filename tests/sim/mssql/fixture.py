"""Start the simulator for a test: ``python -m tests.sim.mssql --port 0 …`` as a child, a pyodbc client for it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
PASSWORD_ENV = "DTSTORE_TEST_MSSQL_PASSWORD"
DRIVER = "FreeTDS"


def available() -> str | None:
    """Why the real ODBC stack is missing (None: pyodbc and the FreeTDS driver are there)."""
    try:
        import pyodbc
    except ImportError:
        return "pyodbc is not installed (pip install 'dtstore[mssql]')"
    if DRIVER not in pyodbc.drivers():
        return "the FreeTDS ODBC driver is not registered (apt-get install tdsodbc unixodbc)"
    return None


@dataclass
class Simulator:
    port: int
    state: Path
    stage: Path
    password: str
    proc: subprocess.Popen[str]
    timezone: str
    user: str = "sa"
    _conns: list[Any] = field(default_factory=list)

    def url(self, databases: str = "", **params: str) -> str:
        query = {"driver": DRIVER, "stage": str(self.stage), **params}
        params_text = "&".join(f"{k}={v}" for k, v in query.items())
        return f"mssql://{self.user}@127.0.0.1:{self.port}/{databases}?{params_text}"

    def env(self) -> dict[str, str]:
        return {"SQLCMDPASSWORD": self.password}

    def connect(self) -> Any:
        import pyodbc

        cnxn = pyodbc.connect(f"DRIVER={{{DRIVER}}};SERVER=127.0.0.1;PORT={self.port};UID={self.user};"
                              f"PWD={self.password};TDS_Version=7.4;Encrypt=no", autocommit=True, timeout=10)
        self._conns.append(cnxn)
        return cnxn

    def sql(self, text: str) -> list[tuple[Any, ...]]:
        """Run a batch, drain it, return the first result set's rows."""
        cur = self.connect().cursor()
        try:
            cur.execute(text)
            rows: list[tuple[Any, ...]] | None = None
            while True:
                if cur.description is not None and rows is None:
                    rows = [tuple(r) for r in cur.fetchall()]
                if not cur.nextset():
                    break
            return rows or []
        finally:
            cur.close()
            self._conns.pop().close()

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        return self.sql(f"SELECT * FROM {table} ORDER BY 1")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def simulator(base: Path, *, password: str = "Sim-Pw-1234", timezone: str = "Europe/Berlin",
              step_delay: float = 0.01) -> Iterator[Simulator]:
    state, stage = base / "state", base / "stage"
    stage.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, PASSWORD_ENV: password, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.sim.mssql", "--port", "0", "--state", str(state), "--password-env",
         PASSWORD_ENV, "--timezone", timezone, "--step-delay", str(step_delay)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("ready"):
        proc.kill()
        raise RuntimeError(f"the simulator did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    sim = Simulator(int(line.split()[1]), state, stage, password, proc, timezone)
    try:
        yield sim
    finally:
        sim.stop()


__all__ = ["DRIVER", "PASSWORD_ENV", "Simulator", "available", "simulator"]
