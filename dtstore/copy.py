"""``copy``: snapshots of one repository stored into another, re-encrypted with its keys (restic's copy).

Every chunk is read from the source through the verified reader ([B1]) and stored in the target
through the target's normal write path (packs, then segments, then the manifest), so the target's
keys encrypt it and its own index lists it.

Chunk IDs are keyed hashes, so how a chunk is found in the target depends on the chunk-ID keys:

* **Shared chunk keys** (the target was made with ``init --copy-chunker-from`` the source, or the
  other way round): a chunk has the same ID in both.  A chunk the target already holds is neither
  downloaded nor stored; the item stream and the manifest's chunk lists are kept as they are.
* **Different keys**: each chunk the run has not met yet is downloaded and re-hashed with the
  target's ID key (its cut points stay the source's: nothing is re-chunked).  The target then
  deduplicates it by the new ID, so nothing already there is stored again, but it is downloaded
  to find that out; the items get the new IDs and a new item stream.

A snapshot is copied once: the copy records the source's ``original`` (or, if it has none, its ID)
as its own ``original`` (restic's field), and a source snapshot whose ``original`` or ID is already
some target snapshot's ``original`` or ID is skipped.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from dtstore.chunking import Chunker
from dtstore.content.store import ContentReader, ContentStore
from dtstore.format import BLOB_DATA, BLOB_META
from dtstore.progress import ProgressCallback, ProgressEvent, no_progress
from dtstore.snapshots.manifest import Item, Snapshot, encode_item

ITEM_BUFFER = 4 << 20
"""as a backup's item stream (repository-format.md §14.1 step 6): cut once this much is buffered"""


def copy_key(snapshot: Snapshot) -> str:
    """What identifies a snapshot across copies and rewrites: its ``original``, else its ID."""
    return snapshot.original or snapshot.id


@dataclass
class CopyResult:
    """One source snapshot: the copy made (or found, when ``skipped``) and what copying it cost."""

    source: Snapshot
    copy: Snapshot
    skipped: bool
    chunks_new: int = 0
    chunks_reused: int = 0
    bytes_read: int = 0
    """plaintext bytes downloaded from the source"""
    bytes_added: int = 0
    """bytes of the packs uploaded to the target (as a manifest's ``summary.bytes_stored``)"""

    def to_json(self) -> dict[str, Any]:
        return {"snapshot_id": self.source.id, "short_id": self.source.short_id, "copy_id": self.copy.id,
                "skipped": self.skipped, "chunks_new": self.chunks_new, "chunks_reused": self.chunks_reused,
                "bytes_read": self.bytes_read, "bytes_added": self.bytes_added}


