"""Sources → stored objects → a snapshot manifest.  The manifest write is the commit point."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dtstore.chunking import Chunker
from dtstore.content.index import IndexCache
from dtstore.content.store import ContentStore
from dtstore.errors import SourceError
from dtstore.format import BLOB_DATA, BLOB_META
from dtstore.objects.writer import ObjectRef, ObjectWriter
from dtstore.progress import ProgressCallback, ProgressEvent
from dtstore.snapshots.manifest import Item, encode_item
from dtstore.sources.base import Entry, Source

ITEM_BUFFER = 4 << 20
ESTIMATE_HEAD_START = 0.5
"""seconds a backup waits for a concurrent estimate before it starts reading"""


@dataclass
class BackupResult:
    items: ObjectRef
    item_count: int
    summary: dict[str, Any]
    file_records: list[tuple[bytes, tuple[int, ...], list[bytes]]] = field(default_factory=list)


class _Reporter:
    def __init__(self, progress: _Progress) -> None:
        self.warnings: list[dict[str, str]] = []
        self._progress = progress

    def warn(self, path: bytes, message: str) -> None:
        name = path.decode("utf-8", "surrogateescape")
        self.warnings.append({"path": name, "message": message})
        self._progress.emit(current=name, message=message)


class _Progress:
    """Accumulates counters from worker threads and emits at most ~10 events a second."""

    def __init__(self, callback: ProgressCallback, total: int | None) -> None:
        self._callback = callback
        self._lock = threading.Lock()
        self.bytes_done = 0
        self.items_done = 0
        self.total = total
        self._last = 0.0

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_done += nbytes
        now = time.monotonic()
        if now - self._last > 0.1:
            self._last = now
            self.emit()

    def emit(self, current: str = "", message: str = "") -> None:
        self._callback(ProgressEvent("backup", self.bytes_done, self.total, self.items_done,
                                     None, current, message))


class _ItemStream:
    """Encodes items into a buffer and stores it as content-defined metadata chunks as it grows."""

    def __init__(self, writer: ObjectWriter, chunker: Chunker) -> None:
        self._writer = writer
        self._chunker = chunker
        self._buffer = bytearray()
        self.chunks: list[bytes] = []
        self.size = 0
        self.count = 0

    def add(self, item: Item) -> None:
        self._buffer += encode_item(item)
        self.count += 1
        if len(self._buffer) >= ITEM_BUFFER:
            self._drain(final=False)

    def _drain(self, final: bool) -> None:
        pieces = list(self._chunker.chunks_of(bytes(self._buffer)))
        keep = b"" if final or len(pieces) < 2 else pieces.pop()
        ref = self._writer.write(iter(pieces), BLOB_META)
        self.chunks.extend(ref.chunks)
        self.size += ref.size
        self._buffer = bytearray(keep)

    def close(self) -> ObjectRef:
        if self._buffer:
            self._drain(final=True)
        return ObjectRef(self.chunks, self.size)


class BackupRun:
    """One snapshot's worth of work; ``run`` stores everything, the caller commits the manifest."""

    def __init__(self, content: ContentStore, writer: ObjectWriter, data_chunker: Chunker,
                 meta_chunker: Chunker, cache: IndexCache, progress: ProgressCallback) -> None:
        self._content = content
        self._writer = writer
        self._data_chunker = data_chunker
        self._cache = cache
        self._items = _ItemStream(writer, meta_chunker)
        self._progress = _Progress(progress, None)
        self._reporter = _Reporter(self._progress)
        self._file_records: list[tuple[bytes, tuple[int, ...], list[bytes]]] = []
        self._counts = {"files": 0, "dirs": 0, "symlinks": 0, "files_unchanged": 0,
                        "bytes_read": 0, "bytes_unchanged": 0}

    def run(self, sources: Sequence[Source]) -> BackupResult:
        started = time.monotonic()
        # a source that says so (a files source walks its tree once more) is estimated beside the
        # backup, and the progress total appears when it is known; the others before it starts
        stop = threading.Event()
        if all(getattr(s, "estimate_concurrently", False) for s in sources):
            estimator = threading.Thread(target=self._estimate_beside, args=(sources, stop), name="dtstore-estimate",
                                         daemon=True)
            estimator.start()
            estimator.join(ESTIMATE_HEAD_START)  # a small tree's total is there from the first event
        else:
            self._estimate(sources)
        try:
            for source in sources:
                for entry in source.entries(self._reporter):
                    self._store_entry(entry)
                    self._progress.items_done += 1
        finally:
            stop.set()  # an estimate still walking is of no use any more
        items_ref = self._items.close()
        self._content.flush()
        if self._progress.total is not None:
            self._progress.total = max(self._progress.total, self._progress.bytes_done)
        self._progress.emit()
        stats = self._content.stats
        summary: dict[str, Any] = {
            **self._counts,
            "items": self._items.count,
            "bytes_total": self._counts["bytes_read"] + self._counts["bytes_unchanged"],
            "chunks_new": stats.chunks_new,
            "chunks_reused": stats.chunks_reused,
            "bytes_new": stats.bytes_new_raw,
            "bytes_stored": stats.bytes_stored,
            "packs_written": stats.packs,
            "duration_seconds": round(time.monotonic() - started, 3),
            "warnings": self._reporter.warnings,
        }
        return BackupResult(items_ref, self._items.count, summary, self._file_records)

    def _estimate(self, sources: Sequence[Source], stop: threading.Event | None = None) -> None:
        total = _estimate(sources, stop)
        if total is not None and not (stop and stop.is_set()):
            self._progress.total = max(total, self._progress.bytes_done)

    def _estimate_beside(self, sources: Sequence[Source], stop: threading.Event) -> None:
        with contextlib.suppress(Exception):  # only a display aid: a failure leaves the total unknown
            self._estimate(sources, stop)

    def _store_entry(self, entry: Entry) -> None:
        item = Item(path=entry.path, type=entry.type, mode=entry.mode, uid=entry.uid, gid=entry.gid,
                    mtime_ns=entry.mtime_ns, target=entry.target, extra=dict(entry.extra))
        if entry.type == "file":
            if not self._store_file(entry, item):
                return
            self._counts["files"] += 1
        else:
            self._counts["dirs" if entry.type == "dir" else "symlinks"] += 1
        self._items.add(item)

    def _store_file(self, entry: Entry, item: Item) -> bool:
        if entry.stored is not None and entry.stored[0] and all(map(self._content.has, entry.stored[0])):
            item.chunks, item.size = list(entry.stored[0]), entry.stored[1]
            self._counts["files_unchanged"] += 1
            self._counts["bytes_unchanged"] += item.size
            self._progress.add(item.size)
            return True
        identity = _identity_tuple(entry)
        if entry.cache_key is not None and identity is not None:
            cached = self._cache.get_file(entry.cache_key)
            if cached is not None and cached[0] == identity and all(map(self._content.has, cached[1])):
                item.chunks, item.size = cached[1], int(entry.size or 0)
                self._counts["files_unchanged"] += 1
                self._counts["bytes_unchanged"] += item.size
                self._progress.add(item.size)
                return True
        assert entry.opener is not None
        try:
            context = entry.opener()
            stream = context.__enter__()
        except OSError as exc:
            if entry.cache_key is None:
                raise SourceError(f"cannot open {item.name}: {exc.strerror or exc}") from exc
            self._reporter.warn(entry.path, f"cannot read: {exc.strerror or exc}")
            return False
        try:
            ref = self._writer.write_stream(stream, self._data_chunker, BLOB_DATA, self._progress.add)
        except OSError as exc:
            context.__exit__(type(exc), exc, exc.__traceback__)
            if entry.cache_key is None:
                raise SourceError(f"reading {item.name} failed: {exc.strerror or exc}") from exc
            self._reporter.warn(entry.path, f"read error: {exc.strerror or exc}")
            return False
        except BaseException as exc:
            context.__exit__(type(exc), exc, exc.__traceback__)
            raise
        context.__exit__(None, None, None)
        item.chunks, item.size = ref.chunks, ref.size
        self._counts["bytes_read"] += ref.size
        if entry.cache_key is not None and identity is not None and ref.size == identity[2]:
            self._file_records.append((entry.cache_key, identity, ref.chunks))
        return True


def _identity_tuple(entry: Entry) -> tuple[int, ...] | None:
    i = entry.identity
    return None if i is None else (i.device, i.inode, i.size, i.mtime_ns, i.ctime_ns)


def _estimate(sources: Sequence[Source], stop: threading.Event | None = None) -> int | None:
    """The sum of the sources' ``estimated_size()``; a source estimated concurrently is also given
    ``stop``, set when the backup no longer needs the figure."""
    total = 0
    for source in sources:
        estimate = getattr(source, "estimated_size", None)
        if estimate is None:
            return None
        total += int(estimate(stop=stop) if stop is not None else estimate())
    return total


def default_host() -> str:
    return os.uname().nodename
