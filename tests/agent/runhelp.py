"""Helpers for the run, daemon and drill tests: a cheap-KDF local repository, a configuration file
written from TOML snippets, the run log, a loopback webhook receiver (no pytest fixtures here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import dtstore
from dtstore.agent import config as agent_config
from dtstore.agent.state import StateDir
from dtstore.chunking import ChunkerParams
from tests.helpers import PASSWORD, SMALL_CHUNKER_ARGS, SMALL_PACK, init_repo


@dataclass
class Agent:
    """One test's world: ``base/repo`` (a repository), ``base/password``, ``base/state``, ``base/dtstore.toml``."""

    base: Path
    cache: Path

    @property
    def repo_dir(self) -> Path:
        return self.base / "repo"

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    @property
    def config_path(self) -> Path:
        return self.base / "dtstore.toml"

    def write(self, jobs: str, *, notify: str = "", agent: str = "") -> Path:
        text = (f'[agent]\nstate_dir = "{self.state_dir}"\n{agent}\n'
                f'[repositories.main]\nurl = "{self.repo_dir}"\npassword_file = "{self.base / "password"}"\n\n'
                f"{jobs}\n{notify}\n")
        self.config_path.write_text(text)
        return self.config_path

    def config(self) -> agent_config.Config:
        return agent_config.load(self.config_path)

    def repo(self) -> dtstore.Repository:
        return dtstore.Repository.open(str(self.repo_dir), PASSWORD, cache_dir=self.cache)

    def snapshots(self) -> list[dtstore.Snapshot]:
        with self.repo() as repo:
            return sorted(repo.snapshots(), key=lambda s: (s.time, s.id))

    def records(self, job: str | None = None, types: tuple[str, ...] = ("run",)) -> list[dict[str, Any]]:
        """The run log, oldest first."""
        return list(reversed(list(StateDir(self.state_dir).records(job=job, types=types))))


def make_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Agent:
    cache = tmp_path / "cache"
    for name in ("DTSTORE_REPOSITORY", "DTSTORE_PASSWORD", "DTSTORE_PASSWORD_FILE", "DTSTORE_PASSWORD_COMMAND",
                 "DTSTORE_CONFIG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "MYSQL_PWD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DTSTORE_CACHE_DIR", str(cache))
    init_repo(str(tmp_path / "repo"), cache, chunker=ChunkerParams(*SMALL_CHUNKER_ARGS), pack_size=SMALL_PACK).close()
    (tmp_path / "password").write_text(PASSWORD + "\n")
    return Agent(tmp_path, cache)


@dataclass
class Received:
    events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, count: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.events) >= count:
                    return list(self.events)
            time.sleep(0.05)
        with self.lock:
            return list(self.events)


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, Received]]:
    """An HTTP server on 127.0.0.1 that stores every POSTed JSON body; yields (URL, received)."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with received.lock:
                received.events.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def defaults_file(path: Path, password: str | None) -> Path:
    """A MySQL option file holding the password, so no password is in the URL, argv or environment."""
    path.write_text(f"[client]\npassword={password or ''}\n")
    path.chmod(0o600)
    return path
