"""Running client tools on the database host: here (:class:`LocalRunner`) or over SSH (:class:`SshRunner`).

A connector whose database lives on another machine (Oracle's RMAN, Exchange's and SQL Server's
Windows tools) holds a :class:`CommandRunner` and never cares which one it is::

    with SshRunner("oracle", "db1.example.com") as host:
        host.run(["/u01/app/oracle/product/19c/bin/rman", "target", "/"], stdin=script)
        with host.stream(["cat", "/u02/arch/1_42_1234.arc"]) as out:   # exit checked on leaving
            consume(out)
        host.write_file("/u02/restore/1_42_1234.arc", chunks)

Rules (spec/connectors.md §7.3):

* **Secrets never in argv**, here or on the remote host (``ps`` shows argv to every user):
  :func:`_proc.check_argv` refuses such an argv.  They go in ``env`` (see below) or on stdin, and every
  string in ``secrets`` is replaced by ``***`` in stderr tails and error messages.
* **Environment over SSH.**  The SSH protocol's own way (``setenv``) works only for names the
  server's ``sshd_config`` lists in ``AcceptEnv``, and sshd drops the others *silently*.  So a POSIX
  runner by default (``env_via="stdin"``) starts ``sh -c 'IFS= read -r NAME && … && export NAME && exec
  "$@"' sh TOOL ARGS…`` and writes the values as the first lines of the tool's stdin: it needs no
  server configuration and shows only the names.  Values must not contain a newline.  A Windows
  runner has no such shell, so it uses ``setenv`` (needs ``AcceptEnv``); the reliable way there is to
  write the secret to the tool's stdin (``sqlplus /nolog`` reading ``CONNECT user/pw@db``).
* **Command lines.**  A POSIX host gets ``shlex.join`` of ``sh -c 'echo "dtstore-pid $$" >&2 && [the
  reads above] && exec "$@"' sh TOOL ARGS…`` (for a POSIX login shell); a ``windows=True`` runner
  quotes with :func:`subprocess.list2cmdline` (CreateProcess rules) and then
  for the server's default shell: ``cmd.exe`` (every metacharacter ``^``-escaped) or PowerShell.
  Paths are the database host's, strings or ``PurePosixPath``/``PureWindowsPath``; nothing here
  passes them through the local ``os.path``.
* **Host keys** are checked as the SFTP remote checks them (:mod:`dtstore.ssh`): ``known_hosts=``,
  else ``DTSTORE_SSH_KNOWN_HOSTS``, else ``DTSTORE_SFTP_KNOWN_HOSTS``, else ``~/.ssh/known_hosts``.
  An unknown or changed key raises :class:`~dtstore.errors.HostKeyError` (exit 14).  Keys:
  ``client_keys=``, else ``DTSTORE_SSH_KEY``, else ``DTSTORE_SFTP_KEY``, else ssh-agent and ``~/.ssh/id_*``.
* **Kill** (an exception inside ``stream()``'s block, a timeout, a failing stdin source): locally
  SIGKILL (TerminateProcess on Windows).  Over SSH: the "signal" request (OpenSSH ignores it unless
  privilege-separated), then ``kill -KILL -- -PID`` on a second channel, with the PID the wrapper
  reported (sshd made it a session leader, so its children die too), then the channel is closed.
  A Windows host gets only the close.
* **Errors.**  asyncssh and OSError exceptions are translated here, once, into ConnectorError
  (or HostKeyError).  A non-zero exit is ``ConnectorError("<tool> exited with status N on <host>:
  <stderr tail>")``.

asyncssh runs in a private event loop thread per SshRunner, started on first use; :meth:`close`
(or leaving the ``with`` block) closes the connection and joins the thread.  asyncssh is imported
only when an SshRunner connects, and nothing POSIX-only is imported at all, so the module imports
on Windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import shlex
import stat as stat_module
import subprocess
import threading
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Literal, Protocol, TypeAlias, TypeVar, cast

from dtstore import ssh as ssh_settings
from dtstore.connectors import _proc
from dtstore.errors import ConnectorError, DtstoreError, HostKeyError

if TYPE_CHECKING:
    import asyncssh

STDERR_TAIL = _proc.STDERR_TAIL
COPY_BUFFER = _proc.COPY_BUFFER
KNOWN_HOSTS_ENV = "DTSTORE_SSH_KNOWN_HOSTS"
KEY_ENV = "DTSTORE_SSH_KEY"
_SFTP_KNOWN_HOSTS_ENV = "DTSTORE_SFTP_KNOWN_HOSTS"
_SFTP_KEY_ENV = "DTSTORE_SFTP_KEY"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CMD_SPECIAL = frozenset('()%!^"<>&|')
_PS_QUOTES = "'\u2018\u2019\u201a\u201b"  # PowerShell ends a '…' string at any of these

Arg: TypeAlias = "str | PurePath"
Stdin: TypeAlias = "bytes | IO[bytes] | None"
T = TypeVar("T")


@dataclass(frozen=True)
class Result:
    """A finished tool: its exit status (negative: killed by that signal), stdout, stderr's tail."""

    exit_status: int
    stdout: bytes
    stderr: str  # the last STDERR_TAIL bytes, decoded, secrets replaced by ***


