"""Any fsspec filesystem as a BlobStore; the only module that imports fsspec or its backends.

Foreign exceptions (botocore, aiohttp, asyncssh, OSError) are translated here, once, into the
StorageError tree so that nothing above this layer knows which backend it talks to.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from dtstore import clock
from dtstore.errors import (
    BlobNotFound,
    HostKeyError,
    StorageAuthError,
    StorageError,
    StorageUnavailable,
    UsageError,
)
from dtstore.storage.base import BlobInfo, Capabilities

_AUTH_WORDS = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden",
               "ExpiredToken", "InvalidToken", "PermissionDenied", "Permission denied")
_HOSTKEY_WORDS = ("HostKeyNotVerifiable", "host key", "Host key")


class FsspecStore:
    """``fs`` is an fsspec filesystem; ``root`` the path of the repository on it.

    ``rename_commit`` writes to a temporary name and renames (SFTP, other file systems); object
    stores (S3, GCS, Azure) get one PUT of the whole object, which is atomic by itself.
    """

    def __init__(self, connect: Callable[[], Any], root: str, *, display: str, rename_commit: bool,
                 connections: int = 8, seek_reads: bool = False) -> None:
        self._connect = connect
        self._fs: Any = None
        self._fs_lock = threading.Lock()
        self._seek_reads = seek_reads
        self.root = root.rstrip("/")
        self._display = display
        self._rename_commit = rename_commit
        self.capabilities = Capabilities(connections=connections, atomic_rename=rename_commit)
        self._made_dirs: set[str] = set()
        self._append_only = False
        self.retention: tuple[str, dt.timedelta] | None = None
        """S3 Object Lock: (mode, period) set on every object put (spec §17.1)"""

    def set_append_only(self) -> None:
        """Never rename, delete or overwrite (a backup key whose credentials lack those rights, spec
        §17.1).  SFTP then commits a put by creating a read-only temporary file and hard-linking it to
        its name (``hardlink@openssh.com``: atomic, and it fails if the name exists)."""
        self._append_only = True

    def set_retention(self, mode: str, period: dt.timedelta) -> None:
        """S3 Object Lock retention (``GOVERNANCE`` or ``COMPLIANCE``) for every object put from now on."""
        if not self._display.startswith("s3://"):
            raise UsageError(f"{self._display}: Object Lock retention needs an S3 repository")
        self.retention = (mode.upper(), period)

    def describe(self) -> str:
        return self._display

    @property
    def fs(self) -> Any:
        """The filesystem, connected on first use and again after a connection was lost."""
        with self._fs_lock:
            if self._fs is None:
                try:
                    self._fs = self._connect()
                except Exception as exc:
                    raise translate(exc, "connect to", "the remote", self._display) from exc
            return self._fs

    def _drop_connection(self) -> None:
        with self._fs_lock:
            self._fs = None
        self._made_dirs.clear()

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}" if self.root else name

    def get(self, name: str) -> bytes:
        with self._translated("read", name):
            data: bytes = self.fs.cat_file(self._path(name))
            return data

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        with self._translated("read", name):
            if self._seek_reads:  # sshfs's cat_file ignores start/end and reads the whole file
                with self.fs.open(self._path(name), "rb", block_size=max(length, 1 << 16)) as f:
                    f.seek(offset)
                    data: bytes = f.read(length)
            else:
                data = self.fs.cat_file(self._path(name), start=offset, end=offset + length)
        if len(data) != length:
            raise StorageError(f"object {name} in {self._display} is shorter than expected")
        return data

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        with self._translated("write", name):
            if not self._rename_commit:
                self.fs.pipe_file(path, data, **self._put_options(name))
                return
            parent = path.rsplit("/", 1)[0]
            if parent not in self._made_dirs:
                self.fs.makedirs(parent, exist_ok=True)
                self._made_dirs.add(parent)
            tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
            if self._append_only and hasattr(self.fs, "_pool"):
                from fsspec.asyn import sync

                sync(self.fs.loop, _create_and_link, self.fs, tmp, path, data)
                return
            self.fs.pipe_file(tmp, data)
            try:
                self.fs.mv(tmp, path)
            except BaseException:
                self._discard(tmp)
                raise

    def _put_options(self, name: str) -> dict[str, Any]:
        if self.retention is None or not name.startswith(_RETAINED):
            return {}
        mode, period = self.retention
        return {"ObjectLockMode": mode, "ObjectLockRetainUntilDate": clock.now() + period}

    def retained_until(self, name: str) -> dt.datetime | None:
        """S3 Object Lock: the retain-until date of the object's current version, if any."""
        if self.retention is None and not self._display.startswith("s3://"):
            return None
        with self._translated("stat", name):
            bucket, key, _ = self.fs.split_path(self._path(name))
            head = self.fs.call_s3("head_object", Bucket=bucket, Key=key)
        until = head.get("ObjectLockRetainUntilDate")
        return until if isinstance(until, dt.datetime) else None

    def _discard(self, path: str) -> None:
        with contextlib.suppress(Exception):  # best effort: a leftover .tmp- name is ignored by list()
            self.fs.rm_file(path)

    def exists(self, name: str) -> bool:
        with self._translated("stat", name):
            return bool(self.fs.exists(self._path(name)))

    def size(self, name: str) -> int:
        with self._translated("stat", name):
            return int(self.fs.size(self._path(name)))

    def list_temporary(self) -> Iterator[BlobInfo]:
        """The ``.tmp-`` names ([N2]) a rename-committing store may leave (append-only SFTP always
        does: its hard-linked temporaries), for prune's cleanup."""
        if not self._rename_commit:
            return iter(())
        return self.list("", temporary=True)

    def list(self, prefix: str, *, temporary: bool = False) -> Iterator[BlobInfo]:
        base = self._path(prefix.rstrip("/"))
        with self._translated("list", prefix):
            try:
                found = self.fs.find(base, detail=True, withdirs=False)
            except FileNotFoundError:
                return
            self.fs.invalidate_cache()
        start = len(self.root) + 1 if self.root else 0
        for path in sorted(found):
            info = found[path]
            name = path[start:] if path.startswith(self.root) else path
            if name.rsplit("/", 1)[-1].startswith(".tmp-") != temporary or info.get("type") == "directory":
                continue
            yield BlobInfo(name, int(info.get("size") or 0), _modified(info))

    def delete(self, name: str) -> None:
        try:
            with self._translated("delete", name):
                self.fs.rm_file(self._path(name))
        except BlobNotFound:
            pass

    def close(self) -> None:
        pass

    def _translated(self, op: str, name: str) -> _Translator:
        return _Translator(self, op, name)


