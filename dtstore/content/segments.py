"""Remote index segments and keeping the LMDB cache in step with them.

A segment is a sealed msgpack document ``{"version": 1, "packs": [{"id", "kind", "size", "blobs":
[[chunk_id, offset, length, raw_length], …]}, …], "supersedes": [segment names]}`` stored as
``index/<32 random hex>``.  It is written only after every pack it lists is durable.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import msgpack

from dtstore.content.damage import damage_names, load_damage
from dtstore.content.index import IndexCache
from dtstore.content.journal import journal_known, left_over, start_journal
from dtstore.content.pack import (
    HEADER_SIZE,
    TRAILER_LENGTH_SIZE,
    BlobEntry,
    header_size,
    read_trailer,
    trailer_key,
    trailer_length,
)
from dtstore.crypto.aead import Sealer
from dtstore.errors import AdminKeyRequired, BlobNotFound, IntegrityError, StorageError
from dtstore.format import AAD_INDEX, BLOB_META
from dtstore.storage import layout
from dtstore.storage.base import BlobInfo, BlobStore


@dataclass
class PackRecord:
    pack_id: str
    kind: int
    size: int
    entries: list[BlobEntry] = field(default_factory=list)


def encode_segment(sealer: Sealer, packs: list[PackRecord], supersedes: list[str] | None = None) -> bytes:
    doc = {
        "version": 1,
        "packs": [
            {"id": p.pack_id, "kind": p.kind, "size": p.size,
             "blobs": [[e.chunk_id, e.offset, e.length, e.raw_length] for e in p.entries]}
            for p in packs
        ],
        "supersedes": supersedes or [],
    }
    return sealer.seal(msgpack.packb(doc), AAD_INDEX)


def decode_segment(sealer: Sealer, sealed: bytes, name: str) -> tuple[list[PackRecord], list[str]]:
    doc = msgpack.unpackb(sealer.open(sealed, AAD_INDEX, f"index segment {name}"))
    if doc.get("version") != 1:
        raise IntegrityError(f"index segment {name} has unknown version {doc.get('version')}")
    packs = [
        PackRecord(p["id"], int(p["kind"]), int(p["size"]),
                   [BlobEntry(c, o, n, r) for c, o, n, r in p["blobs"]])  # sealed: written by dtstore
        for p in doc["packs"]
    ]
    return packs, list(doc.get("supersedes", []))


def new_segment_name() -> str:
    return layout.index_name(os.urandom(16).hex())


def write_segment(store: BlobStore, sealer: Sealer, cache: IndexCache, packs: list[PackRecord]) -> str:
    """Upload one segment, then record it in the cache; the order makes the cache never lead."""
    name = new_segment_name()
    store.put(name, encode_segment(sealer, packs))
    cache.add_segment(name, [(p.pack_id, p.kind, p.entries) for p in packs])
    return name


def refresh_cache(store: BlobStore, sealer: Sealer, cache: IndexCache, workers: int = 8) -> int:
    """Load segments the cache lacks; if a known one vanished (compacted by prune), or the damage
    records changed, start over (damage records first).

    A segment can also vanish between the listing and its download, when a prune or an index
    rebuild replaces the segments meanwhile: then the listing is taken again."""
    for attempt in range(5):
        try:
            return _refresh_once(store, sealer, cache, workers)
        except BlobNotFound:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def _refresh_once(store: BlobStore, sealer: Sealer, cache: IndexCache, workers: int) -> int:
    # known before listing: a segment this process uploads and caches meanwhile (the uploader threads
    # during a backup) must not look like one a prune removed, which would reset the whole cache
    known = cache.known_segments()
    remote = {info.name for info in store.list(layout.INDEX)}
    records = damage_names(store)
    if records != cache.known_damage_records():
        # the damage set decides which copy each chunk points at: load it first, then every segment
        damage = load_damage(store, sealer, records)
        cache.reset()
        cache.set_damage(records, damage)
        known = set()
    elif known - remote:
        damage = cache.damage()
        cache.reset()
        cache.set_damage(records, damage)
        known = set()
    missing = sorted(remote - known)
    if not missing:
        return 0

    def load(name: str) -> tuple[str, list[PackRecord]]:
        return name, decode_segment(sealer, store.get(name), name)[0]

    threads = max(1, min(workers, len(missing)))
    with ThreadPoolExecutor(threads) as pool:
        pending: deque[Future[tuple[str, list[PackRecord]]]] = deque()
        for number in range(len(missing)):
            # at most twice the threads decoded ahead: after a prune, segments hold 100,000 entries
            # each, and all of them decoded at once held gigabytes (10 million chunks: 1.8 GiB)
            while len(pending) < 2 * threads and number + len(pending) < len(missing):
                pending.append(pool.submit(load, missing[number + len(pending)]))
            name, packs = pending.popleft().result()
            cache.add_segment(name, [(p.pack_id, p.kind, p.entries) for p in packs])
    return len(missing)


def list_packs(store: BlobStore) -> dict[str, BlobInfo]:
    """Every pack in the repository by pack ID."""
    found: dict[str, BlobInfo] = {}
    for prefix in (layout.DATA_PACKS, layout.META_PACKS):
        for info in store.list(prefix):
            found[layout.pack_id_of(info.name)] = info
    return found


def read_pack_record(store: BlobStore, sealer: Sealer, name: str, size: int) -> PackRecord:
    """Rebuild a pack's index entries from its own trailer, with two range reads."""
    pack_id = layout.pack_id_of(name)
    if size < HEADER_SIZE + TRAILER_LENGTH_SIZE:
        raise IntegrityError(f"pack {pack_id} is truncated ({size} bytes)")
    header = store.get_range(name, 0, HEADER_SIZE)
    if header_size(header) > HEADER_SIZE:
        header += store.get_range(name, HEADER_SIZE, header_size(header) - HEADER_SIZE)
    key = trailer_key(sealer, header, pack_id)
    tail_len = trailer_length(store.get_range(name, size - TRAILER_LENGTH_SIZE, TRAILER_LENGTH_SIZE),
                              pack_id, size)
    start = size - TRAILER_LENGTH_SIZE - tail_len
    kind, entries = read_trailer(key, store.get_range(name, start, tail_len), pack_id)
    return PackRecord(pack_id, kind, size, entries)


