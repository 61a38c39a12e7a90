"""Opening in two steps (issue 18 §3): the KDF runs on a thread while the caller goes on; the
errors of ``Repository.open`` come all the same, each at its step."""

from __future__ import annotations

from pathlib import Path

import pytest

import dtstore
from dtstore.errors import RepositoryNotFound, WrongPassword
from dtstore.unlocking import Unlocking
from tests.helpers import PASSWORD


def test_opened_is_the_repository_open_gives(repo: dtstore.Repository, repo_dir: Path, cache: Path) -> None:
    unlocking = Unlocking(str(repo_dir), PASSWORD.encode())
    with dtstore.Repository.opened(unlocking, cache_dir=cache) as opened:
        assert opened.config.repository_id == repo.config.repository_id
        assert opened.chunk_keys == repo.chunk_keys


def test_wrong_password_comes_from_result(repo: dtstore.Repository, repo_dir: Path) -> None:
    unlocking = Unlocking(str(repo_dir), b"not the password")
    with pytest.raises(WrongPassword, match="none of the 1 key slot"):
        unlocking.result()


def test_no_repository_is_known_at_once(tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFound, match="there is no dtstore repository at"):
        Unlocking(str(tmp_path / "nothing-here"), PASSWORD.encode())
