"""S3 test servers (moto) on 127.0.0.1: an open one in-process and an optional auth-enforcing subprocess.

Fixtures:
  s3_server       session  S3Server, moto ThreadedMotoServer; accepts any credentials
  s3_env          function "s3://<fresh bucket>/repo"; AWS_* env points at s3_server
  s3_auth_server  session  S3Server, separate moto process with IAM auth enforced;
                           only its access_key/secret_key are accepted
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers.ports import LOOPBACK, die_with_parent, free_port, stop_server, wait_for_port

REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = REGION

    def client(self, access_key: str | None = None, secret_key: str | None = None) -> Any:
        """A boto3 S3 client for this server (credentials default to the server's own)."""
        import boto3  # type: ignore[import-untyped]

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
        )

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique name when none is given) and return its name."""
        name = name or f"dtstore-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)  # port 0: kernel picks, no race
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}", "dtstore-test-key", "dtstore-test-secret")
    finally:
        server.stop()


def _clear_s3fs_cache() -> None:
    # s3fs caches instances by constructor arguments only, not by environment.
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """Point the standard AWS environment at s3_server; yield 's3://<fresh bucket>/repo'."""
    for var in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL_S3",
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # keep a developer's ~/.aws out of the tests
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    _clear_s3fs_cache()
    yield f"s3://{s3_server.make_bucket()}/repo"
    _clear_s3fs_cache()


def _enforce_auth(server: S3Server) -> S3Server:
    """Create an IAM user allowed s3:*, then switch auth on; return the server with its keys."""
    import boto3  # type: ignore[import-untyped]
    import requests

    iam = boto3.client(
        "iam",
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    )
    iam.create_user(UserName="dtstore")
    iam.put_user_policy(
        UserName="dtstore",
        PolicyName="s3-all",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}',
    )
    key = iam.create_access_key(UserName="dtstore")["AccessKey"]
    requests.post(f"{server.endpoint_url}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    return S3Server(server.endpoint_url, key["AccessKeyId"], key["SecretAccessKey"], server.region)


@pytest.fixture(scope="session")
def s3_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    # A separate process: moto's auth switch is process-global and would also hit s3_server.
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto-auth") / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_", "TEST_SERVER_MODE"))}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=die_with_parent,
        )
    try:
        if not wait_for_port(port, 30, proc):
            pytest.fail(f"moto server did not start on {LOOPBACK}:{port}:\n{log_path.read_text()}")
        yield _enforce_auth(S3Server(f"http://{LOOPBACK}:{port}", "bootstrap", "bootstrap"))
    finally:
        stop_server(proc)