class _Translator:
    """Turns any foreign exception into the StorageError tree; a transient one drops the connection
    so that the retrying wrapper's next attempt reconnects (sshfs never reconnects by itself)."""

    def __init__(self, store: FsspecStore, op: str, name: str) -> None:
        self.store, self.op, self.name = store, op, name

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, StorageError) or not isinstance(exc, Exception):
            return
        error = translate(exc, self.op, self.name, self.store.describe())
        if error.transient:
            self.store._drop_connection()
        raise error from exc


_RETAINED = ("data/", "meta/", "index/", "snapshots/", "keys/", "config", "damaged/")
"""what Object Lock retention protects: not sessions, locks and maintenance state, which expire"""


async def _create_and_link(fs: Any, tmp: str, path: str, data: bytes) -> None:
    """SFTP without rename or remove rights: write a new read-only file, then hard-link it to its
    name (atomic; refused if the name exists).  The ``.tmp-`` name stays (listings skip it)."""
    import asyncssh

    async with fs._pool.get() as channel:
        async with channel.open(tmp, "wb", attrs=asyncssh.SFTPAttrs(permissions=0o444)) as f:
            await f.write(data)
        await channel.link(tmp, path)


def translate(exc: Exception, op: str, name: str, where: str) -> StorageError:
    what = f"unable to {op} {name} in {where}"
    text = f"{type(exc).__name__}: {exc}"
    cls = type(exc).__name__
    if isinstance(exc, FileNotFoundError) or cls in ("NoSuchKey", "NoSuchBucket", "SFTPNoSuchFile"):
        if "bucket" in text.lower() and "NoSuchBucket" in text:
            return BlobNotFound(f"{what}: the bucket does not exist")
        return BlobNotFound(f"{what}: it does not exist")
    if cls in ("HostKeyNotVerifiable",) or any(w in text for w in _HOSTKEY_WORDS):
        return HostKeyError(
            f"{what}: the server's host key is not trusted; add it to ~/.ssh/known_hosts "
            "or point DTSTORE_SFTP_KNOWN_HOSTS at a file that has it"
        )
    if isinstance(exc, PermissionError) or cls in ("PermissionDenied", "NoCredentialsError") or any(
        w in text for w in _AUTH_WORDS
    ) or _has_status(text, "403"):
        return StorageAuthError(f"{what}: access denied; check the credentials ({_short(exc)})")
    if isinstance(exc, (ConnectionError, TimeoutError)) or cls in (
        "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ClientConnectorError",
        "ServerDisconnectedError", "ConnectionLost", "DisconnectError", "ChannelOpenError",
        "ClientOSError", "ConnectionClosedError", "ResponseStreamingError", "IncompleteReadError",
        "ProtocolError", "ClientPayloadError", "SFTPNoConnection", "SFTPConnectionLost",
    ) or _is_server_error(text):
        return StorageUnavailable(f"{what}: the remote did not answer ({_short(exc)})", transient=True)
    if isinstance(exc, OSError):
        return StorageError(f"{what}: {_short(exc)}", transient=True)
    return StorageError(f"{what}: {_short(exc)}", transient=False)


def _is_server_error(text: str) -> bool:
    return _has_status(text, "500", "502", "503", "504") or any(
        word in text for word in ("InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout"))


def _has_status(text: str, *codes: str) -> bool:
    """An HTTP status standing alone, as in "(403)": not digits inside an object name or URL in the
    message ("…/data/6a/6acd…f2aa403df…" is no access denial)."""
    return any(re.search(rf"(?<![0-9A-Za-z]){code}(?![0-9A-Za-z])", text) for code in codes)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def _modified(info: dict[str, Any]) -> dt.datetime | None:
    for key in ("LastModified", "mtime", "last_modified", "modified"):
        value = info.get(key)
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        if isinstance(value, (int, float)):
            return dt.datetime.fromtimestamp(value, dt.UTC)
    return None
