"""Snapshot modes: ``full``, ``diff``, ``log`` and ``auto``, and how ``auto`` chooses.

A connector declares the modes it supports; anything else is a usage error (exit 2) naming them.
``log`` continues the chain or fails with ChainError (17); ``diff`` needs a full to be based on;
``auto`` takes the smallest mode whose check passes (log, then diff, then full) and records why it
did not take a smaller one, so a broken chain heals itself with a full instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dtstore.connectors.base import ChainCheck
from dtstore.errors import ChainError, UsageError

MODES = ("full", "diff", "log", "auto")
Check = Callable[[], ChainCheck]


def check_mode(mode: str, supported: Sequence[str], kind: str) -> str:
    """``mode`` if the connector supports it, else UsageError naming what it supports."""
    choices = [*supported, "auto"] if "auto" not in supported else list(supported)
    if mode not in choices:
        raise UsageError(f"the {kind} connector has no {mode!r} mode; use {', '.join(choices)}")
    return mode


@dataclass(frozen=True)
class ModeChoice:
    """The mode a run takes, and for ``auto`` why it did not take a smaller one."""

    mode: str
    reason: str | None = None


def choose_mode(requested: str, *, log: Check | None = None, diff: Check | None = None) -> ModeChoice:
    """Decide the mode of one run; ``log``/``diff`` are the checks of the modes the connector has.

    A check runs only when its mode is asked for (or tried by ``auto``): each may query the server.
    """
    if requested == "full":
        return ModeChoice("full")
    if requested in ("log", "diff"):
        check = log if requested == "log" else diff
        if check is None:
            raise UsageError(f"this connector has no {requested!r} mode")
        result = check()
        if not result.ok:
            raise ChainError(
                f"cannot take a {requested} snapshot: {result.reason}. A full snapshot is needed: run "
                "dtstore snapshot … --mode full (or --mode auto)"
            )
        return ModeChoice(requested)
    reasons: list[str] = []
    for name, check in (("log", log), ("diff", diff)):
        if check is None:
            continue
        result = check()
        if result.ok:
            return ModeChoice(name, "; ".join(reasons) or None)
        reasons.append(f"no {name}: {result.reason}")
    return ModeChoice("full", "; ".join(reasons) or "the connector takes only full snapshots")


__all__ = ["MODES", "Check", "ModeChoice", "check_mode", "choose_mode"]
