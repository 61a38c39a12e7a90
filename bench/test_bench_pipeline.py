"""pytest-benchmark micro-benchmarks of the chunk → compress → encrypt → pack path.

Run: ``python -m pytest bench/test_bench_pipeline.py --benchmark-only`` (not part of the test suite).
Throughput is reported as the benchmark's ops/s times the bytes each op handles (printed in extra_info).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

import pytest

from dtstore import compression
from dtstore.chunking import Chunker, ChunkerParams
from dtstore.content.pack import PackBuilder, parse_pack
from dtstore.crypto.keyed_hash import ChunkHasher
from dtstore.crypto.keys import MasterKey
from dtstore.format import BLOB_DATA, DEFAULT_CHUNK_AVG, DEFAULT_CHUNK_MAX, DEFAULT_CHUNK_MIN

SIZE = 32 << 20


def _dump_like(size: int) -> bytes:
    try:
        from bench.gen_dump import write_dump  # type: ignore[attr-defined]
    except ImportError:
        write_dump = None
    if write_dump is not None:
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"dtstore-bench-{size}.sql")
        if not os.path.exists(path):
            write_dump(path, size, 1)
        with open(path, "rb") as f:
            return f.read()
    rows = (f"INSERT INTO t VALUES ({i},'name{i % 977}',{i * 7 % 100003}.{i % 100:02d});\n" for i in range(size))
    out = io.BytesIO()
    for row in rows:
        out.write(row.encode())
        if out.tell() >= size:
            break
    return out.getvalue()[:size]


@pytest.fixture(scope="module")
def data() -> bytes:
    return _dump_like(SIZE)


@pytest.fixture(scope="module")
def chunks(data: bytes) -> list[bytes]:
    chunker = Chunker(ChunkerParams(DEFAULT_CHUNK_MIN, DEFAULT_CHUNK_AVG, DEFAULT_CHUNK_MAX), seed=12345)
    return list(chunker.chunks_of(data))


def _throughput(benchmark: Any, nbytes: int, fn: Callable[[], object]) -> None:
    benchmark.extra_info["bytes_per_op"] = nbytes
    benchmark.pedantic(fn, rounds=3, iterations=1)
    benchmark.extra_info["MB_per_s"] = round(nbytes / benchmark.stats.stats.mean / 1e6, 1)


def test_chunking(benchmark: Any, data: bytes) -> None:
    chunker = Chunker(ChunkerParams(DEFAULT_CHUNK_MIN, DEFAULT_CHUNK_AVG, DEFAULT_CHUNK_MAX), seed=12345)
    _throughput(benchmark, len(data), lambda: sum(len(c) for c in chunker.chunks(io.BytesIO(data))))


def test_keyed_hash(benchmark: Any, chunks: list[bytes]) -> None:
    hasher = ChunkHasher(os.urandom(32))
    _throughput(benchmark, sum(map(len, chunks)), lambda: [hasher(c) for c in chunks])


@pytest.mark.parametrize("setting", [compression.Zstd(1), compression.Zstd(3), compression.DEFAULT],
                         ids=["1", "3", "default"])
def test_compress(benchmark: Any, chunks: list[bytes], setting: compression.Zstd) -> None:
    _throughput(benchmark, sum(map(len, chunks)), lambda: [compression.encode(c, setting) for c in chunks])


def test_seal_and_pack(benchmark: Any, chunks: list[bytes]) -> None:
    master = MasterKey.generate()
    sealer = master.sealer()
    hasher = ChunkHasher(master.id_key)
    encoded = [(hasher(c), compression.encode(c, compression.DEFAULT), len(c)) for c in chunks]

    def pack() -> None:
        builder = PackBuilder(sealer, BLOB_DATA)
        for chunk_id, blob, raw in encoded:
            builder.add(chunk_id, blob, raw)
        finished = builder.finish()
        parse_pack(sealer, finished.data, finished.pack_id)

    _throughput(benchmark, sum(map(len, chunks)), pack)


def test_whole_path_single_thread(benchmark: Any, data: bytes) -> None:
    master = MasterKey.generate()
    sealer = master.sealer()
    hasher = ChunkHasher(master.id_key)
    chunker = Chunker(ChunkerParams(DEFAULT_CHUNK_MIN, DEFAULT_CHUNK_AVG, DEFAULT_CHUNK_MAX), master.chunker_seed)

    def run() -> None:
        builder = PackBuilder(sealer, BLOB_DATA)
        for chunk in chunker.chunks(io.BytesIO(data)):
            builder.add(hasher(chunk), compression.encode(chunk, compression.DEFAULT), len(chunk))
        builder.finish().pack_id  # noqa: B018

    _throughput(benchmark, len(data), run)
