"""Text or JSON-lines output, and rich progress bars on a terminal."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from dtstore.progress import ProgressCallback, ProgressEvent, no_progress


class Output:
    def __init__(self, *, as_json: bool, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.json = as_json
        self.quiet = quiet
        self.out = stream or sys.stdout
        self.err = sys.stderr

    def emit(self, obj: dict[str, Any]) -> None:
        """One JSON line (in --json mode)."""
        self.out.write(json.dumps(obj, default=str) + "\n")  # ASCII: valid even for non-UTF-8 names
        self.out.flush()

    def line(self, text: str) -> None:
        if not self.json:
            self.out.write(printable(text) + "\n")

    def info(self, text: str) -> None:
        if not self.json and not self.quiet:
            self.err.write(printable(text) + "\n")

    def warning(self, path: str, message: str) -> None:
        if self.json:
            self.emit({"type": "warning", "path": path, "message": message})
        else:
            self.err.write(printable(f"warning: {path}: {message}") + "\n")

    def error(self, message: str, exit_code: int) -> None:
        if self.json:
            self.emit({"type": "error", "message": message, "exit_code": exit_code})
        else:
            self.err.write(printable(f"dtstore: error: {message}") + "\n")

    @contextmanager
    def progress(self, title: str) -> Iterator[ProgressCallback]:
        if self.json:
            yield self._json_progress()
        elif self.quiet or not self.err.isatty():
            yield self._warnings_only
        else:
            with _RichProgress(title, self.err) as callback:
                yield callback

    def _warnings_only(self, event: ProgressEvent) -> None:
        if event.message:
            self.warning(event.current, event.message)

    def _json_progress(self) -> ProgressCallback:
        last = [0.0]

        def callback(event: ProgressEvent) -> None:
            if event.message:
                self.warning(event.current, event.message)
                return
            now = time.monotonic()
            if now - last[0] < 0.5:
                return
            last[0] = now
            self.emit({"type": "status", "phase": event.phase, "bytes_done": event.bytes_done,
                       "bytes_total": event.bytes_total, "items_done": event.items_done})

        return callback


class _RichProgress:
    def __init__(self, title: str, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._console = Console(file=stream)
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                             TransferSpeedColumn(), TimeRemainingColumn(), console=self._console,
                             transient=True)
        self._task = self._bar.add_task(title, total=None)

    def __enter__(self) -> ProgressCallback:
        self._bar.start()
        return self._update

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def _update(self, event: ProgressEvent) -> None:
        if event.message:
            self._console.print(f"[yellow]warning:[/] {event.current}: {event.message}")
            return
        self._bar.update(self._task, completed=event.bytes_done, total=event.bytes_total)


def printable(text: str) -> str:
    """Names that are not UTF-8 (surrogate-escaped) shown as \\xNN instead of crashing the terminal."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


__all__ = ["Output", "human_size", "no_progress"]
