"""Connect to a repository and unwrap its key on a thread, before the rest of the library loads.

The password KDF (scrypt, calibrated to ~0.3 s) is the longest step of opening a repository, and
the KDF drops the GIL.  ``Unlocking`` needs only the storage and key modules: a caller (the CLI)
starts it first, then imports and prepares the rest while the KDF runs on another core, and hands
it to ``Repository.open``.  Errors come where they belong: no repository at once, a wrong
password from ``result()``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from dtstore.crypto.keys import BackupKey, KeySlotInfo, MasterKey, unwrap_any
from dtstore.errors import BlobNotFound, RepositoryNotFound, UnsupportedFormat, WrongPassword
from dtstore.storage import layout
from dtstore.storage.base import BlobStore
from dtstore.storage.registry import open_store, redact
from dtstore.storage.wrappers import RateLimitedStore, RetryingStore


def connect(url: str | BlobStore, limit_upload_kib: float | None = None) -> BlobStore:
    """The store at ``url`` with retries (and an upload limit), as every repository uses it."""
    store: BlobStore = open_store(url) if isinstance(url, str) else url
    store = RetryingStore(store)
    if limit_upload_kib:
        store = RateLimitedStore(store, limit_upload_kib * 1024)
    return store


@dataclass(frozen=True)
class Unlocked:
    store: BlobStore
    config_blob: bytes
    key: MasterKey | BackupKey
    slot: KeySlotInfo


class Unlocking:
    """The repository at ``url`` being opened with ``password``: ``result()`` waits for the KDF."""

    def __init__(self, url: str | BlobStore, password: bytes, limit_upload_kib: float | None = None) -> None:
        self.store = connect(url, limit_upload_kib)
        try:
            self._config_blob = self.store.get(layout.CONFIG)
        except BlobNotFound:
            where = redact(url) if isinstance(url, str) else self.store.describe()
            raise RepositoryNotFound(f"there is no dtstore repository at {where}") from None
        self._password = password
        self._result: tuple[MasterKey | BackupKey, KeySlotInfo] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._unlock, name="dtstore-unlock", daemon=True)
        self._thread.start()

    def _unlock(self) -> None:
        try:
            self._result = unlock(self.store, self._password)
        except BaseException as exc:
            self._error = exc
        finally:
            self._password = b""

    def wait(self) -> None:
        """Until the KDF is over, whatever its outcome (``result`` tells it)."""
        self._thread.join()

    def result(self) -> Unlocked:
        self.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return Unlocked(self.store, self._config_blob, *self._result)


def unlock(store: BlobStore, password: bytes) -> tuple[MasterKey | BackupKey, KeySlotInfo]:
    """The key of the first key slot ``password`` opens."""
    slots = list(store.list(layout.KEYS))
    for blob in slots:
        slot_id = layout.pack_id_of(blob.name)
        try:
            return unwrap_any(store.get(blob.name), password, slot_id)
        except (WrongPassword, UnsupportedFormat):
            continue
    raise WrongPassword(f"wrong password: none of the {len(slots)} key slot(s) of "
                        f"{store.describe()} opens with it")
