"""Text or JSON-lines output, and rich progress bars on a terminal."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from dtstore.progress import ProgressCallback, ProgressEvent, no_progress


class Output:
    def __init__(self, *, as_json: bool, quiet: bool = False, stream: TextIO | None = None, utc: bool = False) -> None:
        self.json = as_json
        self.quiet = quiet
        self.utc = utc
        self.out = stream or sys.stdout
        self.err = sys.stderr

    def when(self, moment: dt.datetime) -> str:
        """The one time rule of text output: local time, or UTC (with a ``Z``) under ``--utc``."""
        if self.utc:
            return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")

    def width(self) -> int | None:
        """Columns to fit a table into: the terminal's (or ``$COLUMNS``), None when not a terminal."""
        if os.environ.get("COLUMNS") or self.out.isatty():
            return shutil.get_terminal_size().columns
        return None

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
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self._console = Console(file=stream)
        # IEC units (KiB, MiB) like every summary; the total and ETA show once the source's size is known
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                             _speed_column(), TimeRemainingColumn(), console=self._console, transient=True)
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


def _speed_column() -> Any:
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class IecSpeed(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?/s" if speed is None else f"{human_size(speed)}/s", style="progress.data.speed")

    return IecSpeed()


def fit_table(headers: list[str], rows: list[list[str]], *, width: int | None, flexible: Collection[int],
              right: Collection[int] = ()) -> list[str]:
    """Lines of a table whose columns are two spaces apart.  When it is wider than ``width``, the
    widest ``flexible`` column is narrowed (to no less than 6) until it fits, cutting cells with
    ``…``; the last column is never padded."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    if width is not None:
        while sum(widths) + 2 * (len(widths) - 1) > width:
            candidates = [i for i in flexible if widths[i] > max(6, len(headers[i]))]
            if not candidates:
                break
            widths[max(candidates, key=lambda i: widths[i])] -= 1  # the widest gives up a column at a time

    def cell(text: str, i: int) -> str:
        if len(text) > widths[i]:
            text = text[: widths[i] - 1] + "…"
        if i == len(widths) - 1 and i not in right:
            return text
        return text.rjust(widths[i]) if i in right else text.ljust(widths[i])

    return ["  ".join(cell(text, i) for i, text in enumerate(row)).rstrip() for row in [headers, *rows]]


def printable(text: str) -> str:
    """Names that are not UTF-8 (surrogate-escaped) shown as \\xNN instead of crashing the terminal."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


__all__ = ["Output", "fit_table", "human_size", "no_progress"]
