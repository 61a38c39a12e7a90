"""Shared by the maintenance tests: small-chunk repositories, the CLI in a subprocess, tree digests."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dtstore
from dtstore.chunking import ChunkerParams
from tests.helpers import PASSWORD, init_repo

CHUNKER = ChunkerParams(4096, 16384, 65536)
PACK_SIZE = 200_000
ROOT = Path(__file__).resolve().parents[2]


def make_repo(url: str, cache: Path) -> dtstore.Repository:
    """A repository with many small chunks and packs (cheap KDF, so every CLI open is fast too)."""
    return init_repo(url, cache, chunker=CHUNKER, pack_size=PACK_SIZE)


def open_repo(url: str, cache: Path, password: str = PASSWORD) -> dtstore.Repository:
    return dtstore.Repository.open(url, password, cache_dir=cache)


def cli_env(cache: Path, password: str = PASSWORD) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DTSTORE_PASSWORD_FILE", "DTSTORE_PASSWORD_COMMAND", "DTSTORE_REPOSITORY")}
    env["DTSTORE_PASSWORD"] = password
    env["DTSTORE_CACHE_DIR"] = str(cache)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli_args(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "dtstore.cli", "--json", *args[:1], "--repo", url, *args[1:]]


def run_cli(url: str, cache: Path, *args: str, password: str = PASSWORD, timeout: float = 120,
            input: bytes | None = None) -> tuple[int, list[dict[str, Any]], str]:
    """Run ``dtstore --json ARGS[0] --repo URL ARGS[1:]``; return (exit code, JSON lines, stderr and
    the messages of JSON error lines)."""
    done = subprocess.run(cli_args(url, *args), env=cli_env(cache, password), input=input,
                          capture_output=True, timeout=timeout, check=False)
    lines = [json.loads(line) for line in done.stdout.decode().splitlines() if line.startswith("{")]
    errors = [line["message"] for line in lines if line.get("type") == "error"]
    return done.returncode, lines, "\n".join([done.stderr.decode(errors="replace"), *errors])


def summary(lines: list[dict[str, Any]]) -> dict[str, Any]:
    found = [line for line in lines if line.get("type") == "summary"]
    assert found, f"no summary line in {lines}"
    return found[-1]


def tree_digest(root: Path) -> dict[str, str]:
    """relative path → sha256 of the content (files) or "dir"."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                found[os.path.relpath(full, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


def restored_digest(repo: dtstore.Repository, snap: dtstore.Snapshot, target: Path, source: Path) -> dict[str, str]:
    """Restore ``snap`` (a snapshot of the directory ``source``) into ``target``; digest what came back."""
    repo.restore(snap, target)
    return tree_digest(target / str(source.absolute()).lstrip("/"))


def file_items(repo: dtstore.Repository, snap: dtstore.Snapshot) -> dict[str, list[bytes]]:
    """'/' + item name → chunk IDs, for every file of a snapshot."""
    return {"/" + item.name: list(item.chunks) for item in repo.list_items(snap) if item.type == "file"}