@dataclass(frozen=True)
class FileStat:
    size: int
    mtime: float | None  # seconds since the epoch
    is_dir: bool
    mode: int | None  # permission bits where the host reports them


class CommandRunner(Protocol):
    """What a connector needs from the database host."""

    @property
    def host(self) -> str:
        """The host as error messages name it ("localhost", "db1", "db1:2222")."""
        ...

    @property
    def windows(self) -> bool: ...

    def run(self, argv: Sequence[Arg], *, env: Mapping[str, str] | None = None, stdin: Stdin = None,
            secrets: Iterable[str] = (), timeout: float | None = None, check: bool = True,
            label: str | None = None) -> Result: ...

    def stream(self, argv: Sequence[Arg], *, env: Mapping[str, str] | None = None, stdin: Stdin = None,
               secrets: Iterable[str] = (), label: str | None = None) -> ToolStream: ...

    def read_file(self, path: Arg) -> BinaryIO: ...

    def write_file(self, path: Arg, chunks: Iterable[bytes], *, overwrite: bool = False, mode: int = 0o600) -> int: ...

    def put(self, local_path: str | os.PathLike[str], path: Arg, *, overwrite: bool = False,
            mode: int = 0o600) -> int: ...

    def exists(self, path: Arg) -> bool: ...

    def listdir(self, path: Arg) -> list[str]: ...

    def stat(self, path: Arg) -> FileStat: ...

    def remove(self, path: Arg) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> CommandRunner: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


# --------------------------------------------------------------------------------------------
# Command lines


def posix_command_line(argv: Sequence[Arg]) -> str:
    """The command line for a POSIX login shell."""
    return shlex.join(str(a) for a in argv)


def windows_command_line(argv: Sequence[Arg]) -> str:
    """The CreateProcess command line that CommandLineToArgvW (and the MS C runtime) splits back into
    ``argv`` (Microsoft's "Parsing C++ command-line arguments" rules, as :func:`subprocess.list2cmdline`)."""
    args = [str(a) for a in argv]
    for arg in args:
        if any(c in arg for c in "\0\r\n"):
            raise ConnectorError("an argument for a Windows host contains a NUL or line break, which no "
                                 "Windows command line can carry")
    return subprocess.list2cmdline(args)


def cmd_command_line(argv: Sequence[Arg]) -> str:
    """The command line for ``cmd.exe /c`` (Win32-OpenSSH's default shell): the CreateProcess line with
    every cmd metacharacter, the quotes included, escaped by ``^``.  With no quote left unescaped cmd
    never enters its quoted state, so every ``^`` is removed again and the program receives exactly
    :func:`windows_command_line`; ``%NAME%`` is not expanded (cmd looks up ``NAME^`` instead)."""
    line = windows_command_line(argv)
    return "".join(f"^{c}" if c in _CMD_SPECIAL else c for c in line)


def powershell_command_line(argv: Sequence[Arg]) -> str:
    """The command for a PowerShell default shell: ``& 'program' 'arg' …; exit $LASTEXITCODE``.

    Every argument is a verbatim '…' string.  Windows PowerShell 5.1 then rebuilds the program's
    command line itself, dropping empty arguments and not escaping embedded ``"``; such arguments,
    and ones with whitespace that end in a backslash, are refused (use ``shell="cmd"``)."""
    args = [str(a) for a in argv]
    windows_command_line(args)  # the same NUL/line-break check
    for arg in args[1:]:
        if arg == "" or '"' in arg or (arg.endswith("\\") and any(c.isspace() for c in arg)):
            raise ConnectorError(f"the argument {arg!r} cannot be passed through PowerShell unchanged; "
                                 "use a runner with shell='cmd'")

    def quote(text: str) -> str:
        return "'" + "".join(c + c if c in _PS_QUOTES else c for c in text) + "'"

    return "& " + " ".join(quote(a) for a in args) + "; exit $LASTEXITCODE"


_PID_LINE = re.compile(rb"dtstore-pid (\d+)\n")


