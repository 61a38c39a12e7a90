"""What each stage of a first backup costs alone, on one core, and the bound a perfect pipeline reaches.

    python -m bench.stages FILE [--level 2]        # prints the table; bench.compare runs it on its data

Issue 18 §1: the stages are measured one after the other in this process, single-threaded, on the
same bytes the backup reads, with dtstore's own code for each:

* ``read``: the file in 4 MiB ``readinto`` calls into one buffer (from the page cache: the file is
  read once before);
* ``chunk``: the cut points of the repository's default chunker (``Chunker.cut_ends``, pyfastcdc);
* ``hash``: the keyed BLAKE3 chunk ID of every chunk (``ChunkHasher``);
* ``compress``: every chunk alone at the level (``dtstore.compression.encode``, raw if zstd does not
  shrink it by 1/64);
* ``seal``: AES-256-GCM of every encoded chunk under a pack key (``SubKey.seal``);
* ``pack``: 16 MiB packs joined, hashed (the pack ID) and written with ``LocalStore.put`` (temporary
  file, fsync, rename) to a scratch directory on the repository's file system.

Each figure is CPU seconds (user + system, ``time.process_time``) per GiB of input.  The sum is
what a backup cannot avoid spending; the bound is the sum divided by the cores, the wall time a
pipeline that overlapped every stage perfectly would take.  Start-up (interpreter, imports, the
password KDF) is not a stage: it is reported by bench.compare beside them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dtstore import compression
from dtstore import format as fmt
from dtstore.chunking import Chunker, ChunkerParams
from dtstore.content.pack import pack_id_of
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
    """The read stage as a backup does it: into one reused block buffer."""
    block = bytearray(READ_BLOCK)
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


def _packs(sealed: list[bytes], scratch: Path) -> int:
    store = LocalStore(str(scratch))
    parts: list[bytes] = []
    size = written = 0
    for blob in [*sealed, b""]:
        if blob:
            parts.append(blob)
            size += len(blob)
        if size >= fmt.DEFAULT_PACK_SIZE or (not blob and parts):
            data = b"".join(parts)
            store.put(f"data/{written:08d}", data)
            pack_id_of(data)
            written, parts, size = written + 1, [], 0
    return written


def measure_stages(path: Path, level: int = fmt.DEFAULT_ZSTD_LEVEL,
                   scratch_parent: Path | None = None) -> dict[str, Any]:
    """CPU seconds per GiB of each stage on ``path``, their sum, and the bound on this machine's cores."""
    _read_through(path)  # page cache warm, as bench.compare leaves it for the tools
    seconds: dict[str, float] = {}
    seconds["read"], _ = _timed(lambda: _read_through(path))
    data = _read(path)  # the later stages work on the bytes in memory
    view = memoryview(data)
    chunker = Chunker(ChunkerParams(fmt.DEFAULT_CHUNK_MIN, fmt.DEFAULT_CHUNK_AVG, fmt.DEFAULT_CHUNK_MAX),
                      seed=int.from_bytes(os.urandom(4), "little"))
    seconds["chunk"], ends = _timed(lambda: chunker.cut_ends(view))
    chunks = [view[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    hasher = ChunkHasher(os.urandom(32))
    seconds["hash"], ids = _timed(lambda: [hasher(c) for c in chunks])
    seconds["compress"], encoded = _timed(lambda: [compression.encode(c, level) for c in chunks])
    key = SubKey(os.urandom(32))
    seconds["seal"], sealed = _timed(lambda: [key.seal(e, i) for e, i in zip(encoded, ids, strict=True)])
    scratch = Path(tempfile.mkdtemp(prefix="stages-", dir=scratch_parent))
    try:
        seconds["pack"], packs = _timed(lambda: _packs(sealed, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    gib = len(data) / GIB
    per_gib = {name: round(seconds[name] / gib, 3) for name in STAGES}
    total = sum(per_gib.values())
    cores = os.cpu_count() or 1
    return {
        "bytes": len(data), "chunks": len(chunks), "packs": packs, "level": level,
        "stored_bytes": sum(len(s) for s in sealed),
        "cpu_s_per_gib": per_gib, "sum_s_per_gib": round(total, 3),
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
    ap.add_argument("--level", type=int, default=fmt.DEFAULT_ZSTD_LEVEL)
    args = ap.parse_args()
    print(stage_table(measure_stages(args.file, args.level, args.file.parent)))


if __name__ == "__main__":
    main()
