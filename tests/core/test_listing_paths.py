"""The fast paths of listing: prefixes resolved in the sorted listing, manifests read serially from a
local store and in parallel only from a remote one, one-chunk item lists read without the stream,
and forget by ID reading only the named manifests."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import dtstore
from dtstore.cli.main import main
from dtstore.errors import SnapshotNotFound, UsageError
from dtstore.snapshots.store import SnapshotStore
from dtstore.storage.base import Capabilities
from tests.helpers import PASSWORD, init_repo


def _repo(tmp_path: Path, count: int) -> tuple[str, Path, list[str]]:
    url, cache = str(tmp_path / "repo"), tmp_path / "cache"
    with init_repo(url, cache) as repo:
        ids = [repo.snapshot([dtstore.StdinSource("s", io.BytesIO(b"%d" % n * 50))]).id for n in range(count)]
    return url, cache, ids


def test_resolve_ids_prefixes_full_ids_latest_and_errors(tmp_path: Path) -> None:
    url, cache, ids = _repo(tmp_path, 6)
    with dtstore.Repository.open(url, PASSWORD, cache_dir=cache) as repo:
        newest = repo.snapshots()[-1].id
        assert repo.resolve_snapshot_ids(ids) == ids
        assert repo.resolve_snapshot_ids([i[:12].upper() for i in ids]) == ids
        assert repo.resolve_snapshot_ids(["latest", ids[0][:10]]) == [newest, ids[0]]
        with pytest.raises(SnapshotNotFound):
            repo.resolve_snapshot_ids(["ffffffffffffffffff" if not ids[0].startswith("ff") else "0000000000000"])
        with pytest.raises(UsageError):
            repo.resolve_snapshot_ids([""])
        first = sorted(ids)[0][0]
        shared = [i for i in ids if i.startswith(first)]
        if len(shared) > 1:
            with pytest.raises(UsageError, match=f"matches {len(shared)} snapshots"):
                repo.resolve_snapshot_ids([first])


class _Counting:
    """A store wrapper that records from which threads manifests were read."""

    def __init__(self, inner: object, local: bool) -> None:
        self._inner = inner
        self.capabilities = Capabilities(connections=4, local=local)
        self.threads: set[str] = set()

    def get(self, name: str) -> bytes:
        import threading

        self.threads.add(threading.current_thread().name)
        return self._inner.get(name)  # type: ignore[attr-defined, no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


@pytest.mark.parametrize("local", [True, False])
def test_load_all_is_serial_on_a_local_store_parallel_on_a_remote_one(tmp_path: Path, local: bool) -> None:
    url, cache, ids = _repo(tmp_path, 12)
    with dtstore.Repository.open(url, PASSWORD, cache_dir=cache) as repo:
        expected = [s.id for s in repo.snapshots()]
        counting = _Counting(repo.store, local)
        loaded = SnapshotStore(counting, repo._sealer).load_all()  # type: ignore[arg-type]
        assert [s.id for s in loaded] == expected and sorted(expected) == sorted(ids)
        import threading

        main_thread = threading.main_thread().name
        assert (counting.threads == {main_thread}) == local


def test_one_chunk_item_list_read_on_the_calling_thread(tmp_path: Path) -> None:
    url, cache, _ = _repo(tmp_path, 2)
    with dtstore.Repository.open(url, PASSWORD, cache_dir=cache) as repo:
        for snap in repo.snapshots():
            assert len(snap.items_chunks) == 1
            items = list(repo.list_items(snap))
            assert [i.name for i in items] == ["s"]
        assert repo._reader_pool is None  # no future was handed to the pool


def test_forget_by_id_reads_only_the_named_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    url, cache, ids = _repo(tmp_path, 5)
    monkeypatch.setenv("DTSTORE_PASSWORD", PASSWORD)
    monkeypatch.setenv("DTSTORE_CACHE_DIR", str(cache))
    read: list[str] = []
    original = SnapshotStore.load

    def load(self: SnapshotStore, snapshot_id: str) -> dtstore.Snapshot:
        read.append(snapshot_id)
        return original(self, snapshot_id)

    monkeypatch.setattr(SnapshotStore, "load", load)
    assert main(["--repo", url, "forget", ids[1], ids[3][:10]]) == 0
    assert sorted(read) == sorted([ids[1], ids[3]])
    assert "removed 2 snapshot(s), kept 0" in capsys.readouterr().out
    monkeypatch.setattr(SnapshotStore, "load", original)
    with dtstore.Repository.open(url, PASSWORD, cache_dir=cache) as repo:
        assert sorted(s.id for s in repo.snapshots()) == sorted([ids[0], ids[2], ids[4]])
