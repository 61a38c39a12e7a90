"""Restore: plan which byte ranges of which packs go where, then fetch each pack's ranges once.

Every chunk is decrypted and checked against its keyed hash before a byte of it is written, blob by
blob.  Damage costs only what it touches: a chunk that fails (or that no index lists, or whose pack
is missing or too short) removes exactly the files that contain it; every other file is restored,
and then the error (IntegrityError, exit 16) names those files and the packs.  What was found bad
is returned in ``RestoreRun.damage`` for the repository's damage records.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
import sys
import threading
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dtstore.content.damage import DamageSet
from dtstore.content.pack import BlobLocation
from dtstore.content.store import ContentReader, blob_past_end
from dtstore.errors import BlobNotFound, DtstoreError, IntegrityError, TargetFull, UsageError
from dtstore.format import BLOB_META
from dtstore.progress import ProgressCallback, ProgressEvent
from dtstore.snapshots.manifest import Item
from dtstore.storage import layout

MAX_RANGE = 4 << 20
"""one range read's bytes: each restore worker holds one while it decodes (8 MiB cost 15 MB of peak
RSS on binary pages for no speed, issue 18 §4)"""
MAX_GAP = 256 << 10
MAX_NAMED = 20
"""files named in the error message (all of them are in ``IntegrityError.paths``)"""


@dataclass
class BlobTask:
    chunk_id: bytes
    location: BlobLocation
    targets: list[tuple[int, int]] = field(default_factory=list)
    """(file number, offset in that file)"""


@dataclass
class RestorePlan:
    items: list[Item]
    files: list[bytes]
    """target path per file number"""
    packs: dict[str, list[BlobTask]]
    total_bytes: int
    names: list[str] = field(default_factory=list)
    """snapshot path ("/" + item path) per file number"""
    unindexed: dict[int, int] = field(default_factory=dict)
    """file number → how many of its chunks no index lists: those files cannot be restored"""

    def ranges(self, pack_id: str) -> list[list[BlobTask]]:
        """Blobs of one pack grouped into range reads of at most MAX_RANGE bytes."""
        groups: list[list[BlobTask]] = []
        for task in sorted(self.packs[pack_id], key=lambda t: t.location.offset):
            if groups:
                first, last = groups[-1][0].location, groups[-1][-1].location
                end = last.offset + last.length
                if (task.location.offset - end <= MAX_GAP
                        and task.location.offset + task.location.length - first.offset <= MAX_RANGE):
                    groups[-1].append(task)
                    continue
            groups.append([task])
        return groups


def matches(path: bytes, includes: Sequence[bytes]) -> bool:
    return not includes or any(path == inc or path.startswith(inc + b"/") for inc in includes)


def normalize_include(path: str | bytes) -> bytes:
    raw = os.fsencode(path) if isinstance(path, str) else path
    return os.path.normpath(raw).lstrip(b"/").rstrip(b"/")


def _safe(item: Item) -> Item:
    """Never write outside the target, whatever a manifest says."""
    parts = item.path.split(b"/")
    if item.path.startswith(b"/") or b".." in parts or b"" in parts or b"\0" in item.path:
        raise IntegrityError(f"snapshot item {item.name!r} has an unsafe path; refusing to restore it")
    return item


def _checked_tree(items: list[Item]) -> list[Item]:
    """Refuse a tree in which one path appears twice or something lies below a symlink: restoring
    it would write through the link, outside the target."""
    kinds: dict[bytes, str] = {}
    for item in items:
        if item.path in kinds:
            raise IntegrityError(f"snapshot lists {item.name!r} twice; refusing to restore it")
        kinds[item.path] = item.type
    for item in items:
        parent = os.path.dirname(item.path)
        while parent:
            if kinds.get(parent) == "symlink":
                raise IntegrityError(f"snapshot item {item.name!r} lies below a symlink; refusing to restore it")
            parent = os.path.dirname(parent)
    return items


def plan_restore(items: Iterable[Item], target: bytes, reader: ContentReader,
                 includes: Sequence[bytes] = ()) -> RestorePlan:
    chosen = _checked_tree([_safe(item) for item in items if matches(item.path, includes)])
    if includes and not chosen:
        shown = ", ".join(i.decode("utf-8", "surrogateescape") for i in includes)
        raise UsageError(f"nothing in the snapshot matches {shown}")
    files: list[bytes] = []
    names: list[str] = []
    tasks: dict[bytes, BlobTask] = {}
    wanted = {c for item in chosen if item.type == "file" for c in item.chunks}
    locations = reader.cache.lookup_many(wanted)
    unindexed: dict[int, int] = {}
    total = 0
    for item in chosen:
        if item.type != "file":
            continue
        number = len(files)
        files.append(os.path.join(target, item.path))
        names.append("/" + item.name)
        missing = sum(1 for c in item.chunks if c not in locations)
        if missing:
            unindexed[number] = missing
            continue
        offset = 0
        for chunk_id in item.chunks:
            location = locations[chunk_id]
            task = tasks.get(chunk_id)
            if task is None:
                task = tasks[chunk_id] = BlobTask(chunk_id, location)
            task.targets.append((number, offset))
            offset += location.raw_length
        if offset != item.size:
            raise IntegrityError(f"{item.name}: its chunks add up to {offset} bytes, the item says {item.size}")
        total += item.size
    packs: dict[str, list[BlobTask]] = defaultdict(list)
    for task in tasks.values():
        packs[task.location.pack_id].append(task)
    return RestorePlan(chosen, files, dict(packs), total, names, unindexed)


class RestoreRun:
    """Restores a plan: a pool of workers fetches each pack's ranges once, decrypts, decompresses
    and verifies every blob and writes it (``_Writes``: never two threads into one file at once)."""

    def __init__(self, plan: RestorePlan, target: bytes, reader: ContentReader, workers: int,
                 progress: ProgressCallback) -> None:
        self._plan = plan
        self._target = target
        self._reader = reader
        self._workers = workers
        self._progress = progress
        self._lock = threading.Lock()
        self._done = 0
        self._unwritten = [item.size for item in plan.items if item.type == "file"]
        """file number → its bytes not written yet"""
        self._failed: dict[int, set[str]] = {n: {"(no index)"} for n in plan.unindexed}
        """file number → what it lost: pack IDs, or "(no index)" """
        self._errors: list[DtstoreError] = []
        self._writes = _Writes(plan.files, self._wrote, self._failed.__contains__)
        self.damage = DamageSet()
        """copies this run found bad: for the repository's damage records"""

    @property
    def not_restored(self) -> list[str]:
        """Snapshot paths ("/" + item path) of the files this run could not restore."""
        return [self._plan.names[n] for n in sorted(self._failed)]

    def run(self) -> None:
        self._prepare_tree()
        try:
            self._fetch_all()
        except BaseException as exc:
            # a write failed, or Ctrl-C: a file not completely written must not be left looking
            # restored (its size is already right, its holes read as zeros)
            self._remove_unfinished()
            if isinstance(exc, OSError) and exc.errno in NO_ROOM:
                raise TargetFull(f"no room left in {os.fsdecode(self._target)} while writing ({exc.strerror}): "
                                 "the files not completely written are removed") from None
            raise
        self._remove(self._failed)
        self._finish_metadata()
        self._emit()
        if self._failed:
            raise self._error()

    def _fetch_all(self) -> None:
        """Every pack's ranges, fetched, decoded and written by the workers.  After a failure no
        further pack is started (``map`` cancels the ones not begun); the ones running finish."""
        try:
            with ThreadPoolExecutor(self._workers, thread_name_prefix="dtstore-restore") as pool:
                for _ in pool.map(self._restore_pack, self._pack_order()):
                    pass
        finally:
            self._writes.close()

    def _pack_order(self) -> list[str]:
        """Packs in the order of the first file position they fill: the workers move through the
        files front to back together, so writes land close to each other."""
        return sorted(self._plan.packs, key=lambda p: (min(min(t.targets) for t in self._plan.packs[p]), p))

    def _error(self) -> DtstoreError:
        names = self.not_restored
        packs = sorted({p for lost in self._failed.values() for p in lost if not p.startswith("(")})
        shown = ", ".join(names[:MAX_NAMED]) + (f", … ({len(names)} in all)" if len(names) > MAX_NAMED else "")
        causes = [str(e) for e in self._errors[:1]]
        if self._plan.unindexed:
            causes.append(f"{len(self._plan.unindexed)} file(s) need chunks that are in no index segment: "
                          "data is missing")
        more = len(self._errors) - 1
        if more > 0:
            causes.append(f"{more} more damaged chunk(s)")
        if len(packs) > 1:
            causes.append(f"in {len(packs)} packs: {', '.join(packs)}")
        message = (f"{'; '.join(causes)} — not restored ({len(names)} of {len(self._plan.files)} file(s)): "
                   f"{shown}; everything else was restored")
        transient = [e for e in self._errors if not isinstance(e, IntegrityError)]
        if transient:
            # not (only) damage: the storage failed; trying again may bring the rest back
            return type(transient[0])(f"{transient[0]} — not restored ({len(names)} of "
                                      f"{len(self._plan.files)} file(s)): {shown}; everything else was restored")
        return IntegrityError(message, paths=names, packs=packs)

    def _prepare_tree(self) -> None:
        """Directories, and every file at its size with its space reserved, before anything is
        fetched: a target without room fails now (TargetFull).  If this fails, the files it made
        are removed again: the target is not left full of zeros that look like restored files."""
        os.makedirs(self._target, exist_ok=True)
        made = 0
        path = self._target
        try:
            for item in self._plan.items:
                path = os.path.join(self._target, item.path)
                _make_dirs(self._target, os.path.dirname(item.path))
                if item.type == "dir":
                    _make_dirs(self._target, item.path)
                elif item.type == "file":
                    made += 1  # file numbers follow the items' order (plan_restore)
                    _replace_with_file(path, item.size)
        except BaseException as exc:
            self._remove(range(made))
            if isinstance(exc, OSError) and exc.errno in NO_ROOM:
                raise self._no_room(path, exc) from None
            raise

    def _no_room(self, path: bytes, exc: OSError) -> TargetFull:
        free = _free_bytes(self._target)
        shown = f", {free:,} are free" if free is not None else ""
        return TargetFull(f"no room in {os.fsdecode(self._target)}: the restore needs {self._plan.total_bytes:,} "
                          f"bytes in {len(self._plan.files)} file(s){shown}, and making "
                          f"{os.fsdecode(path)} failed ({exc.strerror}); nothing was fetched, and the files "
                          "this restore had made are removed")

    def _restore_pack(self, pack_id: str) -> None:
        for group in self._plan.ranges(pack_id):
            self._restore_range(group)

    def _fail(self, tasks: Iterable[BlobTask], error: DtstoreError, *, pack_damaged: bool = False,
              blob_damaged: bool = False) -> None:
        """These blobs cannot be had: their files are lost (only theirs)."""
        with self._lock:
            self._errors.append(error)
            for task in tasks:
                pack_id = task.location.pack_id
                for number, _ in task.targets:
                    self._failed.setdefault(number, set()).add(pack_id)
                if pack_damaged:
                    self.damage.packs.add(pack_id)
                elif blob_damaged:
                    self.damage.blobs.add((pack_id, task.chunk_id))

    def _restore_range(self, group: list[BlobTask]) -> None:
        first = group[0].location
        last = group[-1].location
        name = layout.pack_name(first.pack_id, first.kind == BLOB_META)
        try:
            self._reader.pack_key(first)
        except IntegrityError as exc:  # missing pack, or its header is damaged: nothing of it is usable
            self._fail(group, exc, pack_damaged=True)
            return
        except DtstoreError as exc:
            self._fail(group, exc)
            return
        try:
            data = memoryview(self._reader.store.get_range(name, first.offset,
                                                           last.offset + last.length - first.offset))
        except BlobNotFound:
            self._fail(group, IntegrityError(f"pack {first.pack_id} is missing: it is in the index, "
                                             "but not in storage"), pack_damaged=True)
            return
        except DtstoreError:
            # a pack that is too short, or a storage failure: find out blob by blob
            for task in group:
                self._restore_blob(name, task)
            return
        for task in group:
            start = task.location.offset - first.offset
            self._decode_blob(task, data[start : start + task.location.length])

    def _restore_blob(self, name: str, task: BlobTask) -> None:
        location = task.location
        try:
            sealed = self._reader.store.get_range(name, location.offset, location.length)
        except DtstoreError as exc:
            past_end = blob_past_end(self._reader.store, name, location)
            if past_end is None:
                self._fail([task], exc)
            else:
                self._fail([task], IntegrityError(past_end), blob_damaged=True)
            return
        self._decode_blob(task, sealed)

    def _decode_blob(self, task: BlobTask, sealed: bytes | memoryview) -> None:
        try:
            plain = self._reader.open(task.chunk_id, task.location, sealed)
        except IntegrityError as exc:
            self._fail([task], exc, blob_damaged=True)
            return
        except DtstoreError as exc:
            self._fail([task], exc)
            return
        for number, offset in task.targets:
            self._writes.write(number, plain, offset)

    def _wrote(self, number: int, size: int) -> None:
        with self._lock:
            self._done += size
            self._unwritten[number] -= size
        self._emit()

    def _emit(self) -> None:
        self._progress(ProgressEvent("restore", self._done, self._plan.total_bytes))

    def _remove(self, numbers: Iterable[int]) -> None:
        for number in numbers:
            with contextlib.suppress(OSError):
                os.unlink(self._plan.files[number])

    def _remove_unfinished(self) -> None:
        with self._lock:
            unfinished = [n for n, left in enumerate(self._unwritten) if left or n in self._failed]
        self._remove(unfinished)

    def _finish_metadata(self) -> None:
        dirs: list[tuple[bytes, Item]] = []
        lost = {self._plan.files[n] for n in self._failed}
        for item in self._plan.items:
            path = os.path.join(self._target, item.path)
            if item.type == "symlink":
                if os.path.lexists(path):
                    os.unlink(path)
                os.symlink(item.target, path)
                _chown(path, item, follow=False)
                os.utime(path, ns=(item.mtime_ns, item.mtime_ns), follow_symlinks=False)
            elif item.type == "file":
                if path in lost:
                    continue
                _chown(path, item, follow=True)
                os.chmod(path, item.mode)
                os.utime(path, ns=(item.mtime_ns, item.mtime_ns))
            else:
                dirs.append((path, item))
        for path, item in sorted(dirs, key=lambda d: d[0].count(b"/"), reverse=True):
            _chown(path, item, follow=True)
            os.chmod(path, item.mode)
            os.utime(path, ns=(item.mtime_ns, item.mtime_ns))


