"""bench.chunk_sizes measures what it says: chunk counts by minimum, stored and added bytes."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from bench import chunk_sizes


def _rows(rng: random.Random, count: int) -> bytes:
    return b"".join(b"(%d,'%s')," % (rng.randrange(10**9), rng.choice([b"ab", b"cde", b"fghi"]) * 20)
                    for _ in range(count))


def test_a_larger_minimum_cuts_fewer_chunks_and_an_edit_adds_only_its_neighbourhood() -> None:
    rng = random.Random(3)
    v1 = _rows(rng, 160_000)  # ~7 MB
    middle = len(v1) // 2
    v2 = v1[:middle] + b"an edited row" + v1[middle:]
    with ThreadPoolExecutor(2) as pool:
        small = chunk_sizes.measure(v1, v2, chunk_sizes.params_of("64/256"), 1, pool)
        large = chunk_sizes.measure(v1, v2, chunk_sizes.params_of("192/384"), 1, pool)
        same = chunk_sizes.measure(v1, v1, chunk_sizes.params_of("192/384"), 1, pool)
    assert large["chunks"] < small["chunks"]
    assert large["mean_kib"] > small["mean_kib"]
    assert 0 < small["stored_mb"] < len(v1) / 1e6
    assert same["added_mb"] == 0
    assert 0 < large["added_mb"] < large["stored_mb"] / 4  # one edit: a chunk or two, not the file
