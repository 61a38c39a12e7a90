"""Cross-cutting behaviour as wrappers around the same BlobStore interface."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from dtstore.errors import StorageError, StorageUnavailable
from dtstore.storage.base import BlobInfo, BlobStore, Spool, StagedPut, put_parts, stage_parts

T = TypeVar("T")


class RetryingStore:
    """Retries transient failures with exponential backoff and jitter, then gives up clearly."""

    def __init__(self, inner: BlobStore, *, attempts: int = 6, base_delay: float = 0.2,
                 max_delay: float = 10.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self._attempts = attempts
        self._base = base_delay
        self._max = max_delay
        self._sleep = sleep

    def describe(self) -> str:
        return self.inner.describe()

    def set_append_only(self) -> None:
        _forward(self.inner, "set_append_only")

    def set_retention(self, mode: str, period: dt.timedelta) -> None:
        _forward(self.inner, "set_retention", mode, period)

    def retained_until(self, name: str) -> dt.datetime | None:
        fn = getattr(self.inner, "retained_until", None)
        return fn(name) if fn is not None else None

    def list_temporary(self) -> Iterator[BlobInfo]:
        fn = getattr(self.inner, "list_temporary", None)
        return iter(()) if fn is None else fn()  # type: ignore[no-any-return]

    def _retry(self, fn: Callable[[], T]) -> T:
        for attempt in range(1, self._attempts + 1):
            try:
                return fn()
            except StorageError as exc:
                if not exc.transient:
                    raise
                if attempt == self._attempts:
                    raise StorageUnavailable(
                        f"{exc} — gave up after {attempt} attempts; the remote stays unreachable",
                        transient=True,
                    ) from exc
                delay = min(self._max, self._base * 2 ** (attempt - 1))
                self._sleep(delay * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def get(self, name: str) -> bytes:
        return self._retry(lambda: self.inner.get(name))

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self._retry(lambda: self.inner.get_range(name, offset, length))

    def put(self, name: str, data: bytes) -> None:
        self._retry(lambda: self.inner.put(name, data))

    def put_parts(self, name: str, parts: Sequence[bytes]) -> None:
        self._retry(lambda: put_parts(self.inner, name, parts))

    def stage_parts(self, name: str, parts: Sequence[bytes]) -> StagedPut | None:
        """Writing is retried; the commit is not (StagedPut.commit)."""
        return self._retry(lambda: stage_parts(self.inner, name, parts))

    def open_spool(self, directory: str) -> Spool | None:
        """Opening and each write are retried (a write again from the same offset); the commit is not."""
        own = getattr(self.inner, "open_spool", None)
        if own is None:
            return None
        return _RetryingSpool(self._retry(lambda: own(directory)), self._retry)

    def exists(self, name: str) -> bool:
        return self._retry(lambda: self.inner.exists(name))

    def size(self, name: str) -> int:
        return self._retry(lambda: self.inner.size(name))

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        return iter(self._retry(lambda: list(self.inner.list(prefix))))

    def delete(self, name: str) -> None:
        self._retry(lambda: self.inner.delete(name))

    def close(self) -> None:
        self.inner.close()


class RateLimitedStore:
    """Caps upload bandwidth (token bucket shared by all threads); downloads are not limited."""

    def __init__(self, inner: BlobStore, bytes_per_second: float, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self._rate = float(bytes_per_second)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_free = clock()

    def describe(self) -> str:
        return self.inner.describe()

    def set_append_only(self) -> None:
        _forward(self.inner, "set_append_only")

    def set_retention(self, mode: str, period: dt.timedelta) -> None:
        _forward(self.inner, "set_retention", mode, period)

    def retained_until(self, name: str) -> dt.datetime | None:
        fn = getattr(self.inner, "retained_until", None)
        return fn(name) if fn is not None else None

    def list_temporary(self) -> Iterator[BlobInfo]:
        fn = getattr(self.inner, "list_temporary", None)
        return iter(()) if fn is None else fn()  # type: ignore[no-any-return]

    def put(self, name: str, data: bytes) -> None:
        self._wait_turn(len(data))
        self.inner.put(name, data)

    def put_parts(self, name: str, parts: Sequence[bytes]) -> None:
        self._wait_turn(sum(len(p) for p in parts))
        put_parts(self.inner, name, parts)

    def stage_parts(self, name: str, parts: Sequence[bytes]) -> StagedPut | None:
        if getattr(self.inner, "stage_parts", None) is None:
            return None  # the caller puts it with put_parts, which waits its turn
        self._wait_turn(sum(len(p) for p in parts))
        return stage_parts(self.inner, name, parts)

    def open_spool(self, directory: str) -> Spool | None:
        own = getattr(self.inner, "open_spool", None)
        return None if own is None else _RateLimitedSpool(own(directory), self._wait_turn)

    def _wait_turn(self, nbytes: int) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next_free)
            until = self._next_free = start + nbytes / self._rate
        # this put's own slot: _next_free may already have moved on for another thread's put
        if until > now:
            self._sleep(until - now)

    def get(self, name: str) -> bytes:
        return self.inner.get(name)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(name, offset, length)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def size(self, name: str) -> int:
        return self.inner.size(name)

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def close(self) -> None:
        self.inner.close()


class _SpoolWrapper:
    """A spool whose writes a wrapper changes; staging and aborting go straight through."""

    def __init__(self, inner: Spool) -> None:
        self._inner = inner

    def stage(self, name: str) -> StagedPut:
        return self._inner.stage(name)

    def abort(self) -> None:
        self._inner.abort()


class _RetryingSpool(_SpoolWrapper):
    def __init__(self, inner: Spool, retry: Callable[[Callable[[], None]], None]) -> None:
        super().__init__(inner)
        self._retry = retry

    def write(self, parts: Sequence[bytes]) -> None:
        self._retry(lambda: self._inner.write(parts))


class _RateLimitedSpool(_SpoolWrapper):
    def __init__(self, inner: Spool, wait_turn: Callable[[int], None]) -> None:
        super().__init__(inner)
        self._wait_turn = wait_turn

    def write(self, parts: Sequence[bytes]) -> None:
        self._wait_turn(sum(len(p) for p in parts))
        self._inner.write(parts)


def _forward(inner: object, method: str, *args: object) -> None:
    """Pass an optional store setting (``set_append_only``, ``set_retention``) down to the store
    that has it."""
    fn = getattr(inner, method, None)
    if fn is not None:
        fn(*args)
