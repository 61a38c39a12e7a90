"""What each stage of a first backup costs alone, on one core, and the bound a perfect pipeline reaches.

    python -m bench.stages FILE [--level N]        # prints the table; bench.compare runs it on its data

Issue 18 §1: the stages are measured one after the other in this process, single-threaded, on the
same bytes the backup reads, with dtstore's own code for each:

* ``read``: the file in 4 MiB ``readinto`` calls into one page-aligned buffer, as a backup reads
  into its blocks (from the page cache: the file is read once before);
* ``chunk``: the cut points of the repository's default chunker (``Chunker.cut_ends``, pyfastcdc);
* ``hash``: the keyed BLAKE3 chunk ID of every chunk (``ChunkHasher``);
* ``compress``: every chunk alone as a new repository compresses it, or at ``--level``
  (``dtstore.compression.encode``, raw if zstd does not shrink it by 1/64);
* ``seal``: AES-256-GCM of every encoded chunk under a pack key (``SubKey.seal``);
* ``pack``: 16 MiB packs hashed (the pack ID) and written from their parts with
  ``LocalStore.put_parts`` (temporary file, writev, fsync, rename) to a scratch directory on the
  repository's file system.

Hashing, compression, sealing and pack writing run a pack's worth at a time with dtstore's
allocator settings, so no stage pays for holding the whole data set in fresh memory.

Each figure is CPU seconds (user + system, ``time.process_time``) per GiB of input.  The sum is
what a backup cannot avoid spending; the bound is the sum divided by the cores, the wall time a
pipeline that overlapped every stage perfectly would take.  Start-up (interpreter, imports, the
password KDF) is not a stage: it is reported by bench.compare beside them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import blake3

from dtstore import compression
from dtstore import format as fmt
from dtstore.chunking import Chunker, ChunkerParams, page_aligned
from dtstore.crypto.aead import SubKey
from dtstore.crypto.keyed_hash import ChunkHasher
from dtstore.storage.local import LocalStore

GIB = 1 << 30
READ_BLOCK = 4 << 20
STAGES = ("read", "chunk", "hash", "compress", "seal", "pack")


def _timed(work: Callable[[], object]) -> tuple[float, Any]:
    start = time.process_time()
    result = work()
    return time.process_time() - start, result


def _read_through(path: Path) -> int:
    """The read stage as a backup does it: into one reused, page-aligned block buffer."""
    block = page_aligned(READ_BLOCK)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(block):
            total += n
    return total


def _read(path: Path) -> bytearray:
    data = bytearray(path.stat().st_size)
    view, done = memoryview(data), 0
    with open(path, "rb", buffering=0) as f:
        while done < len(view):
            n = f.readinto(view[done : done + READ_BLOCK])
            if not n:
                break
            done += n
    del view
    del data[done:]
    return data


def _groups(chunks: list[memoryview], size: int) -> Iterator[list[memoryview]]:
    group: list[memoryview] = []
    total = 0
    for chunk in chunks:
        group.append(chunk)
        total += len(chunk)
        if total >= size:
            yield group
            group, total = [], 0
    if group:
        yield group


def _write_pack(store: LocalStore, number: int, parts: list[bytes]) -> None:
    hasher = blake3.blake3()  # the pack ID, over the parts as FinishedPack does
    for part in parts:
        hasher.update(part)
    hasher.hexdigest()
    store.put_parts(f"data/{number:08d}", parts)


def _tune_malloc() -> None:
    """The allocator settings dtstore's CLI uses while writing (dtstore.cli.main): without them a
    stage that allocates a buffer per chunk pays page faults dtstore does not."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 << 10)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, 2)  # M_ARENA_MAX


def measure_stages(path: Path, setting: compression.Zstd = compression.DEFAULT,
                   scratch_parent: Path | None = None, rounds: int = 2) -> dict[str, Any]:
    """CPU seconds per GiB of each stage on ``path``, their sum, and the bound on this machine's cores:
    the least of ``rounds`` runs per stage (writes that land while the kernel flushes earlier ones
    cost more; the stage alone is the cheaper figure)."""
    return best_stages([measure_stage_round(path, setting, scratch_parent) for _ in range(rounds)])


