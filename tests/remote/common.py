"""Shared by the remote tests: repository URLs for local/S3/SFTP, CLI child processes, sizes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import dtstore
from dtstore.content.segments import list_packs
from tests.helpers import PASSWORD, restored, tree_state

BACKENDS = ["local", "s3", "sftp"]


def repo_url_for(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh repository location of the given kind; the environment is set for this process and,
    through ``child_env``, for CLI children."""
    if kind == "local":
        return str(tmp_path / "repo")
    if kind == "s3":
        url: str = request.getfixturevalue("s3_env")
        return url
    server: Any = request.getfixturevalue("sftp_server")
    monkeypatch.setenv("DTSTORE_SFTP_KEY", str(server.client_key))
    monkeypatch.setenv("DTSTORE_SFTP_KNOWN_HOSTS", str(server.known_hosts))
    sftp_url: str = server.url(f"repo-{uuid.uuid4().hex[:8]}")
    return sftp_url


def child_env(cache_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of one CLI child: this process's (AWS_*, DTSTORE_SFTP_*), its own cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTSTORE_PASSWORD")}
    env.update(DTSTORE_PASSWORD=PASSWORD, DTSTORE_CACHE_DIR=str(cache_dir), **extra)
    env.pop("DTSTORE_REPOSITORY", None)
    return env


def cli_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "dtstore.cli", *args]


@dataclass
class CliRun:
    code: int
    out: str
    err: str

    def summary(self) -> dict[str, Any]:
        for line in self.out.splitlines():
            obj = json.loads(line)
            if obj.get("type") == "summary":
                return dict(obj)
        raise AssertionError(f"no summary line (exit {self.code}):\n{self.out}\n{self.err}")


def finish(proc: subprocess.Popen[bytes], timeout: float = 120) -> CliRun:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"dtstore did not finish in {timeout}s:\n{err.decode(errors='replace')}") from None
    return CliRun(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def start_cli(args: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cli_args(*args), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_cli(args: Sequence[str], env: dict[str, str], timeout: float = 120) -> CliRun:
    return finish(start_cli(args, env), timeout)


def write_random(path: Path, size: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def pack_bytes(repo: dtstore.Repository) -> int:
    """The repository's size: the sum of its pack sizes (data and metadata)."""
    return sum(info.size for info in list_packs(repo.store).values())


def assert_tree_equal(target: Path, source: Path) -> None:
    """What a restore into ``target`` made of ``source`` equals it, byte for byte and with metadata."""
    got = tree_state(restored(target, source))
    want = tree_state(source)
    assert got.keys() == want.keys(), f"{source}: different entries"
    bad = [path for path in want if got[path] != want[path]]
    assert not bad, f"{source} restores differently: {bad[:5]}"


def assert_restores(repo: dtstore.Repository, snapshot: dtstore.Snapshot, source: Path, target: Path) -> None:
    """Restore ``snapshot`` into ``target`` with the library and compare it to ``source``."""
    repo.restore(snapshot, target)
    assert_tree_equal(target, source)
