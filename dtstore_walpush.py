"""``dtstore-wal-push %p``: the fast archive_command, a client of dtstore's WAL pusher that imports no dtstore.

``dtstore wal-push %p`` does the same, but importing dtstore costs a quarter of a second per WAL
file, which caps a busy server's archiving at about 4 segments/s.  This module starts in ~30 ms: it
hands the file to the running pusher (``dtstore wal-push --serve``, see
``dtstore.connectors.postgresql.pushd``) over its unix socket and exits 0 only when the pusher
answers that the file is durable; with no pusher answering it starts one exactly as ``dtstore
wal-push`` would (the same spool folder, so both clients share one pusher).

Options: ``--repo URL`` (default ``$DTSTORE_REPOSITORY``), ``--spool DIR`` (default
``$DTSTORE_WAL_SPOOL`` or the per-data-directory folder under /tmp), and the pusher's ``--batch N``,
``--idle-exit S``, ``--consolidate N``.  Exit 0 pushed or already archived, 1 refused or failed, 2 usage.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

CONNECT_WAIT = 60.0


def default_spool(pgdata: Path, repo_url: str) -> Path:
    """Keep in step with dtstore.connectors.postgresql.pushd.default_spool (a test checks they agree)."""
    key = hashlib.sha256(f"{pgdata.resolve()}\0{repo_url}".encode()).hexdigest()[:16]
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"dtstore-wal-{os.getuid()}" / key


def _spawn(spool: Path, argv: list[str]) -> None:
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(spool / "pushd.log", "ab") as log:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                         close_fds=True)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts: dict[str, str] = {}
    rest: list[str] = []
    while args:
        arg = args.pop(0)
        if arg in ("--repo", "--spool", "--batch", "--idle-exit", "--consolidate") and args:
            opts[arg] = args.pop(0)
        else:
            rest.append(arg)
    if len(rest) != 1:
        print("usage: dtstore-wal-push [--repo URL] [--spool DIR] [--batch N] [--idle-exit S] [--consolidate N] PATH",
              file=sys.stderr)
        return 2
    path = Path(rest[0])
    absolute = path if path.is_absolute() else Path.cwd() / path
    if not absolute.is_file():
        print(f"dtstore-wal-push: {rest[0]} is not a file", file=sys.stderr)
        return 2
    pgdata = absolute.parent.parent if absolute.parent.name == "pg_wal" else Path.cwd()
    repo = opts.get("--repo") or os.environ.get("DTSTORE_REPOSITORY")
    if not repo:
        print("dtstore-wal-push: no repository: use --repo URL or set DTSTORE_REPOSITORY", file=sys.stderr)
        return 2
    spool = Path(opts.get("--spool") or os.environ.get("DTSTORE_WAL_SPOOL") or default_spool(pgdata, repo))
    serve = [sys.executable, "-m", "dtstore.cli", "wal-push", "--serve", "--spool", str(spool),
             "--repo", repo, "--batch", opts.get("--batch", "64"), "--idle-exit", opts.get("--idle-exit", "600"),
             "--consolidate", opts.get("--consolidate", "32")]
    deadline, spawned = time.monotonic() + CONNECT_WAIT, False
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(spool / "pushd.sock"))
            break
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if not spawned:
                _spawn(spool, serve)
                spawned = True
            if time.monotonic() > deadline:
                print(f"dtstore-wal-push: no WAL pusher answers on {spool}/pushd.sock (see pushd.log)", file=sys.stderr)
                return 1
            time.sleep(0.05)
    with sock:
        sock.sendall((json.dumps({"op": "push", "path": str(absolute), "pgdata": str(pgdata)}) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            block = sock.recv(65536)
            if not block:
                break
            data += block
    if not data:
        print("dtstore-wal-push: the WAL pusher closed the connection without an answer; PostgreSQL will retry",
              file=sys.stderr)
        return 1
    reply = json.loads(data)
    if not reply.get("ok"):
        print(f"dtstore-wal-push {absolute.name}: {reply.get('message')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