def _posix_wrapper(argv: Sequence[str], names: Sequence[str]) -> list[str]:
    """``sh -c`` that reports its PID on stderr (the tool keeps it: ``exec``), reads each variable in
    ``names`` from one stdin line (``read`` takes one byte at a time from a pipe, so the tool's own
    stdin is untouched), exports them and execs the tool.  The PID lets :meth:`ToolStream.kill` work
    on servers that refuse SSH "signal" requests (OpenSSH does unless it runs with privilege
    separation, and closing a channel without a pty kills nothing)."""
    steps = ['echo "dtstore-pid $$" >&2']
    steps += [f"IFS= read -r {name}" for name in names]
    if names:
        steps.append(f"export {' '.join(names)}")
    steps.append('exec "$@"')
    return ["sh", "-c", " && ".join(steps), "sh", *argv]


def _tool_name(program: str, windows: bool) -> str:
    return (PureWindowsPath(program) if windows else PurePosixPath(program)).name or program


def _failure(label: str, code: int | None, host: str, stderr: str, signal_name: str | None = None) -> str:
    if code is None:
        how = "ended without an exit status (the connection was lost)"
    elif signal_name or code < 0:
        how = f"was killed by signal {signal_name or -code}"
    else:
        how = f"exited with status {code}"
    return f"{label} {how} on {host}" + (f": {stderr}" if stderr else "")


# --------------------------------------------------------------------------------------------
# A running tool


class _Process(Protocol):
    """The per-runner part of a running tool, used only by ToolStream."""

    stdout: BinaryIO

    def write(self, data: bytes) -> None: ...
    def close_stdin(self) -> None: ...
    def wait(self, timeout: float | None) -> int | None: ...
    def signal_name(self) -> str | None: ...
    def kill(self) -> None: ...
    def stderr_tail(self) -> str: ...
    def release(self) -> None: ...


class ToolStream:
    """A running tool; ``with`` gives its stdout as a readable binary stream.

    Leaving the block normally checks that stdout was read to its end, waits, and raises
    ConnectorError for a non-zero exit (unless ``check=False``); leaving it with an exception kills
    the tool.  An exception from reading the ``stdin`` stream (e.g. an IntegrityError from the
    repository) kills the tool and is re-raised on leaving.  ``exit_status`` and ``stderr`` are set
    afterwards.
    """

    def __init__(self, process: _Process, *, label: str, host: str, secrets: Sequence[str], stdin: Stdin,
                 preamble: bytes = b"", check: bool = True) -> None:
        self._process = process
        self.label = label
        self.host = host
        self._secrets = list(secrets)
        self._check = check
        self.exit_status: int | None = None
        self.stderr = ""
        self.killed = False
        self._feed_error: BaseException | None = None
        self._finished = False
        self._feeder: threading.Thread | None = None
        if stdin is None and not preamble:
            self._close_stdin()
        else:
            self._feeder = threading.Thread(target=self._feed, args=(preamble, stdin),
                                            name=f"dtstore-feed-{label}", daemon=True)
            self._feeder.start()

    @property
    def stdout(self) -> BinaryIO:
        return self._process.stdout

    def _close_stdin(self) -> None:
        with contextlib.suppress(Exception):
            self._process.close_stdin()

    def _blocks(self, preamble: bytes, stdin: Stdin) -> Iterator[bytes]:
        if preamble:
            yield preamble
        if isinstance(stdin, (bytes, bytearray, memoryview)):
            for start in range(0, len(stdin), COPY_BUFFER):
                yield bytes(stdin[start:start + COPY_BUFFER])
        elif stdin is not None:
            while block := stdin.read(COPY_BUFFER):
                yield block

    def _feed(self, preamble: bytes, stdin: Stdin) -> None:
        """Copy stdin to the tool.  The tool no longer reading ends the copy quietly (its exit status
        says why); the *source* failing kills the tool, so that it never sees a truncated input as
        complete, and the error is re-raised in the caller's thread."""
        try:
            for block in self._blocks(preamble, stdin):
                try:
                    self._process.write(block)
                except (OSError, _StdinClosed):
                    return
        except BaseException as exc:
            self._feed_error = exc
            self.kill()
        finally:
            self._close_stdin()

    def kill(self) -> None:
        """Kill the tool (safe from any thread, and more than once)."""
        self.killed = True
        with contextlib.suppress(Exception):
            self._process.kill()

    def finish(self, *, timeout: float | None = None) -> int:
        """Wait for the tool and check it; what leaving the ``with`` block normally does."""
        if self._finished:
            return self.exit_status if self.exit_status is not None else -1
        self._finished = True
        try:
            try:
                leftover = self._process.stdout.read(1)
            except ValueError:  # the caller closed stdout: treat as unread
                leftover = b"?"
            if leftover:
                self.kill()  # it would block on a full pipe (or SSH window) forever
            if self._feeder is not None:
                self._feeder.join()
            code = self._process.wait(timeout)
            self.exit_status = code
            self.stderr = _proc.redact(self._process.stderr_tail(), self._secrets)
            if self._feed_error is not None:
                raise self._feed_error
            if leftover:
                raise ConnectorError(f"{self.label} on {self.host}: its output was not read to the end")
            if code is None or (self._check and code != 0):
                raise ConnectorError(_failure(self.label, code, self.host, self.stderr, self._process.signal_name()))
            return code
        finally:
            self._release()

    def abort(self) -> None:
        """Kill the tool and reap it (leaving the ``with`` block with an exception)."""
        if self._finished:
            return
        self._finished = True
        try:
            self.kill()
            if self._feeder is not None:
                self._feeder.join()
            with contextlib.suppress(Exception):
                self.exit_status = self._process.wait(None)
            with contextlib.suppress(Exception):
                self.stderr = _proc.redact(self._process.stderr_tail(), self._secrets)
        finally:
            self._release()

    def _release(self) -> None:
        with contextlib.suppress(Exception):
            self._process.release()

    def __enter__(self) -> BinaryIO:
        return self._process.stdout

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()


