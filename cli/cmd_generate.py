"""dtstore generate: man pages and shell completion scripts, from the argument parser."""

from __future__ import annotations

import argparse
import os
from typing import Any

from dtstore.cli import docgen
from dtstore.cli.output import Output
from dtstore.errors import UsageError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("generate", parents=[common], help="write man pages or a shell completion script",
                       description="Needs no repository.  --man writes dtstore.1 and one dtstore-COMMAND.1 per "
                                   "command into DIR (created if missing); --completion prints a script.")
    p.add_argument("--man", metavar="DIR", help="write the man pages into DIR")
    p.add_argument("--completion", choices=sorted(docgen.COMPLETIONS), metavar="SHELL",
                   help="print the completion script for SHELL (bash, zsh or fish) to standard output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    from dtstore.cli.main import build_parser

    if not args.man and not args.completion:
        raise UsageError("give --man DIR or --completion bash|zsh|fish")
    if args.man and args.completion:
        raise UsageError("--man and --completion exclude each other")
    parser = build_parser()
    if args.completion:
        out.out.write(docgen.COMPLETIONS[args.completion](parser))
        return 0
    os.makedirs(args.man, exist_ok=True)
    pages = docgen.man_pages(parser)
    for name, text in pages.items():
        with open(os.path.join(args.man, name), "w", encoding="utf-8") as f:
            f.write(text)
    if out.json:
        out.emit({"type": "summary", "directory": args.man, "pages": sorted(pages)})
    else:
        out.line(f"wrote {len(pages)} man page(s) to {args.man}")
    return 0
