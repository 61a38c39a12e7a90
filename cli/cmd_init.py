"""dtstore init: create a repository and its first key slot."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from dtstore import Repository
from dtstore.cli._repo import password, repo_url
from dtstore.cli.cmd_prune import parse_grace
from dtstore.cli.output import Output
from dtstore.compression import DEFAULT as DEFAULT_COMPRESSION


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help="create a new repository")
    p.add_argument("--compression-level", type=int, metavar="N",
                   help=f"zstd level N, as zstd defines it, for every chunk, 0 (none) to 22; fixed for the "
                        f"repository's life (default: {DEFAULT_COMPRESSION.describe()}: about level 1's speed, "
                        f"within 2 %% of level 3's size)")
    p.add_argument("--copy-chunker-from", metavar="URL",
                   help="take the chunker parameters and chunk keys of the repository at URL (its password from "
                        "DTSTORE_FROM_PASSWORD_FILE, DTSTORE_FROM_PASSWORD_COMMAND or DTSTORE_FROM_PASSWORD), so equal "
                        "data gets equal chunk IDs in both and 'copy' between them moves only what is missing")
    p.add_argument("--key-roles", action="store_true",
                   help="admin and backup keys: 'key add --role backup' then makes keys that write backups but "
                        "cannot read, forget or prune anything stored (older dtstore versions refuse the repository)")
    p.add_argument("--retention", metavar="PERIOD",
                   help="S3 Object Lock: every pack, index segment and manifest is put with this retention "
                        "(e.g. 30d); the bucket must have Object Lock enabled; prune waits for it")
    p.add_argument("--retention-mode", choices=["governance", "compliance"], default="governance",
                   help="the Object Lock mode of --retention (default governance)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    url = repo_url(args)
    with contextlib.ExitStack() as stack:
        source = None
        if args.copy_chunker_from:
            source = stack.enter_context(Repository.open(
                args.copy_chunker_from, password(prefix="DTSTORE_FROM_", label="password of the source repository: ")))
        retention = (args.retention_mode, parse_grace(args.retention)) if args.retention else None
        repo = stack.enter_context(Repository.init(url, password(confirm=True), zstd_level=args.compression_level,
                                                   copy_chunker_from=source, key_roles=args.key_roles,
                                                   retention=retention))
        if out.json:
            out.emit({"type": "summary", "repository_id": repo.config.repository_id,
                      "location": repo.store.describe(), "key_roles": repo.config.key_roles,
                      "retention_seconds": repo.config.retention[1] if repo.config.retention else None,
                      "chunker_from": source.config.repository_id if source else None,
                      "compression": repo.config.compression.describe()})
        else:
            out.line(f"created repository {repo.config.repository_id} at {repo.store.describe()}")
            out.line(f"compression: {repo.config.compression.describe()}")
            if source is not None:
                out.line(f"chunker parameters and chunk keys copied from repository {source.config.repository_id}")
    return 0
