"""``dtstore wal-push``: the archive_command, with a persistent helper so a segment costs no KDF.

PostgreSQL's archiver runs ``archive_command`` once per WAL file, one after another, and counts a
file archived only when the command exits 0.  Opening the repository costs a process start, the key
derivation (scrypt, ~0.3 s) and an index refresh, so each ``wal-push`` hands its file to a
*pusher*: a ``dtstore wal-push --serve`` process that keeps the repository open and listens on a
unix socket in the spool folder (mode 0700).  The first ``wal-push`` that finds no pusher starts one
(detached, in its own session) and waits for its socket; a pusher idle for ``--idle-exit`` seconds
exits.  Only one pusher runs per spool folder (an ``flock`` on ``pushd.lock``).

A request names one file.  The pusher answers only once that file is durable in the repository:

* it reads and hashes the file; the archive's index (name → SHA-256, built from the ``wal``
  snapshots of this source) decides: the same hash → done (exit 0), another hash → refused
  (exit 1, never an overwrite), unknown → pushed;
* a push takes the requested file **and** the other files PostgreSQL has marked ready
  (``pg_wal/archive_status/*.ready``, oldest first, at most ``--batch`` files) and commits them as
  ONE ``wal`` snapshot; the manifest is the commit point, so a crash (kill -9 of the pusher or of a
  ``wal-push``) commits nothing or everything, and PostgreSQL retries what it was not told is done;
* a later request for a file the look-ahead already pushed is answered at once if the file is
  unchanged on disk (same device, inode, size, mtime) since it was hashed.

Everything here runs as the server's own user (``postgres``): the installed dtstore, the
repository and the password source must be usable by it (spec/connectors-postgresql.md §2).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from dtstore.connectors.base import SnapshotInfo, snapshots_of
from dtstore.connectors.postgresql import meta
from dtstore.connectors.postgresql.chain import KIND
from dtstore.connectors.postgresql.meta import WalFile, WalMeta
from dtstore.connectors.postgresql.server import read_system_identifier
from dtstore.connectors.postgresql.wal import (
    PushFile,
    WalBatch,
    WalCopy,
    WalIndex,
    conflict_message,
    describe,
    unchanged,
)
from dtstore.errors import ConnectorError, DtstoreError

if sys.platform != "win32":
    import fcntl

SOCKET = "pushd.sock"
LOCK = "pushd.lock"
LOG = "pushd.log"
DEFAULT_BATCH = 64
DEFAULT_IDLE = 600.0
DEFAULT_CONSOLIDATE = 32
CONNECT_WAIT = 60.0


class PushRepo(Protocol):
    def snapshots(self) -> list[Any]: ...

    def snapshot(self, sources: Sequence[Any], *, tags: Sequence[str] = ...) -> Any: ...

    def close(self) -> None: ...

    def forget(self, snapshot_ids: Sequence[str]) -> None: ...

    def open_item(self, snapshot: Any, path: str) -> Any: ...

    def find_item(self, snapshot: Any, path: str) -> Any: ...


def pgdata_of(path: Path) -> Path:
    """archive_command runs in the data directory and %p is ``pg_wal/NAME``."""
    absolute = path if path.is_absolute() else Path.cwd() / path
    if absolute.parent.name == "pg_wal":
        return absolute.parent.parent
    return Path.cwd()


def default_spool(pgdata: Path, repo_url: str) -> Path:
    key = hashlib.sha256(f"{pgdata.resolve()}\0{repo_url}".encode()).hexdigest()[:16]
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"dtstore-wal-{os.getuid()}" / key


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700) if path.parent.name.startswith("dtstore-wal-") else None
    return path


class Pusher:
    """The state of one pusher: the open repository and what it knows of each source's archive."""

    def __init__(self, repo: PushRepo, *, batch: int = DEFAULT_BATCH, host: str = "",
                 consolidate: int = DEFAULT_CONSOLIDATE) -> None:
        self.repo, self.batch, self.host = repo, batch, host or socket.gethostname()
        self.consolidate_at = consolidate
        self.indexes: dict[str, WalIndex] = {}
        self.pushed: dict[tuple[str, str], PushFile] = {}
        self.small: dict[str, int] = {}
        """small wal snapshots pushed per source since the last consolidation"""
        self.stats = {"requests": 0, "snapshots": 0, "files": 0, "done": 0}

    def index(self, system_identifier: str) -> WalIndex:
        idx = self.indexes.get(system_identifier)
        if idx is None:
            idx = self.indexes[system_identifier] = WalIndex()
            idx.load(snapshots_of(self.repo.snapshots(), KIND, f"{KIND}:{system_identifier}"))
        return idx

    def push(self, path: Path, pgdata: Path) -> str:
        """Make ``path`` durable (or find it already is); return what happened.  Raises on failure."""
        self.stats["requests"] += 1
        sysid = read_system_identifier(pgdata)
        earlier = self.pushed.get((sysid, path.name))
        if earlier is not None and earlier.path == path and unchanged(earlier):
            self.stats["done"] += 1
            return "done (pushed ahead)"
        idx = self.index(sysid)
        file = describe(path, hashed=path.name in idx.hashes)  # only a known name needs the hash first
        decision = idx.decide(file)
        if decision == "conflict":
            raise ConnectorError(conflict_message(file.name))
        if decision == "done":
            self.stats["done"] += 1
            return "done (already archived)"
        files = [file, *self._ready(path.parent, idx, sysid, exclude=file.name)]
        files.sort(key=_archive_order)
        size = next((f.size for f in files if f.kind == "segment"), 0) or _segment_size(path.parent)
        snap = self.repo.snapshot([WalBatch(sysid, size, files, self.host)])
        summary = getattr(snap, "summary", None)
        warnings = summary.get("warnings") if isinstance(summary, dict) else None
        if warnings:
            raise ConnectorError(f"the WAL snapshot {snap.short_id} reported warnings: {warnings}")
        idx.add_snapshot(SnapshotInfo.of(snap))
        for f in files:
            self.pushed[(sysid, f.name)] = f
        self.stats["snapshots"] += 1
        self.stats["files"] += len(files)
        self.small[sysid] = self.small.get(sysid, 0) + 1
        return f"pushed in snapshot {snap.short_id} with {len(files) - 1} more"

    def maybe_consolidate(self, sysid: str) -> str | None:
        """Once ``consolidate`` small ``wal`` snapshots of this host exist, replace them by one.

        Called between requests (never while a ``wal-push`` waits).  The new snapshot is committed
        before the old ones are forgotten, so every file stays archived throughout."""
        if self.consolidate_at <= 1 or self.small.get(sysid, 0) < self.consolidate_at:
            return None
        self.small[sysid] = 0
        raw = {s.id: s for s in self.repo.snapshots()}
        history = snapshots_of(raw.values(), KIND, f"{KIND}:{sysid}")
        small = [s for s in history if s.meta.get("mode") == "wal" and s.meta.get("pushed_by") == self.host
                 and not s.meta.get("consolidates")]
        if len(small) < self.consolidate_at:
            return None
        files: dict[str, tuple[WalFile, Any]] = {}
        texts: dict[str, str] = {}
        size = 16 << 20
        for snap in small:
            wal_meta = WalMeta.of(snap.meta, snap.short_id)
            size = wal_meta.segment_size
            texts.update(snap.meta.get("history_text", {}))
            for f in wal_meta.files:
                files.setdefault(f.name, (f, raw[snap.id]))
        ordered = sorted(files.values(), key=lambda pair: (pair[0].kind != "history", pair[0].name))
        copy = WalCopy(sysid, size, ordered, texts, self.repo.open_item, [s.id for s in small], self.host,
                       find_item=self.repo.find_item)
        merged = self.repo.snapshot([copy])
        self.repo.forget([s.id for s in small])
        idx = self.index(sysid)
        idx.add_snapshot(SnapshotInfo.of(merged))
        self.stats["consolidated"] = self.stats.get("consolidated", 0) + len(small)
        return f"consolidated {len(small)} WAL snapshots into {merged.short_id}"

    def _ready(self, pg_wal: Path, idx: WalIndex, sysid: str, exclude: str) -> list[PushFile]:
        """Up to ``batch - 1`` other files PostgreSQL has marked ready, oldest first, not yet archived."""
        status = pg_wal / "archive_status"
        try:
            names = sorted(n[: -len(".ready")] for n in os.listdir(status) if n.endswith(".ready"))
        except OSError:
            return []
        found: list[PushFile] = []
        for name in sorted(names, key=lambda n: (not n.endswith(".history"), n)):
            if len(found) >= self.batch - 1:
                break
            if name == exclude or (sysid, name) in self.pushed:
                continue
            if name in idx.hashes:
                continue  # already archived: its own request compares the hashes
            try:
                meta.wal_file_kind(name)
                found.append(describe(pg_wal / name, hashed=False))
            except (OSError, ConnectorError):
                continue
        return found


