"""The connector contract, written once: what every connector's harness provides, and the tools the
generic tests in ``test_contract.py`` use (a commit spy, a process recorder, fake tools on PATH, the CLI).

A connector joins the suite by implementing :class:`ConnectorHarness` once (``contract_mysql.py`` is
the MySQL one) and adding it to ``HARNESSES`` in ``test_contract.py``:

* ``start``/``start_target``: its server or simulator (one source per test module, a fresh target per test);
* ``url``, ``bad_urls``, ``unreachable_url``: good and bad URLs;
* ``change``: a transaction on the source; ``break_chain``: make the next log unable to follow its base;
* ``tool_faults``: fake client tools that fail, or print half a stream and exit 0;
* ``refused_login``: credentials the source refuses (their secret must not be echoed either).
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

import dtstore
from dtstore.cli.main import main
from dtstore.sources.base import Entry, Reporter, Source
from tests.helpers import PASSWORD, init_repo

# --- what a harness hands to the generic tests ------------------------------------------------------------------


@contextlib.contextmanager
def environment(values: Mapping[str, str], remove: Sequence[str] = ()) -> Iterator[None]:
    """Set ``values`` (and unset ``remove``) in os.environ for the block, then put everything back."""
    names = {*values, *remove}
    saved = {name: os.environ.get(name) for name in names}
    for name in remove:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class Endpoint:
    """A running source or target: its URL, the secret that lets dtstore in, and how to read its state."""

    url: str
    secret: str
    env: Mapping[str, str]
    """what a run needs in its environment (e.g. ``MYSQL_PWD``): the secret never goes anywhere else"""
    state: Callable[[], object]
    """everything a restore could change, comparable with ``==``"""
    handle: Any = None
    """the harness's own object (e.g. a MariaDBServer)"""

    def using(self) -> contextlib.AbstractContextManager[None]:
        return environment(self.env)


@dataclass(frozen=True)
class BadUrl:
    url: str
    error: str
    """a regex the UsageError must match"""
    secret: str | None = None
    """a secret written into the URL: no message may repeat it"""


@dataclass(frozen=True)
class ToolFault:
    """Fake client tools that break one snapshot run.

    ``mode="full"`` breaks a full; ``mode="log"`` breaks a log run after a good full.  ``tools`` maps a
    tool name to the Python source of the fake (it runs with this interpreter, the real tools' paths
    baked in by the harness).  ``stage``: the run stages on disk (the stage folder must be left empty).
    """

    name: str
    mode: str
    tools: Mapping[str, str]
    error: str
    url: str | None = None
    stage: bool = False


class ConnectorHarness(ABC):
    """How the contract suite drives one connector (see the module docstring)."""

    id: str
    """the pytest id"""
    kind: str
    """the source kind its snapshots record (``mysql``)"""
    scheme: str
    url_form: str
    """the URL form a bad-URL error should show the user (e.g. ``mysql://USER@HOST``)"""
    tools: tuple[str, ...] = ()
    """client tools a snapshot and a restore run (the secrets scan checks it saw them)"""
    snapshot_modes: tuple[str, ...] = ("full", "log")
    """the ``dtstore snapshot --mode`` values besides ``auto`` the suite runs (PostgreSQL: ``full`` only, its
    WAL arrives through ``dtstore wal-push``)"""
    not_applicable: ClassVar[Mapping[str, str]] = {}
    """contract items (test names without ``test_``) that do not apply to this connector, each with the reason
    its skip shows; a missing server is never a reason"""

    @abstractmethod
    def start(self, request: pytest.FixtureRequest) -> Endpoint:
        """Start the source (module scope: one per test module), with some data in it."""

    @abstractmethod
    def start_target(self, request: pytest.FixtureRequest) -> Endpoint:
        """A fresh, empty target to restore into (function scope)."""

    @abstractmethod
    def url(self, **params: str) -> str:
        """The source's URL (``params``: connector URL options, e.g. ``binlogs="remote"``)."""

    @abstractmethod
    def bad_urls(self) -> list[BadUrl]:
        """Malformed URLs of this scheme, each a usage error (exit 2) before anything connects."""

    @abstractmethod
    def unreachable_url(self) -> str:
        """A well-formed URL of a server that does not exist (a dry run must not notice)."""

    @abstractmethod
    def refused_login(self) -> tuple[Mapping[str, str], str] | None:
        """An environment whose credentials the source refuses, and the secret in it (None: no login)."""

    @abstractmethod
    def change(self) -> None:
        """Commit one transaction on the source."""

    @abstractmethod
    def break_chain(self) -> None:
        """Make the next log run unable to follow the newest snapshot (logs purged or reset)."""

    @abstractmethod
    def tool_faults(self, tmp_path: Path) -> list[ToolFault]:
        """Failing and truncating fakes of the connector's client tools."""

    def log_urls(self) -> list[str]:
        """The URL variants a log run should be tried with (e.g. local and remote log transfer)."""
        return [self.url()]

    @property
    def next_mode(self) -> str:
        """The mode of a run after a full: ``log``, or ``full`` for a connector without log snapshots."""
        return "log" if "log" in self.snapshot_modes else "full"

    def mode_of(self, snapshot: dtstore.Snapshot) -> str:
        return str(snapshot.source_metadata["mode"])

    def auto_reason(self, snapshot: dtstore.Snapshot) -> str | None:
        reason = snapshot.source_metadata.get("auto_reason")
        return str(reason) if reason is not None else None


