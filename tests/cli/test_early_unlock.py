"""The repository's KDF starts before the command's modules load (``_repo.unlock_early``), and a
command only ever takes that early opening when it is of its own repository, password and limit."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dtstore import unlocking
from dtstore.cli import _repo
from dtstore.cli.main import COMMAND_NAMES, REPOSITORY_COMMANDS
from dtstore.crypto import scrypt
from dtstore.crypto.keys import BackupKey, KeySlotInfo, MasterKey
from dtstore.errors import RepositoryNotFound, UsageError, WrongPassword
from dtstore.storage.base import BlobStore
from tests.cli.conftest import Result
from tests.helpers import PASSWORD

CLI_DIR = Path(_repo.__file__).parent


def test_early_opening_is_taken_for_the_same_repository_and_password(repo_dir: Path) -> None:
    _repo.unlock_early(["snapshots", "--repo", str(repo_dir)])
    assert PASSWORD not in repr(_repo._early), "no password in a repr that could reach a log"
    unlocking = _repo._claim_early(str(repo_dir), PASSWORD.encode(), None)
    assert unlocking is not None
    assert unlocking.result().store is unlocking.store
    assert _repo._claim_early(str(repo_dir), PASSWORD.encode(), None) is None, "taken once only"


@pytest.mark.parametrize(("url_of", "secret", "limit"), [
    (lambda r: str(r), b"another password", None),
    (lambda r: str(r) + "-other", PASSWORD.encode(), None),
    (lambda r: str(r), PASSWORD.encode(), 100.0),
])
def test_early_opening_of_anything_else_is_not_taken(repo_dir: Path, url_of: Callable[[Path], str],
                                                     secret: bytes, limit: float | None) -> None:
    _repo.unlock_early(["check", "-r", str(repo_dir)])
    assert _repo._claim_early(url_of(repo_dir), secret, limit) is None


def test_repository_from_the_environment_and_options_after_the_command(repo_dir: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTSTORE_REPOSITORY", str(repo_dir))
    _repo.unlock_early(["prune", "--dry-run", "--limit-upload=50"])
    assert _repo._claim_early(str(repo_dir), PASSWORD.encode(), 50.0) is not None


def test_nothing_starts_without_a_password_that_needs_no_asking(repo_dir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A password command is run once, by the command itself; a prompt is never shown early."""
    marker = tmp_path / "ran"
    monkeypatch.setenv("DTSTORE_PASSWORD_COMMAND", f"touch {marker}; echo {PASSWORD}")
    _repo.unlock_early(["snapshots", "--repo", str(repo_dir)])
    assert _repo._early is None
    assert not marker.exists()
    monkeypatch.delenv("DTSTORE_PASSWORD_COMMAND")
    monkeypatch.delenv("DTSTORE_PASSWORD")
    _repo.unlock_early(["snapshots", "--repo", str(repo_dir)])
    assert _repo._early is None


def test_help_starts_nothing(repo_dir: Path) -> None:
    _repo.unlock_early(["snapshots", "--repo", str(repo_dir), "--help"])
    assert _repo._early is None


def test_errors_are_reported_by_the_command_as_before(cli: Callable[..., Result], repo_dir: Path,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = cli("snapshots", "--repo", str(tmp_path / "nothing"))
    assert missing.code == RepositoryNotFound.exit_code
    assert "there is no dtstore repository" in missing.err
    monkeypatch.setenv("DTSTORE_PASSWORD", "wrong")
    wrong = cli("snapshots", "--repo", str(repo_dir))
    assert wrong.code == WrongPassword.exit_code
    assert _repo._early is None, "main forgets an opening nobody took"


def test_no_opening_is_left_running_when_a_command_fails_before_opening(
        cli: Callable[..., Result], repo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread still importing or in the KDF when the interpreter exits aborts the process (exit
    134, "FATAL: exception not rethrown") instead of the command's own error."""
    real_unlock = unlocking.unlock

    def slow_unlock(store: BlobStore, password: bytes) -> tuple[MasterKey | BackupKey, KeySlotInfo]:
        time.sleep(0.3)  # a KDF still running when the command has already failed
        return real_unlock(store, password)

    monkeypatch.setattr(unlocking, "unlock", slow_unlock)
    failed = cli("snapshot", "--repo", str(repo_dir), str(tmp_path / "no-such-file"))
    assert failed.code == UsageError.exit_code
    running = {t.name for t in threading.enumerate()}
    assert not running & {"dtstore-open", "dtstore-unlock", "dtstore-kdf"}


def test_an_opening_of_another_repository_is_waited_for_too(repo_dir: Path, tmp_path: Path) -> None:
    _repo.unlock_early(["check", "--repo", str(repo_dir)])
    assert _repo._claim_early(str(tmp_path / "elsewhere"), PASSWORD.encode(), None) is None
    _repo.discard_early()
    assert not {t.name for t in threading.enumerate()} & {"dtstore-open", "dtstore-unlock", "dtstore-kdf"}


def test_a_local_repository_s_kdf_runs_once_on_the_thread_started_first(
        cli: Callable[..., Result], repo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    real = scrypt._scrypt

    def counted(*inputs: Any) -> bytes:
        ran.append(threading.current_thread().name)
        return real(*inputs)

    monkeypatch.setattr(scrypt, "_scrypt", counted)
    assert cli("snapshots", "--repo", str(repo_dir)).code == 0
    assert ran == ["dtstore-kdf"]


def test_starting_the_kdf_loads_neither_storage_nor_crypto_libraries(repo_dir: Path) -> None:
    """It starts before them so that it runs while they import (~70 ms of a command's start)."""
    code = ("import sys\n"
            "from dtstore import early\n"
            f"assert early.start_kdf({str(repo_dir)!r}, {PASSWORD.encode()!r})\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('cryptography', 'msgpack', 'lmdb')\n"
            "               or m.startswith(('dtstore.storage.local', 'dtstore.crypto.keys', 'dtstore.unlocking')))\n"
            "early.settle()\n"
            "sys.exit(', '.join(heavy) or None)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_repository_commands_are_the_ones_that_open_the_repository() -> None:
    """The list main.py keeps by hand (it must be known before a command's module is imported)."""
    opening = {name for name in COMMAND_NAMES
               if re.search(r"\bopen_repo\(args\)", (CLI_DIR / f"cmd_{name.replace('-', '_')}.py").read_text())}
    assert opening == REPOSITORY_COMMANDS
