"""Many hosts writing one repository (issue 3): four ``dtstore snapshot`` processes at once, each with its
own cache (a separate host), into one local, S3 (moto) or SFTP (sshd) repository.

What a writer can deduplicate against is what the remote index lists when it last looked: the index
is listed at the start of a snapshot and again every ``INDEX_REFRESH_SECONDS`` (5 s), and a writer's
packs enter the index a few packs after their upload.  So two writers that reach the very same chunks
at the very same moment both store them; that is the honest limit, measured by
``test_lockstep_writers_store_no_more_than_independent_backups``.  The other tests show what the
design does deliver:

* ``test_simultaneous_writers_store_shared_data_about_once``: four hosts start together on slow links
  (``--limit-upload``) and each reads its own quarter of the shared files first; everything a host
  reads after its own quarter was uploaded by another host more than a refresh earlier, and is not
  sent again.  The repository holds the shared data about once.
* ``test_second_host_stores_only_its_unique_data``: a host backing up after another one finished
  (with an empty cache of its own) sends only the data the first did not have.
"""

from __future__ import annotations

import shlex
import uuid
from pathlib import Path

import pytest

import dtstore
from dtstore.chunking import ChunkerParams
from dtstore.content.index import IndexCache
from dtstore.content.pack import BlobEntry
from dtstore.content.segments import PackRecord, refresh_cache, write_segment
from dtstore.crypto.keys import MasterKey
from dtstore.storage import layout
from dtstore.storage.base import BlobInfo
from dtstore.storage.memory import MemoryStore
from tests.helpers import PASSWORD, init_repo
from tests.remote.common import (
    BACKENDS,
    CliRun,
    assert_tree_equal,
    child_env,
    finish,
    pack_bytes,
    repo_url_for,
    run_cli,
    start_cli,
    write_random,
)

KIB = 1024
CHUNKER = ChunkerParams(2048, 8192, 32768)  # ~10 KiB chunks
PACK_SIZE = 128 * KIB  # several packs per writer, few objects (moto is slow with many)
WRITERS = 4


@pytest.fixture(params=BACKENDS)
def repo_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = repo_url_for(request.param, request, tmp_path, monkeypatch)
    init_repo(url, tmp_path / "init-cache", chunker=CHUNKER, pack_size=PACK_SIZE).close()
    return url


def _snapshot_all(url: str, tmp_path: Path, sources: list[Path], extra: tuple[str, ...] = ()) -> list[CliRun]:
    """Start one ``dtstore snapshot`` per source at the same moment (hosts host0…), wait for all."""
    procs = [
        start_cli(["--json", "--quiet", *extra, "snapshot", "--repo", url, "--host", f"host{i}", str(src)],
                  child_env(tmp_path / f"cache-host{i}"))
        for i, src in enumerate(sources)
    ]
    runs = [finish(p) for p in procs]
    for i, run in enumerate(runs):
        assert run.code == 0, f"host{i} exited {run.code}:\n{run.err}"
        assert "Traceback" not in run.err
    return runs


def _verify_all(url: str, tmp_path: Path, sources: list[Path], *, read_data: bool = True) -> int:
    """Every host's snapshot restores byte-identical (``dtstore restore`` with an empty cache: all from the
    remote); the repository checks clean; returns its size."""
    with dtstore.Repository.open(url, PASSWORD, cache_dir=tmp_path / "verify-cache") as repo:
        snaps = {s.host: s for s in repo.snapshots()}
        assert sorted(snaps) == [f"host{i}" for i in range(len(sources))]
        procs = [start_cli(["--quiet", "restore", "--repo", url, snaps[f"host{i}"].id,
                            "--target", str(tmp_path / f"restore-host{i}")], child_env(tmp_path / f"rcache-{i}"))
                 for i in range(len(sources))]
        for i, proc in enumerate(procs):
            run = finish(proc)
            assert run.code == 0, run.err
            assert_tree_equal(tmp_path / f"restore-host{i}", sources[i])
        if read_data:
            report = repo.check(read_data=True)
            assert report.ok, report
        return pack_bytes(repo)