class _StdinClosed(Exception):
    """Writing to a tool whose stdin (or channel) is already closed."""


class _RunnerBase:
    """run() and put() in terms of stream() and write_file()."""

    host: str
    windows: bool

    def stream(self, argv: Sequence[Arg], *, env: Mapping[str, str] | None = None, stdin: Stdin = None,
               secrets: Iterable[str] = (), label: str | None = None) -> ToolStream:
        return self._start(argv, env=env, stdin=stdin, secrets=secrets, label=label, check=True)

    def _start(self, argv: Sequence[Arg], *, env: Mapping[str, str] | None, stdin: Stdin, secrets: Iterable[str],
               label: str | None, check: bool) -> ToolStream:
        raise NotImplementedError

    def _prepare(self, argv: Sequence[Arg], secrets: Iterable[str],
                 label: str | None) -> tuple[list[str], list[str], str]:
        args = [str(a) for a in argv]
        if not args:
            raise ConnectorError("no command to run")
        secret_list = [s for s in secrets if s]
        _proc.check_argv(args, secret_list)
        return args, secret_list, label or _tool_name(args[0], self.windows)

    def run(self, argv: Sequence[Arg], *, env: Mapping[str, str] | None = None, stdin: Stdin = None,
            secrets: Iterable[str] = (), timeout: float | None = None, check: bool = True,
            label: str | None = None) -> Result:
        """Run a tool to completion (for small outputs: stdout is kept in memory)."""
        tool = self._start(argv, env=env, stdin=stdin, secrets=secrets, label=label, check=check)
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            tool.kill()

        timer: threading.Timer | None = None
        if timeout is not None:
            timer = threading.Timer(timeout, expire)
            timer.daemon = True
            timer.start()
        try:
            try:
                with tool as out:
                    data = out.read()
            finally:
                if timer is not None:
                    timer.cancel()
                    timer.join()
        except ConnectorError as exc:
            if timed_out.is_set():
                raise ConnectorError(f"{tool.label} did not finish within {timeout:g} s on {self.host}; "
                                     "it was killed") from exc
            raise
        if timed_out.is_set():
            raise ConnectorError(f"{tool.label} did not finish within {timeout:g} s on {self.host}; it was killed")
        if tool.exit_status is None:  # finish() raises first; this keeps mypy and python -O honest
            raise ConnectorError(_failure(tool.label, None, self.host, tool.stderr))
        return Result(tool.exit_status, data, tool.stderr)

    def write_file(self, path: Arg, chunks: Iterable[bytes], *, overwrite: bool = False, mode: int = 0o600) -> int:
        raise NotImplementedError

    def put(self, local_path: str | os.PathLike[str], path: Arg, *, overwrite: bool = False,
            mode: int = 0o600) -> int:
        """Copy a local file to ``path`` on the database host (as :meth:`write_file`)."""
        try:
            source = open(local_path, "rb")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise ConnectorError(f"unable to read {os.fspath(local_path)}: {exc.strerror}") from exc
        with source:
            return self.write_file(path, iter(lambda: source.read(COPY_BUFFER), b""), overwrite=overwrite, mode=mode)


# --------------------------------------------------------------------------------------------
# Local


