"""The index cache's and the scan's memory maps stay out of the resident set (dtstore.content.mapped).

Random lookups in a large LMDB table fault in up to 64 KiB around each page; without shedding, a
cache of millions of chunks becomes gigabytes of RSS.  Measured on this process's own mapping of the
file (/proc/self/smaps), with and without shedding, so the test fails if shedding stops working."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from dtstore.content import index as index_module
from dtstore.content import mapped as mapped_module
from dtstore.content.index import IndexCache
from dtstore.content.pack import BlobEntry
from tests.helpers import mapped_kib

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="madvise and /proc are Linux's")


def filled_cache(path: Path, chunks: int) -> tuple[IndexCache, list[bytes]]:
    cache = IndexCache(path)
    ids = [random.Random(n).randbytes(32) for n in range(chunks)]
    for start in range(0, chunks, 1000):
        pack = random.Random(-start).randbytes(32).hex()
        cache.add_segment(f"index/{start:032x}", [(pack, 0, [BlobEntry(c, 100 * n, 100, 200)
                                                             for n, c in enumerate(ids[start : start + 1000])])])
    return cache, ids


@pytest.mark.parametrize("budget", [1 << 20, 0])
def test_cache_lookups_shed_the_mapped_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    cache, ids = filled_cache(tmp_path / "cache", 60_000)
    cache.close()
    monkeypatch.setattr(index_module, "RESIDENT_BUDGET", budget)
    monkeypatch.setattr(mapped_module, "CHECK_EVERY", 1)
    cache = IndexCache(tmp_path / "cache")  # a fresh mapping: nothing of it resident yet
    data = (tmp_path / "cache" / "data.mdb").resolve()
    random.Random(7).shuffle(ids)
    for chunk_id in ids[:20_000]:
        assert cache.lookup(chunk_id) is not None
    assert len(cache.lookup_many(ids[20_000:40_000])) == 20_000
    resident, size = mapped_kib(data), data.stat().st_size // 1024
    if budget:
        assert resident < size / 4, (resident, size)
    else:
        assert resident > size / 2, (resident, size)
    cache.close()
