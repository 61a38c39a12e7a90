"""Snapshots as a read-only file system (FUSE, restic's and borg's ``mount``).

Layout below the mount point::

    snapshots/<time>/…     every snapshot, named by its start time (``-1``, ``-2`` … on a tie)
    snapshots/latest       → the newest
    ids/<short id>/…       every snapshot by ID (the full ID where 8 characters are not unique)
    hosts/<host>/<time>/…  hosts/<host>/latest
    tags/<tag>/<time>/…    tags/<tag>/latest

``MountTree`` is the file system without FUSE (paths in, attributes and bytes out), so it can be
tested anywhere; ``mount`` serves it through ``mfusepy`` (the ``mount`` extra) on libfuse 3 (or 2).
File contents are read through the verified chunk reader (``Repository.item_reader``): a chunk that
fails verification is an I/O error (EIO) for that read, recorded as damage like any other read.
The snapshot list is read again when a top-level folder is listed and more than ``refresh``
seconds have passed.
"""

from __future__ import annotations

import datetime as dt
import errno
import itertools
import os
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dtstore import clock
from dtstore.errors import DtstoreError, UsageError
from dtstore.objects.random_access import RandomAccess
from dtstore.snapshots.manifest import Item, Snapshot

if TYPE_CHECKING:
    from dtstore.repository import Repository

TimeName = Callable[[dt.datetime], str]


def local_time_name(moment: dt.datetime) -> str:
    """The default folder name of a snapshot: its start time, local, ``2026-12-02T03:45:10``."""
    return moment.astimezone().strftime("%Y-%m-%dT%H:%M:%S")


class MountError(OSError):
    """What a file-system call answers with (an errno); the FUSE layer passes it on."""

    def __init__(self, code: int) -> None:
        super().__init__(code, os.strerror(code))


@dataclass
class _Node:
    mode: int
    mtime_ns: int
    uid: int = 0
    gid: int = 0
    children: dict[str, _Node] = field(default_factory=dict)
    """a folder's entries"""
    target: str = ""
    item: Item | None = None
    snapshot: Snapshot | None = None
    """a snapshot's root folder, whose entries are read from its item list on first use"""
    loaded: bool = True

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


