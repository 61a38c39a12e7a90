"""Reading a stored file as runs of neighbouring chunks (``dtstore dump``, ``open_item``): one range
read per run, not per chunk, and damage still costs only the bytes from the bad chunk on."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

import dtstore
from dtstore import FilesSource
from dtstore.chunking import ChunkerParams
from dtstore.content.store import RUN_BYTES
from dtstore.errors import IntegrityError
from dtstore.storage import layout
from dtstore.storage.local import LocalStore
from tests.helpers import PASSWORD, SMALL_CHUNKER_ARGS, init_repo, repo_objects


def _repo_with_file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    src = tmp_path / "src" / "data.bin"
    src.parent.mkdir()
    data = random.Random(4).randbytes(size)
    src.write_bytes(data)
    with init_repo(str(tmp_path / "repo"), tmp_path / "cache", chunker=ChunkerParams(*SMALL_CHUNKER_ARGS),
                   pack_size=4 << 20) as repo:
        repo.snapshot([FilesSource([str(src)])])
    return src, data


def _open(tmp_path: Path, cache: str) -> dtstore.Repository:
    return dtstore.Repository.open(str(tmp_path / "repo"), PASSWORD, cache_dir=tmp_path / cache)


def test_runs_are_neighbours_in_one_pack_in_stream_order(tmp_path: Path) -> None:
    src, _ = _repo_with_file(tmp_path, 5_000_000)
    with _open(tmp_path, "cache") as repo:
        item = repo.find_item(repo.snapshots()[-1], str(src))
        runs = repo._reader().runs(item.chunks)
    assert [c for run in runs for c in run.chunk_ids] == list(item.chunks)
    assert 1 < len(runs) < len(item.chunks) // 4  # ~1,000 chunks of ~5 KiB, runs of up to RUN_BYTES
    for run in runs:
        assert run.locations is not None
        assert len({loc.pack_id for loc in run.locations}) == 1
        ends = [loc.offset + loc.length for loc in run.locations]
        assert [loc.offset for loc in run.locations[1:]] == ends[:-1]
        assert ends[-1] - run.locations[0].offset <= RUN_BYTES


def test_dump_reads_a_range_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, data = _repo_with_file(tmp_path, 5_000_000)
    reads: list[tuple[str, int]] = []
    plain_get_range = LocalStore.get_range

    def counted(self: LocalStore, name: str, offset: int, length: int) -> bytes:
        reads.append((name, length))
        return plain_get_range(self, name, offset, length)

    with _open(tmp_path, "cache") as repo:
        snapshot = repo.snapshots()[-1]
        chunks = len(repo.find_item(snapshot, str(src)).chunks)
        monkeypatch.setattr(LocalStore, "get_range", counted)
        out = io.BytesIO()
        assert repo.dump(snapshot, str(src), out) == len(data)
    assert out.getvalue() == data
    data_reads = [r for r in reads if r[0].startswith(layout.DATA_PACKS)]
    assert 0 < len(data_reads) <= chunks // 4


def test_a_damaged_chunk_inside_a_run_stops_the_dump_right_there(tmp_path: Path) -> None:
    src, data = _repo_with_file(tmp_path, 5_000_000)
    with _open(tmp_path, "cache") as repo:
        snapshot = repo.snapshots()[-1]
        item = repo.find_item(snapshot, str(src))
        reader = repo._reader()
        runs = reader.runs(item.chunks)
        run = next(r for r in runs if len(r.chunk_ids) >= 3)
        victim, location = run.chunk_ids[1], run.locations[1]  # type: ignore[index]
        before = sum(reader.locate(c).raw_length for c in item.chunks[: list(item.chunks).index(victim)])
    pack = next(p for p in repo_objects(tmp_path / "repo", layout.DATA_PACKS) if p.name == location.pack_id)
    body = bytearray(pack.read_bytes())
    body[location.offset + location.length // 2] ^= 0xFF
    pack.write_bytes(bytes(body))
    with _open(tmp_path, "cache-2") as repo:
        out = io.BytesIO()
        with pytest.raises(IntegrityError, match=victim.hex()[:16]):
            repo.dump(repo.snapshots()[-1], str(src), out)
    assert out.getvalue() == data[:before]  # every chunk before the bad one, nothing after
