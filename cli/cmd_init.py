"""dtstore init: create a repository and its first key slot."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore import Repository
from dtstore.cli._repo import password, repo_url
from dtstore.cli.output import Output


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help="create a new repository")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    url = repo_url(args)
    with Repository.init(url, password(confirm=True)) as repo:
        if out.json:
            out.emit({"type": "summary", "repository_id": repo.config.repository_id,
                      "location": repo.store.describe()})
        else:
            out.line(f"created repository {repo.config.repository_id} at {repo.store.describe()}")
    return 0
