"""Prove that the real-server fixtures in tests/servers work with the fsspec backends dtstore uses."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import s3fs
import sshfs

from tests.servers.flaky import FlakyProxy
from tests.servers.ports import free_port
from tests.servers.s3 import S3Server
from tests.servers.sftp import SFTPServer


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.create_server(("127.0.0.1", port)) as sock:
        assert sock.getsockname() == ("127.0.0.1", port)


# --- S3 -------------------------------------------------------------------------------------------
def test_s3fs_uses_endpoint_from_environment(s3_env: str, tmp_path: Path) -> None:
    assert s3_env.startswith("s3://") and s3_env.endswith("/repo")
    fs = s3fs.S3FileSystem()  # no endpoint_url: botocore reads AWS_ENDPOINT_URL itself
    assert fs.endpoint_url is None and os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    base = s3_env.removeprefix("s3://")
    fs.pipe_file(f"{base}/packs/a", b"0123456789")
    local = tmp_path / "b"
    local.write_bytes(b"local file")
    fs.put_file(str(local), f"{base}/packs/b")
    assert fs.cat_file(f"{base}/packs/a") == b"0123456789"
    assert fs.cat_file(f"{base}/packs/a", start=2, end=5) == b"234"
    assert sorted(fs.ls(f"{base}/packs", detail=False)) == [f"{base}/packs/a", f"{base}/packs/b"]
    fs.get_file(f"{base}/packs/b", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == b"local file"


def test_s3_env_buckets_are_fresh(s3_server: S3Server, s3_env: str) -> None:
    bucket = s3_env.removeprefix("s3://").split("/")[0]
    assert s3_server.client().list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def _s3(server: S3Server, endpoint: str | None = None, **kw: Any) -> s3fs.S3FileSystem:
    kw = {"key": server.access_key, "secret": server.secret_key, **kw}
    return s3fs.S3FileSystem(endpoint_url=endpoint or server.endpoint_url, skip_instance_cache=True, **kw)


def test_s3_auth_server_rejects_wrong_credentials(s3_auth_server: S3Server) -> None:
    bucket = s3_auth_server.make_bucket()
    _s3(s3_auth_server).pipe_file(f"{bucket}/k", b"ok")
    assert _s3(s3_auth_server).cat_file(f"{bucket}/k") == b"ok"
    wrong = {
        "InvalidAccessKeyId": {"key": "AKIAWRONGWRONGWRONG1"},
        "SignatureDoesNotMatch": {"secret": "bad"},
    }
    for code, creds in wrong.items():
        with pytest.raises(PermissionError) as info:
            _s3(s3_auth_server, **creds).ls(bucket)
        assert info.value.__cause__.response["Error"]["Code"] == code  # type: ignore[union-attr]


# --- SFTP -----------------------------------------------------------------------------------------
def _sftp(server: SFTPServer, **kw: Any) -> sshfs.SSHFileSystem:
    args: dict[str, Any] = {
        "port": server.port,
        "username": server.user,
        "client_keys": [str(server.client_key)],
        "known_hosts": str(server.known_hosts),
        "skip_instance_cache": True,
        **kw,
    }
    return sshfs.SSHFileSystem(server.host, **args)


def test_sftp_roundtrip(sftp_server: SFTPServer, tmp_path: Path) -> None:
    assert (
        sftp_server.url("repo")
        == f"sftp://{sftp_server.user}@127.0.0.1:{sftp_server.port}{sftp_server.root}/repo"
    )
    fs = _sftp(sftp_server)
    repo = f"{sftp_server.root}/roundtrip"
    fs.mkdir(f"{repo}/packs")
    local = tmp_path / "a"
    local.write_bytes(b"0123456789")
    fs.put_file(str(local), f"{repo}/packs/a.tmp")
    fs.mv(f"{repo}/packs/a.tmp", f"{repo}/packs/a")
    assert fs.ls(f"{repo}/packs", detail=False) == [f"{repo}/packs/a"]
    with fs.open(f"{repo}/packs/a", "rb") as f:  # note: sshfs' cat_file ignores start/end
        f.seek(2)
        assert f.read(3) == b"234"
    fs.get_file(f"{repo}/packs/a", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == b"0123456789"
    fs.rm(f"{repo}/packs/a")
    assert fs.ls(f"{repo}/packs", detail=False) == []


def test_sftp_unknown_host_key(sftp_server: SFTPServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(asyncssh.HostKeyNotVerifiable, match="Host key is not trusted"):
        _sftp(sftp_server, known_hosts=str(empty))


def test_sftp_rejected_client_key(sftp_server: SFTPServer, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    with pytest.raises(PermissionError, match="Permission denied for user") as info:
        _sftp(sftp_server, client_keys=[str(other)])
    assert isinstance(info.value.__cause__, asyncssh.PermissionDenied)


# --- flaky proxy ----------------------------------------------------------------------------------
ProxyFactory = Callable[[str, int], FlakyProxy]


def _cat_once(server: S3Server, proxy: FlakyProxy, path: str) -> bool:
    """One GET on a new connection, without retries; True when it worked."""
    fs = _s3(server, proxy.url(), config_kwargs={"retries": {"total_max_attempts": 1}})
    fs.retries = 1
    try:
        return bool(fs.cat_file(path) == b"x" * 50_000)
    except Exception:  # e.g. aiohttp.ClientPayloadError, botocore EndpointConnectionError
        return False


def test_flaky_proxy_breaks_and_heals_s3(s3_server: S3Server, flaky_proxy_factory: ProxyFactory) -> None:
    bucket = s3_server.make_bucket()
    s3_server.client().put_object(Bucket=bucket, Key="k", Body=b"x" * 50_000)
    port = int(s3_server.endpoint_url.rsplit(":", 1)[1])
    proxy = flaky_proxy_factory("127.0.0.1", port)

    proxy.fail_rate(0.5, seed=7)
    results = [_cat_once(s3_server, proxy, f"{bucket}/k") for _ in range(8)]
    assert any(results) and not all(results), results
    assert proxy.cut >= results.count(False)  # one s3fs call can use several connections

    proxy.drop_after_bytes(10_000)
    proxy.fail_rate(0)
    assert not _cat_once(s3_server, proxy, f"{bucket}/k")

    proxy.heal()
    proxy.pause()
    assert not _cat_once(s3_server, proxy, f"{bucket}/k")
    proxy.resume()

    cut = proxy.cut
    assert all(_cat_once(s3_server, proxy, f"{bucket}/k") for _ in range(3))
    assert proxy.cut == cut


def test_flaky_proxy_close_stops_listening(sftp_server: SFTPServer) -> None:
    with (
        FlakyProxy(sftp_server.host, sftp_server.port) as proxy,
        socket.create_connection((proxy.host, proxy.port), timeout=5) as sock,
    ):
        assert sock.recv(7) == b"SSH-2.0"
    with pytest.raises(OSError):
        socket.create_connection((proxy.host, proxy.port), timeout=1).close()