def _make_dirs(target: bytes, relative: bytes) -> None:
    """mkdir -p below the target that never follows a symlink already there: it is replaced."""
    current = target
    for part in relative.split(b"/") if relative else []:
        current = os.path.join(current, part)
        if os.path.islink(current) or (os.path.lexists(current) and not os.path.isdir(current)):
            os.unlink(current)
        if not os.path.lexists(current):
            os.mkdir(current, 0o700)


NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})


def _replace_with_file(path: bytes, size: int) -> None:
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _reserve(fd, size)
    finally:
        os.close(fd)


def _reserve(fd: int, size: int) -> None:
    """Give an empty file its size, with its blocks allocated where the filesystem can (Linux
    ``fallocate``, as restic's restorer does): running out of room then shows before anything is
    fetched, and a file is laid out in few extents (restore speed did not change measurably here).
    Elsewhere, or on a filesystem that cannot (``EOPNOTSUPP``), the file is only extended and stays
    sparse until written.  ``posix_fallocate`` is not used: where the filesystem cannot, glibc
    writes a byte into every block."""
    fallocate = _fallocate()
    if size and fallocate is not None:
        if fallocate(fd, 0, 0, size) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code))
    os.ftruncate(fd, size)


@functools.cache
def _fallocate() -> Callable[[int, int, int, int], int] | None:
    """libc's ``fallocate(fd, mode, offset, length)`` on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        found = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError):
        return None
    found.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    found.restype = ctypes.c_int
    return found  # type: ignore[no-any-return]


def _free_bytes(path: bytes) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


WRITE_BUDGET = 8 << 20
"""decoded bytes that may wait for their file's writer: a worker that would exceed it waits"""
OPEN_FILES = 64
"""descriptors kept open between writes"""