# --- spying on a source ----------------------------------------------------------------------------------------


@dataclass
class Commit:
    snapshot: dtstore.Snapshot
    listed: list[str]
    """the snapshot IDs a freshly opened Repository listed when committed() was called"""


@dataclass
class Gate:
    """Holds a run inside ``entries()`` (so with its source lock taken) until ``release`` is set."""

    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class SpySource:
    """Wraps a connector's Source: records ``prepare()`` and ``committed()`` calls, can hold the run.

    Every other attribute (``exclusive``, ``estimated_size``, …) is the wrapped source's.
    """

    def __init__(self, inner: Source, *, fresh: Callable[[], list[str]] | None = None,
                 gate: Gate | None = None) -> None:
        self._inner = inner
        self._fresh = fresh
        self._gate = gate
        self.commits: list[Commit] = []
        self.prepared: list[float] = []
        self.fail_commit: BaseException | None = None
        """raised by committed() after recording the call (an application that refuses the confirmation)"""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def kind(self) -> str:
        return self._inner.kind

    @property
    def source_id(self) -> str:
        return self._inner.source_id

    @property
    def display_paths(self) -> list[str]:
        return self._inner.display_paths

    def prepare(self) -> None:
        self.prepared.append(time.monotonic())
        inner = getattr(self._inner, "prepare", None)
        if inner is not None:
            inner()

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        if self._gate is not None:
            self._gate.started.set()
            assert self._gate.release.wait(120), "the gate was never opened"
        yield from self._inner.entries(reporter)

    def metadata(self) -> dict[str, Any]:
        return self._inner.metadata()

    def committed(self, snapshot: dtstore.Snapshot) -> None:
        listed = self._fresh() if self._fresh is not None else []
        self.commits.append(Commit(snapshot, listed))
        if self.fail_commit is not None:
            raise self.fail_commit
        inner = getattr(self._inner, "committed", None)
        if inner is not None:
            inner(snapshot)


# --- every process dtstore starts ----------------------------------------------------------------------------------


class PopenRecorder:
    """Records the argv of every ``subprocess.Popen`` started while installed (tools, the CLI's children)."""

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> PopenRecorder:
        recorder = self
        real = subprocess.Popen

        class Recording(real):  # type: ignore[valid-type,misc]
            def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
                argv = [args] if isinstance(args, str | bytes | os.PathLike) else list(args)
                recorder.argvs.append([os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in argv])
                super().__init__(args, *rest, **kwargs)

        monkeypatch.setattr(subprocess, "Popen", Recording)
        return self

    def clear(self) -> None:
        self.argvs.clear()

    def tools(self) -> list[str]:
        return [os.path.basename(argv[0]) for argv in self.argvs]


def install_fakes(bin_dir: Path, tools: Mapping[str, str]) -> None:
    """Write each fake tool as an executable Python script in ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{body}")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@contextlib.contextmanager
def fakes_on_path(bin_dir: Path, tools: Mapping[str, str]) -> Iterator[None]:
    install_fakes(bin_dir, tools)
    with environment({"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}):
        yield


# --- repositories and the CLI --------------------------------------------------------------------------------------


def new_repository(base: Path) -> dtstore.Repository:
    return init_repo(str(base / "repo"), base / "cache")


def reopen(base: Path, cache: str = "fresh-cache") -> dtstore.Repository:
    """The same repository opened anew with an empty cache: it sees only what is in the store."""
    return dtstore.Repository.open(str(base / "repo"), PASSWORD, cache_dir=base / cache)


def listed_ids(base: Path) -> list[str]:
    with reopen(base) as repo:
        return [s.id for s in repo.snapshots()]


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], base: Path, *args: str,
            env: Mapping[str, str] | None = None) -> CliResult:
    """``dtstore ARGS --repo BASE/repo`` in this process, with the repository password in DTSTORE_PASSWORD."""
    capsys.readouterr()
    ours = {"DTSTORE_PASSWORD": PASSWORD, "DTSTORE_CACHE_DIR": str(base / "cli-cache"), **(env or {})}
    with environment(ours, remove=["DTSTORE_REPOSITORY", "DTSTORE_PASSWORD_FILE", "DTSTORE_PASSWORD_COMMAND"]):
        try:
            code = main([*args, "--repo", str(base / "repo")])
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return CliResult(code, out, err)


__all__ = [
    "BadUrl",
    "CliResult",
    "Commit",
    "ConnectorHarness",
    "Endpoint",
    "Gate",
    "PopenRecorder",
    "SpySource",
    "ToolFault",
    "environment",
    "fakes_on_path",
    "install_fakes",
    "listed_ids",
    "new_repository",
    "reopen",
    "run_cli",
]
