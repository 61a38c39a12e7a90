"""Backup keys on append-only storage (spec/repository-format.md §4.4, §17.1): SFTP whose server refuses
removes, renames and attribute changes, and S3 (moto, IAM auth on) with a backup user that has no
DeleteObject, plus a bucket with Object Lock.  The backup host backs up and deduplicates; an attacker
with its key and credentials can neither read old data nor delete, overwrite or truncate anything;
the admin restores every snapshot and check --read-data passes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import dtstore
from dtstore import clock
from dtstore.crypto.keys import CHEAP_KDF
from dtstore.errors import AdminKeyRequired
from tests.helpers import PASSWORD, random_bytes
from tests.maintenance.common import CHUNKER, PACK_SIZE, tree_digest
from tests.servers.ports import LOOPBACK, die_with_parent, free_port, stop_server, wait_for_port
from tests.servers.sftp import SFTPServer

BACKUP_PASSWORD = "backup host password"


def _open_readable(root: Path) -> None:
    """What the docs ask of the admin: the backup user may create names in every directory (sticky,
    so not remove them at the file-system level either) and read every file, but write none."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o1777)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.stat(path).st_uid == 0:
                os.chmod(path, 0o644)


def _make_source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "shared.bin").write_bytes(random_bytes(400_000, seed=11))
    (src / "small.txt").write_text("hello\n")
    return src


def _restore_all(admin: dtstore.Repository, tmp_path: Path, src: Path, expected: dict[str, dict[str, str]]) -> None:
    for snap in admin.snapshots():
        target = tmp_path / f"restored-{snap.short_id}"
        admin.restore(snap, target)
        got = tree_digest(target / str(src).lstrip("/"))
        assert got == expected[snap.id], snap.id
    assert admin.check(read_data=True).ok


# --- SFTP ------------------------------------------------------------------------------------


async def _sftp_attacks(server: SFTPServer, repo_path: Path) -> dict[str, str]:
    """Everything the thief tries with the backup host's SSH key; returns what happened to each."""
    import asyncssh

    victims = [str(p) for p in sorted(repo_path.rglob("*")) if p.is_file() and not p.name.startswith(".tmp-")
               and p.parts[len(repo_path.parts)] in ("data", "meta", "index", "snapshots", "keys", "config")]
    assert any("/data/" in v for v in victims) and any("/snapshots/" in v for v in victims)
    results: dict[str, str] = {}
    async with asyncssh.connect(server.host, server.port, username=server.user, client_keys=[str(server.client_key)],
                                known_hosts=str(server.known_hosts)) as conn, conn.start_sftp_client() as sftp:
        async def attempt(what: str, coro: Any) -> None:
            try:
                await coro
                results[what] = "done"
            except (asyncssh.SFTPError, OSError) as exc:
                results[what] = f"refused: {type(exc).__name__}"

        for path in victims:
            await attempt(f"remove {path}", sftp.remove(path))
            await attempt(f"rename {path}", sftp.rename(path, path + ".x"))
            await attempt(f"posix-rename {path}", sftp.posix_rename(path, path + ".x"))
            await attempt(f"truncate {path}", sftp.truncate(path, 0))
            await attempt(f"chmod {path}", sftp.chmod(path, 0o666))

            async def overwrite(p: str = path) -> None:
                async with sftp.open(p, "r+b") as f:
                    await f.write(b"ransom")
            await attempt(f"overwrite {path}", overwrite())

            async def truncate_open(p: str = path) -> None:
                async with sftp.open(p, "wb") as f:
                    await f.write(b"")
            await attempt(f"open-truncate {path}", truncate_open())
        await attempt("rmdir data", sftp.rmdir(str(repo_path / "data")))
    return results