def best_stages(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of ``measure_stage_round`` as one figure: each stage's least cost, their sum and bound."""
    best = {name: min(r["cpu_s_per_gib"][name] for r in runs) for name in STAGES}
    total = round(sum(best.values()), 3)
    return {**runs[0], "cpu_s_per_gib": best, "sum_s_per_gib": total,
            "bound_s_per_gib": round(total / runs[0]["cores"], 3), "rounds": len(runs)}


def measure_stage_round(path: Path, setting: compression.Zstd = compression.DEFAULT,
                        scratch_parent: Path | None = None) -> dict[str, Any]:
    """One run of every stage (``best_stages`` combines several; bench.compare runs one per round).
    Hashing, compression, sealing and pack writing go a pack's worth at a time, so only one pack's
    buffers are alive at once, as in a backup."""
    _tune_malloc()
    os.sync()  # earlier writes are not flushed on this run's account
    _read_through(path)  # page cache warm, as bench.compare leaves it for the tools
    seconds = dict.fromkeys(STAGES, 0.0)
    seconds["read"], _ = _timed(lambda: _read_through(path))
    data = _read(path)  # the later stages work on the bytes in memory
    view = memoryview(data)
    chunker = Chunker(ChunkerParams(fmt.DEFAULT_CHUNK_MIN, fmt.DEFAULT_CHUNK_AVG, fmt.DEFAULT_CHUNK_MAX),
                      seed=int.from_bytes(os.urandom(4), "little"))
    seconds["chunk"], ends = _timed(lambda: chunker.cut_ends(view))
    chunks = [view[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    hasher, key = ChunkHasher(os.urandom(32)), SubKey(os.urandom(32))
    scratch = Path(tempfile.mkdtemp(prefix="stages-", dir=scratch_parent))
    store = LocalStore(str(scratch))
    stored = packs = 0
    parts: list[bytes] = []
    pending = 0
    try:
        for group in _groups(chunks, fmt.DEFAULT_PACK_SIZE):
            spent, ids = _timed(lambda g=group: [hasher(c) for c in g])  # type: ignore[misc]
            seconds["hash"] += spent
            spent, encoded = _timed(lambda g=group: [compression.encode(c, setting) for c in g])  # type: ignore[misc]
            seconds["compress"] += spent
            spent, sealed = _timed(lambda e=encoded, i=ids: [key.seal_parts(b, c) for b, c in zip(e, i, strict=True)])  # type: ignore[misc]
            seconds["seal"] += spent
            for nonce, body in sealed:
                parts += (nonce, body)
                pending += len(nonce) + len(body)
            if pending >= fmt.DEFAULT_PACK_SIZE or group[-1] is chunks[-1]:
                spent, _ = _timed(lambda p=parts, n=packs: _write_pack(store, n, p))  # type: ignore[misc]
                seconds["pack"] += spent
                stored, packs, parts, pending = stored + pending, packs + 1, [], 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    gib = len(data) / GIB
    per_gib = {name: round(seconds[name] / gib, 3) for name in STAGES}
    total = round(sum(per_gib.values()), 3)
    cores = os.cpu_count() or 1
    return {
        "bytes": len(data), "chunks": len(chunks), "packs": packs, "compression": setting.describe(),
        "stored_bytes": stored,
        "cpu_s_per_gib": per_gib, "sum_s_per_gib": total,
        "cores": cores, "bound_s_per_gib": round(total / cores, 3),
    }


def stage_table(costs: dict[str, Any]) -> str:
    head = [*STAGES, "sum", f"bound ({costs['cores']} cores)"]
    cells = [f"{costs['cpu_s_per_gib'][s]:.2f}" for s in STAGES]
    cells += [f"{costs['sum_s_per_gib']:.2f}", f"{costs['bound_s_per_gib']:.2f}"]
    return "\n".join([
        "| CPU s per GiB, one core | " + " | ".join(head) + " |",
        "|" + "---|" * (len(head) + 1),
        "| stages alone | " + " | ".join(cells) + " |",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--level", type=int, help="a plain zstd level (default: what init gives a new repository)")
    args = ap.parse_args()
    setting = compression.DEFAULT if args.level is None else compression.Zstd.of(args.level)
    print(stage_table(measure_stages(args.file, setting, args.file.parent)))


if __name__ == "__main__":
    main()
