"""Writer sessions: a sealed ``sessions/<id>`` object per running backup, refreshed as a heartbeat.

Prune reads them to see in-flight backups (a session that started before a prune mark may still
refer to marked packs).  A session is dead when its heartbeat is older than ``SESSION_TIMEOUT`` or,
on the same host, its process no longer exists.

Append-only form (a backup key, storage without delete or overwrite rights; spec §13.5): every
heartbeat is a new object ``sessions/<id>.<seq>`` (seq 6 digits, counting from 0), and the end of
the run is one more with ``ended`` set.  Readers take the highest ``seq`` of each ``id``.  Nothing
is ever deleted by the writer; the admin's prune deletes the objects of sessions that ended or
expired, and the superseded heartbeats of live ones (``sweep_heartbeats``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from dtstore import clock
from dtstore.crypto.aead import Sealer
from dtstore.errors import BlobNotFound, DtstoreError, StorageError, StorageUnavailable
from dtstore.format import AAD_SESSION
from dtstore.processes import pid_alive
from dtstore.storage import layout
from dtstore.storage.base import BlobStore

HEARTBEAT_SECONDS = 60.0
SESSION_TIMEOUT = dt.timedelta(minutes=15)
COMMIT_MARGIN = dt.timedelta(minutes=6)
"""more than prune's allowance for clock skew between hosts (5 min)"""


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    host: str
    pid: int
    started: dt.datetime
    heartbeat: dt.datetime
    kind: str

    def is_alive(self, now: dt.datetime, this_host: str) -> bool:
        if now - self.heartbeat > SESSION_TIMEOUT:
            return False
        if self.host == this_host:
            return pid_alive(self.pid)
        return True


def _encode(info: SessionInfo) -> dict[str, Any]:
    return {"id": info.session_id, "host": info.host, "pid": info.pid, "kind": info.kind,
            "started": info.started.isoformat(), "heartbeat": info.heartbeat.isoformat()}


def heartbeat_groups(store: BlobStore, prefix: str) -> dict[str, list[str]]:
    """Object names under ``prefix`` by heartbeat ID, oldest first: ``<id>`` alone (the rewritten
    form) or ``<id>.<seq>`` (the append-only form, spec §13.5)."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for blob in store.list(prefix):
        base = layout.pack_id_of(blob.name)
        ident, _, seq = base.partition(".")
        groups.setdefault(ident, []).append((int(seq) if seq.isdigit() else -1, blob.name))
    return {ident: [name for _, name in sorted(names)] for ident, names in groups.items()}


def read_sessions(store: BlobStore, sealer: Sealer) -> list[SessionInfo]:
    """The sessions that have not ended, from the newest object of each."""
    found = []
    for names in heartbeat_groups(store, layout.SESSIONS).values():
        try:
            doc = msgpack.unpackb(sealer.open(store.get(names[-1]), AAD_SESSION, f"session {names[-1]}"))
        except (BlobNotFound, DtstoreError):
            continue
        if doc.get("ended"):
            continue
        found.append(SessionInfo(doc["id"], doc["host"], int(doc["pid"]),
                                 dt.datetime.fromisoformat(doc["started"]),
                                 dt.datetime.fromisoformat(doc["heartbeat"]), doc.get("kind", "backup")))
    return found


def sweep_heartbeats(store: BlobStore, sealer: Sealer, prefix: str, label: bytes, timeout: dt.timedelta,
                     is_live: Callable[[dict[str, Any]], bool]) -> int:
    """Admin (prune): delete append-only heartbeat objects nobody needs: every object but the newest
    of a live session or lock, and every object of one that ended or expired.  Returns the count."""
    removed = 0
    now = clock.now()
    for names in heartbeat_groups(store, prefix).values():
        if all("." not in layout.pack_id_of(n) for n in names):
            continue  # the rewritten form: its owner deletes it
        try:
            doc = msgpack.unpackb(sealer.open(store.get(names[-1]), label, names[-1]))
            done = bool(doc.get("ended") or doc.get("released")) or \
                now - dt.datetime.fromisoformat(doc["heartbeat"]) > timeout or not is_live(doc)
        except BlobNotFound:
            continue
        except DtstoreError:
            done = True  # unreadable: not a heartbeat anyone can rely on
        for name in names if done else names[:-1]:
            with contextlib.suppress(StorageError):
                store.delete(name)
                removed += 1
    return removed


class WriterSession:
    """Context manager: publishes the session, keeps its heartbeat fresh, removes it at the end."""

    def __init__(self, store: BlobStore, sealer: Sealer, host: str, kind: str = "backup", *,
                 append_only: bool = False) -> None:
        self._store = store
        self._sealer = sealer
        now = clock.now()
        self.info = SessionInfo(os.urandom(16).hex(), host, os.getpid(), now, now, kind)
        self._name = layout.session_name(self.info.session_id)
        self._append_only = append_only
        self._seq = 0
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="dtstore-heartbeat", daemon=True)
        self._last_beat = now

    def _write(self, *, ended: bool = False) -> None:
        now = clock.now()
        info = SessionInfo(self.info.session_id, self.info.host, self.info.pid, self.info.started, now,
                           self.info.kind)
        doc = _encode(info)
        if ended:
            doc["ended"] = True
        sealed = self._sealer.seal(msgpack.packb(doc), AAD_SESSION)
        if not self._append_only:
            self._store.put(self._name, sealed)
        else:
            with self._write_lock:
                name = f"{self._name}.{self._seq:06d}"
                self._seq += 1
                self._store.put(name, sealed)
        self._last_beat = now

    def ensure_alive(self) -> None:
        """Before committing: a session whose heartbeat could not be written for too long may have
        been declared dead by a prune, which may then delete packs this backup relies on."""
        if clock.now() - self._last_beat > SESSION_TIMEOUT - COMMIT_MARGIN:
            raise StorageUnavailable("the writer session's heartbeat could not be written for too long; "
                                     "nothing was committed — run the snapshot again")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(StorageError):
                self._write()

    def __enter__(self) -> WriterSession:
        self._write()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(StorageError):
            if self._append_only:
                self._write(ended=True)
            else:
                self._store.delete(self._name)


TEMPORARY_MIN_AGE = dt.timedelta(hours=1)


def sweep_temporaries(store: BlobStore, min_age: dt.timedelta = TEMPORARY_MIN_AGE) -> int:
    """Admin (prune): delete ``.tmp-`` names ([N2]) older than ``min_age``: writes that crashed, and
    the hard-linked temporaries of append-only SFTP puts (spec §17.1).  Returns the count."""
    listing = getattr(store, "list_temporary", None)
    if listing is None:
        return 0
    now = clock.now()
    removed = 0
    for info in list(listing()):
        if info.modified is not None and now - info.modified >= min_age:
            with contextlib.suppress(StorageError):
                store.delete(info.name)
                removed += 1
    return removed
