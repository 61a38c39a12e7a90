"""Locks, only where an operation truly needs them.

Backups take no lock: they publish a writer session (dtstore/sessions.py).  ``prune`` takes a
``prune`` lock (one prune at a time; backups go on).  ``prune --exclusive`` and ``index rebuild``
take an ``exclusive`` lock, which new backups respect.  A lock is stale when its heartbeat is older
than ``LOCK_TIMEOUT`` or, on the same host, its process is gone; stale locks are ignored and
removed without a manual ``unlock``.

Order that makes exclusive locks safe: a writer publishes its session, then looks for exclusive
locks; an exclusive holder publishes its lock, then looks for live sessions.  One of them sees the
other.

Append-only form (``append_only``: a backup key on storage that refuses deletes and overwrites;
spec §13.5): every heartbeat is a new object ``locks/<id>.<seq>``, releasing is one more with
``released`` set, and nothing is deleted, stale locks of others included; the admin's prune removes
them (``sweep_heartbeats``).  Readers take the highest ``seq`` of each ID, so both forms mix.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import msgpack

from dtstore import clock
from dtstore.crypto.aead import Sealer
from dtstore.errors import DtstoreError, RepositoryLocked, StorageError
from dtstore.format import AAD_LOCK
from dtstore.processes import pid_alive
from dtstore.sessions import heartbeat_groups
from dtstore.storage import layout
from dtstore.storage.base import BlobStore

LOCK_TIMEOUT = dt.timedelta(minutes=15)
HEARTBEAT_SECONDS = 60.0


@dataclass(frozen=True)
class LockInfo:
    lock_id: str
    kind: str
    host: str
    pid: int
    created: dt.datetime
    heartbeat: dt.datetime

    def is_stale(self, now: dt.datetime, this_host: str) -> bool:
        if now - self.heartbeat > LOCK_TIMEOUT:
            return True
        return self.host == this_host and not pid_alive(self.pid)

    def describe(self) -> str:
        since = self.created.strftime("%Y-%m-%d %H:%M:%S")
        return f"{self.kind} lock {self.lock_id[:8]} held by pid {self.pid} on {self.host} since {since}Z"


def read_locks(store: BlobStore, sealer: Sealer) -> list[LockInfo]:
    """The locks not released, from the newest object of each."""
    found = []
    for names in heartbeat_groups(store, layout.LOCKS).values():
        try:
            doc = msgpack.unpackb(sealer.open(store.get(names[-1]), AAD_LOCK, names[-1]))
        except DtstoreError:
            continue
        if doc.get("released"):
            continue
        found.append(LockInfo(doc["id"], doc["kind"], doc["host"], int(doc["pid"]),
                              dt.datetime.fromisoformat(doc["created"]), dt.datetime.fromisoformat(doc["heartbeat"])))
    return found


def live_locks(store: BlobStore, sealer: Sealer, host: str, kinds: set[str], *,
               append_only: bool = False) -> list[LockInfo]:
    """Locks of the given kinds that are alive; stale ones are removed on the way (not when
    ``append_only``: the admin's prune does that)."""
    now = clock.now()
    alive = []
    for lock in read_locks(store, sealer):
        if lock.is_stale(now, host):
            if not append_only:
                with suppress(StorageError):
                    store.delete(layout.lock_name(lock.lock_id))
        elif lock.kind in kinds:
            alive.append(lock)
    return alive


def check_not_exclusively_locked(store: BlobStore, sealer: Sealer, host: str, *, append_only: bool = False) -> None:
    held = live_locks(store, sealer, host, {"exclusive"}, append_only=append_only)
    if held:
        raise RepositoryLocked(f"the repository is locked: {held[0].describe()}; try again later")


@contextmanager
def hold_lock(store: BlobStore, sealer: Sealer, host: str, kind: str) -> Iterator[LockInfo]:
    """Take a ``prune`` or ``exclusive`` lock, refusing if a conflicting live lock exists."""
    with _published(store, sealer, host, kind) as lock:
        others = [x for x in live_locks(store, sealer, host, {"prune", "exclusive"}) if x.lock_id != lock.lock_id]
        if others:
            raise RepositoryLocked(f"cannot take the {kind} lock: {others[0].describe()}")
        yield lock


def remove_locks(store: BlobStore, sealer: Sealer, host: str, *, all_locks: bool) -> list[LockInfo]:
    """``dtstore unlock``: remove stale locks (or every lock with ``all_locks``)."""
    now = clock.now()
    removed = []
    groups = heartbeat_groups(store, layout.LOCKS)
    for lock in read_locks(store, sealer):
        if all_locks or lock.is_stale(now, host):
            for name in groups.get(lock.lock_id, [layout.lock_name(lock.lock_id)]):
                store.delete(name)
            removed.append(lock)
    return removed


SOURCE_LOCK_POLL_SECONDS = 1.0


def source_lock_kind(source_id: str) -> str:
    return f"source:{source_id}"


@contextmanager
def hold_source_lock(store: BlobStore, sealer: Sealer, host: str, source_id: str, *,
                     wait: float = 0.0, append_only: bool = False) -> Iterator[LockInfo]:
    """One run per source at a time, across every host that writes to the repository.

    A run publishes its lock, then lists the live locks of the same source: the oldest (by creation
    time, then ID) wins, the others withdraw theirs and try again until ``wait`` seconds have passed
    (RepositoryLocked, exit 11).  Two log runs of one source can then never both continue the same
    base and fork its chain.  Prune and backups of other sources are not affected.
    """
    kind = source_lock_kind(source_id)
    deadline = clock.monotonic() + max(wait, 0.0)
    while True:
        with _published(store, sealer, host, kind, append_only=append_only) as mine:
            rivals = [x for x in live_locks(store, sealer, host, {kind}, append_only=append_only)
                      if x.lock_id != mine.lock_id]
            first = min([mine, *rivals], key=lambda x: (x.created, x.lock_id))
            if first is mine:
                yield mine
                return
        if clock.monotonic() >= deadline:
            raise RepositoryLocked(f"another run of source {source_id} is in progress ({first.describe()}); "
                                   "wait for it, or give --lock-wait SECONDS")
        time.sleep(min(SOURCE_LOCK_POLL_SECONDS, max(deadline - clock.monotonic(), 0.01)))


@contextmanager
def _published(store: BlobStore, sealer: Sealer, host: str, kind: str, *,
               append_only: bool = False) -> Iterator[LockInfo]:
    """A lock object of ``kind`` with a heartbeat, removed (append-only: released) on exit; no
    conflict check."""
    now = clock.now()
    lock = LockInfo(os.urandom(16).hex(), kind, host, os.getpid(), now, now)
    name = layout.lock_name(lock.lock_id)
    seq = iter(range(1 << 40))
    write_lock = threading.Lock()

    def write(released: bool = False) -> None:
        doc: dict[str, object] = {"id": lock.lock_id, "kind": kind, "host": host, "pid": lock.pid,
                                  "created": lock.created.isoformat(), "heartbeat": clock.now().isoformat()}
        if released:
            doc["released"] = True
        sealed = sealer.seal(msgpack.packb(doc), AAD_LOCK)
        if not append_only:
            store.put(name, sealed)
            return
        with write_lock:
            store.put(f"{name}.{next(seq):06d}", sealed)

    write()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            with suppress(StorageError):
                write()

    thread = threading.Thread(target=beat, name="dtstore-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield lock
    finally:
        stop.set()
        thread.join()
        with suppress(StorageError):
            if append_only:
                write(released=True)
            else:
                store.delete(name)
