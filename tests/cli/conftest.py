"""Fixtures for the CLI tests: a cheap-KDF repository made with the library, a clean environment, and
helpers to run ``dtstore`` in-process (``main([...])``) or as ``python -m dtstore.cli``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dtstore.chunking import ChunkerParams
from dtstore.cli.main import main
from tests.helpers import PASSWORD, SMALL_CHUNKER_ARGS, SMALL_PACK, init_repo

_OUR_VARIABLES = ("DTSTORE_REPOSITORY", "DTSTORE_PASSWORD", "DTSTORE_PASSWORD_FILE", "DTSTORE_PASSWORD_COMMAND",
                  "DTSTORE_CACHE_DIR")


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of every dtstore run: password in DTSTORE_PASSWORD, a private cache."""
    for name in _OUR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DTSTORE_PASSWORD", PASSWORD)
    monkeypatch.setenv("DTSTORE_CACHE_DIR", str(tmp_path / "cache"))
    return dict(os.environ)


@pytest.fixture
def repo_dir(tmp_path: Path, env: dict[str, str]) -> Path:
    path = tmp_path / "repo"
    init_repo(str(path), Path(env["DTSTORE_CACHE_DIR"]), chunker=ChunkerParams(*SMALL_CHUNKER_ARGS),
              pack_size=SMALL_PACK).close()
    return path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], env: dict[str, str]) -> Callable[..., Result]:
    """Run ``dtstore ARGS`` in this process; returns the exit code and what it printed."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def run_dtstore(*args: str, env: dict[str, str], stdin: bytes | None = None,
                cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m dtstore.cli ARGS`` as a separate process."""
    return subprocess.run([sys.executable, "-m", "dtstore.cli", *args], env=env, input=stdin,
                          capture_output=True, timeout=120, cwd=cwd,
                          stdin=None if stdin is not None else subprocess.DEVNULL)
