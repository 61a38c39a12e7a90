"""Repository URL → BlobStore.  Backends load lazily, with an install hint when missing."""

from __future__ import annotations

import importlib
import os
from typing import Any
from urllib.parse import unquote, urlsplit

from dtstore.errors import UsageError
from dtstore.ssh import known_hosts_option
from dtstore.storage.base import BlobStore
from dtstore.storage.local import LocalStore

_INSTALL_HINTS = {"s3": "dtstore[s3]", "sftp": "dtstore[sftp]", "ssh": "dtstore[sftp]"}
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "adl", "oss", "memory"})


def redact(url: str) -> str:
    """The URL without any password part, for display and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def open_store(url: str) -> BlobStore:
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in ("", "file"):
        path = unquote(urlsplit(url).path) if scheme == "file" else url
        if not path:
            raise UsageError("the repository location is empty")
        return LocalStore(os.path.expanduser(path))
    if scheme == "s3":
        return _open_s3(url)
    if scheme in ("sftp", "ssh"):
        return _open_sftp(url)
    return _open_generic(url, scheme)


def _require(module: str, scheme: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = _INSTALL_HINTS.get(scheme, f"the fsspec backend for {scheme}://")
        raise UsageError(f"{scheme}:// repositories need {hint}; install it with pip") from exc


def _open_s3(url: str) -> BlobStore:
    from dtstore.storage.fsspec_store import FsspecStore

    s3fs = _require("s3fs", "s3")
    parts = urlsplit(url)
    if not parts.netloc:
        raise UsageError(f"{url}: an S3 URL is s3://BUCKET[/PREFIX]")
    client_kwargs: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        client_kwargs["region_name"] = region
    options: dict[str, Any] = {
        "skip_instance_cache": True,
        "client_kwargs": client_kwargs,
        "config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"}},
    }
    if os.environ.get("AWS_PROFILE"):
        options["profile"] = os.environ["AWS_PROFILE"]
    root = f"{parts.netloc}{parts.path}".rstrip("/")
    return FsspecStore(lambda: s3fs.S3FileSystem(**options), root, display=f"s3://{root}",
                       rename_commit=False, connections=8)


def _open_sftp(url: str) -> BlobStore:
    from dtstore.storage.fsspec_store import FsspecStore

    sshfs = _require("sshfs", "sftp")
    parts = urlsplit(url)
    if not parts.hostname or not parts.path:
        raise UsageError(f"{redact(url)}: an SFTP URL is sftp://USER@HOST[:PORT]/ABSOLUTE/PATH")
    options: dict[str, Any] = {"skip_instance_cache": True}
    if parts.port:
        options["port"] = parts.port
    if parts.username:
        options["username"] = unquote(parts.username)
    if os.environ.get("DTSTORE_SFTP_KEY"):
        options["client_keys"] = [os.environ["DTSTORE_SFTP_KEY"]]
    # always set: sshfs's own default, known_hosts=None, would trust any host key
    options["known_hosts"] = known_hosts_option(None, "DTSTORE_SFTP_KNOWN_HOSTS")
    display = f"sftp://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"
    return FsspecStore(lambda: sshfs.SSHFileSystem(parts.hostname, **options), unquote(parts.path),
                       display=display, rename_commit=True, connections=4, seek_reads=True)


def _open_generic(url: str, scheme: str) -> BlobStore:
    from dtstore.storage.fsspec_store import FsspecStore, translate

    fsspec = _require("fsspec", scheme)
    try:
        fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"{redact(url)}: no storage backend for {scheme}:// ({exc})") from exc
    except Exception as exc:
        raise translate(exc, "connect to", "the remote", redact(url)) from exc
    first = [fs]

    def connect() -> Any:
        return first.pop() if first else type(fs)(**fs.storage_options)

    return FsspecStore(connect, root, display=redact(url), rename_commit=scheme not in _OBJECT_STORES)