# --- four writers at once --------------------------------------------------------------------------
SHARED_FILES = 8  # two per writer: "its own quarter"
SHARED_SIZE = 256 * KIB
UNIQUE_SIZE = 384 * KIB
PAUSE = 7.5  # > INDEX_REFRESH_SECONDS + the time to list and load the index


def test_simultaneous_writers_store_shared_data_about_once(repo_url: str, tmp_path: Path) -> None:
    """Four hosts dump at the same moment (a barrier in the dump command lines them up): each dump
    starts with its own quarter of the shared tables and its unique data, pauses (a slow query), then
    goes on with everyone else's quarters, which the other hosts uploaded while it paused."""
    shared = [write_random(tmp_path / "shared" / f"{k}", SHARED_SIZE, seed=k) for k in range(SHARED_FILES)]
    per_writer = SHARED_FILES // WRITERS
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    commands, expected = [], []
    for i in range(WRITERS):
        order = [(i * per_writer + j) % SHARED_FILES for j in range(SHARED_FILES)]
        own, rest = order[:per_writer], order[per_writer:]
        unique = tmp_path / f"unique-{i}"
        unique_data = write_random(unique, UNIQUE_SIZE, seed=1000 + i)
        files = " ".join(shlex.quote(str(tmp_path / "shared" / f"{k}")) for k in own)
        later = " ".join(shlex.quote(str(tmp_path / "shared" / f"{k}")) for k in rest)
        wait = (f"touch {shlex.quote(str(barrier / str(i)))}; "
                f"while [ $(ls {shlex.quote(str(barrier))} | wc -l) -lt {WRITERS} ]; do sleep 0.02; done")
        commands.append(f"{wait}; cat {files} {shlex.quote(str(unique))}; sleep {PAUSE}; cat {later}")
        expected.append(b"".join(shared[k] for k in own) + unique_data + b"".join(shared[k] for k in rest))

    procs = [start_cli(["--json", "--quiet", "snapshot", "--repo", repo_url, "--host", f"host{i}",
                        "--from-command", commands[i], "--stdin-name", f"host{i}.sql"],
                       child_env(tmp_path / f"cache-host{i}"))
             for i in range(WRITERS)]
    runs = [finish(p) for p in procs]
    for i, run in enumerate(runs):
        assert run.code == 0, f"host{i} exited {run.code}:\n{run.err}"

    with dtstore.Repository.open(repo_url, PASSWORD, cache_dir=tmp_path / "verify-cache") as repo:
        snaps = {s.host: s for s in repo.snapshots()}
        assert sorted(snaps) == [f"host{i}" for i in range(WRITERS)]
        for i in range(WRITERS):
            repo.restore(snaps[f"host{i}"], tmp_path / f"restore-{i}")
            assert (tmp_path / f"restore-{i}" / f"host{i}.sql").read_bytes() == expected[i], f"host{i}"
        stored = pack_bytes(repo)

    shared_total = SHARED_FILES * SHARED_SIZE
    uniques = WRITERS * UNIQUE_SIZE
    ratio = (stored - uniques) / shared_total
    per_host = [r.summary()["bytes_stored"] for r in runs]
    print(f"\n{repo_url.split(':')[0]}: repository {stored} B for {shared_total} B shared + {uniques} B unique; "
          f"shared data stored {ratio:.2f}x (independent backups: 4x); per host {per_host}")
    assert stored < 4 * shared_total + uniques  # never worse than four separate repositories
    assert ratio < 1.5, f"shared data stored {ratio:.2f} times"


