"""Every backend keeps the BlobStore contract, and a repository works end to end on each."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import dtstore
from dtstore.errors import HostKeyError, StorageAuthError
from dtstore.storage.local import LocalStore
from dtstore.storage.memory import MemoryStore
from dtstore.storage.registry import open_store
from dtstore.unlocking import connect
from tests.conformance.blobstore import check_blobstore
from tests.helpers import PASSWORD, init_repo, tree_state

BACKENDS = ["memory", "local", "fsspec-memory", "s3", "sftp"]


@pytest.fixture(params=BACKENDS)
def repo_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    kind = request.param
    if kind == "memory":
        yield MemoryStore()
    elif kind == "local":
        yield str(tmp_path / "repo")
    elif kind == "fsspec-memory":
        yield f"memory://dtstore-test-{os.urandom(4).hex()}/repo"
    elif kind == "s3":
        yield request.getfixturevalue("s3_env")
    else:
        server = request.getfixturevalue("sftp_server")
        os.environ["DTSTORE_SFTP_KEY"] = str(server.client_key)
        os.environ["DTSTORE_SFTP_KNOWN_HOSTS"] = str(server.known_hosts)
        try:
            yield server.url(f"repo-{os.urandom(4).hex()}")
        finally:
            os.environ.pop("DTSTORE_SFTP_KEY", None)
            os.environ.pop("DTSTORE_SFTP_KNOWN_HOSTS", None)


def test_blobstore_contract(repo_url: object) -> None:
    store = repo_url if isinstance(repo_url, MemoryStore) else open_store(str(repo_url))
    check_blobstore(store)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit_kib", [None, 100_000.0])
def test_blobstore_contract_through_the_wrappers(tmp_path: Path, limit_kib: float | None) -> None:
    """What a repository really writes to: retries (and an upload limit) around the backend."""
    check_blobstore(connect(str(tmp_path / "repo"), limit_kib))


def test_snapshot_and_restore_round_trip(repo_url: object, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(3_000_000))
    (src / "sub" / "small.txt").write_text("hello\n")
    with init_repo(repo_url, tmp_path / "cache") as repo:  # type: ignore[arg-type]
        snap = repo.snapshot([dtstore.FilesSource([str(src)])])
    # a fresh cache: everything comes from the remote
    with dtstore.Repository.open(repo_url, PASSWORD, cache_dir=tmp_path / "cache2") as repo:  # type: ignore[arg-type]
        assert [s.id for s in repo.snapshots()] == [snap.id]
        repo.restore(repo.get_snapshot("latest"), tmp_path / "out")
    assert tree_state(tmp_path / "out" / str(src).lstrip("/")) == tree_state(src)


def test_local_store_writes_atomically(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a/b", b"x" * 10)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b"]


def test_sftp_unknown_host_key_is_refused(sftp_server: object, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    monkeypatch.setenv("DTSTORE_SFTP_KEY", str(sftp_server.client_key))  # type: ignore[attr-defined]
    monkeypatch.setenv("DTSTORE_SFTP_KNOWN_HOSTS", str(empty))
    store = open_store(sftp_server.url("nowhere"))  # type: ignore[attr-defined]
    with pytest.raises(HostKeyError) as info:
        store.exists("config")
    assert info.value.exit_code == 14
    assert "host key" in str(info.value)


def test_sftp_rejected_client_key(sftp_server: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    monkeypatch.setenv("DTSTORE_SFTP_KEY", str(other))
    monkeypatch.setenv("DTSTORE_SFTP_KNOWN_HOSTS", str(sftp_server.known_hosts))  # type: ignore[attr-defined]
    store = open_store(sftp_server.url("nowhere"))  # type: ignore[attr-defined]
    with pytest.raises(StorageAuthError) as info:
        store.exists("config")
    assert info.value.exit_code == 13


def test_s3_wrong_credentials(s3_auth_server: object, monkeypatch: pytest.MonkeyPatch) -> None:
    server = s3_auth_server
    bucket = server.make_bucket()  # type: ignore[attr-defined]
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint_url)  # type: ignore[attr-defined]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)  # type: ignore[attr-defined]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    store = open_store(f"s3://{bucket}/repo")
    with pytest.raises(StorageAuthError) as info:
        store.get("config")
    assert info.value.exit_code == 13
    assert "wrong-secret" not in str(info.value)