@pytest.mark.slow
def test_sftp_backup_host_cannot_read_or_destroy(sftp_append_only_server: SFTPServer, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    server = sftp_append_only_server
    repo_path = server.root / f"repo-{os.urandom(4).hex()}"
    src = _make_source(tmp_path)
    expected: dict[str, dict[str, str]] = {}
    # the admin, on the machine that holds the repository (local path, full rights)
    with dtstore.Repository.init(str(repo_path), PASSWORD, kdf=CHEAP_KDF, cache_dir=tmp_path / "admin-cache",
                                 chunker=CHUNKER, pack_size=PACK_SIZE, key_roles=True) as admin:
        first = admin.snapshot([dtstore.FilesSource([str(src)])])
        expected[first.id] = tree_digest(src)
        admin.add_key(BACKUP_PASSWORD, kdf=CHEAP_KDF, role="backup")
    _open_readable(repo_path)

    monkeypatch.setenv("DTSTORE_SFTP_KEY", str(server.client_key))
    monkeypatch.setenv("DTSTORE_SFTP_KNOWN_HOSTS", str(server.known_hosts))
    (src / "new.bin").write_bytes(random_bytes(120_000, seed=12))
    with dtstore.Repository.open(server.url(repo_path.name), BACKUP_PASSWORD,
                                 cache_dir=tmp_path / "backup-cache") as backup:
        full = backup.snapshot([dtstore.FilesSource([str(src)])])
        expected[full.id] = tree_digest(src)
        assert full.summary["bytes_new"] < 250_000  # shared.bin deduplicated against the admin's data
        (src / "small.txt").write_text("hello again\n")
        again = backup.snapshot([dtstore.FilesSource([str(src)])])
        expected[again.id] = tree_digest(src)
        assert again.parent == full.id
        with pytest.raises(AdminKeyRequired):
            backup.load_snapshot(first.id)
        with pytest.raises(AdminKeyRequired):
            backup.restore(again, tmp_path / "stolen")
    # everything the backup host wrote is a new read-only file (hard-linked into place)
    for path in repo_path.rglob("*"):
        if path.is_file() and path.stat().st_uid != 0:
            assert path.stat().st_mode & 0o222 == 0, path

    results = asyncio.run(_sftp_attacks(server, repo_path))
    done = {k: v for k, v in results.items() if v == "done"}
    assert not done, done

    with dtstore.Repository.open(str(repo_path), PASSWORD, cache_dir=tmp_path / "admin-cache") as admin:
        _restore_all(admin, tmp_path, src, expected)
        later = clock.now() + dt.timedelta(hours=2)  # the hard-linked temporaries go after an hour
        monkeypatch.setattr(clock, "now", lambda: later)
        admin.prune()
        assert not list((repo_path / "sessions").iterdir())
        assert not [p for p in repo_path.rglob(".tmp-*")]


# --- S3 (moto with IAM auth on) ---------------------------------------------------------------


@dataclass(frozen=True)
class IamS3:
    endpoint_url: str
    admin: tuple[str, str]
    backup: tuple[str, str]
    region: str = "us-east-1"

    def client(self, who: tuple[str, str]) -> Any:
        import boto3  # type: ignore[import-untyped]

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=who[0], aws_secret_access_key=who[1])

    def use(self, monkeypatch: pytest.MonkeyPatch, who: tuple[str, str]) -> None:
        import s3fs  # type: ignore[import-untyped]

        s3fs.S3FileSystem.clear_instance_cache()
        for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                    "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", who[0])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", who[1])
        monkeypatch.setenv("AWS_ENDPOINT_URL", self.endpoint_url)
        monkeypatch.setenv("AWS_REGION", self.region)
        monkeypatch.setenv("AWS_DEFAULT_REGION", self.region)


BACKUP_POLICY = json.loads((Path(__file__).resolve().parents[2] / "spec" / "cli.md").read_text()
                           .split("  ```json\n", 1)[1].split("  ```", 1)[0].replace("BUCKET/PREFIX", "*")
                           .replace("BUCKET", "*"))
"""the policy document shipped in spec/cli.md (key), with the bucket names wildcarded"""


