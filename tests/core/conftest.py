"""Fixtures for the core tests: small-chunk, small-pack repositories in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import dtstore
from dtstore.chunking import ChunkerParams
from tests.helpers import SMALL_CHUNKER_ARGS, SMALL_PACK, init_repo


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
def repo(repo_dir: Path, cache: Path) -> Iterator[dtstore.Repository]:
    r = init_repo(str(repo_dir), cache, chunker=ChunkerParams(*SMALL_CHUNKER_ARGS), pack_size=SMALL_PACK)
    try:
        yield r
    finally:
        r.close()
