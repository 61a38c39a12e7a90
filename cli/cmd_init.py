"""dtstore init: create a repository and its first key slot."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore import Repository
from dtstore.cli._repo import password, repo_url
from dtstore.cli.output import Output
from dtstore.format import DEFAULT_ZSTD_LEVEL


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help="create a new repository")
    p.add_argument("--compression-level", type=int, default=DEFAULT_ZSTD_LEVEL, metavar="N",
                   help=f"zstd level for every chunk, 0 (none) to 22; fixed for the repository's life "
                        f"(default {DEFAULT_ZSTD_LEVEL}; 1 spends ~30 %% less CPU on SQL dumps)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    url = repo_url(args)
    with Repository.init(url, password(confirm=True), zstd_level=args.compression_level) as repo:
        if out.json:
            out.emit({"type": "summary", "repository_id": repo.config.repository_id,
                      "location": repo.store.describe()})
        else:
            out.line(f"created repository {repo.config.repository_id} at {repo.store.describe()}")
    return 0