def _archive_order(f: PushFile) -> tuple[int, str]:
    return (0 if f.kind == "history" else 1, f.name)


def _segment_size(pg_wal: Path) -> int:
    for name in os.listdir(pg_wal):
        if meta.SEGMENT_NAME.match(name):
            return os.stat(pg_wal / name).st_size
    return 16 << 20


# -- the pusher process -----------------------------------------------------------------------------


def serve(spool: Path, open_repo: Callable[[], PushRepo], *, batch: int = DEFAULT_BATCH,
          idle_exit: float = DEFAULT_IDLE, consolidate: int = DEFAULT_CONSOLIDATE,
          log: Callable[[str], None] = print) -> int:
    """Run a pusher on ``spool/pushd.sock`` until it has been idle ``idle_exit`` seconds."""
    private_dir(spool)
    lock = open(spool / LOCK, "a+")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        log("another pusher holds the spool folder; exiting")
        return 0
    repo = open_repo()
    pusher = Pusher(repo, batch=batch, consolidate=consolidate)
    path = spool / SOCKET
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o600)
    server.listen(16)
    server.settimeout(idle_exit)
    log(f"pusher {os.getpid()} listening on {path}")
    try:
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                log(f"idle for {idle_exit:.0f} s; exiting ({pusher.stats})")
                return 0
            with conn:
                sysid = _handle(conn, pusher, log)
            if sysid is not None:
                _consolidate(pusher, sysid, server, idle_exit, log)
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        repo.close()