class SnapshotCopier:
    """Copies the chunks of source snapshots into a target content store (one store per snapshot).

    ``same_ids``: both repositories have the same chunk-ID key.  ``meta_chunker``: the target's item
    stream chunker (used only when the IDs differ and the item stream has to be written anew)."""

    def __init__(self, reader: ContentReader, list_items: Callable[[Snapshot], Iterator[Item]], *,
                 same_ids: bool, meta_chunker: Chunker, workers: int,
                 progress: ProgressCallback = no_progress) -> None:
        self._reader = reader
        self._list_items = list_items
        self._same_ids = same_ids
        self._meta_chunker = meta_chunker
        self._window = max(2, workers)
        self._pool = ThreadPoolExecutor(self._window, thread_name_prefix="dtstore-copy")
        self._progress = progress
        self._renamed: dict[bytes, bytes] = {}
        """source chunk ID → target chunk ID, for the chunks this run has already copied (re-hash only)"""
        self._lock = threading.Lock()
        self._bytes_read = 0
        self._bytes_total = 0
        self._current = ""
        self._present = 0

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def copy(self, snapshot: Snapshot, content: ContentStore, parent: str | None) -> tuple[Snapshot, int, int]:
        """Store every chunk ``snapshot`` needs into ``content`` and flush it; returns the manifest to
        save in the target (not saved yet), the plaintext bytes read from the source, and the chunks
        found in the target without reading them (shared chunk keys only)."""
        with self._lock:
            self._bytes_read = 0
        self._present = 0
        self._current = snapshot.short_id
        if self._same_ids:
            items_chunks = self._copy_same_ids(snapshot, content)
        else:
            items_chunks = self._copy_rehashed(snapshot, content)
        content.flush()
        copied = replace(snapshot, id="", parent=parent, items_chunks=items_chunks, original=copy_key(snapshot))
        return copied, self._bytes_read, self._present

    # shared chunk keys: chunk lists stay, only what the target lacks travels -----------------------
    def _copy_same_ids(self, snapshot: Snapshot, content: ContentStore) -> list[bytes]:
        wanted = self._wanted(snapshot)
        seen: set[bytes] = set()

        def tasks() -> Iterator[Callable[[], None]]:
            for chunk_id, kind in wanted:
                if chunk_id in seen:
                    continue
                seen.add(chunk_id)
                if content.has(chunk_id):
                    self._present += 1  # the target has it: nothing read, nothing stored
                    continue
                yield functools.partial(self._store, content, chunk_id, kind)

        for _ in self._ordered(tasks()):
            self._report()
        return list(snapshot.items_chunks)

    def _store(self, content: ContentStore, chunk_id: bytes, kind: int) -> None:
        content.put_with_id(chunk_id, self._fetch(chunk_id), kind)

    def _wanted(self, snapshot: Snapshot) -> Iterator[tuple[bytes, int]]:
        for chunk_id in snapshot.items_chunks:
            yield chunk_id, BLOB_META
        for item in self._list_items(snapshot):
            for chunk_id in item.chunks:
                yield chunk_id, BLOB_DATA

    # different chunk keys: every chunk re-hashed, items rewritten ----------------------------------
    def _copy_rehashed(self, snapshot: Snapshot, content: ContentStore) -> list[bytes]:
        stream = _ItemStream(content, self._meta_chunker)
        pending: deque[tuple[Item, list[Future[bytes]]]] = deque()
        inflight = 0
        futures: dict[bytes, Future[bytes]] = {}

        def target_id(chunk_id: bytes) -> Future[bytes]:
            known = self._renamed.get(chunk_id)
            if known is not None:
                done: Future[bytes] = Future()
                done.set_result(known)
                return done
            if chunk_id not in futures:
                futures[chunk_id] = self._pool.submit(self._rehash, chunk_id, content)
            return futures[chunk_id]

        def finish_oldest() -> int:
            item, ids = pending.popleft()
            item.chunks = [f.result() for f in ids]
            stream.add(item)
            self._report()
            return len(ids)

        try:
            for item in self._list_items(snapshot):
                ids = [target_id(c) for c in item.chunks]
                pending.append((item, ids))
                inflight += len(ids)
                while inflight > self._window and len(pending) > 1:
                    inflight -= finish_oldest()
                if len(futures) > 4 * self._window:  # keep the table of futures small
                    for source_id, future in list(futures.items()):
                        if future.done() and future.exception() is None:
                            self._renamed[source_id] = future.result()
                            del futures[source_id]
            while pending:
                finish_oldest()
        finally:
            for _, ids in pending:
                for future in ids:
                    future.cancel()
        for source_id, future in futures.items():
            self._renamed[source_id] = future.result()
        return stream.close()

    def _rehash(self, chunk_id: bytes, content: ContentStore) -> bytes:
        return content.put(self._fetch(chunk_id), BLOB_DATA)

    # shared ------------------------------------------------------------------------------------
    def _fetch(self, chunk_id: bytes) -> bytes:
        data = self._reader.get(chunk_id)  # verified: GCM tag, length, keyed hash
        with self._lock:
            self._bytes_read += len(data)
            self._bytes_total += len(data)
        return data

    def _ordered(self, tasks: Iterable[Callable[[], None]]) -> Iterator[None]:
        """Run the tasks on the pool, at most ``window`` at once; yields as each one ends, in order."""
        queue: deque[Future[None]] = deque()
        try:
            for task in tasks:
                queue.append(self._pool.submit(task))
                while len(queue) > self._window:
                    yield queue.popleft().result()
            while queue:
                yield queue.popleft().result()
        finally:
            for future in queue:
                future.cancel()
            for future in queue:
                if not future.cancelled():
                    future.exception()

    def _report(self) -> None:
        self._progress(ProgressEvent("copy", bytes_done=self._bytes_total, current=self._current))


class _ItemStream:
    """Items → the item stream, cut with the target's metadata chunker as a backup cuts it."""

    def __init__(self, content: ContentStore, chunker: Chunker) -> None:
        self._content = content
        self._chunker = chunker
        self._buffer = bytearray()
        self._chunks: list[bytes] = []

    def add(self, item: Item) -> None:
        self._buffer += encode_item(item)
        if len(self._buffer) >= ITEM_BUFFER:
            self._drain(final=False)

    def _drain(self, final: bool) -> None:
        pieces = list(self._chunker.chunks_of(bytes(self._buffer)))
        keep = b"" if final or len(pieces) < 2 else pieces.pop()
        self._chunks.extend(self._content.put(piece, BLOB_META) for piece in pieces)
        self._buffer = bytearray(keep)

    def close(self) -> list[bytes]:
        if self._buffer:
            self._drain(final=True)
        return self._chunks


__all__ = ["CopyResult", "SnapshotCopier", "copy_key"]
