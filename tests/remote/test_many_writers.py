"""Many hosts writing one repository (issue 3): ``dtstore snapshot`` processes, each with a cache of its
own (a separate host), into one local, S3 (moto) or SFTP (sshd) repository at the same moment.

What a writer can deduplicate against is what the remote index listed when the writer last looked:
at the start of its snapshot and then every ``INDEX_REFRESH_SECONDS`` (5 s); and its own packs enter
the index only a few packs after their upload.  So writers that reach the very same chunks at the
very same moment each store them: the honest limit, measured (not hidden) by
``test_lockstep_writers_store_no_more_than_independent_backups``.  What the design delivers:

* ``test_simultaneous_writers_store_shared_data_about_once``: four hosts dump at once; each dump
  starts with its own quarter of the shared tables, then (once every host has refreshed its index,
  which the test waits for by looking into the hosts' caches, not by sleeping) goes on with the
  other quarters, which the other hosts uploaded meanwhile.  The shared data ends up stored once,
  not four times.
* ``test_second_host_stores_only_its_unique_data``: a host backing up after another one finished,
  with an empty cache of its own, sends only what the first did not have.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import dtstore
from dtstore.chunking import Chunker, ChunkerParams
from dtstore.content.index import IndexCache
from dtstore.content.pack import BlobEntry
from dtstore.content.segments import PackRecord, refresh_cache, write_segment
from dtstore.crypto.keyed_hash import ChunkHasher
from dtstore.crypto.keys import MasterKey
from dtstore.storage import layout
from dtstore.storage.base import BlobInfo
from dtstore.storage.memory import MemoryStore
from tests.helpers import PASSWORD, init_repo
from tests.remote.common import (
    BACKENDS,
    assert_restores,
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
PACK_SIZE = 256 * KIB  # a few dozen packs per writer, not hundreds (moto slows down with many objects)
WRITERS = 4


@pytest.fixture(params=BACKENDS)
def repo_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = repo_url_for(request.param, request, tmp_path, monkeypatch)
    init_repo(url, tmp_path / "init-cache", chunker=CHUNKER, pack_size=PACK_SIZE).close()
    return url


def _backend(url: str) -> str:
    return url.split("://")[0] if "://" in url else "local"


# --- four writers at once --------------------------------------------------------------------------
SHARED_FILES = 8  # two per writer: "its own quarter"
SHARED_SIZE = 512 * KIB
# dtstore reads a stream in 4 MiB blocks and cuts a block once it is full: what comes before the
# pause must fill the first block, so that the own quarter (4-5 packs) is cut, packed, uploaded and
# listed by an index segment (one every 4 packs) while the dump pauses
UNIQUE_SIZE = 3 * 1024 * KIB + 128 * KIB


def _shell_path(path: Path) -> str:
    return shlex.quote(str(path))


def _wait_until_every_host_knows(caches: list[Path], wanted: set[bytes], procs: list[subprocess.Popen[bytes]],
                                 timeout: float = 60) -> float:
    """Poll the hosts' LMDB caches (LMDB allows a reader in another process) until each one holds every
    chunk in ``wanted``; return the seconds waited."""
    started = time.monotonic()
    opened: dict[int, IndexCache] = {}
    try:
        while True:
            for i, path in enumerate(caches):
                if i not in opened and (path / "data.mdb").exists():
                    opened[i] = IndexCache(path)
            if len(opened) == len(caches) and all(
                    len(cache.lookup_many(wanted)) == len(wanted) for cache in opened.values()):
                return time.monotonic() - started
            exited = [p for p in procs if p.poll() is not None]
            assert not exited, "a writer exited before the others' data reached its cache"
            assert time.monotonic() - started < timeout, (
                f"after {timeout}s the hosts' caches hold {[len(c.lookup_many(wanted)) for c in opened.values()]}"
                f" of the {len(wanted)} chunks of the first quarters")
            time.sleep(0.1)
    finally:
        for cache in opened.values():
            cache.close()


def test_simultaneous_writers_store_shared_data_about_once(repo_url: str, tmp_path: Path) -> None:
    """Four hosts dump at the same moment (a barrier in the dump command lines them up).  Host i's dump
    is: its own quarter of the shared tables, its unique data, then — after the pause a slow query
    makes — everyone else's quarters.  The pause lasts until every host's periodic index refresh has
    loaded what the others uploaded (the test watches the hosts' caches); then no host sends another
    host's quarter again."""
    shared = [write_random(tmp_path / "shared" / f"{k}", SHARED_SIZE, seed=k) for k in range(SHARED_FILES)]
    per_writer = SHARED_FILES // WRITERS
    barrier, go = tmp_path / "barrier", tmp_path / "go"
    barrier.mkdir()
    with dtstore.Repository.open(repo_url, PASSWORD, cache_dir=tmp_path / "plan-cache") as repo:
        chunker = Chunker(CHUNKER, repo.master.chunker_seed)
        hasher = ChunkHasher(repo.master.id_key)
        repository_id = repo.config.repository_id
    commands, expected = [], []
    first_quarters: set[bytes] = set()
    for i in range(WRITERS):
        order = [(i * per_writer + j) % SHARED_FILES for j in range(SHARED_FILES)]
        own, rest = order[:per_writer], order[per_writer:]
        unique = tmp_path / f"unique-{i}"
        head = b"".join(shared[k] for k in own)
        stream = head + write_random(unique, UNIQUE_SIZE, seed=1000 + i) + b"".join(shared[k] for k in rest)
        expected.append(stream)
        offset = 0
        for chunk in chunker.chunks_of(stream):  # the chunks inside the own quarter
            offset += len(chunk)
            if offset > len(head):
                break
            first_quarters.add(hasher(chunk))
        files = " ".join(_shell_path(tmp_path / "shared" / str(k)) for k in own)
        later = " ".join(_shell_path(tmp_path / "shared" / str(k)) for k in rest)
        commands.append(
            f"touch {_shell_path(barrier / str(i))}; "
            f"while [ $(ls {_shell_path(barrier)} | wc -l) -lt {WRITERS} ]; do sleep 0.02; done; "
            f"cat {files} {_shell_path(unique)}; "
            f"while [ ! -e {_shell_path(go)} ]; do sleep 0.05; done; "
            f"cat {later}")

    caches = [tmp_path / f"cache-host{i}" for i in range(WRITERS)]
    procs = [start_cli(["--json", "--quiet", "snapshot", "--repo", repo_url, "--host", f"host{i}",
                        "--from-command", commands[i], "--stdin-name", f"host{i}.sql"], child_env(caches[i]))
             for i in range(WRITERS)]
    try:
        waited = _wait_until_every_host_knows([c / repository_id for c in caches], first_quarters, procs)
    finally:
        go.touch()
    runs = [finish(p) for p in procs]
    for i, run in enumerate(runs):
        assert run.code == 0, f"host{i} exited {run.code}:\n{run.err}"
        assert "Traceback" not in run.err

    with dtstore.Repository.open(repo_url, PASSWORD, cache_dir=tmp_path / "verify-cache") as repo:
        snaps = {s.host: s for s in repo.snapshots()}
        assert sorted(snaps) == [f"host{i}" for i in range(WRITERS)]
        for i in range(WRITERS):  # with an empty cache: everything comes from the remote
            repo.restore(snaps[f"host{i}"], tmp_path / f"restore-{i}")
            assert (tmp_path / f"restore-{i}" / f"host{i}.sql").read_bytes() == expected[i], f"host{i}"
        report = repo.check()
        assert report.ok, report
        stored = pack_bytes(repo)

    shared_total = SHARED_FILES * SHARED_SIZE
    uniques = WRITERS * UNIQUE_SIZE
    ratio = (stored - uniques) / shared_total
    per_host = [r.summary()["bytes_stored"] for r in runs]
    print(f"\n{_backend(repo_url)}: repository {stored} B for {shared_total} B shared + {uniques} B unique: "
          f"shared data stored {ratio:.2f}x (four independent backups: 4x); per host {per_host}; "
          f"waited {waited:.1f}s for the refreshes")
    assert stored < 4 * shared_total + uniques  # never worse than four separate repositories
    assert ratio < 1.5, f"the shared data is stored {ratio:.2f} times"


def test_lockstep_writers_store_no_more_than_independent_backups(tmp_path: Path) -> None:
    """The limit, measured: four hosts reading the same files in the same order at the same moment
    cannot see each other's uploads in time (only what the index listed when each one started: a
    writer that starts later adopts the packs the others have uploaded so far).  Every snapshot is
    still correct, and nothing is stored more than once per writer."""
    url = str(tmp_path / "repo")
    init_repo(url, tmp_path / "init-cache", chunker=CHUNKER, pack_size=PACK_SIZE).close()
    shared = [write_random(tmp_path / "shared" / f"{k}", 256 * KIB, seed=k) for k in range(4)]
    unique_size = 64 * KIB
    sources = []
    for i in range(WRITERS):
        src = tmp_path / f"src-host{i}"
        for k, data in enumerate(shared):
            (src / f"shared-{k}.bin").parent.mkdir(parents=True, exist_ok=True)
            (src / f"shared-{k}.bin").write_bytes(data)
        write_random(src / "unique.bin", unique_size, seed=1000 + i)
        sources.append(src)
    procs = [start_cli(["--json", "--quiet", "snapshot", "--repo", url, "--host", f"host{i}", str(src)],
                       child_env(tmp_path / f"cache-host{i}"))
             for i, src in enumerate(sources)]
    for i, run in enumerate(finish(p) for p in procs):
        assert run.code == 0, f"host{i} exited {run.code}:\n{run.err}"
    with dtstore.Repository.open(url, PASSWORD, cache_dir=tmp_path / "verify-cache") as repo:
        snaps = {s.host: s for s in repo.snapshots()}
        for i, src in enumerate(sources):
            assert_restores(repo, snaps[f"host{i}"], src, tmp_path / f"restore-host{i}")
        assert repo.check(read_data=True).ok
        stored = pack_bytes(repo)
    shared_total = len(shared) * 256 * KIB
    ratio = (stored - WRITERS * unique_size) / shared_total
    print(f"\nlockstep: shared data stored {ratio:.2f}x (four independent backups: 4x)")
    assert ratio < 4.2  # at most one copy per writer (plus pack and metadata overhead)


# --- one host after another ------------------------------------------------------------------------
def test_second_host_stores_only_its_unique_data(repo_url: str, tmp_path: Path) -> None:
    """Host 0 backs up; then host 1 — another machine: a separate process with an empty cache — backs up
    the same shared files plus its own: it learns from the remote index what is there and sends only
    its unique data."""
    shared_size, unique_size = 768 * KIB, 96 * KIB
    shared = [write_random(tmp_path / "shared" / f"{k}", shared_size // 4, seed=k) for k in range(4)]
    sources = []
    for i in range(2):
        src = tmp_path / f"src-host{i}"
        for k, data in enumerate(shared):
            (src / "db" / f"table-{k}.ibd").parent.mkdir(parents=True, exist_ok=True)
            (src / "db" / f"table-{k}.ibd").write_bytes(data)
        write_random(src / "etc" / "hostname.bin", unique_size, seed=500 + i)
        sources.append(src)

    with dtstore.Repository.open(repo_url, PASSWORD, cache_dir=tmp_path / "cache-host0") as repo:
        first = repo.snapshot([dtstore.FilesSource([str(sources[0])])], host="host0").summary
    run = run_cli(["--json", "snapshot", "--repo", repo_url, "--host", "host1", str(sources[1])],
                  child_env(tmp_path / "cache-host1"))
    assert run.code == 0, run.err
    second = run.summary()
    print(f"\n{_backend(repo_url)}: first host stored {first['bytes_stored']} B, "
          f"second host {second['bytes_stored']} B (its unique data: {unique_size} B)")
    assert first["bytes_stored"] > shared_size
    # the second host sends its unique file and its small metadata pack, not the shared data again
    assert second["bytes_new"] <= unique_size + 16 * KIB
    assert second["bytes_stored"] < unique_size + 48 * KIB
    assert second["chunks_reused"] > 0

    with dtstore.Repository.open(repo_url, PASSWORD, cache_dir=tmp_path / "verify-cache") as repo:
        snaps = {s.host: s for s in repo.snapshots()}
        for i, src in enumerate(sources):
            assert_restores(repo, snaps[f"host{i}"], src, tmp_path / f"restore-host{i}")
        assert pack_bytes(repo) < shared_size + 2 * unique_size + 128 * KIB


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
    """refresh_cache must not take a segment this process wrote during the listing for one a prune
    removed: that reset the whole cache in the middle of a backup and forgot the segment's chunks
    (which were then sent again)."""
    store = _WriteDuringList(MemoryStore())
    sealer = MasterKey.generate().sealer()
    cache = IndexCache(tmp_path / "cache")
    with contextlib.closing(cache):
        first = PackRecord(uuid.uuid4().hex * 2, 0, 100, [BlobEntry(b"a" * 32, 32, 10, 10)])
        write_segment(store, sealer, cache, [first])  # type: ignore[arg-type]
        second = PackRecord(uuid.uuid4().hex * 2, 0, 100, [BlobEntry(b"b" * 32, 32, 10, 10)])
        store.hook = lambda: write_segment(store, sealer, cache, [second])  # type: ignore[arg-type]
        refresh_cache(store, sealer, cache)  # type: ignore[arg-type]
        assert cache.contains(b"a" * 32)
        assert cache.contains(b"b" * 32), "the segment written during the listing was dropped from the cache"
        assert refresh_cache(store, sealer, cache) == 0  # type: ignore[arg-type]
        assert cache.contains(b"b" * 32)
