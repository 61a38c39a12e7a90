"""Entry point: global options, one sub-command per cmd_*.py, errors → exit codes (the only exit)."""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from dtstore import __version__
from dtstore.cli import _repo, helptext
from dtstore.cli.output import Output
from dtstore.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, DtstoreError

COMMAND_NAMES: tuple[str, ...] = (
    "init", "snapshot", "snapshots", "ls", "restore", "dump", "forget", "prune",
    "check", "repair", "unlock", "key", "index", "stats",
    "diff", "find", "tag", "generate", "restore-points", "copy", "mount",
    "run", "agent", "drill",
    "config", "wal-push", "wal-fetch", "schedule",
    "status", "domino",
)
"""in the order ``--help`` lists them; each is ``dtstore.cli.cmd_<name>`` (``-`` as ``_``)"""

GLOBAL_OPTIONS_WITH_VALUE = frozenset({"--repo", "-r", "--limit-upload"})

REPOSITORY_COMMANDS = frozenset({
    "snapshot", "snapshots", "ls", "restore", "dump", "forget", "prune", "check", "repair", "unlock", "key",
    "index", "stats", "diff", "find", "tag", "restore-points", "copy", "mount", "wal-push", "wal-fetch", "domino",
})
"""the commands that open the repository of ``--repo`` with its password (``_repo.open_repo``): for
these the opening starts before the command's modules load"""


def command_module(name: str) -> ModuleType:
    """The module of one command: imported only when that command runs (or all are listed)."""
    return importlib.import_module(f"dtstore.cli.cmd_{name.replace('-', '_')}")


def _command_word(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names, if it is one: global options and their values come first."""
    words = iter(argv)
    for word in words:
        if word in GLOBAL_OPTIONS_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word if word in COMMAND_NAMES else None
    return None


EPILOG = """exit status: 0 ok, 1 error, 2 usage, 3 snapshot made but some sources unreadable,
10 no repository, 11 repository locked, 12 wrong password, 13 storage access denied,
14 untrusted SSH host key, 15 remote unavailable, 16 data integrity error, 17 broken log chain,
18 needs an admin key, 19 no room on the restore target"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"dtstore: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _common_options(*, defaults: bool) -> argparse.ArgumentParser:
    """The global options.  Sub-commands accept them too, but without defaults of their own, so that
    ``dtstore --json snapshots`` is not undone by the sub-command's default."""
    extra: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repo", "-r", metavar="URL", help="repository (default: $DTSTORE_REPOSITORY)",
                        **extra)
    common.add_argument("--json", action="store_true", help="JSON lines on standard output", **extra)
    common.add_argument("--quiet", "-q", action="store_true", help="no progress output", **extra)
    common.add_argument("--limit-upload", type=float, metavar="KIB/S", help="cap upload bandwidth", **extra)
    common.add_argument("--utc", action="store_true", help="show times in UTC instead of local time", **extra)
    return common


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser, or with ``only`` that command's alone: a command runs without
    importing (and paying for) the other twenty-nine."""
    common = _common_options(defaults=True)
    parser = _Parser(prog="dtstore", description="Deduplicated, encrypted backups of databases and files.",
                     epilog=EPILOG, parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dtstore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    sub_common = _common_options(defaults=False)
    for name in (only,) if only else COMMAND_NAMES:
        command_module(name).register(sub, sub_common)
    helptext.decorate(sub)
    return parser


@dataclass(frozen=True)
class MallocTuning:
    mmap_threshold: int
    trim_threshold: int | None = None


# Large buffers (chunks, packs) come and go all the time.  When writing, glibc's defaults keep freed
# ones in per-thread arenas and peak memory grows, so a low fixed mmap threshold returns them to the
# system.  Restore and dump only hold a few ranges at a time; there a low threshold costs a fresh mmap,
# page faults and munmap per chunk, and a low trim threshold hands freed heap back only to fault it in
# again (measured per GiB restored: system time 1.7-1.9 s → 0.7-0.9 s, page faults 89k → 44k, same RSS).
WRITING = MallocTuning(mmap_threshold=256 << 10)
READING = MallocTuning(mmap_threshold=32 << 20, trim_threshold=64 << 20)  # 32 MiB: glibc's largest
READING_COMMANDS = frozenset({"restore", "dump"})

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def _tune_malloc(tuning: MallocTuning) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, tuning.mmap_threshold)
        if tuning.trim_threshold is not None:
            libc.mallopt(_M_TRIM_THRESHOLD, tuning.trim_threshold)
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    command = _command_word(arguments)
    if command in REPOSITORY_COMMANDS:
        _repo.unlock_early(arguments)
    # asyncio reports failures inside aiohttp's own tasks (an S3 connection cut mid-request) as "Task
    # exception was never retrieved" plus a traceback on stderr; the same failure reaches dtstore as a
    # StorageError, which is retried and, if it persists, reported in one line
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        return _run(arguments, command)
    finally:
        _repo.discard_early()


def entry() -> int:
    """The ``dtstore`` program: ``main``, then an exit that skips Python's last garbage collection.
    That collection walks every object the imports made (~50 ms of each command's ~60 ms exit here);
    ``gc.freeze()`` moves them all out of its way.  Nothing dtstore must do at exit waits for it:
    commands close their files and sessions themselves, and ``weakref.finalize`` hooks (scratch
    directories) run at exit either way."""
    code = main()
    gc.freeze()
    return code


def _run(arguments: list[str], command: str | None) -> int:
    parser = build_parser(command)
    args = parser.parse_args(arguments)
    _tune_malloc(READING if args.command in READING_COMMANDS else WRITING)
    out = Output(as_json=args.json, quiet=args.quiet, utc=args.utc)
    try:
        return int(args.run(args, out))
    except DtstoreError as exc:
        out.error(str(exc), exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        out.error("interrupted; nothing was committed", EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 1
    except OSError as exc:
        where = f": {os.fsdecode(exc.filename)}" if exc.filename else ""
        out.error(f"{exc.strerror or exc}{where}", EXIT_ERROR)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(entry())
