"""Remotes that misbehave (issue 3): a FlakyProxy on 127.0.0.1 between dtstore and the real server (moto
S3 or OpenSSH sshd) cuts connections, fails new ones, or stops answering.

* Under faults a snapshot either completes correctly (it restores byte-identical) or fails cleanly
  with a StorageError — never a foreign exception.
* A remote that stays down ends the CLI with exit code 15 and a one-line error, no traceback.
* After healing, a re-run completes and uploads only what the interrupted run had not.
* Nothing stored earlier becomes unreadable (earlier snapshots restore, ``check --read-data`` is ok).
* A `dtstore` process whose S3 connections are cut mid-request prints nothing but its own messages.

Also here: the error translation must not read digits inside object names as HTTP statuses, and the
upload rate limiter (``--limit-upload``), with an injected clock.

In this process the retry backoff is switched off (``fast_retries``: the same attempts, no waiting)
to keep the tests fast; CLI children run with the real backoff.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import dtstore
import dtstore.unlocking as unlocking_module
from dtstore.chunking import ChunkerParams
from dtstore.cli.main import main as cli_main
from dtstore.errors import StorageAuthError, StorageError, StorageUnavailable
from dtstore.storage.fsspec_store import translate
from dtstore.storage.memory import MemoryStore
from dtstore.storage.wrappers import RateLimitedStore, RetryingStore
from tests.helpers import PASSWORD, init_repo
from tests.remote.common import (
    assert_restores,
    child_env,
    pack_bytes,
    run_cli,
    write_random,
)
from tests.servers.flaky import FlakyProxy

KIB = 1024
CHUNKER = ChunkerParams(4096, 16384, 65536)
PACK_SIZE = 256 * KIB


@dataclass
class ProxiedRemote:
    kind: str
    url: str  # through the proxy
    proxy: FlakyProxy
    count_packs: Callable[[], int]  # straight from the server, past the proxy


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """In this process: dtstore retries as often as usual but without sleeping; below it, s3fs's own
    retry loop is off and botocore retries without backoff (with both, each of dtstore's 6 attempts
    against an S3 that stays down took 1.5-2 s; a failed snapshot, over a minute).  Returns the delays
    dtstore's backoff asked for."""
    import botocore.retries.standard
    import s3fs

    asked: list[float] = []
    monkeypatch.setattr(unlocking_module, "RetryingStore", functools.partial(RetryingStore, sleep=asked.append))
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    return asked


class _NoDelayProxy(FlakyProxy):
    """FlakyProxy with Nagle's algorithm off on both legs.  Without it every small SSH packet waits
    for the peer's delayed ACK: a 256 KiB SFTP write through the proxy took 1.2 s instead of 0.03 s."""

    def _pump(self, client: socket.socket, upstream: socket.socket, budget: int | None) -> bool:
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return super()._pump(client, upstream, budget)


@pytest.fixture
def flaky_proxy() -> Iterator[Callable[[str, int], FlakyProxy]]:
    proxies: list[FlakyProxy] = []

    def make(host: str, port: int) -> FlakyProxy:
        proxies.append(_NoDelayProxy(host, port))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture(params=["s3", "sftp"])