class _LocalProcess:
    def __init__(self, tool: _proc.ToolProcess) -> None:
        self.tool = tool
        self.stdout = tool.stdout

    def write(self, data: bytes) -> None:
        stdin = self.tool.popen.stdin
        if stdin is None or stdin.closed:
            raise _StdinClosed
        stdin.write(data)

    def close_stdin(self) -> None:
        if self.tool.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.tool.popen.stdin.close()

    def wait(self, timeout: float | None) -> int | None:
        with contextlib.suppress(OSError):
            self.stdout.close()
        return self.tool.popen.wait(timeout)

    def signal_name(self) -> str | None:
        return None

    def kill(self) -> None:
        if self.tool.popen.poll() is None:
            self.tool.popen.kill()

    def stderr_tail(self) -> str:
        return self.tool.stderr_tail()

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.stdout.close()
        self.tool.close()


class LocalRunner(_RunnerBase):
    """Runs tools on this machine; ``env`` is added to this process's environment."""

    def __init__(self, *, host: str = "localhost") -> None:
        self.host = host
        self.windows = os.name == "nt"

    def _start(self, argv: Sequence[Arg], *, env: Mapping[str, str] | None, stdin: Stdin, secrets: Iterable[str],
               label: str | None, check: bool) -> ToolStream:
        args, secret_list, name = self._prepare(argv, secrets, label)
        tool = _proc.ToolProcess(args, env=_proc.tool_env(None, **dict(env or {})), secrets=secret_list,
                                 stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE, label=name)
        return ToolStream(_LocalProcess(tool), label=name, host=self.host, secrets=secret_list, stdin=stdin,
                          check=check)

    def read_file(self, path: Arg) -> BinaryIO:
        with self._translated("read", path):
            return open(path, "rb")  # the caller closes it

    def write_file(self, path: Arg, chunks: Iterable[bytes], *, overwrite: bool = False, mode: int = 0o600) -> int:
        """Write ``path`` as ``path.partial``, fsync it and rename it into place (then fsync the folder)."""
        target = os.fspath(path)
        partial = target + ".partial"
        with self._translated("write", path):
            if not overwrite and os.path.lexists(target):
                raise ConnectorError(f"{target} already exists on {self.host}; refusing to overwrite it")
            written = 0
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), mode)
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in chunks:
                        out.write(chunk)
                        written += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(partial, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(partial)
                raise
            if os.name != "nt":  # a directory cannot be opened (or fsynced) on Windows
                dir_fd = os.open(os.path.dirname(os.path.abspath(target)), os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            return written

    def exists(self, path: Arg) -> bool:
        return os.path.lexists(path)

    def listdir(self, path: Arg) -> list[str]:
        with self._translated("list", path):
            return sorted(os.listdir(path))

    def stat(self, path: Arg) -> FileStat:
        with self._translated("stat", path):
            st = os.stat(path)
        return FileStat(st.st_size, st.st_mtime, stat_module.S_ISDIR(st.st_mode), stat_module.S_IMODE(st.st_mode))

    def remove(self, path: Arg) -> None:
        with self._translated("remove", path):
            os.unlink(path)

    @contextlib.contextmanager
    def _translated(self, op: str, path: Arg) -> Any:
        try:
            yield
        except OSError as exc:
            raise ConnectorError(f"unable to {op} {path} on {self.host}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# SSH


class _Loop:
    """A private asyncio event loop in its own thread, for synchronous callers."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def call(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        if threading.current_thread() is self.thread:
            raise RuntimeError("an SshRunner method was called from its own event loop")

        async def wrapped() -> T:
            return await awaitable

        future = asyncio.run_coroutine_threadsafe(wrapped(), self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def soon(self, callback: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self.loop.call_soon_threadsafe(callback, *args)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class _SshReader(io.RawIOBase):
    """A synchronous byte stream over an asyncssh reader or SFTP file."""

    def __init__(self, loop: _Loop, read: Any, translate: Any, close: Any = None) -> None:
        super().__init__()
        self._loop = loop
        self._read = read  # size -> coroutine giving bytes (b"" at the end)
        self._translate = translate
        self._close = close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        with self._translate():
            data: bytes = self._loop.call(self._read(len(view)))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed and self._close is not None:
            with contextlib.suppress(Exception):
                self._loop.call(self._close())
        super().close()


class _SshProcess:
    def __init__(self, runner: SshRunner, loop: _Loop, conn: asyncssh.SSHClientConnection,
                 process: asyncssh.SSHClientProcess[bytes], stderr: _StderrTail) -> None:
        self._runner = runner
        self._loop = loop
        self._conn = conn
        self._p = process
        self._stderr = stderr
        self._killing = False
        raw = _SshReader(self._loop, process.stdout.read, lambda: runner._translated("read the output of a tool"))
        self.stdout = cast(BinaryIO, io.BufferedReader(raw, COPY_BUFFER))

    def write(self, data: bytes) -> None:
        async def write() -> None:
            if self._p.stdin.is_closing():
                raise _StdinClosed
            self._p.stdin.write(data)
            await self._p.stdin.drain()

        try:
            self._loop.call(write())
        except _StdinClosed:
            raise
        except Exception as exc:
            raise _StdinClosed from exc

    def close_stdin(self) -> None:
        async def eof() -> None:
            if not self._p.stdin.is_closing():
                self._p.stdin.write_eof()

        self._loop.call(eof())

    def wait(self, timeout: float | None) -> int | None:
        async def wait() -> int | None:
            await asyncio.wait_for(self._p.wait_closed(), timeout)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stderr.task, 10)
            return self._p.returncode

        with self._runner._translated("wait for a tool"):
            return self._loop.call(wait())

    def signal_name(self) -> str | None:
        sig = self._p.exit_signal
        return sig[0] if sig else None

    def kill(self) -> None:
        async def kill() -> None:
            if self._killing:
                return
            self._killing = True
            with contextlib.suppress(Exception):
                self._p.kill()  # an SSH "signal" request, which many servers ignore
            with contextlib.suppress(Exception):
                pid = await asyncio.wait_for(asyncio.shield(self._stderr.pid), 10)
                if pid is not None and self._p.returncode is None:
                    # sshd made the tool a session leader (setsid, then exec all the way): its group
                    # holds its children too, as for OpenSSH's own killpg()
                    await asyncio.wait_for(self._conn.run(
                        f"kill -KILL -- -{pid} 2>/dev/null || kill -KILL {pid}", check=False), 10)
            self._p.close()  # and a Windows host gets only this: the channel closes

        self._loop.soon(lambda: asyncio.ensure_future(kill()))

    def stderr_tail(self) -> str:
        return bytes(self._stderr.tail).decode("utf-8", "replace").strip()

    def release(self) -> None:
        self._loop.soon(self._p.close)


class _StderrTail:
    """Reads a remote tool's stderr in the loop: the wrapper's PID line first (when ``wrapped``), then
    the last STDERR_TAIL bytes."""

    def __init__(self, reader: Any, wrapped: bool) -> None:
        self.tail = bytearray()
        self.pid: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        if not wrapped:
            self.pid.set_result(None)
        self.task = asyncio.ensure_future(self._collect(reader))

    async def _collect(self, reader: Any) -> None:
        try:
            while chunk := await reader.read(1 << 16):
                self.tail += chunk
                if not self.pid.done():
                    match = _PID_LINE.match(self.tail)
                    if match:
                        self.pid.set_result(int(match.group(1)))
                        del self.tail[: match.end()]
                    elif b"\n" in self.tail or len(self.tail) > 64:
                        self.pid.set_result(None)  # the wrapper itself failed: this is its error
                if len(self.tail) > STDERR_TAIL:
                    del self.tail[:-STDERR_TAIL]
        finally:
            if not self.pid.done():
                self.pid.set_result(None)


class SshRunner(_RunnerBase):
    """Runs tools on ``user@host:port`` over one SSH connection (files over SFTP on the same one).

    ``windows=True`` is a Win32-OpenSSH host: ``shell`` is its DefaultShell (``"cmd"``, the default,
    or ``"powershell"``) and paths are Windows paths.  ``env_via`` is ``"stdin"`` (POSIX default: no
    server configuration needed) or ``"setenv"`` (the only choice on Windows; sshd needs ``AcceptEnv``
    for each name and drops the others silently).  The connection opens on first use.
    """

    def __init__(self, user: str, host: str, port: int = 22, known_hosts: str | os.PathLike[str] | None = None,
                 client_keys: Sequence[str | os.PathLike[str]] | None = None, *, windows: bool = False,
                 shell: Literal["cmd", "powershell"] = "cmd", env_via: Literal["stdin", "setenv"] | None = None,
                 connect_timeout: float = 30) -> None:
        if env_via == "stdin" and windows:
            raise ValueError("env_via='stdin' needs a POSIX shell on the remote host")
        self.user = user
        self.hostname = host
        self.port = port
        self.host = host if port == 22 else f"{host}:{port}"
        self.windows = windows
        self.shell = shell
        self.env_via: Literal["stdin", "setenv"] = env_via or ("setenv" if windows else "stdin")
        self._known_hosts = ssh_settings.known_hosts_option(known_hosts, KNOWN_HOSTS_ENV, _SFTP_KNOWN_HOSTS_ENV)
        self._client_keys = ssh_settings.client_keys_option(client_keys, KEY_ENV, _SFTP_KEY_ENV)
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._loop: _Loop | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._closed = False

    # connection -------------------------------------------------------------------------------

    def _loop_or_start(self) -> _Loop:
        with self._lock:
            if self._closed:
                raise ConnectorError(f"the SSH runner for {self.host} is closed")
            if self._loop is None:
                self._loop = _Loop(f"dtstore-ssh-{self.host}")
            return self._loop

    def _connection(self) -> tuple[_Loop, asyncssh.SSHClientConnection]:
        loop = self._loop_or_start()
        with self._lock:
            if self._conn is None:
                try:
                    import asyncssh
                except ImportError as exc:
                    raise ConnectorError("running tools over SSH needs asyncssh: pip install 'dtstore[sftp]'") from exc
                with self._translated("connect"):
                    self._conn = loop.call(asyncssh.connect(
                        self.hostname, self.port, username=self.user, known_hosts=self._known_hosts,
                        client_keys=self._client_keys, connect_timeout=self._connect_timeout,
                        keepalive_interval=30,
                    ))
            return loop, self._conn

    def _sftp_client(self) -> tuple[_Loop, asyncssh.SFTPClient]:
        loop, conn = self._connection()
        with self._lock:
            if self._sftp is None:
                with self._translated("start SFTP"):
                    self._sftp = loop.call(conn.start_sftp_client())
            return loop, self._sftp

    def close(self) -> None:
        """Close the connection and stop the event loop thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, conn, sftp = self._loop, self._conn, self._sftp
            self._loop = self._conn = self._sftp = None
        if loop is None:
            return

        async def shut() -> None:
            if sftp is not None:
                sftp.exit()
            if conn is not None:
                conn.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.wait_closed(), 10)
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:  # stderr collectors of tools never finished
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with contextlib.suppress(Exception):
            loop.call(shut(), timeout=15)
        loop.stop()

    def __enter__(self) -> SshRunner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @contextlib.contextmanager
    def _translated(self, what: str, path: Arg | None = None) -> Any:
        """asyncssh and OSError exceptions become ConnectorError / HostKeyError, here and only here."""
        try:
            yield
        except DtstoreError:
            raise
        except Exception as exc:
            raise self._translate(exc, what, path) from exc

    def _translate(self, exc: Exception, what: str, path: Arg | None) -> DtstoreError:
        where = f"unable to {what}{f' {path}' if path is not None else ''} on {self.host}"
        cls = type(exc).__name__
        detail = (str(exc).strip().splitlines() or [cls])[0][:300]
        if cls == "HostKeyNotVerifiable":
            return HostKeyError(f"{where}: " + ssh_settings.untrusted_host_key_advice(
                self.hostname, self.port, self._known_hosts, KNOWN_HOSTS_ENV))
        if cls == "PermissionDenied":
            return ConnectorError(f"{where}: SSH authentication as {self.user} failed; check the key "
                                  f"({KEY_ENV}, ssh-agent or ~/.ssh/id_*) and the host's authorized_keys")
        if cls in ("SFTPNoSuchFile", "SFTPNoSuchPath") or isinstance(exc, FileNotFoundError):
            return ConnectorError(f"{where}: no such file or directory")
        if cls in ("SFTPPermissionDenied",) or isinstance(exc, PermissionError):
            return ConnectorError(f"{where}: permission denied")
        if cls.startswith("SFTP"):
            return ConnectorError(f"{where}: {detail}")
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            return ConnectorError(f"{where}: timed out")
        if isinstance(exc, OSError) or cls in ("ConnectionLost", "DisconnectError", "ChannelOpenError",
                                                "ProtocolError", "ServiceNotAvailable"):
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else detail
            return ConnectorError(f"{where}: the SSH connection failed ({text})")
        if type(exc).__module__.startswith("asyncssh"):
            return ConnectorError(f"{where}: {detail}")
        raise exc

    # commands ---------------------------------------------------------------------------------

    def command_line(self, argv: Sequence[Arg]) -> str:
        """The exact command string sent to the host for ``argv``."""
        if not self.windows:
            return posix_command_line(argv)
        if self.shell == "powershell":
            return powershell_command_line(argv)
        return cmd_command_line(argv)

    def _start(self, argv: Sequence[Arg], *, env: Mapping[str, str] | None, stdin: Stdin, secrets: Iterable[str],
               label: str | None, check: bool) -> ToolStream:
        args, secret_list, name = self._prepare(argv, secrets, label)
        env = dict(env or {})
        for key, value in env.items():
            if not _ENV_NAME.match(key):
                raise ConnectorError(f"{key!r} is not a usable environment variable name")
            if "\0" in value:
                raise ConnectorError(f"the value of {key} contains a NUL byte")
        preamble = b""
        setenv: dict[str, str] = {}
        if env and self.env_via == "stdin":
            if any("\n" in value for value in env.values()):
                raise ConnectorError(f"a variable for {name} contains a line break, which env_via='stdin' cannot carry")
            preamble = "".join(f"{value}\n" for value in env.values()).encode()
            names = list(env)
        else:
            setenv, names = env, []
        if not self.windows:
            args = _posix_wrapper(args, names)
        command = self.command_line(args)
        _proc.check_argv([command], secret_list)
        loop, conn = self._connection()

        async def start() -> tuple[asyncssh.SSHClientProcess[bytes], _StderrTail]:
            process = await conn.create_process(command, env=setenv or (), encoding=None)
            return process, _StderrTail(process.stderr, wrapped=not self.windows)

        with self._translated(f"start {name}"):
            process, stderr = loop.call(start())
        return ToolStream(_SshProcess(self, loop, conn, process, stderr), label=name, host=self.host,
                          secrets=secret_list, stdin=stdin, preamble=preamble, check=check)

    # files ------------------------------------------------------------------------------------

    def _remote_path(self, path: Arg) -> str:
        """The SFTP path: Win32-OpenSSH names drive C: as /C:/…"""
        if not self.windows:
            return str(path)
        win = PureWindowsPath(path)
        return ("/" + win.as_posix()) if win.drive and not win.drive.startswith("\\\\") else win.as_posix()

    def read_file(self, path: Arg) -> BinaryIO:
        loop, sftp = self._sftp_client()
        with self._translated("read", path):
            remote = loop.call(sftp.open(self._remote_path(path), "rb"))
        raw = _SshReader(loop, remote.read, lambda: self._translated("read", path), remote.close)
        return cast(BinaryIO, io.BufferedReader(raw, COPY_BUFFER))

    def write_file(self, path: Arg, chunks: Iterable[bytes], *, overwrite: bool = False, mode: int = 0o600) -> int:
        """Write ``path.partial`` over SFTP, fsync it where the server can (fsync@openssh.com), and rename it
        into place.  Without ``overwrite`` an existing ``path`` is refused (a plain SFTP rename never
        replaces a file); with it, posix-rename@openssh.com replaces it atomically, or (servers without
        that extension) the old file is removed first."""
        import asyncssh

        loop, sftp = self._sftp_client()
        target = self._remote_path(path)
        partial = target + ".partial"
        with self._translated("write", path):
            if not overwrite and loop.call(sftp.exists(target)):
                raise ConnectorError(f"{path} already exists on {self.host}; refusing to overwrite it")
            attrs = asyncssh.SFTPAttrs(permissions=mode) if not self.windows else asyncssh.SFTPAttrs()
            remote = loop.call(sftp.open(partial, "wb", attrs))
            written = 0
            try:
                try:
                    for chunk in chunks:
                        loop.call(remote.write(chunk, written))
                        written += len(chunk)
                    with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                        loop.call(remote.fsync())
                finally:
                    loop.call(remote.close())
                loop.call(self._rename(sftp, partial, target, overwrite))
            except BaseException:
                with contextlib.suppress(Exception):
                    loop.call(sftp.remove(partial))
                raise
        return written

    @staticmethod
    async def _rename(sftp: asyncssh.SFTPClient, source: str, target: str, overwrite: bool) -> None:
        import asyncssh

        if not overwrite:
            await sftp.rename(source, target)
            return
        try:
            await sftp.posix_rename(source, target)
        except asyncssh.SFTPOpUnsupported:
            if await sftp.exists(target):
                await sftp.remove(target)
            await sftp.rename(source, target)

    def exists(self, path: Arg) -> bool:
        loop, sftp = self._sftp_client()
        with self._translated("stat", path):
            return bool(loop.call(sftp.exists(self._remote_path(path))))

    def listdir(self, path: Arg) -> list[str]:
        loop, sftp = self._sftp_client()
        with self._translated("list", path):
            names = loop.call(sftp.listdir(self._remote_path(path)))
        return sorted(str(n) for n in names if n not in (".", ".."))

    def stat(self, path: Arg) -> FileStat:
        loop, sftp = self._sftp_client()
        with self._translated("stat", path):
            attrs = loop.call(sftp.stat(self._remote_path(path)))
        perms = attrs.permissions
        return FileStat(int(attrs.size or 0), float(attrs.mtime) if attrs.mtime is not None else None,
                        attrs.type == 2 or (perms is not None and stat_module.S_ISDIR(perms)),  # 2: a directory
                        stat_module.S_IMODE(perms) if perms is not None else None)

    def remove(self, path: Arg) -> None:
        loop, sftp = self._sftp_client()
        with self._translated("remove", path):
            loop.call(sftp.remove(self._remote_path(path)))
