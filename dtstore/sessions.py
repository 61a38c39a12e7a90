"""Writer sessions: a sealed ``sessions/<id>`` object per running backup, refreshed as a heartbeat.

Prune reads them to see in-flight backups (a session that started before a prune mark may still
refer to marked packs).  A session is dead when its heartbeat is older than ``SESSION_TIMEOUT`` or,
on the same host, its process no longer exists.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
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


def read_sessions(store: BlobStore, sealer: Sealer) -> list[SessionInfo]:
    found = []
    for blob in store.list(layout.SESSIONS):
        try:
            doc = msgpack.unpackb(sealer.open(store.get(blob.name), AAD_SESSION, f"session {blob.name}"))
        except (BlobNotFound, DtstoreError):
            continue
        found.append(SessionInfo(doc["id"], doc["host"], int(doc["pid"]),
                                 dt.datetime.fromisoformat(doc["started"]),
                                 dt.datetime.fromisoformat(doc["heartbeat"]), doc.get("kind", "backup")))
    return found


class WriterSession:
    """Context manager: publishes the session, keeps its heartbeat fresh, removes it at the end."""

    def __init__(self, store: BlobStore, sealer: Sealer, host: str, kind: str = "backup") -> None:
        self._store = store
        self._sealer = sealer
        now = clock.now()
        self.info = SessionInfo(os.urandom(16).hex(), host, os.getpid(), now, now, kind)
        self._name = layout.session_name(self.info.session_id)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="dtstore-heartbeat", daemon=True)
        self._last_beat = now

    def _write(self) -> None:
        now = clock.now()
        info = SessionInfo(self.info.session_id, self.info.host, self.info.pid, self.info.started, now,
                           self.info.kind)
        self._store.put(self._name, self._sealer.seal(msgpack.packb(_encode(info)), AAD_SESSION))
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
            self._store.delete(self._name)
