"""Which chunker minimum should a new repository get?  Cutting cost, chunk count, stored bytes and the
next night's new bytes per chunker setting, on bench.compare's three data sets.

    python -m bench.chunk_sizes --workdir /tmp/c                      # 1 GiB of each set, five settings
    python -m bench.chunk_sizes --workdir /tmp/c --data dump --settings 64/256,192/384

A setting is ``MIN/AVG`` in KiB (max 2 MiB, as the default); FastCDC's mask size is ``AVG − MIN``
(spec §14.2).  Per data set and setting: the cut on one core (best of ``--runs``), the mean chunk,
stored bytes (every chunk of v1 compressed alone at the default level, as the repository does) and
the bytes the next version adds (v2's chunks that v1 does not have, compressed).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3

from bench import compare
from bench.gen_dump import parse_size
from dtstore import format as fmt
from dtstore.chunking import Chunker, ChunkerParams
from dtstore.compression import DEFAULT, encode

DEFAULT_SETTINGS = "64/256,128/256,160/320,192/384,256/512"


def params_of(setting: str) -> ChunkerParams:
    low, avg = (int(x) << 10 for x in setting.split("/"))
    return ChunkerParams(low, avg, fmt.DEFAULT_CHUNK_MAX)


def spans(chunker: Chunker, data: bytes) -> list[memoryview]:
    view = memoryview(data)  # views: no copy per chunk
    return [view[a:b] for a, b in itertools.pairwise([0, *chunker.cut_ends(data)])]


def cut_seconds(chunker: Chunker, data: bytes, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        chunker.cut_ends(data)
        best = min(best, time.perf_counter() - start)
    return best


def measure(v1: bytes, v2: bytes, params: ChunkerParams, runs: int, pool: ThreadPoolExecutor) -> dict[str, float]:
    chunker = Chunker(params, seed=12345)
    old, new = spans(chunker, v1), spans(chunker, v2)
    known = {blake3.blake3(c).digest() for c in old}
    added = [c for c in new if blake3.blake3(c).digest() not in known]

    def stored(chunks: list[memoryview]) -> int:
        return sum(pool.map(lambda c: len(encode(c, DEFAULT)), chunks))

    return {"cut_s_per_gib": cut_seconds(chunker, v1, runs) / (len(v1) / 2**30),
            "chunks": len(old), "mean_kib": statistics.mean(len(c) for c in old) / 1024,
            "stored_mb": stored(old) / 1e6, "added_mb": stored(added) / 1e6}


def data_pair(work: Path, data: str, size: int, seed: int) -> tuple[compare.Dump, compare.Dump]:
    if data == "dump":
        return compare.dump_v1(work, size, seed), compare.dump_v2(work, size, seed)
    return compare.other_v1(work, data, size, seed), compare.other_v2(work, data, size, seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.chunk_sizes", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, required=True, help="data sets are written (once) here")
    ap.add_argument("--data", default="dump,sysbench,pages")
    ap.add_argument("--size", default="1G")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--settings", default=DEFAULT_SETTINGS, help="MIN/AVG in KiB, comma-separated")
    ap.add_argument("--runs", type=int, default=3, help="cuts timed per setting; the fastest counts")
    args = ap.parse_args(argv)
    print("| data | min / avg (KiB) | cut s/GiB | chunks | mean chunk KiB | stored MB | next version adds MB |")
    print("|---|---|---|---|---|---|---|")
    with ThreadPoolExecutor() as pool:
        for data in args.data.split(","):
            v1, v2 = data_pair(args.workdir, data, parse_size(args.size), args.seed)
            old, new = v1.path.read_bytes(), v2.path.read_bytes()
            for setting in args.settings.split(","):
                m = measure(old, new, params_of(setting), args.runs, pool)
                print(f"| {data} | {setting} | {m['cut_s_per_gib']:.2f} | {m['chunks']:.0f} | {m['mean_kib']:.0f} "
                      f"| {m['stored_mb']:.1f} | {m['added_mb']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