MOTO_LAUNCHER = """
import sys
from urllib.parse import quote, unquote

import moto.iam.access_control as ac
from moto.server import main

# moto 5 checks SigV4 against the query as it received it decoded, so every ListObjectsV2 with a
# prefix containing '/' fails with SignatureDoesNotMatch under IAM auth (getmoto/moto#5948).  Encode
# the query the SigV4 way before the check; authentication and policy evaluation are otherwise moto's.
_init = ac.IAMRequestBase.__init__

def _init_encoded(self, *args, **kwargs):
    path = kwargs.get("path")
    if path and "?" in path:
        base, query = path.split("?", 1)
        parts = [p.split("=", 1) + [""] for p in query.split("&") if p]
        kwargs["path"] = base + "?" + "&".join(
            quote(unquote(k), safe="-_.~") + "=" + quote(unquote(v), safe="-_.~") for k, v, *_ in parts)
    _init(self, *args, **kwargs)

ac.IAMRequestBase.__init__ = _init_encoded
sys.argv = ["moto_server", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def iam_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamS3]:
    """A moto server process with IAM auth on: an admin user (s3:*) and a backup user with the policy
    of spec/cli.md (no DeleteObject)."""
    import boto3
    import requests

    port = free_port()
    log_path = tmp_path_factory.mktemp("moto-iam") / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_", "TEST_SERVER_MODE"))}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", MOTO_LAUNCHER, "-H", LOOPBACK, "-p", str(port)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=die_with_parent)
    try:
        if not wait_for_port(port, 30, proc):
            pytest.fail(f"moto did not start:\n{log_path.read_text()}")
        endpoint = f"http://{LOOPBACK}:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        keys = {}
        for user, policy in (("admin", {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}), ("backup", BACKUP_POLICY)):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        yield IamS3(endpoint, keys["admin"], keys["backup"])
    finally:
        stop_server(proc)


def _s3_attacks(s3: IamS3, bucket: str) -> dict[str, str]:
    """The thief, with the backup host's S3 credentials, through the S3 API."""
    client = s3.client(s3.backup)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])
            if o["Key"].split("/")[1] in ("data", "meta", "index", "snapshots", "keys", "config")]
    assert any("/data/" in k for k in keys) and any("/snapshots/" in k for k in keys)
    results: dict[str, str] = {}
    for key in keys:
        for what, call in (
            ("delete", lambda k=key: client.delete_object(Bucket=bucket, Key=k)),
            ("delete-objects", lambda k=key: _raise_errors(client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k}]}))),
            ("delete-version", lambda k=key: client.delete_object(
                Bucket=bucket, Key=k, VersionId=client.head_object(Bucket=bucket, Key=k)["VersionId"])),
            ("delete-version-bypass", lambda k=key: client.delete_object(
                Bucket=bucket, Key=k, VersionId=client.head_object(Bucket=bucket, Key=k)["VersionId"],
                BypassGovernanceRetention=True)),
            # Not tried: shortening the retention (PutObjectRetention with BypassGovernanceRetention),
            # which the shipped policy denies: moto maps "PUT ?retention" to the IAM action PutObject
            # (its ACTION_MAP has no PutObjectRetention), so it cannot be tested here.
        ):
            try:
                call()
                results[f"{what} {key}"] = "done"
            except Exception as exc:  # botocore ClientError
                results[f"{what} {key}"] = f"refused: {exc}"[:80]
    return results


def _raise_errors(response: dict[str, Any]) -> None:
    if response.get("Errors"):
        raise PermissionError(response["Errors"][0]["Code"])


