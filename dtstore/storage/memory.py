"""Dict-backed reference store for tests and examples."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

from dtstore import clock
from dtstore.errors import BlobNotFound, StorageError
from dtstore.storage.base import BlobInfo, Capabilities


class MemoryStore:
    capabilities = Capabilities(connections=4)

    def __init__(self) -> None:
        self._blobs: dict[str, tuple[bytes, dt.datetime]] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return "memory://"

    def get(self, name: str) -> bytes:
        with self._lock:
            if name not in self._blobs:
                raise BlobNotFound(f"object {name} does not exist in {self.describe()}")
            return self._blobs[name][0]

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        data = self.get(name)
        if offset < 0 or offset + length > len(data):
            raise StorageError(f"range {offset}+{length} is outside object {name} ({len(data)} bytes)")
        return data[offset : offset + length]

    def put(self, name: str, data: bytes) -> None:
        with self._lock:
            self._blobs[name] = (bytes(data), clock.now())

    def exists(self, name: str) -> bool:
        with self._lock:
            return name in self._blobs

    def size(self, name: str) -> int:
        return len(self.get(name))

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        start = prefix.rstrip("/") + "/" if prefix else ""
        with self._lock:
            items = [(n, len(b), t) for n, (b, t) in self._blobs.items() if n.startswith(start)]
        for name, size, modified in sorted(items):
            yield BlobInfo(name, size, modified)

    def delete(self, name: str) -> None:
        with self._lock:
            self._blobs.pop(name, None)

    def close(self) -> None:
        pass
