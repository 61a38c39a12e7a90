"""A snapshot that dies half-way leaves a valid repository whose uploaded packs the next snapshot reuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dtstore import FilesSource, Repository
from dtstore.chunking import ChunkerParams
from dtstore.content.segments import decode_segment
from dtstore.content.store import SEGMENT_EVERY_PACKS
from dtstore.errors import StorageError
from dtstore.storage import layout
from dtstore.storage.local import LocalStore
from tests.helpers import PASSWORD, init_repo, repo_objects, restored, tree_state

CHUNKER = ChunkerParams(16 * 1024, 64 * 1024, 256 * 1024)
PACK_SIZE = 512 * 1024
DATA_FILES = 4
DATA_FILE_SIZE = 4 << 20  # 16 MiB of non-repeating data in all


def _indexed_packs(repo: Repository, repo_dir: Path) -> set[str]:
    sealer = repo.master.sealer()
    packs: set[str] = set()
    for path in repo_objects(repo_dir, "index"):
        records, _ = decode_segment(sealer, path.read_bytes(), path.name)
        packs.update(r.pack_id for r in records)
    return packs


def _make_data(root: Path) -> int:
    root.mkdir()
    for n in range(DATA_FILES):
        (root / f"part{n}.bin").write_bytes(os.urandom(DATA_FILE_SIZE))
    return DATA_FILES * DATA_FILE_SIZE


def _make_early(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"earlier snapshot\n" * 100)
    (root / "sub" / "b.bin").write_bytes(os.urandom(20_000))


def test_snapshot_killed_half_way_leaves_a_usable_repository(tmp_path: Path) -> None:
    repo_dir, cache = tmp_path / "repo", tmp_path / "cache"
    early, data = tmp_path / "early", tmp_path / "data"
    _make_early(early)
    size = _make_data(data)
    with init_repo(str(repo_dir), cache, chunker=CHUNKER, pack_size=PACK_SIZE) as repo:
        first = repo.snapshot([FilesSource([str(early)])])

    env = {**os.environ, "DTSTORE_PASSWORD": PASSWORD, "DTSTORE_CACHE_DIR": str(cache)}
    env.pop("DTSTORE_PASSWORD_FILE", None)
    env.pop("DTSTORE_PASSWORD_COMMAND", None)
    # The upload cap (4 MiB/s) makes the 16 MiB snapshot take ~4 s, so "half-way" is reliable.
    proc = subprocess.Popen(
        [sys.executable, "-m", "dtstore.cli", "snapshot", "--repo", str(repo_dir), "--limit-upload", "4096",
         str(data)], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    killed_at = 0
    earlier = len(repo_objects(repo_dir, "data"))  # the first snapshot's packs
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            count = len(repo_objects(repo_dir, "data")) - earlier
            # kill between two index segments (one per few packs), so some packs are in no segment
            if count > SEGMENT_EVERY_PACKS and count % SEGMENT_EVERY_PACKS in (1, 2):
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = count
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None and not killed_at:
            proc.kill()
        proc.wait(10)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
    assert killed_at, f"the snapshot ended (status {proc.returncode}) before it could be killed"
    assert proc.returncode == -signal.SIGKILL

    packs_after_kill = {p.name: p.stat().st_size for p in repo_objects(repo_dir, "data")}
    uploaded = sum(packs_after_kill.values())
    assert 0 < uploaded < size

    with Repository.open(str(repo_dir), PASSWORD, cache_dir=cache) as repo:
        # nothing was committed, the earlier snapshot is intact
        assert [s.id for s in repo.snapshots()] == [first.id]
        orphans = set(packs_after_kill) - _indexed_packs(repo, repo_dir)
        assert orphans, "expected the kill to leave packs that no index segment lists"
        target = tmp_path / "target-early"
        repo.restore(repo.get_snapshot("latest"), target)
        assert tree_state(restored(target, early)) == tree_state(early)

        second = repo.snapshot([FilesSource([str(data)])])
        s = second.summary
        # every pack uploaded before the kill is reused, orphans included (adopted into the index)
        assert set(packs_after_kill) <= _indexed_packs(repo, repo_dir)
        assert s["bytes_read"] == size
        assert s["chunks_reused"] > 0
        assert s["bytes_stored"] <= size - uploaded + 2 * PACK_SIZE
        assert s["bytes_stored"] < 0.9 * size
        assert [x.id for x in repo.snapshots()] == [first.id, second.id]
        target = tmp_path / "target-data"
        repo.restore(second, target)
        assert tree_state(restored(target, data)) == tree_state(data)


class FailingSegmentsStore(LocalStore):
    """A local store whose index-segment writes fail: the writer dies with its packs uploaded but unindexed."""

    def put(self, name: str, data: bytes) -> None:
        if name.startswith(layout.INDEX + "/"):
            raise StorageError(f"simulated crash before writing {name}")
        super().put(name, data)


def test_packs_of_a_failed_snapshot_are_adopted_by_the_next(tmp_path: Path) -> None:
    repo_dir, cache = tmp_path / "repo", tmp_path / "cache"
    data = tmp_path / "data"
    data.mkdir()
    payload = os.urandom(3 << 20)
    (data / "big.bin").write_bytes(payload)
    with init_repo(str(repo_dir), cache, chunker=CHUNKER, pack_size=PACK_SIZE):
        pass
    with Repository.open(FailingSegmentsStore(repo_dir), PASSWORD, cache_dir=cache) as repo, \
            pytest.raises(StorageError, match="simulated crash"):
        repo.snapshot([FilesSource([str(data)])])
    orphans = {p.name for p in repo_objects(repo_dir, "data")}
    orphan_bytes = sum(p.stat().st_size for p in repo_objects(repo_dir, "data"))
    assert len(orphans) >= SEGMENT_EVERY_PACKS  # a segment was due after that many packs: its write failed
    assert repo_objects(repo_dir, "index") == []
    assert repo_objects(repo_dir, "snapshots") == []

    with Repository.open(str(repo_dir), PASSWORD, cache_dir=cache) as repo:
        snap = repo.snapshot([FilesSource([str(data)])])
        assert orphans <= _indexed_packs(repo, repo_dir)
        # only what the failed run had not uploaded yet is stored now
        assert snap.summary["bytes_new"] <= len(payload) - orphan_bytes + PACK_SIZE
        assert snap.summary["bytes_stored"] <= len(payload) - orphan_bytes + PACK_SIZE
        assert snap.summary["chunks_reused"] > 0
        with repo.open_item(snap, str(data / "big.bin")) as stream:
            assert stream.read() == payload
