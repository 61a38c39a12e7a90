"""Entry point: global options, one sub-command per cmd_*.py, errors → exit codes (the only exit)."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from dtstore import __version__
from dtstore.cli import (
    cmd_check,
    cmd_dump,
    cmd_forget,
    cmd_index,
    cmd_init,
    cmd_key,
    cmd_ls,
    cmd_prune,
    cmd_restore,
    cmd_snapshot,
    cmd_snapshots,
    cmd_stats,
    cmd_unlock,
)
from dtstore.cli.output import Output
from dtstore.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, DtstoreError

COMMANDS: tuple[ModuleType, ...] = (
    cmd_init, cmd_snapshot, cmd_snapshots, cmd_ls, cmd_restore, cmd_dump, cmd_forget, cmd_prune,
    cmd_check, cmd_unlock, cmd_key, cmd_index, cmd_stats,
)

EPILOG = """exit status: 0 ok, 1 error, 2 usage, 3 snapshot made but some sources unreadable,
10 no repository, 11 repository locked, 12 wrong password, 13 storage access denied,
14 untrusted SSH host key, 15 remote unavailable, 16 data integrity error, 17 broken log chain"""


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
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options(defaults=True)
    parser = _Parser(prog="dtstore", description="Deduplicated, encrypted backups of databases and files.",
                     epilog=EPILOG, parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dtstore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    sub_common = _common_options(defaults=False)
    for module in COMMANDS:
        module.register(sub, sub_common)
    return parser


BACKUP_MMAP_THRESHOLD = 256 << 10
READ_MMAP_THRESHOLD = 32 << 20  # glibc's largest
READING_COMMANDS = frozenset({"restore", "dump"})


def _tune_malloc(mmap_threshold: int) -> None:
    """Large buffers (chunks, packs) come and go all the time.  When writing, glibc's defaults keep
    freed ones in per-thread arenas and peak memory grows, so a low fixed mmap threshold returns them
    to the system.  Restore and dump only hold a few ranges at a time, and there a low threshold costs
    a fresh mmap, page faults and munmap per chunk (measured ~0.7 s of system time per GiB)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    # asyncio reports failures inside aiohttp's own tasks (an S3 connection cut mid-request) as "Task
    # exception was never retrieved" plus a traceback on stderr; the same failure reaches dtstore as a
    # StorageError, which is retried and, if it persists, reported in one line
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    parser = build_parser()
    args = parser.parse_args(argv)
    _tune_malloc(READ_MMAP_THRESHOLD if args.command in READING_COMMANDS else BACKUP_MMAP_THRESHOLD)
    out = Output(as_json=args.json, quiet=args.quiet)
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
    raise SystemExit(main())