class _Writes:
    """Writes decoded blobs into the target files so that no two threads write one file at once
    (they would contend on its inode lock, spinning in the kernel).  The worker that decoded a blob
    writes it itself while its data is still in its CPU's cache, unless another worker is writing
    that file: then the blob waits in that file's queue and the busy worker writes it too."""

    def __init__(self, paths: list[bytes], wrote: Callable[[int, int], None], lost: Callable[[int], bool]) -> None:
        self._paths = paths
        self._wrote = wrote
        self._lost = lost
        self._cond = threading.Condition()
        self._busy: dict[int, deque[tuple[bytes, int]]] = {}
        """file number → blobs waiting for the worker that is writing it"""
        self._waiting = 0
        self._fds: OrderedDict[int, int] = OrderedDict()

    def write(self, number: int, plain: bytes, offset: int) -> None:
        with self._cond:
            while number in self._busy:
                if not self._waiting or self._waiting + len(plain) <= WRITE_BUDGET:
                    self._busy[number].append((plain, offset))
                    self._waiting += len(plain)
                    return
                self._cond.wait()
            self._busy[number] = deque()
        try:
            with self._cond:
                fd = self._fd(number)
            while True:
                self._write(fd, number, plain, offset)
                with self._cond:
                    pending = self._busy[number]
                    if not pending:
                        del self._busy[number]
                        self._cond.notify_all()
                        return
                    plain, offset = pending.popleft()
                    self._waiting -= len(plain)
                    self._cond.notify_all()
        except BaseException:
            with self._cond:
                self._waiting -= sum(len(p) for p, _ in self._busy.pop(number, ()))
                self._cond.notify_all()
            raise

    def _fd(self, number: int) -> int:
        """The open descriptor of a file (under the lock); least recently used idle ones are closed."""
        fd = self._fds.get(number)
        if fd is not None:
            self._fds.move_to_end(number)
            return fd
        if len(self._fds) >= OPEN_FILES:
            for old in self._fds:
                if old not in self._busy:
                    os.close(self._fds.pop(old))
                    break
        fd = self._fds[number] = os.open(self._paths[number], os.O_WRONLY)
        return fd

    def _write(self, fd: int, number: int, plain: bytes, offset: int) -> None:
        if not self._lost(number):
            view = memoryview(plain)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
        self._wrote(number, len(plain))

    def close(self) -> None:
        with self._cond:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def _chown(path: bytes, item: Item, *, follow: bool) -> None:
    if os.geteuid() != 0:
        return
    with contextlib.suppress(OSError):
        os.chown(path, item.uid, item.gid, follow_symlinks=follow)