def adopt_orphan_packs(store: BlobStore, sealer: Sealer, cache: IndexCache,
                       skip: Callable[[str], bool] = lambda _: False) -> int:
    """Index packs that exist but no segment lists (left by an interrupted writer), so they are reused.

    Lists every pack.  Unreadable orphans are left alone for ``check`` and ``prune`` to report.
    """
    known = cache.known_packs()
    orphans = [info for pid, info in list_packs(store).items() if pid not in known and not skip(pid)]
    return _adopt(store, sealer, cache, orphans)[0]


def adopt_left_over_packs(store: BlobStore, sealer: Sealer, cache: IndexCache,
                          skip: Callable[[str], bool] = lambda _: False, *, list_all: bool = False) -> int:
    """Adopt this host's orphans: the packs its write journal (``dtstore.content.journal``) names.

    Lists every pack instead when the cache has no journal yet (new or deleted cache), when a
    journal cannot be read whole, or with ``list_all``.  Journals of live writers are left alone;
    the others are deleted once their packs are indexed (or found absent or unreadable).
    """
    listing = list_all or not journal_known(cache.path)
    # the dead writers' journals are taken (locked) before any listing, so all they name is in it
    found = left_over(cache.path)
    try:
        if listing or not found.complete:
            adopted = adopt_orphan_packs(store, sealer, cache, skip)
            start_journal(cache.path)
            found.discard()
            return adopted
        known = cache.known_packs() if found.pack_names else set()
        orphans: list[BlobInfo] = []
        for name in sorted(found.pack_names):
            pid = layout.pack_id_of(name)
            if pid in known or skip(pid):
                continue
            try:
                orphans.append(BlobInfo(name, store.size(name)))
            except BlobNotFound:
                continue  # its put never completed (or a prune deleted it)
        adopted, retry = _adopt(store, sealer, cache, orphans)
        if not retry:
            found.discard()
        return adopted
    finally:
        found.release()


def _adopt(store: BlobStore, sealer: Sealer, cache: IndexCache, orphans: list[BlobInfo]) -> tuple[int, bool]:
    """(packs adopted, whether some pack could not be read for a reason that may pass)."""
    records: list[PackRecord] = []
    retry = False
    for info in orphans:
        name = info.name
        try:
            record = read_pack_record(store, sealer, name, info.size)
        except (IntegrityError, AdminKeyRequired, BlobNotFound):
            continue
        except StorageError:
            retry = True
            continue
        expected_meta = name.startswith(layout.META_PACKS + "/")
        if (record.kind == BLOB_META) == expected_meta:
            records.append(record)
    if records:
        write_segment(store, sealer, cache, records)
    return len(records), retry
