"""A synthetic history for ``bench.maintenance --synthetic``: millions of chunks, thousands of snapshots.

Backing up 10 million real chunks at the default 256 KiB would take 2.5 TB; maintenance cost depends
on how many chunks, packs, segments and snapshots a repository has, not on how large the chunks are.
So this writes a real, valid dtstore repository directly through dtstore's own lower layers, as the
backups of that history would have left it (spec/repository-format.md):

* one night = one backup run: ``new`` fresh data chunks (tiny, unique 32-byte plaintexts), sealed
  with the repository's keys into data packs of ``blobs_per_pack`` blobs (``PackBuilder``, 64 by
  default: a 16 MiB pack of 256 KiB chunks), the night's last pack partly full as a real run leaves it;
* the night's item stream (one file ``dump.sql`` whose chunk list is the current window), encoded
  with ``encode_item``, cut with the repository's metadata chunker and stored as metadata blobs,
  deduplicated by chunk ID, in one metadata pack;
* one index segment per night listing that night's packs (``write_segment``, which also feeds the
  local index cache as a backup does), then the manifest (``SnapshotStore.save``), in the order of
  §15.3;
* the history is a sliding window: night ``i`` refers to chunks ``[i·new, i·new + window)``, so each
  chunk is used by ``window / new`` consecutive snapshots (2 by default) and the repository holds
  about ``new × nights`` chunks;
* the first ``forgotten`` nights' manifests are deleted at the end (as ``forget`` does), so prune has
  whole packs to delete and a partly-used pack at the boundary.

Each night's nonces, pack salts and keys are fresh, as in a real backup, so ``check --read-data``
verifies too.  The pack files are written without fsync (``LocalStore(durable=False)``); the caller
syncs before measuring.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtstore import compression
from dtstore.content.pack import PackBuilder
from dtstore.content.segments import PackRecord, write_segment
from dtstore.format import BLOB_DATA, BLOB_META
from dtstore.repository import Repository
from dtstore.snapshots.manifest import Item, Snapshot, encode_item
from dtstore.storage import layout
from dtstore.storage.local import LocalStore

_PLAIN = struct.Struct(">16sQQ")
_TAG = b"dtstore-synth-v1"


@dataclass
class Built:
    chunks: int
    """distinct data chunks written"""
    meta_chunks: int
    packs: int
    segments: int
    snapshots: int
    """manifests left (after the forgotten ones were deleted)"""
    forgotten: int
    referenced: int
    """distinct data chunks the remaining snapshots refer to"""
    references: int
    """chunk references summed over the remaining snapshots (what a walk visits)"""
    stored_bytes: int
    seconds: float


def build(path: Path, password: str, *, chunks: int, snapshots: int, window: int | None = None,
          blobs_per_pack: int = 64, forgotten: float = 0.1, seed: int = 1, cache_dir: Path,
          progress: bool = True) -> Built:
    """Write the repository at ``path`` (which must not hold one).  ``chunks`` is the target number
    of distinct data chunks; ``window`` the chunks each snapshot refers to (default 2 × new per night)."""
    from dtstore.crypto.keys import CHEAP_KDF

    t0 = time.perf_counter()
    new = max(1, chunks // snapshots)
    window = window or 2 * new
    if window < new:
        raise ValueError("window must be at least the new chunks per night")
    path.mkdir(parents=True, exist_ok=True)
    repo = Repository.init(LocalStore(path, durable=False), password, kdf=CHEAP_KDF, cache_dir=cache_dir)
    try:
        sealer, hasher, cache, store = repo._sealer, repo._hasher, repo._cache, repo.store
        level = repo.config.compression
        meta_chunker = repo._chunker(repo.config.meta_chunker)
        ids: list[bytes] = []  # the current window's chunk IDs
        made = 0
        meta_seen: set[bytes] = set()  # the builder's own bookkeeping (one entry per metadata chunk)
        packs = segments = stored = 0
        saved: list[str] = []
        parent: str | None = None
        start = dt.datetime(2000, 1, 1, 1, 0, tzinfo=dt.UTC)
        references = 0
        keep_from = int(snapshots * forgotten)
        for night in range(snapshots):
            fresh = window if night == 0 else new
            records: list[PackRecord] = []
            builder = PackBuilder(sealer, BLOB_DATA)
            for _ in range(fresh):
                plain = _PLAIN.pack(_TAG, seed, made)
                made += 1
                chunk_id = hasher(plain)
                builder.add(chunk_id, compression.encode(plain, level), len(plain))
                ids.append(chunk_id)
                if builder.count >= blobs_per_pack:
                    records.append(_put_pack(store, builder))
                    builder = PackBuilder(sealer, BLOB_DATA)
            if builder.count:
                records.append(_put_pack(store, builder))
            if len(ids) > window:
                del ids[: len(ids) - window]
            item = Item(path=b"dump.sql", type="file", mode=0o640, mtime_ns=0, size=len(ids) * _PLAIN.size,
                        chunks=ids)
            meta = PackBuilder(sealer, BLOB_META)
            items_chunks = []
            for piece in meta_chunker.chunks_of(encode_item(item)):
                chunk_id = hasher(piece)
                items_chunks.append(chunk_id)
                if chunk_id not in meta_seen:
                    meta_seen.add(chunk_id)
                    meta.add(chunk_id, compression.encode(piece, level), len(piece))
            if meta.count:
                records.append(_put_pack(store, meta))
            packs += len(records)
            stored += sum(r.size for r in records)
            write_segment(store, sealer, cache, records)
            segments += 1
            when = start + dt.timedelta(days=night)
            snap = Snapshot(id="", time=when, host="bench", tags=["synthetic"], source_kind="stdin",
                            source_id="stdin:dump.sql", paths=["dump.sql"], source_metadata={},
                            summary={"files": 1, "dirs": 0, "symlinks": 0, "items": 1, "chunks_new": fresh,
                                     "bytes_read": item.size, "bytes_total": item.size,
                                     "packs_written": len(records), "duration_seconds": 0.0, "warnings": []},
                            parent=parent, program_version="dtstore 0.1.0", items_chunks=items_chunks,
                            items_count=1, username="bench")
            parent = repo._snapshots.save(snap).id
            saved.append(parent)
            if night >= keep_from:
                references += len(ids)
            if progress and (night + 1) % max(1, snapshots // 10) == 0:
                print(f"  synthetic: {night + 1} nights, {made} chunks, {packs} packs, "
                      f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for snapshot_id in saved[:keep_from]:  # what `dtstore forget` does
            repo._snapshots.delete(snapshot_id)
        first_kept = keep_from * new
        referenced = made - first_kept if keep_from else made
        return Built(made, len(meta_seen), packs, segments, snapshots - keep_from, keep_from, referenced,
                     references, stored, time.perf_counter() - t0)
    finally:
        repo.close()


def _put_pack(store: object, builder: PackBuilder) -> PackRecord:
    pack = builder.finish()
    store.put(layout.pack_name(pack.pack_id, pack.kind == BLOB_META), pack.data)  # type: ignore[attr-defined]
    return PackRecord(pack.pack_id, pack.kind, len(pack.data), pack.entries)


# --------------------------------------------------------------------------- the benchmark


def run_synthetic(args: argparse.Namespace) -> int:
    """``bench.maintenance --synthetic``: build (or reuse) each history, then measure dtstore on it."""
    from bench.maintenance import PASSWORD, Measured, finish, fmt, json_summary, measure

    work = args.workdir or Path(tempfile.mkdtemp(prefix="dtstore-bench-synth-"))
    work.mkdir(parents=True, exist_ok=True)
    per_snapshot = max(1, args.chunks // args.snapshots)
    scales = sorted({n for n in (args.smaller, args.chunks) if n > 0})
    results: list[tuple[Built, dict[str, Measured], dict[str, Any]]] = []
    for chunks in scales:
        snapshots = max(1, chunks // per_snapshot)
        tag = f"{chunks}-{snapshots}-{args.window or 0}-{args.blobs_per_pack}-{args.seed}"
        repo, cache, record = work / f"synthetic-{tag}", work / f"cache-{tag}", work / f"synthetic-{tag}.json"
        logs = work / f"logs-{tag}"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True)
        doc = json.loads(record.read_text()) if args.reuse and record.exists() else {}
        if doc.get("pruned", True):
            for path in (repo, cache, record):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            print(f"building {chunks} chunks, {snapshots} snapshots in {repo}", file=sys.stderr)
            built = build(repo, PASSWORD, chunks=chunks, snapshots=snapshots, window=args.window or None,
                          blobs_per_pack=args.blobs_per_pack, seed=args.seed, cache_dir=cache)
            doc = {"built": dataclasses.asdict(built), "pruned": False}
            record.write_text(json.dumps(doc))
        built = Built(**doc["built"])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "DTSTORE_"))}
        env.update(DTSTORE_PASSWORD=PASSWORD, DTSTORE_CACHE_DIR=str(cache), DTSTORE_REPOSITORY=str(repo))
        cli = [sys.executable, "-m", "dtstore.cli", "--json", "--quiet"]
        runs: dict[str, Measured] = {}
        runs["check"] = measure([*cli, "check"], env, logs, "dtstore-check")
        runs["prune --dry-run"] = measure([*cli, "prune", "--dry-run", "--grace", "0", "--exclusive"], env, logs,
                                          "dtstore-prune-dry-run")
        doc["pruned"] = True  # from here on the repository is no longer the built history
        record.write_text(json.dumps(doc))
        runs["prune"] = measure([*cli, "prune", "--grace", "0", "--exclusive"], env, logs, "dtstore-prune")
        plan = json_summary(runs["prune"])
        runs["check after prune"] = measure([*cli, "check"], env, logs, "dtstore-check-after")
        results.append((built, runs, plan))
        print(f"  {chunks} chunks: " + ", ".join(f"{k} {v.seconds:.1f} s {v.max_rss_bytes / 2**20:.0f} MiB"
                                                 for k, v in runs.items()), file=sys.stderr)

    load = os.getloadavg()
    print()
    print(f"Synthetic histories (bench.maintenance_synthetic): {per_snapshot} new chunks per snapshot, each snapshot "
          f"refers to {args.window or 2 * per_snapshot} chunks (a sliding window), {args.blobs_per_pack} blobs per "
          f"data pack, one index segment per snapshot, the oldest 10 % of snapshots forgotten.  Machine: "
          f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}.")
    print()
    print("| chunks | snapshots | packs | segments | repository | build s | operation | time | peak RSS (anon) "
          "| µs/chunk | B RSS/chunk (anon) |")
    print("|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for built, runs, _ in results:
        for name, result in runs.items():
            t, rss = fmt(result)
            print(f"| {built.chunks} | {built.snapshots} | {built.packs} | {built.segments} "
                  f"| {built.stored_bytes / 1e6:.0f} MB | {built.seconds:.0f} | {name} | {t} | {rss} "
                  f"| {result.seconds * 1e6 / built.chunks:.1f} "
                  f"| {result.max_rss_bytes / built.chunks:.0f} ({result.max_anon_bytes / built.chunks:.0f}) |")
    for built, _, plan in results:
        print(f"\nprune at {built.chunks} chunks: deleted {plan.get('delete_packs')} packs, repacked "
              f"{plan.get('repack_packs')}, {plan.get('repository_bytes', 0) / 1e6:.0f} MB before.")
    if len(results) == 2:
        (small, s_runs, _), (big, b_runs, _) = results
        print()
        print(f"Growth from {small.chunks} to {big.chunks} chunks ({big.chunks / small.chunks:.1f}×):")
        print()
        print("| operation | time × | peak RSS × | peak anon RSS × |")
        print("|---|---:|---:|---:|")
        for name in s_runs:
            a, b = s_runs[name], b_runs[name]
            print(f"| {name} | {b.seconds / a.seconds:.2f} | {b.max_rss_bytes / a.max_rss_bytes:.2f} "
                  f"| {b.max_anon_bytes / max(1, a.max_anon_bytes):.2f} |")
    return finish(args, work)