@pytest.mark.slow
def test_s3_backup_user_without_delete_and_object_lock(iam_s3: IamS3, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    admin_s3 = iam_s3.client(iam_s3.admin)
    bucket = f"locked-{os.urandom(4).hex()}"
    admin_s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    url = f"s3://{bucket}/repo"
    src = _make_source(tmp_path)
    expected: dict[str, dict[str, str]] = {}

    iam_s3.use(monkeypatch, iam_s3.admin)
    with dtstore.Repository.init(url, PASSWORD, kdf=CHEAP_KDF, cache_dir=tmp_path / "admin-cache", chunker=CHUNKER,
                                 pack_size=PACK_SIZE, key_roles=True,
                                 retention=("governance", dt.timedelta(days=1))) as admin:
        first = admin.snapshot([dtstore.FilesSource([str(src)])])
        expected[first.id] = tree_digest(src)
        admin.add_key(BACKUP_PASSWORD, kdf=CHEAP_KDF, role="backup")
    some_pack = next(o["Key"] for o in admin_s3.list_objects_v2(Bucket=bucket)["Contents"] if "/data/" in o["Key"])
    head = admin_s3.head_object(Bucket=bucket, Key=some_pack)
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"] > clock.now()

    iam_s3.use(monkeypatch, iam_s3.backup)
    (src / "new.bin").write_bytes(random_bytes(120_000, seed=13))
    with dtstore.Repository.open(url, BACKUP_PASSWORD, cache_dir=tmp_path / "backup-cache") as backup:
        full = backup.snapshot([dtstore.FilesSource([str(src)])])
        expected[full.id] = tree_digest(src)
        assert full.summary["bytes_new"] < 250_000
        (src / "small.txt").write_text("changed\n")
        log = backup.snapshot([dtstore.FilesSource([str(src)])])
        expected[log.id] = tree_digest(src)
        with pytest.raises(AdminKeyRequired):
            backup.load_snapshot(first.id)
    mine = [o["Key"] for o in admin_s3.list_objects_v2(Bucket=bucket)["Contents"]
            if "/snapshots/" in o["Key"] and o["Key"].endswith(full.id)]
    assert admin_s3.head_object(Bucket=bucket, Key=mine[0])["ObjectLockMode"] == "GOVERNANCE"

    results = _s3_attacks(iam_s3, bucket)
    assert not {k: v for k, v in results.items() if v == "done"}
    # an overwrite is possible through PutObject, but with Object Lock it only adds a version: the
    # original stays, retained, and no one with these credentials can remove it
    victim = some_pack
    thief = iam_s3.client(iam_s3.backup)
    original = admin_s3.list_object_versions(Bucket=bucket, Prefix=victim)["Versions"]
    thief.put_object(Bucket=bucket, Key=victim, Body=b"ransom")
    versions = admin_s3.list_object_versions(Bucket=bucket, Prefix=victim)["Versions"]
    assert {v["VersionId"] for v in original} < {v["VersionId"] for v in versions}
    with pytest.raises(Exception, match="AccessDenied"):
        thief.delete_object(Bucket=bucket, Key=victim, VersionId=original[0]["VersionId"])
    with pytest.raises(Exception, match="AccessDenied"):
        admin_s3.delete_object(Bucket=bucket, Key=victim, VersionId=original[0]["VersionId"])
    # the admin puts the original version back (what a recovery from such an attack does)
    admin_s3.copy_object(Bucket=bucket, Key=victim,
                         CopySource={"Bucket": bucket, "Key": victim, "VersionId": original[0]["VersionId"]})

    iam_s3.use(monkeypatch, iam_s3.admin)
    with dtstore.Repository.open(url, PASSWORD, cache_dir=tmp_path / "admin-cache") as admin:
        _restore_all(admin, tmp_path, src, expected)
        # prune respects retention: the forgotten snapshot's only data stays until its date has passed
        admin.forget([first.id])
        plan = admin.prune(exclusive=True, grace=dt.timedelta(0))
        assert plan.retained and not plan.delete
        assert admin_s3.head_object(Bucket=bucket, Key=some_pack)
        assert not [o for o in admin_s3.list_objects_v2(Bucket=bucket, Prefix="repo/sessions/").get("Contents", [])]


def test_the_shipped_policy_has_no_delete() -> None:
    allowed = {a for s in BACKUP_POLICY["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}
    denied = {a for s in BACKUP_POLICY["Statement"] if s["Effect"] == "Deny" for a in s["Action"]}
    assert {"s3:PutObject", "s3:GetObject", "s3:ListBucket"} <= allowed
    assert not {a for a in allowed if "Delete" in a or "Bypass" in a or a == "s3:*"}
    assert {"s3:DeleteObject", "s3:DeleteObjectVersion"} <= denied