class MountTree:
    """The read-only tree of a repository's snapshots (optionally only those ``keep`` accepts)."""

    def __init__(self, repo: Repository, *, time_name: TimeName = local_time_name,
                 keep: Callable[[list[Snapshot]], list[Snapshot]] | None = None, refresh: float = 60.0) -> None:
        self._repo = repo
        self._time_name = time_name
        self._keep = keep
        self._refresh = refresh
        self._lock = threading.RLock()
        self._trees: dict[str, _Node] = {}
        """snapshot ID → its root folder (kept across refreshes: a snapshot never changes)"""
        self._open: dict[int, RandomAccess] = {}
        self._handles = itertools.count(1)
        self._loaded_at = 0.0
        self.uid, self.gid = os.getuid(), os.getgid()
        self._root = self._build(self._snapshots())

    # the virtual folders ----------------------------------------------------------------------
    def _snapshots(self) -> list[Snapshot]:
        snaps = self._repo.snapshots()
        self._loaded_at = clock.monotonic()
        return self._keep(snaps) if self._keep is not None else snaps

    def _build(self, snaps: list[Snapshot]) -> _Node:
        newest = max((s.time for s in snaps), default=clock.now())
        root = self._dir(newest)
        by_time = self._dir(newest)
        ids, hosts, tags = self._dir(newest), self._dir(newest), self._dir(newest)
        root.children.update(snapshots=by_time, ids=ids, hosts=hosts, tags=tags)
        names = self._names(snaps)
        self._fill(by_time, snaps, names)
        short = [s.id[:8] for s in snaps]
        for snap in snaps:
            name = snap.id[:8] if short.count(snap.id[:8]) == 1 else snap.id
            self._add(ids, name, self._snapshot_root(snap))
        for key, group in sorted(_groups(snaps, lambda s: [s.host]).items()):
            self._add(hosts, key, self._fill(self._dir(group[-1].time), group, names))
        for key, group in sorted(_groups(snaps, lambda s: s.tags).items()):
            self._add(tags, key, self._fill(self._dir(group[-1].time), group, names))
        return root

    def _names(self, snaps: list[Snapshot]) -> dict[str, str]:
        """Snapshot ID → folder name: its time, with ``-1``, ``-2`` … for later snapshots of the same second."""
        names: dict[str, str] = {}
        used: dict[str, int] = {}
        for snap in snaps:  # oldest first
            base = _safe(self._time_name(snap.time))
            count = used.get(base, 0)
            used[base] = count + 1
            names[snap.id] = base if count == 0 else f"{base}-{count}"
        return names

    def _fill(self, folder: _Node, snaps: list[Snapshot], names: dict[str, str]) -> _Node:
        for snap in snaps:
            self._add(folder, names[snap.id], self._snapshot_root(snap))
        if snaps:
            newest = max(snaps, key=lambda s: (s.time, s.id))
            self._add(folder, "latest", _Node(stat.S_IFLNK | 0o777, _ns(newest.time), target=names[newest.id]))
        return folder

    def _snapshot_root(self, snap: Snapshot) -> _Node:
        node = self._trees.get(snap.id)
        if node is None:
            node = self._dir(snap.time)
            node.snapshot, node.loaded = snap, False
            self._trees[snap.id] = node
        return node

    def _dir(self, moment: dt.datetime) -> _Node:
        return _Node(stat.S_IFDIR | 0o555, _ns(moment), self.uid, self.gid)

    @staticmethod
    def _add(folder: _Node, name: str, node: _Node) -> None:
        folder.children[name] = node

    def _maybe_refresh(self) -> None:
        if clock.monotonic() - self._loaded_at >= self._refresh:
            self._root = self._build(self._snapshots())

    # a snapshot's own tree ------------------------------------------------------------------------
    def _load(self, node: _Node) -> None:
        snap = node.snapshot
        if snap is None or node.loaded:
            return
        with self._lock:
            if node.loaded:
                return
            for item in self._repo.list_items(snap):
                parts = [p for p in os.fsdecode(item.path).split("/") if p not in ("", ".")]
                here = node
                for part in parts[:-1]:
                    nxt = here.children.get(part)
                    if nxt is None or not nxt.is_dir:
                        nxt = here.children[part] = self._dir(snap.time)
                    here = nxt
                entry = self._item_node(item)
                if not parts:  # "." : the root of a backup of /
                    node.mode, node.mtime_ns, node.uid, node.gid = entry.mode, entry.mtime_ns, entry.uid, entry.gid
                    continue
                old = here.children.get(parts[-1])
                if old is not None and old.is_dir and entry.is_dir:
                    entry.children = old.children  # a folder stored after its contents keeps them
                here.children[parts[-1]] = entry
            node.loaded = True

    @staticmethod
    def _item_node(item: Item) -> _Node:
        kind = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}.get(item.type, stat.S_IFREG)
        mode = kind | (stat.S_IMODE(item.mode) & 0o7555)  # read-only: no write bits
        return _Node(mode, item.mtime_ns, item.uid, item.gid, item=item, target=os.fsdecode(item.target))

    # lookups -----------------------------------------------------------------------------------
    def _find(self, path: str) -> _Node:
        parts = [p for p in path.split("/") if p]
        with self._lock:
            if len(parts) <= 1:
                self._maybe_refresh()
            node = self._root
            for part in parts:
                if node.snapshot is not None and not node.loaded:
                    self._load(node)
                if not node.is_dir or part not in node.children:
                    raise MountError(errno.ENOENT)
                node = node.children[part]
            if node.snapshot is not None and not node.loaded:
                self._load(node)
            return node

    def getattr(self, path: str) -> dict[str, Any]:
        node = self._find(path)
        size = node.item.size if node.item is not None and node.item.type == "file" else 0
        if stat.S_ISLNK(node.mode):
            size = len(os.fsencode(node.target))
        return {"st_mode": node.mode, "st_size": size, "st_nlink": 2 if node.is_dir else 1,
                "st_uid": node.uid, "st_gid": node.gid, "st_mtime": node.mtime_ns, "st_ctime": node.mtime_ns,
                "st_atime": node.mtime_ns, "st_blocks": (size + 511) // 512, "st_blksize": 128 * 1024}

    def readdir(self, path: str) -> list[str]:
        node = self._find(path)
        if not node.is_dir:
            raise MountError(errno.ENOTDIR)
        return [".", "..", *sorted(node.children)]

    def readlink(self, path: str) -> str:
        node = self._find(path)
        if not stat.S_ISLNK(node.mode):
            raise MountError(errno.EINVAL)
        return node.target

    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC):
            raise MountError(errno.EROFS)
        node = self._find(path)
        if node.is_dir:
            raise MountError(errno.EISDIR)
        if node.item is None or node.item.type != "file":
            raise MountError(errno.EINVAL)
        try:
            reader = self._repo.item_reader(node.item)
        except DtstoreError:
            raise MountError(errno.EIO) from None
        with self._lock:
            handle = next(self._handles)
            self._open[handle] = reader
        return handle

    def read(self, handle: int, size: int, offset: int) -> bytes:
        with self._lock:
            reader = self._open.get(handle)
        if reader is None:
            raise MountError(errno.EBADF)
        try:
            return reader.read(offset, size)
        except DtstoreError:
            raise MountError(errno.EIO) from None

    def release(self, handle: int) -> None:
        with self._lock:
            self._open.pop(handle, None)