def remote(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           flaky_proxy: Callable[[str, int], FlakyProxy]) -> Iterator[ProxiedRemote]:
    if request.param == "s3":
        url: str = request.getfixturevalue("s3_env")
        server: Any = request.getfixturevalue("s3_server")
        host, port = server.endpoint_url.removeprefix("http://").split(":")
        proxy = flaky_proxy(host, int(port))
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url())
        bucket, prefix = url.removeprefix("s3://").split("/", 1)
        client = server.client()

        def count_s3() -> int:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/data/")
            return sum(len(page.get("Contents", [])) for page in pages)

        yield ProxiedRemote("s3", url, proxy, count_s3)
        return
    sftp: Any = request.getfixturevalue("sftp_server")
    proxy = flaky_proxy(sftp.host, sftp.port)
    # the proxy's address must be the one in known_hosts: "[127.0.0.1]:PROXYPORT <the server's host key>"
    host_key = sftp.known_hosts.read_text().split(None, 1)[1]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{proxy.host}]:{proxy.port} {host_key}")
    monkeypatch.setenv("DTSTORE_SFTP_KEY", str(sftp.client_key))
    monkeypatch.setenv("DTSTORE_SFTP_KNOWN_HOSTS", str(known_hosts))
    root = sftp.root / f"faults-{uuid.uuid4().hex[:8]}"

    def count_sftp() -> int:  # the server's directory is on this machine
        data = root / "data"
        return sum(1 for p in data.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")) if data.exists() else 0

    yield ProxiedRemote("sftp", f"sftp://{sftp.user}@{proxy.host}:{proxy.port}{root}", proxy, count_sftp)


def _tree(root: Path, seed: int, sizes: list[int]) -> Path:
    for n, size in enumerate(sizes):
        write_random(root / f"part-{n}.bin", size, seed=seed * 100 + n)
    return root


def _verify(url: str, cache: Path, expected: dict[str, Path], tmp_path: Path) -> None:
    """With an empty cache and a healthy link: each snapshot (by tag) restores byte-identical to its
    source, and every byte in the repository reads back and authenticates."""
    with dtstore.Repository.open(url, PASSWORD, cache_dir=cache) as repo:
        by_tag = {s.tags[0]: s for s in repo.snapshots() if s.tags}
        assert set(by_tag) == set(expected)
        for tag, src in expected.items():
            assert_restores(repo, by_tag[tag], src, tmp_path / f"restore-{tag}-{uuid.uuid4().hex[:6]}")
        report = repo.check(read_data=True)
        assert report.ok, report


def test_flaky_remote_snapshot_completes_or_fails_cleanly(remote: ProxiedRemote, tmp_path: Path,
                                                          fast_retries: list[float]) -> None:
    cache = tmp_path / "cache"
    init_repo(remote.url, cache, chunker=CHUNKER, pack_size=PACK_SIZE).close()
    earlier = _tree(tmp_path / "earlier", 1, [600 * KIB, 300 * KIB])
    with dtstore.Repository.open(remote.url, PASSWORD, cache_dir=cache) as repo:
        repo.snapshot([dtstore.FilesSource([str(earlier)])], tags=["earlier"])

    # SFTP: the SSH connection dies after every MiB (in the middle of a write) and a quarter of the new
    # ones at once or in the handshake; S3 (moto answers one request per connection): a quarter of
    # the requests is cut at once or in the middle of its body
    src = _tree(tmp_path / "src", 2, [1024 * KIB, 512 * KIB, 256 * KIB])
    remote.proxy.drop_after_bytes(1024 * KIB)
    remote.proxy.fail_rate(0.25, seed=11, max_bytes=128 * KIB)
    outcome: StorageError | dtstore.Snapshot
    try:
        with dtstore.Repository.open(remote.url, PASSWORD, cache_dir=cache) as repo:
            outcome = repo.snapshot([dtstore.FilesSource([str(src)])], tags=["flaky"])
    except StorageError as exc:  # anything else fails the test
        outcome = exc
    assert remote.proxy.cut > 0, "the proxy broke no connection: the test tested nothing"
    remote.proxy.heal()

    with dtstore.Repository.open(remote.url, PASSWORD, cache_dir=cache) as repo:
        if isinstance(outcome, StorageError):
            assert "unable to" in str(outcome)
            rerun = repo.snapshot([dtstore.FilesSource([str(src)])], tags=["flaky"])
            # whatever the failed run uploaded is reused; nothing is sent twice
            assert rerun.summary["bytes_stored"] <= 1800 * KIB
        stored = pack_bytes(repo)
    print(f"\n{remote.kind}: {remote.proxy.connections} connections, {remote.proxy.cut} cut, "
          f"{len(fast_retries)} retries, "
          f"first attempt {'failed: ' + str(outcome) if isinstance(outcome, StorageError) else 'completed'}")
    assert stored < (900 + 1792 + 256) * KIB  # each byte stored once (plus metadata)
    _verify(remote.url, tmp_path / "verify-cache", {"earlier": earlier, "flaky": src}, tmp_path)


def test_remote_down_mid_snapshot_then_rerun_uploads_only_the_rest(
        remote: ProxiedRemote, tmp_path: Path, fast_retries: list[float], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    init_repo(remote.url, cache, chunker=CHUNKER, pack_size=PACK_SIZE).close()
    earlier = _tree(tmp_path / "earlier", 3, [400 * KIB])
    with dtstore.Repository.open(remote.url, PASSWORD, cache_dir=cache) as repo:
        repo.snapshot([dtstore.FilesSource([str(earlier)])], tags=["earlier"])
    packs_before = remote.count_packs()

    # the link goes down while the snapshot uploads (slowly: 512 KiB/s), and stays down; giving up
    # after 3 attempts instead of 6 saves time here (each new attempt connects anew); the CLI process
    # below runs with the defaults
    monkeypatch.setattr(unlocking_module, "RetryingStore",
                        functools.partial(RetryingStore, sleep=fast_retries.append, attempts=3))
    src = _tree(tmp_path / "src", 4, [768 * KIB, 768 * KIB])
    failure: list[BaseException] = []

    def backup() -> None:
        try:
            with dtstore.Repository.open(remote.url, PASSWORD, cache_dir=cache, limit_upload_kib=512) as repo:
                repo.snapshot([dtstore.FilesSource([str(src)])], tags=["interrupted"])
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=backup)
    thread.start()
    deadline = time.monotonic() + 30
    while remote.count_packs() < packs_before + 3 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    remote.proxy.pause()
    thread.join(60)
    assert not thread.is_alive()
    assert len(failure) == 1 and isinstance(failure[0], StorageUnavailable), failure
    assert failure[0].exit_code == 15
    assert "gave up after 3 attempts" in str(failure[0])
    uploaded = remote.count_packs() - packs_before
    assert uploaded >= 3

    # the same through the CLI: the remote stays down → exit code 15 and a one-line error
    monkeypatch.setenv("DTSTORE_PASSWORD", PASSWORD)
    monkeypatch.setenv("DTSTORE_CACHE_DIR", str(tmp_path / "cli-cache"))
    capsys.readouterr()
    code = cli_main(["snapshot", "--repo", remote.url, str(src)])
    err = capsys.readouterr().err
    assert code == 15, err
    assert err.startswith("dtstore: error: ") and err.count("\n") == 1 and "gave up after 3 attempts" in err, err
    if remote.kind == "sftp":  # and a real `dtstore` process with the real backoff (against S3 it takes
        # 15 s to give up at the first request, more mid-snapshot: s3fs's and botocore's retries with
        # their own backoff sit below each of dtstore's 6 attempts)
        run = run_cli(["snapshot", "--repo", remote.url, str(src)], child_env(tmp_path / "cli-cache"), timeout=90)
        assert run.code == 15, (run.code, run.err)
        assert run.err.startswith("dtstore: error: ") and "Traceback" not in run.err, run.err
        assert "gave up after 6 attempts" in run.err

    remote.proxy.resume()
    with dtstore.Repository.open(remote.url, PASSWORD, cache_dir=cache) as repo:
        rerun = repo.snapshot([dtstore.FilesSource([str(src)])], tags=["interrupted"])
        stored = pack_bytes(repo)
    print(f"\n{remote.kind}: {uploaded} packs were up when the link went down; the re-run stored "
          f"{rerun.summary['bytes_stored']} of {rerun.summary['bytes_total']} bytes")
    # the packs the interrupted run uploaded (adopted, though no index segment named all of them) are
    # not sent again
    assert rerun.summary["bytes_stored"] <= 1536 * KIB - (uploaded - 1) * PACK_SIZE + 64 * KIB
    assert stored < (400 + 1536 + 128) * KIB
    _verify(remote.url, tmp_path / "verify-cache", {"earlier": earlier, "interrupted": src}, tmp_path)


def test_cli_through_flaky_s3_prints_no_foreign_traceback(s3_env: str, s3_server: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          flaky_proxy: Callable[[str, int], FlakyProxy]) -> None:
    """A `dtstore` process (real retries) whose S3 connections are cut, some in the middle of a PUT: it
    completes, and stderr stays empty.  aiohttp's write tasks that die with a cut connection used to
    print "Task exception was never retrieved" and their traceback through asyncio's logger."""
    init_repo(s3_env, tmp_path / "cache", chunker=CHUNKER, pack_size=64 * KIB).close()
    src = _tree(tmp_path / "src", 6, [512 * KIB] * 4)
    host, port = s3_server.endpoint_url.removeprefix("http://").split(":")
    proxy = flaky_proxy(host, int(port))
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url())
    proxy.fail_rate(0.4, seed=5, max_bytes=64 * KIB)  # moto answers one request per connection
    run = run_cli(["snapshot", "--repo", s3_env, "--tag", "cli", str(src)], child_env(tmp_path / "cli-cache"))
    assert proxy.cut > 10
    assert run.code == 0, run.err
    assert run.err == ""
    proxy.heal()
    _verify(s3_env, tmp_path / "verify-cache", {"cli": src}, tmp_path)


