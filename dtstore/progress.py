"""Progress events: the library reports, the CLI renders.  The default callback does nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """``phase`` is ``backup``, ``restore``, ``check`` …; totals are None when unknown (streams)."""

    phase: str
    bytes_done: int = 0
    bytes_total: int | None = None
    items_done: int = 0
    items_total: int | None = None
    current: str = ""
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    return None
