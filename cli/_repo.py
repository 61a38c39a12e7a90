"""Where the repository is and how its password is found; the only place that prompts."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dtstore import early as early_work
from dtstore.errors import UsageError

if TYPE_CHECKING:
    from dtstore import Repository
    from dtstore.unlocking import Unlocking


def repo_url(args: argparse.Namespace) -> str:
    url = args.repo or os.environ.get("DTSTORE_REPOSITORY")
    if not url:
        raise UsageError("no repository given: use --repo URL or set DTSTORE_REPOSITORY")
    return str(url)


def password(*, confirm: bool = False, prefix: str = "DTSTORE_", label: str = "repository password: ") -> str:
    """DTSTORE_PASSWORD_FILE, then DTSTORE_PASSWORD_COMMAND, then DTSTORE_PASSWORD, then a prompt.

    ``prefix`` names the variables of another repository's password: ``DTSTORE_FROM_`` (the source of
    ``init --copy-chunker-from``) and ``DTSTORE_TO_`` (the target of ``copy --to-repo``)."""
    path = os.environ.get(f"{prefix}PASSWORD_FILE")
    if path:
        try:
            return _read_password_file(path)
        except OSError as exc:
            raise UsageError(f"cannot read {prefix}PASSWORD_FILE {path}: {exc.strerror}") from None
    command = os.environ.get(f"{prefix}PASSWORD_COMMAND")
    if command:
        import subprocess

        done = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise UsageError(f"{prefix}PASSWORD_COMMAND exited with status {done.returncode}")
        return done.stdout.rstrip("\r\n")
    if f"{prefix}PASSWORD" in os.environ:
        return os.environ[f"{prefix}PASSWORD"]
    if sys.stdin.isatty():
        return prompt(label, confirm=confirm)
    raise UsageError(f"no password: set {prefix}PASSWORD_FILE, {prefix}PASSWORD_COMMAND or {prefix}PASSWORD")


def _read_password_file(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read().rstrip("\r\n")


def _password_without_asking() -> str | None:
    """The password if a file or a variable gives it: nothing that prompts or runs a command."""
    path = os.environ.get("DTSTORE_PASSWORD_FILE")
    if path:
        try:
            return _read_password_file(path)
        except OSError:
            return None  # password() reports it where the command asks
    if os.environ.get("DTSTORE_PASSWORD_COMMAND"):
        return None
    return os.environ.get("DTSTORE_PASSWORD")


def prompt(label: str, *, confirm: bool) -> str:
    import getpass

    first = getpass.getpass(label)
    if confirm and getpass.getpass("again: ") != first:
        raise UsageError("the passwords do not match")
    if not first:
        raise UsageError("an empty password is not allowed")
    return first


def open_repo(args: argparse.Namespace) -> Repository:
    """The KDF starts first and runs while the rest of the library is imported (issue 18 §3): at the
    start of the process if ``unlock_early`` could tell the repository and the password from the
    command line and the environment, else here."""
    url, secret, limit = repo_url(args), password().encode("utf-8"), getattr(args, "limit_upload", None)
    unlocking = _claim_early(url, secret, limit)
    if unlocking is None:
        from dtstore.unlocking import Unlocking

        unlocking = Unlocking(url, secret, limit)
    from dtstore import Repository

    return Repository.opened(unlocking)


@dataclass
class _EarlyUnlock:
    url: str
    password: bytes = field(repr=False)
    limit_upload: float | None
    done: threading.Event = field(default_factory=threading.Event)
    unlocking: Unlocking | None = None
    """None until ``done``, and after it if opening failed (``open_repo`` then opens again and reports why)"""

    def run(self) -> None:
        try:
            from dtstore.unlocking import Unlocking

            self.unlocking = Unlocking(self.url, self.password, self.limit_upload)
        except BaseException:  # the command's own open_repo opens again and reports it where it belongs
            self.unlocking = None
        finally:
            self.done.set()

    def matches(self, url: str, secret: bytes, limit: float | None) -> bool:
        return self.url == url and self.password == secret and self.limit_upload == limit

    def wait(self) -> None:
        """Until the opening and its KDF are over.  A thread still inside them when the interpreter
        exits is stopped in native code (an import, the KDF), which aborts the process."""
        self.done.wait()
        if self.unlocking is not None:
            self.unlocking.wait()


_early: _EarlyUnlock | None = None
_unclaimed: list[_EarlyUnlock] = []
"""early openings of another repository, password or limit than the command's own, still running"""
_early_lock = threading.Lock()


class _OptionsOnly(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(message)


def _repository_options(argv: Sequence[str]) -> tuple[str | None, float | None]:
    """``--repo`` and ``--limit-upload`` wherever they stand, before the command's parser exists."""
    scan = _OptionsOnly(add_help=False, allow_abbrev=False)
    scan.add_argument("--repo", "-r")
    scan.add_argument("--limit-upload", type=float)
    try:
        known, _ = scan.parse_known_args(list(argv))
    except ValueError:
        return None, None
    return known.repo, known.limit_upload


def unlock_early(argv: Sequence[str]) -> None:
    """Start opening the repository (reading its config and key slots, then the KDF) on a thread,
    before the command's modules are imported.  Only when the command line and the environment name
    the repository and the password without asking; ``open_repo`` takes the result only if its own
    repository, password and upload limit are the same, so a wrong guess costs CPU, nothing else."""
    global _early
    if "-h" in argv or "--help" in argv:
        return
    url, limit = _repository_options(argv)
    url = url or os.environ.get("DTSTORE_REPOSITORY")
    secret = _password_without_asking()
    if not url or secret is None:
        return
    early_work.start_kdf(url, secret.encode("utf-8"))  # before the storage and crypto modules load
    early = _EarlyUnlock(url, secret.encode("utf-8"), limit)
    with _early_lock:
        _early = early
    threading.Thread(target=early.run, name="dtstore-open", daemon=True).start()


def _claim_early(url: str, secret: bytes, limit: float | None) -> Unlocking | None:
    global _early
    with _early_lock:
        early, _early = _early, None
    if early is None:
        return None
    early.done.wait()
    if early.matches(url, secret, limit):
        return early.unlocking
    with _early_lock:
        _unclaimed.append(early)
    return None


def discard_early() -> None:
    """Wait for early openings no command took, and forget them (``main`` may run again in the same
    process).  A usage error found after the opening started waits for its KDF (~0.3 s)."""
    global _early
    with _early_lock:
        left = [_early, *_unclaimed] if _early is not None else list(_unclaimed)
        _early = None
        _unclaimed.clear()
    for early in left:
        early.wait()
    early_work.settle()