def test_lockstep_writers_store_no_more_than_independent_backups(tmp_path: Path) -> None:
    """The limit, measured: four hosts reading the same files in the same order at the same moment
    cannot see each other's uploads in time.  Every snapshot is still correct and nothing is stored
    more than once per writer."""
    url = str(tmp_path / "repo")
    init_repo(url, tmp_path / "init-cache", chunker=CHUNKER, pack_size=PACK_SIZE).close()
    shared = [write_random(tmp_path / "shared" / f"{k}", SHARED_SIZE, seed=k) for k in range(SHARED_FILES)]
    sources = []
    for i in range(WRITERS):
        src = tmp_path / f"src-host{i}"
        for k, data in enumerate(shared):
            (src / f"shared-{k}.bin").parent.mkdir(parents=True, exist_ok=True)
            (src / f"shared-{k}.bin").write_bytes(data)
        write_random(src / "unique.bin", UNIQUE_SIZE // 4, seed=1000 + i)
        sources.append(src)
    _snapshot_all(url, tmp_path, sources)
    stored = _verify_all(url, tmp_path, sources)
    shared_total = SHARED_FILES * SHARED_SIZE
    uniques = WRITERS * (UNIQUE_SIZE // 4)
    ratio = (stored - uniques) / shared_total
    print(f"\nlockstep: shared data stored {ratio:.2f}x (independent backups: 4x)")
    assert ratio < 4.2  # at most one copy per writer (plus pack and metadata overhead)


# --- one host after another ------------------------------------------------------------------------
def test_second_host_stores_only_its_unique_data(repo_url: str, tmp_path: Path) -> None:
    shared_size, unique_size = 1536 * KIB, 96 * KIB
    shared = [write_random(tmp_path / "shared" / f"{k}", shared_size // 4, seed=k) for k in range(4)]
    sources = []
    for i in range(2):
        src = tmp_path / f"src-host{i}"
        for k, data in enumerate(shared):
            (src / "db" / f"table-{k}.ibd").parent.mkdir(parents=True, exist_ok=True)
            (src / "db" / f"table-{k}.ibd").write_bytes(data)
        write_random(src / "etc" / "hostname.bin", unique_size, seed=500 + i)
        sources.append(src)

    summaries = []
    for i, src in enumerate(sources):  # each with an empty cache of its own: a different machine
        run = run_cli(["--json", "snapshot", "--repo", repo_url, "--host", f"host{i}", str(src)],
                      child_env(tmp_path / f"cache-host{i}"))
        assert run.code == 0, run.err
        summaries.append(run.summary())
    first, second = summaries
    print(f"\nfirst host stored {first['bytes_stored']} B, second host {second['bytes_stored']} B")
    assert first["bytes_stored"] > shared_size
    # the second host sends its unique file (+ its small metadata pack), not the shared data again
    assert second["bytes_stored"] < unique_size + 48 * KIB
    assert second["chunks_reused"] > 0 and second["bytes_new"] <= unique_size + 8 * KIB
    stored = _verify_all(repo_url, tmp_path, sources)
    assert stored < shared_size + 2 * unique_size + 128 * KIB


# --- the index refresh a writer runs during its backup ---------------------------------------------
class _WriteDuringList:
    """A store whose listing of ``index/`` lets another thread's segment write slip in right after the
    listing was taken (what the uploader threads do while the refresher runs)."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.hook: object = None

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def list(self, prefix: str) -> list[BlobInfo]:
        found = list(self.inner.list(prefix))
        hook, self.hook = self.hook, None
        if prefix == layout.INDEX and callable(hook):
            hook()
        return found


def test_index_refresh_keeps_a_segment_written_while_it_lists(tmp_path: Path) -> None:
    """refresh_cache must not take the writer's own just-written segment for one a prune removed:
    that reset the whole cache mid-backup and forgot the segment's chunks (sent again later)."""
    store = _WriteDuringList(MemoryStore())
    sealer = MasterKey.generate().sealer()
    cache = IndexCache(tmp_path / "cache")
    try:
        first = PackRecord(uuid.uuid4().hex * 2, 0, 100, [BlobEntry(b"a" * 32, 32, 10, 10)])
        write_segment(store, sealer, cache, [first])  # type: ignore[arg-type]
        second = PackRecord(uuid.uuid4().hex * 2, 0, 100, [BlobEntry(b"b" * 32, 32, 10, 10)])
        store.hook = lambda: write_segment(store, sealer, cache, [second])  # type: ignore[arg-type]
        refresh_cache(store, sealer, cache)  # type: ignore[arg-type]
        assert cache.contains(b"a" * 32)
        assert cache.contains(b"b" * 32), "the segment written during the listing was dropped from the cache"
        assert refresh_cache(store, sealer, cache) == 0  # type: ignore[arg-type]
        assert cache.contains(b"b" * 32)
    finally:
        cache.close()
