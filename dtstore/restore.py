"""Restore: plan which byte ranges of which packs go where, then fetch each pack's ranges once.

Every chunk is decrypted and checked against its keyed hash before a byte of it is written.  If any
chunk fails, the files it belongs to are removed and the error names the pack and the paths.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dtstore.content.pack import BlobLocation
from dtstore.content.store import ContentReader
from dtstore.errors import DtstoreError, IntegrityError, UsageError
from dtstore.format import BLOB_META
from dtstore.progress import ProgressCallback, ProgressEvent
from dtstore.snapshots.manifest import Item
from dtstore.storage import layout

MAX_RANGE = 8 << 20
MAX_GAP = 256 << 10


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
    packs: dict[str, list[BlobTask]]
    total_bytes: int

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
    tasks: dict[bytes, BlobTask] = {}
    wanted = {c for item in chosen if item.type == "file" for c in item.chunks}
    locations = reader.locate_many(wanted)
    total = 0
    for item in chosen:
        if item.type != "file":
            continue
        number = len(files)
        files.append(os.path.join(target, item.path))
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
    return RestorePlan(chosen, files, dict(packs), total)


class RestoreRun:
    def __init__(self, plan: RestorePlan, target: bytes, reader: ContentReader, workers: int,
                 progress: ProgressCallback) -> None:
        self._plan = plan
        self._target = target
        self._reader = reader
        self._workers = workers
        self._progress = progress
        self._lock = threading.Lock()
        self._done = 0
        self._failed_files: set[int] = set()

    def run(self) -> None:
        self._prepare_tree()
        errors: list[DtstoreError] = []
        with ThreadPoolExecutor(self._workers, thread_name_prefix="dtstore-restore") as pool:
            for error in pool.map(self._restore_pack, sorted(self._plan.packs)):
                if error is not None:
                    errors.append(error)
        if errors:
            self._remove_failed()
            names = [self._plan.files[n].decode("utf-8", "surrogateescape") for n in sorted(self._failed_files)]
            shown = ", ".join(names[:5]) + (" …" if len(names) > 5 else "")
            raise type(errors[0])(f"{errors[0]} — not restored: {shown}") from errors[0]
        self._finish_metadata()
        self._emit()

    def _prepare_tree(self) -> None:
        os.makedirs(self._target, exist_ok=True)
        number = 0
        for item in self._plan.items:
            path = os.path.join(self._target, item.path)
            _make_dirs(self._target, os.path.dirname(item.path))
            if item.type == "dir":
                _make_dirs(self._target, item.path)
            elif item.type == "file":
                _replace_with_file(path, item.size)
                number += 1

    def _restore_pack(self, pack_id: str) -> DtstoreError | None:
        groups = self._plan.ranges(pack_id)
        for index, group in enumerate(groups):
            try:
                self._restore_range(group)
            except DtstoreError as exc:
                # This group and every later one of the pack stay unwritten: their files are wrong.
                with self._lock:
                    for pending in groups[index:]:
                        for task in pending:
                            self._failed_files.update(n for n, _ in task.targets)
                return exc
        return None

    def _restore_range(self, group: list[BlobTask]) -> None:
        first = group[0].location
        last = group[-1].location
        name = layout.pack_name(first.pack_id, first.kind == BLOB_META)
        data = memoryview(self._reader.store.get_range(name, first.offset,
                                                       last.offset + last.length - first.offset))
        with _Files(self._plan.files) as files:
            for task in group:
                start = task.location.offset - first.offset
                plain = self._reader.open(task.chunk_id, task.location, data[start : start + task.location.length])
                for number, offset in task.targets:
                    files.pwrite(number, plain, offset)
                with self._lock:
                    self._done += len(plain) * len(task.targets)
                self._emit()

    def _emit(self) -> None:
        self._progress(ProgressEvent("restore", self._done, self._plan.total_bytes))

    def _remove_failed(self) -> None:
        for number in self._failed_files:
            with contextlib.suppress(OSError):
                os.unlink(self._plan.files[number])

    def _finish_metadata(self) -> None:
        dirs: list[tuple[bytes, Item]] = []
        for item in self._plan.items:
            path = os.path.join(self._target, item.path)
            if item.type == "symlink":
                if os.path.lexists(path):
                    os.unlink(path)
                os.symlink(item.target, path)
                _chown(path, item, follow=False)
                os.utime(path, ns=(item.mtime_ns, item.mtime_ns), follow_symlinks=False)
            elif item.type == "file":
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


def _replace_with_file(path: bytes, size: int) -> None:
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


class _Files:
    """Descriptors of the files one range read writes into, each opened once."""

    def __init__(self, paths: list[bytes]) -> None:
        self._paths = paths
        self._fds: dict[int, int] = {}

    def __enter__(self) -> _Files:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)

    def pwrite(self, number: int, data: bytes, offset: int) -> None:
        fd = self._fds.get(number)
        if fd is None:
            fd = self._fds[number] = os.open(self._paths[number], os.O_WRONLY)
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written


def _chown(path: bytes, item: Item, *, follow: bool) -> None:
    if os.geteuid() != 0:
        return
    with contextlib.suppress(OSError):
        os.chown(path, item.uid, item.gid, follow_symlinks=follow)