def _groups(snaps: Iterable[Snapshot], keys: Callable[[Snapshot], Iterable[str]]) -> dict[str, list[Snapshot]]:
    found: dict[str, list[Snapshot]] = {}
    for snap in snaps:
        for key in dict.fromkeys(keys(snap)):
            if key:
                found.setdefault(_safe(key), []).append(snap)
    return found


def _safe(name: str) -> str:
    """A folder name: no ``/`` and no NUL, and never ``.``/``..``."""
    name = name.replace("/", "_").replace("\0", "_")
    return f"_{name}" if name in ("", ".", "..") else name


def _ns(moment: dt.datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def fuse_available() -> str | None:
    """Why FUSE cannot be used here (None: it can): no ``mfusepy``, no libfuse, or no /dev/fuse."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (no FUSE in this kernel or container; modprobe fuse, or run the container " \
               "with --device /dev/fuse)"
    try:
        import mfusepy  # noqa: F401
    except ImportError:
        return "the mount extra is not installed: pip install 'dtstore[mount]'"
    except OSError as exc:  # mfusepy found no libfuse
        return f"libfuse cannot be loaded ({exc}): install the fuse3 package"
    return None


def mount(repo: Repository, mountpoint: str | os.PathLike[str], *, time_name: TimeName = local_time_name,
          keep: Callable[[list[Snapshot]], list[Snapshot]] | None = None, allow_other: bool = False,
          refresh: float = 60.0, ready: Callable[[], None] | None = None) -> None:
    """Serve the repository's snapshots read-only at ``mountpoint`` until it is unmounted
    (``fusermount3 -u``, ``umount``) or the process is interrupted (SIGINT, SIGTERM).  Needs the
    ``mount`` extra.  ``ready`` is called once the mount is in place."""
    why = fuse_available()
    if why is not None:
        raise UsageError(f"cannot mount: {why}")
    import mfusepy

    if not os.path.isdir(mountpoint):
        raise UsageError(f"the mount point {os.fspath(mountpoint)} is not a directory")
    tree = MountTree(repo, time_name=time_name, keep=keep, refresh=refresh)
    served = threading.Event()
    operations = _operations(mfusepy, tree, served, ready)
    options: dict[str, Any] = {"foreground": True, "ro": True, "fsname": "dtstore", "subtype": "dtstore"}
    if allow_other:
        options["allow_other"] = True
    try:
        mfusepy.FUSE(operations, os.fspath(mountpoint), **options)
    except RuntimeError as exc:
        if served.is_set():
            return  # libfuse ends its loop with a non-zero status when a signal (Ctrl-C, SIGTERM) unmounts
        raise DtstoreError(f"mounting {os.fspath(mountpoint)} failed (libfuse status {exc}): already mounted, "
                           "or no permission to mount there?") from None


def _operations(fuse: Any, tree: MountTree, served: threading.Event, ready: Callable[[], None] | None) -> Any:
    """The mfusepy Operations that serve ``tree``; ``served`` is set once the kernel has the mount."""

    def call(function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(*args)
        except MountError as exc:
            raise fuse.FuseOSError(exc.errno) from None

    class Operations(fuse.Operations):  # type: ignore[misc]
        use_ns = True

        def init(self, path: str) -> None:
            served.set()
            if ready is not None:
                ready()

        def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
            return call(tree.getattr, path)  # type: ignore[no-any-return]

        def readdir(self, path: str, fh: Any) -> list[str]:
            return call(tree.readdir, path)  # type: ignore[no-any-return]

        def readlink(self, path: str) -> str:
            return call(tree.readlink, path)  # type: ignore[no-any-return]

        def open(self, path: str, flags: int) -> int:
            return call(tree.open, path, flags)  # type: ignore[no-any-return]

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return call(tree.read, fh, size, offset)  # type: ignore[no-any-return]

        def release(self, path: str, fh: int) -> int:
            tree.release(fh)
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    return Operations()


__all__ = ["MountError", "MountTree", "fuse_available", "local_time_name", "mount"]
