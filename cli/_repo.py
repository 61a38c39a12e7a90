"""Where the repository is and how its password is found; the only place that prompts."""

from __future__ import annotations

import argparse
import getpass
import os
import subprocess
import sys
from typing import TYPE_CHECKING

from dtstore.errors import UsageError

if TYPE_CHECKING:
    from dtstore import Repository


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
            with open(path, encoding="utf-8") as f:
                return f.read().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read {prefix}PASSWORD_FILE {path}: {exc.strerror}") from None
    command = os.environ.get(f"{prefix}PASSWORD_COMMAND")
    if command:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise UsageError(f"{prefix}PASSWORD_COMMAND exited with status {done.returncode}")
        return done.stdout.rstrip("\r\n")
    if f"{prefix}PASSWORD" in os.environ:
        return os.environ[f"{prefix}PASSWORD"]
    if sys.stdin.isatty():
        return prompt(label, confirm=confirm)
    raise UsageError(f"no password: set {prefix}PASSWORD_FILE, {prefix}PASSWORD_COMMAND or {prefix}PASSWORD")


def prompt(label: str, *, confirm: bool) -> str:
    first = getpass.getpass(label)
    if confirm and getpass.getpass("again: ") != first:
        raise UsageError("the passwords do not match")
    if not first:
        raise UsageError("an empty password is not allowed")
    return first


def open_repo(args: argparse.Namespace) -> Repository:
    """The KDF starts first and runs while the rest of the library is imported (issue 18 §3)."""
    from dtstore.unlocking import Unlocking

    unlocking = Unlocking(repo_url(args), password().encode("utf-8"), getattr(args, "limit_upload", None))
    from dtstore import Repository

    return Repository.opened(unlocking)
