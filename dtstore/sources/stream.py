"""Standard input and the output of a command, each stored as one named item."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from dtstore.errors import SourceError, UsageError
from dtstore.sources.base import Entry, Reporter


def _item_path(name: str) -> bytes:
    path = name.strip().lstrip("/")
    if not path or path.endswith("/") or any(p in ("", ".", "..") for p in path.split("/")):
        raise UsageError(f"--stdin-name {name!r} is not a usable file name")
    return path.encode("utf-8", "surrogateescape")


class StdinSource:
    """Reads ``stream`` (standard input by default) to its end.  Use ``set -o pipefail`` upstream:
    a pipe cannot tell us that the program writing into it failed."""

    kind = "stdin"

    def __init__(self, name: str, stream: BinaryIO | None = None) -> None:
        self._path = _item_path(name)
        self._stream = stream if stream is not None else sys.stdin.buffer

    @property
    def source_id(self) -> str:
        return f"stdin:{self._path.decode('utf-8', 'surrogateescape')}"

    @property
    def display_paths(self) -> list[str]:
        return ["-"]

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        @contextmanager
        def opener() -> Iterator[BinaryIO]:
            yield self._stream

        yield Entry(path=self._path, type="file", mode=0o600, mtime_ns=time.time_ns(), opener=opener)

    def metadata(self) -> dict[str, Any]:
        return {"name": self._path.decode("utf-8", "surrogateescape")}


class CommandSource:
    """Runs a shell command and stores its standard output; a non-zero exit means no snapshot.

    The command text is not recorded in the manifest (it may carry credentials); its exit status,
    duration and output size are.
    """

    kind = "command"

    def __init__(self, command: str, name: str) -> None:
        if not command.strip():
            raise UsageError("--from-command needs a command")
        self._command = command
        self._path = _item_path(name)
        self._meta: dict[str, Any] = {}

    @property
    def source_id(self) -> str:
        return f"command:{self._path.decode('utf-8', 'surrogateescape')}"

    @property
    def display_paths(self) -> list[str]:
        return [self._path.decode("utf-8", "surrogateescape")]

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        yield Entry(path=self._path, type="file", mode=0o600, mtime_ns=time.time_ns(), opener=self._run)

    @contextmanager
    def _run(self) -> Iterator[BinaryIO]:
        started = time.monotonic()
        program = self._command.split()[0]
        proc = subprocess.Popen(self._command, shell=True, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        try:
            yield proc.stdout  # type: ignore[misc]
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        status = proc.wait()
        self._meta = {"name": self.display_paths[0], "exit_status": status,
                      "duration_seconds": round(time.monotonic() - started, 3)}
        if status != 0:
            reason = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
            raise SourceError(f"the command ({program} …) {reason}; no snapshot was made")

    def metadata(self) -> dict[str, Any]:
        return dict(self._meta)
