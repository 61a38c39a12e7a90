"""A private PostgreSQL cluster for the tests, run as the unprivileged ``postgres`` user.

PostgreSQL refuses to run as root, and its ``archive_command`` runs as the server's own user, so
everything the server starts must be usable by ``postgres``: the fixture makes (once) a venv with
Debian's ``/usr/bin/python3`` in a world-readable place (``DTSTORE_PG_VENV``, default
``/opt/dtstore-venv``, which ``.ci/run`` builds) with this checkout installed, and keeps the
cluster, its unix socket, the repository and a 0600 password file in a temporary folder owned by
``postgres``.  Every dtstore command that writes to the repository runs as ``postgres`` too (the
way the docs set it up), so every file in the repository stays readable by the archiver.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import missing

ROOT = Path(__file__).resolve().parents[2]
BINDIR = Path(os.environ.get("DTSTORE_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
VENV = Path(os.environ.get("DTSTORE_PG_VENV", "/opt/dtstore-venv"))
USER = "postgres"


def available() -> str | None:
    """Why the PostgreSQL tests cannot run here (None: they can)."""
    if not (BINDIR / "initdb").exists():
        return f"PostgreSQL binaries not found in {BINDIR}"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return "no postgres user"
    if os.geteuid() != 0:
        return "the PostgreSQL tests run as root (they start the server as the postgres user)"
    return None


def _as_postgres() -> dict[str, Any]:
    entry = pwd.getpwnam(USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def postgres_env(**extra: str) -> dict[str, str]:
    entry = pwd.getpwnam(USER)
    env = {"PATH": f"{VENV}/bin:{BINDIR}:/usr/bin:/bin", "HOME": entry.pw_dir, "LANG": "C.UTF-8", "TZ": "UTC"}
    env.update(extra)
    return env


def run_as_postgres(argv: list[str], *, env: dict[str, str], cwd: Path | str = "/tmp", check: bool = True,
                    timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, env=env, cwd=str(cwd), capture_output=True, text=True, timeout=timeout,
                          check=False, **_as_postgres())
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} exited {done.returncode}: {done.stdout[-2000:]} {done.stderr[-3000:]}")
    return done


def ensure_venv() -> Path:
    """A venv the postgres user can run, with this checkout importable (editable when postgres can
    read the checkout, else a copy installed afresh).  ``.ci/run`` builds it once; here it is built
    if missing (about 20 s)."""
    python = VENV / "bin" / "python"
    check = subprocess.run(["test", "-r", str(ROOT / "pyproject.toml")], check=False, **_as_postgres())
    readable = check.returncode == 0
    if not python.exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import dtstore, sys; print(dtstore.__file__)"],
                           capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"}, cwd="/")
    here = str(ROOT / "dtstore" / "__init__.py")
    stale = probe.returncode != 0 or not (VENV / "bin" / "dtstore-wal-push").exists()
    if stale or (readable and probe.stdout.strip() != here) or not readable:
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, *(["-e", str(ROOT)] if readable else ["--force-reinstall", "--no-deps", str(ROOT)])],
                       check=True, capture_output=True)
        if not readable:  # dependencies of a fresh copy
            subprocess.run([*pip, str(ROOT)], check=True, capture_output=True)
    if readable:  # the server's user cannot write __pycache__ in the checkout: compile once, as root
        subprocess.run(["/usr/bin/python3", "-m", "compileall", "-q", "-j", "2", str(ROOT / "dtstore"),
                        str(ROOT / "connectors"), str(ROOT / "cli")], check=False, capture_output=True)
    return VENV / "bin" / "dtstore"


@dataclass
class Cluster:
    """A running cluster: ``psql``, ``dtstore`` as postgres, stop/start."""

    base: Path
    port: int
    dtstore: Path
    data: Path = field(init=False)
    repo: Path = field(init=False)
    password_file: Path = field(init=False)
    spool: Path = field(init=False)

    def __post_init__(self) -> None:
        self.data = self.base / "data"
        self.repo = self.base / "repo"
        self.password_file = self.base / "password"
        self.spool = self.base / "spool"

    @property
    def socket_dir(self) -> Path:
        return self.base

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/?host={self.socket_dir}&port={self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        return postgres_env(DTSTORE_REPOSITORY=str(self.repo), DTSTORE_PASSWORD_FILE=str(self.password_file),
                            DTSTORE_WAL_SPOOL=str(self.spool), **extra)

    def dt(self, *args: str, check: bool = True, cwd: Path | str = "/tmp") -> subprocess.CompletedProcess[str]:
        """dtstore as the postgres user, with the venv's interpreter."""
        return run_as_postgres([str(self.dtstore), *args], env=self.env(), check=check, cwd=cwd)

    def psql(self, sql: str, *, port: int | None = None, socket_dir: Path | None = None, db: str = "postgres") -> str:
        done = run_as_postgres([str(BINDIR / "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                                "-h", str(socket_dir or self.socket_dir), "-p", str(port or self.port),
                                "-d", db, "-c", sql], env=postgres_env())
        return done.stdout.strip()

    def pgbench(self, *args: str) -> str:
        done = run_as_postgres(["/usr/bin/pgbench", "-h", str(self.socket_dir), "-p", str(self.port), *args,
                                "postgres"], env=postgres_env())
        return done.stdout

    def pg_ctl(self, data: Path, *args: str, env: dict[str, str] | None = None, log: Path | None = None) -> None:
        argv = [str(BINDIR / "pg_ctl"), "-D", str(data), "-w", "-t", "120", *args]
        if log is not None:
            argv[3:3] = ["-l", str(log)]
        run_as_postgres(argv, env=env or self.env())

    def start(self) -> None:
        self.pg_ctl(self.data, "start", log=self.base / "server.log")

    def stop(self, data: Path | None = None) -> None:
        self.pg_ctl(data or self.data, "-m", "fast", "stop")

    def switch_and_wait(self, timeout: float = 60) -> str:
        """pg_switch_wal(), then wait until the archiver has archived the segment it closed."""
        name = self.psql("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            if done and done[:24] >= name:
                return name
            time.sleep(0.1)
        raise AssertionError(f"{name} was not archived within {timeout} s: "
                             f"{self.psql('SELECT * FROM pg_stat_archiver')}")


def chown_postgres(path: Path) -> None:
    entry = pwd.getpwnam(USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def make_cluster(dtstore: Path, *, settings: str = "", push_args: str = "") -> Iterator[Cluster]:
    base = Path(tempfile.mkdtemp(prefix="dtstore-pg-", dir="/tmp"))
    chown_postgres(base)
    os.chmod(base, 0o700)
    cluster = Cluster(base, random.randint(20000, 29999), dtstore)
    cluster.password_file.write_text("pg-test-password\n")
    os.chmod(cluster.password_file, 0o600)
    chown_postgres(cluster.password_file)
    env = cluster.env()
    run_as_postgres([str(dtstore), "init"], env=env)
    run_as_postgres([str(BINDIR / "initdb"), "-D", str(cluster.data), "-A", "trust", "-U", "postgres",
                     "--no-sync", "-E", "UTF8", "--locale", "C"], env=env)
    with open(cluster.data / "postgresql.conf", "a") as conf:
        conf.write(f"""
listen_addresses = ''
unix_socket_directories = '{cluster.socket_dir}'
port = {cluster.port}
wal_level = replica
archive_mode = on
archive_command = '{dtstore}-wal-push {push_args}%p'
shared_buffers = 64MB
max_wal_size = 512MB
checkpoint_timeout = 30min
log_min_messages = warning
{settings}
""")
    cluster.start()
    try:
        yield cluster
    finally:
        for data in sorted(base.glob("*")):
            if (data / "postmaster.pid").exists():
                with contextlib.suppress(AssertionError, subprocess.SubprocessError):
                    run_as_postgres([str(BINDIR / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                                    env=env)
        _stop_pushers(cluster.spool)
        shutil.rmtree(base, ignore_errors=True)


def _stop_pushers(spool: Path) -> None:
    """End the pusher this cluster's archiver started (by the pid it logged, never by name)."""
    log = spool / "pushd.log"
    if not log.exists():
        return
    for line in log.read_text().splitlines():
        if "listening on" in line and line.startswith("["):
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.kill(int(line[1:line.index("]")]), 15)


@pytest.fixture(scope="session")
def pg_dtstore() -> Path:
    reason = available()
    if reason:
        missing(reason)
    return ensure_venv()


__all__ = ["BINDIR", "VENV", "Cluster", "available", "chown_postgres", "ensure_venv", "make_cluster",
           "pg_dtstore", "postgres_env", "run_as_postgres", "sys"]
