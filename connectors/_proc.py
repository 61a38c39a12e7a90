"""Running database client tools (mariadb-dump, mariadb-binlog, mariadb, ...).

Rules every connector follows through this module:

* Secrets go to a child only through its environment (e.g. ``MYSQL_PWD``) or a defaults file named
  on the command line, never as an argument: :func:`check_argv` refuses an argv that contains one.
* stdout is streamed (a dump is never held in memory); stderr goes to an unnamed temporary file
  so a chatty tool can never block, and its tail is kept for the error message.
* A non-zero exit becomes :class:`~dtstore.errors.ConnectorError` naming the tool, its exit status
  and the last lines of its stderr, with every secret replaced by ``***``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import IO, BinaryIO

from dtstore.errors import ConnectorError

if sys.platform != "win32":  # POSIX only; the module must import on Windows too
    import fcntl

STDERR_TAIL = 2000
COPY_BUFFER = 1 << 20
PIPE_SIZE = 1 << 20  # Linux's default /proc/sys/fs/pipe-max-size


def find_tool(*names: str) -> str:
    """The first of ``names`` found on PATH, as a full path."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise ConnectorError(f"none of {', '.join(names)} found on PATH; install the database client tools")


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def check_argv(argv: Sequence[str], secrets: Iterable[str]) -> None:
    """Refuse to start a process whose arguments would show a secret (``ps`` shows argv to all)."""
    for secret in secrets:
        if secret and any(secret in arg for arg in argv):
            raise ConnectorError(f"refusing to run {os.path.basename(argv[0])}: a secret would appear in argv")


def _widen_pipe(fd: int) -> None:
    """A 1 MiB pipe instead of Linux's 64 KiB: the tool keeps writing while dtstore cuts a block,
    instead of stalling (and with it the database server's side of the dump)."""
    if sys.platform == "win32":
        return
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def tool_env(base: Mapping[str, str] | None = None, /, **overrides: str | None) -> dict[str, str]:
    """A copy of the environment with ``overrides`` applied (``None`` removes a variable)."""
    env = dict(os.environ if base is None else base)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class ToolProcess:
    """One running client tool; a context manager that checks its exit status on the way out.

    ``with ToolProcess([...], env=...) as proc: proc.stdout.read(...)``: leaving the block normally
    waits for the process and raises ConnectorError on a non-zero exit; leaving it with an
    exception kills the process first.  ``stdin`` may be ``subprocess.PIPE`` or an open file.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        secrets: Iterable[str] = (),
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout: int | IO[bytes] | None = subprocess.PIPE,
        label: str | None = None,
    ) -> None:
        self.secrets = [s for s in secrets if s]
        check_argv(argv, self.secrets)
        self.label = label or os.path.basename(argv[0])
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        try:
            self.popen = subprocess.Popen(
                list(argv),
                stdin=stdin,
                stdout=stdout,
                stderr=self._stderr,
                env=dict(env),
                start_new_session=False,
            )
        except OSError as exc:
            self._stderr.close()
            raise ConnectorError(f"unable to start {self.label}: {exc.strerror}") from exc
        self.returncode: int | None = None
        for pipe in (self.popen.stdout, self.popen.stdin):
            if pipe is not None:
                _widen_pipe(pipe.fileno())

    @property
    def stdout(self) -> BinaryIO:
        return _piped(self.popen.stdout, "stdout", self.label)

    @property
    def stdin(self) -> BinaryIO:
        return _piped(self.popen.stdin, "stdin", self.label)

    def stderr_tail(self) -> str:
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - STDERR_TAIL))
        text = self._stderr.read().decode("utf-8", "replace").strip()
        return redact(text, self.secrets)

    def wait(self) -> int:
        if self.returncode is None:
            for stream in (self.popen.stdin, self.popen.stdout):
                if stream is not None:
                    _close_quietly(stream)
            self.returncode = self.popen.wait()
        return self.returncode

    def check(self) -> None:
        """Wait, and raise ConnectorError if the tool failed."""
        code = self.wait()
        if code != 0:
            raise ConnectorError(failure_message(self.label, code, self.stderr_tail()))

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()  # SIGKILL; TerminateProcess on Windows
        self.wait()

    def close(self) -> None:
        self._stderr.close()

    def __enter__(self) -> ToolProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is not None:
                self.kill()
            else:
                self.check()
        finally:
            self.close()


def _piped(stream: IO[bytes] | None, name: str, label: str) -> BinaryIO:
    if stream is None:
        raise ConnectorError(f"{label} was started without a pipe on its {name}")
    return stream  # type: ignore[return-value]


def failure_message(label: str, code: int, stderr: str) -> str:
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    detail = f": {stderr}" if stderr else ""
    return f"{label} {how}{detail}"


def _close_quietly(stream: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        stream.close()


def run(argv: Sequence[str], *, env: Mapping[str, str], secrets: Iterable[str] = (), label: str | None = None) -> bytes:
    """Run a tool to completion and return its stdout (for small outputs only)."""
    with ToolProcess(argv, env=env, secrets=secrets, label=label) as proc:
        out = proc.stdout.read()
    return out


def feed(
    argv: Sequence[str],
    source: BinaryIO,
    *,
    env: Mapping[str, str],
    secrets: Iterable[str] = (),
    label: str | None = None,
) -> int:
    """Copy ``source`` into a tool's stdin (e.g. a dump into ``mariadb``); return the bytes copied."""
    copied = 0
    with ToolProcess(
        argv, env=env, secrets=secrets, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, label=label
    ) as proc:
        try:
            while block := source.read(COPY_BUFFER):
                proc.stdin.write(block)
                copied += len(block)
        except BrokenPipeError:
            pass  # the tool died early: its exit status and stderr say why (raised on exit)
        _close_quietly(proc.stdin)
    return copied


def pipe(
    producer: Sequence[str],
    consumer: Sequence[str],
    *,
    producer_env: Mapping[str, str],
    consumer_env: Mapping[str, str],
    secrets: Iterable[str] = (),
) -> None:
    """Run ``producer | consumer``; both exit statuses are checked, the consumer's first."""
    secret_list = list(secrets)
    with ToolProcess(producer, env=producer_env, secrets=secret_list) as first:  # noqa: SIM117
        with ToolProcess(
            consumer, env=consumer_env, secrets=secret_list, stdin=first.stdout, stdout=subprocess.DEVNULL
        ):
            _close_quietly(first.stdout)  # only the consumer holds the read end now