def _consolidate(pusher: Pusher, sysid: str, server: socket.socket, idle_exit: float,
                 log: Callable[[str], None]) -> None:
    """Consolidate only when no wal-push is waiting (the archiver's next request comes at once when busy)."""
    try:
        ready, _, _ = select.select([server], [], [], 0.5)
        if ready:
            return
        done = pusher.maybe_consolidate(sysid)
        if done:
            log(done)
    except (DtstoreError, OSError) as exc:
        log(f"consolidation failed (the small snapshots stay): {exc}")
    finally:
        server.settimeout(idle_exit)


def _handle(conn: socket.socket, pusher: Pusher, log: Callable[[str], None]) -> str | None:
    """Answer one request; return the system identifier it concerned (None: nothing was pushed)."""
    conn.settimeout(60)
    sysid = None
    try:
        request = json.loads(_read_line(conn))
        if request.get("op") == "stats":
            reply = {"ok": True, "message": json.dumps(pusher.stats)}
        else:
            result = pusher.push(Path(request["path"]), Path(request["pgdata"]))
            reply = {"ok": True, "message": result}
            if result.startswith("pushed"):
                sysid = read_system_identifier(Path(request["pgdata"]))
    except (DtstoreError, OSError, ValueError, KeyError) as exc:
        reply = {"ok": False, "message": str(exc) or type(exc).__name__}
        log(f"push failed: {reply['message']}")
    with contextlib.suppress(OSError):
        conn.sendall((json.dumps(reply) + "\n").encode())
    return sysid


def _read_line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        block = conn.recv(65536)
        if not block:
            break
        data += block
    return data.decode()


# -- the client (what archive_command runs) ----------------------------------------------------------


def request(spool: Path, payload: dict[str, Any], spawn: Callable[[], None], *,
            timeout: float = 3600) -> dict[str, Any]:
    """Send one request to the pusher (starting one if none answers); return its reply."""
    deadline = time.monotonic() + CONNECT_WAIT
    spawned = False
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(spool / SOCKET))
            break
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if not spawned:
                spawn()
                spawned = True
            if time.monotonic() > deadline:
                raise ConnectorError(f"no WAL pusher answers on {spool / SOCKET} (see {spool / LOG})") from None
            time.sleep(0.05)
    with sock:
        sock.settimeout(timeout)
        sock.sendall((json.dumps(payload) + "\n").encode())
        line = _read_line(sock)
    if not line:
        raise ConnectorError("the WAL pusher closed the connection without an answer (it died?); "
                             "PostgreSQL will retry")
    reply: dict[str, Any] = json.loads(line)
    return reply


def spawner(spool: Path, argv: Sequence[str]) -> Callable[[], None]:
    """Start a detached pusher process (its output goes to ``spool/pushd.log``)."""

    def spawn() -> None:
        private_dir(spool)
        with open(spool / LOG, "ab") as log:
            subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                             close_fds=True)

    return spawn


@contextlib.contextmanager
def timed() -> Iterator[Callable[[], float]]:
    start = time.monotonic()
    yield lambda: time.monotonic() - start


__all__ = ["DEFAULT_BATCH", "DEFAULT_IDLE", "Pusher", "default_spool", "pgdata_of", "request", "serve", "spawner"]