def test_digits_in_an_object_name_are_no_http_status() -> None:
    """A dropped connection while writing a pack whose name contains "403" was reported as "access
    denied" (exit 13, not retried): the status words were matched anywhere in the message, URL included."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    name = "data/6a/6acd459d8078e2484cea455115e0f2aa403df8231f5b006a4ae9d31ec0c4f42e"
    dropped = EndpointConnectionError(endpoint_url=f"http://127.0.0.1:43909/bucket/repo/{name}")
    error = translate(dropped, "write", name, "s3://bucket/repo")
    assert isinstance(error, StorageUnavailable) and error.transient, error
    odd = ValueError(f"unexpected reply for {name.replace('403', '503')}")
    error = translate(odd, "write", name, "s3://bucket/repo")
    assert type(error) is StorageError and not error.transient, error
    # statuses of their own still count
    denied = ClientError({"Error": {"Code": "403", "Message": "no"}}, "HeadObject")
    assert isinstance(translate(denied, "stat", name, "s3://bucket/repo"), StorageAuthError)
    busy = ClientError({"Error": {"Code": "503", "Message": "try later"}}, "PutObject")
    error = translate(busy, "write", name, "s3://bucket/repo")
    assert isinstance(error, StorageUnavailable) and error.transient


# --- upload rate limit ---------------------------------------------------------------------------
class _FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)


def test_rate_limiter_paces_uploads_to_the_rate() -> None:
    fake = _FakeTime()
    inner = MemoryStore()
    store = RateLimitedStore(inner, 1000, clock=fake.clock, sleep=fake.sleep)  # 1000 bytes/s
    store.put("a", b"x" * 500)
    assert fake.sleeps == [0.5]  # a put waits for its own slot: its bytes at the rate
    fake.now += 0.5
    store.put("b", b"x" * 2000)
    assert fake.sleeps[-1] == pytest.approx(2.0)
    fake.now += 2.0 + 10  # then idle: no credit piles up for a burst later
    store.put("c", b"x" * 1000)
    assert fake.sleeps[-1] == pytest.approx(1.0)
    assert inner.get("b") == b"x" * 2000
    # downloads and listings are not limited
    count = len(fake.sleeps)
    assert store.get("a") == b"x" * 500 and store.get_range("b", 0, 10) == b"x" * 10
    assert [b.name for b in store.list("")] == ["a", "b", "c"]
    assert len(fake.sleeps) == count


def test_rate_limiter_shares_one_budget_between_threads() -> None:
    """Four threads put 1000 bytes each at the same instant: the slots line up one after another
    (1, 2, 3, 4 s), so together they keep to the rate; no thread waits for another one's slot."""
    fake = _FakeTime()
    store = RateLimitedStore(MemoryStore(), 1000, clock=fake.clock, sleep=fake.sleep)
    start = threading.Barrier(4)

    def put(n: int) -> None:
        start.wait()
        store.put(f"t{n}", b"x" * 1000)

    threads = [threading.Thread(target=put, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(fake.sleeps) == pytest.approx([1.0, 2.0, 3.0, 4.0])


def test_cli_limit_upload_reaches_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    repo_dir = tmp_path / "repo"
    init_repo(str(repo_dir), tmp_path / "cache").close()
    src = _tree(tmp_path / "src", 5, [100 * KIB])
    monkeypatch.setenv("DTSTORE_PASSWORD", PASSWORD)
    monkeypatch.setenv("DTSTORE_CACHE_DIR", str(tmp_path / "cache"))
    rates: list[float] = []

    class Recording(RateLimitedStore):
        def __init__(self, inner: Any, bytes_per_second: float, **kwargs: Any) -> None:
            rates.append(bytes_per_second)
            super().__init__(inner, bytes_per_second, **kwargs)

    monkeypatch.setattr(unlocking_module, "RateLimitedStore", Recording)
    # as a global option and as an option of the sub-command
    assert cli_main(["--limit-upload", "100000", "snapshot", "--repo", str(repo_dir), str(src)]) == 0
    assert cli_main(["snapshot", "--repo", str(repo_dir), "--limit-upload", "2048", str(src)]) == 0
    assert rates == [100000 * 1024, 2048 * 1024]
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli_main(["snapshot", "--repo", str(repo_dir), "--limit-upload", "fast", str(src)])
    assert info.value.code == 2
    # and a separate `dtstore` process takes it too
    run = run_cli(["--limit-upload", "50000", "snapshot", "--repo", str(repo_dir), str(src)],
                  child_env(tmp_path / "cache"))
    assert run.code == 0, run.err
    with dtstore.Repository.open(str(repo_dir), PASSWORD, cache_dir=tmp_path / "cache") as repo:
        assert len(repo.snapshots()) == 3

