"""check: every rule of spec/repository-format.md that can be verified, and optionally the data.

Structure: manifests decode; every chunk a snapshot refers to is in the index; every index entry
lies inside an existing pack; every pack's own trailer agrees with the index.  ``read_data`` also
downloads packs, checks each pack's BLAKE3 name, and decrypts and hashes every blob.  A subset
run reads the packs verified longest ago first and records what it read in ``maintenance/verified``,
so repeated subset runs cover the whole repository.

Damage it finds (a blob that fails [B1], a blob past the end of its pack, a missing pack, a pack
whose header is unreadable) is added to the damage records, so the next backup stores that content
afresh.  A damaged pack all of whose lost chunks have a good copy elsewhere (self-healed) is not a
problem: it is reported as ``healed``, and prune removes it once nothing uses it.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

from dtstore import clock
from dtstore.content.damage import DamageSet, write_damage
from dtstore.content.pack import (
    HEADER_SIZE,
    HEADER_V2_SIZE,
    TRAILER_LENGTH_SIZE,
    open_blob,
    pack_id_of,
    pack_key,
    parse_pack,
    read_trailer,
    trailer_key,
    trailer_length,
)
from dtstore.content.segments import PackRecord, read_pack_record
from dtstore.crypto.aead import Sealer, SubKey
from dtstore.errors import BlobNotFound, DtstoreError, IntegrityError, UsageError
from dtstore.format import BLOB_META
from dtstore.maintenance.scan import MaintenanceContext, PackStat, RepositoryScan, chosen_pack, scan_repository
from dtstore.maintenance.state import VERIFIED, load_times, save_times
from dtstore.storage import layout
from dtstore.storage.base import BlobStore


@dataclass
class Problem:
    kind: str
    where: str
    message: str
    snapshots: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "object": self.where, "message": self.message,
                "snapshots": self.snapshots, "paths": self.paths}


@dataclass
class CheckReport:
    problems: list[Problem] = field(default_factory=list)
    snapshots: int = 0
    packs: int = 0
    packs_read: int = 0
    bytes_read: int = 0
    unindexed_packs: int = 0
    """packs no segment lists: a backup running now, or one that was interrupted (the next backup
    adopts them, prune removes them): not a problem"""
    healed: list[Problem] = field(default_factory=list)
    """damaged packs whose every lost chunk has a good copy in another pack: not a problem"""
    damage_found: DamageSet = field(default_factory=DamageSet)
    """bad copies this run found (the new ones are added to the damage records)"""

    @property
    def ok(self) -> bool:
        return not self.problems


def parse_subset(text: str, total_bytes: int) -> tuple[str, float, int]:
    """``N%``, ``N/M`` or a size like ``500M``/``2G`` → (mode, value, groups)."""
    if m := re.fullmatch(r"(\d+(?:\.\d+)?)%", text):
        pct = float(m.group(1))
        if not 0 < pct <= 100:
            raise UsageError("--read-data-subset percentage must be in (0, 100]")
        return "bytes", total_bytes * pct / 100, 0
    if m := re.fullmatch(r"(\d+)/(\d+)", text):
        n, t = int(m.group(1)), int(m.group(2))
        if not 1 <= n <= t:
            raise UsageError("--read-data-subset N/M needs 1 <= N <= M")
        return "group", float(n - 1), t
    if m := re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)i?B?", text, re.IGNORECASE):
        factor = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
        return "bytes", float(m.group(1)) * factor, 0
    raise UsageError(f"--read-data-subset {text!r}: use N%, N/M or a size such as 500M")


def choose_packs(packs: list[PackStat], subset: str | None, verified: dict[str, dt.datetime]) -> list[PackStat]:
    """Pure: which packs a --read-data(-subset) run reads."""
    if subset is None:
        return packs
    mode, value, groups = parse_subset(subset, sum(p.size for p in packs))
    if mode == "group":
        return [p for p in packs if int(p.pack_id[:8], 16) % groups == int(value)]
    oldest_first = sorted(packs, key=lambda p: (verified.get(p.pack_id, dt.datetime.min.replace(tzinfo=dt.UTC)),
                                                 p.pack_id))
    chosen, size = [], 0
    for pack in oldest_first:
        if size >= value:
            break
        chosen.append(pack)
        size += pack.size
    return chosen


class CheckRun:
    def __init__(self, ctx: MaintenanceContext, progress: Callable[[str], None], workers: int = 4) -> None:
        self._ctx = ctx
        self._progress = progress
        self._workers = workers

    def run(self, *, read_data: bool, subset: str | None) -> CheckReport:
        report = CheckReport()
        scan = scan_repository(self._ctx, clock.now(), progress=self._progress)
        try:
            report.snapshots = len(scan.snapshots)
            report.packs = len(scan.packs)
            self._check_references(scan, report)
            self._check_packs(scan, report)
            if read_data or subset:
                self._read_data(scan, report, subset)
            self._check_recorded_damage(scan, report)
            new = report.damage_found.minus(scan.damage)
            if new:
                write_damage(self._ctx.store, self._ctx.sealer, new, host=self._ctx.host, found_by="check")
        finally:
            scan.close()
        return report

    def _check_references(self, scan: RepositoryScan, report: CheckReport) -> None:
        for snap_id, why in sorted(self._ctx.snapshots.unreadable.items()):
            report.problems.append(Problem("bad-manifest", f"snapshots/{snap_id}", why, [snap_id], []))
        for snap_id, paths in scan.missing.items():
            report.problems.append(Problem("missing-data", f"snapshots/{snap_id}",
                                           f"snapshot {snap_id[:8]} refers to data that is in no index",
                                           [snap_id], sorted(set(paths))))

    def _check_packs(self, scan: RepositoryScan, report: CheckReport) -> None:
        self._progress("checking pack trailers")
        indexed = [s for s in scan.packs.values() if s.indexed]
        for stat in indexed:
            if stat.listed_size is None:
                report.damage_found.packs.add(stat.pack_id)
                self._pack_problem(scan, report, stat, "missing-pack", "is listed in the index but does not exist")
            elif stat.index_end > stat.listed_size:
                size = stat.listed_size
                cut_off = {c for c, offset, length, _ in scan.blobs_of(stat.pack_id) if offset + length > size}
                report.damage_found.blobs.update((stat.pack_id, c) for c in cut_off)
                self._pack_problem(scan, report, stat, "truncated-pack",
                                   f"is {stat.listed_size} bytes, the index needs {stat.index_end}", cut_off)
        present = [s for s in indexed if s.listed_size is not None and s.index_end <= s.listed_size]

        def trailer(stat: PackStat) -> tuple[PackStat, str | None, set[bytes] | None]:
            name = layout.pack_name(stat.pack_id, stat.kind == BLOB_META)
            try:
                record = read_trailer_of(self._ctx.store, self._ctx.sealer, name, stat.size, stat.index_end)
            except DtstoreError as exc:
                # the index may still locate every blob: read them to name only what is lost
                return stat, f"trailer unreadable: {exc}", self._lost_blobs(scan, stat)
            in_index, in_pack = set(scan.entries_of(stat.pack_id)), set(record.entries)
            if not in_index <= in_pack:
                return stat, f"trailer disagrees with the index ({len(in_index - in_pack)} entries differ)", None
            return stat, None, None

        # on a local store a read costs microseconds: one by one (threads only contend for the
        # interpreter there); else the store's connections in parallel
        local = getattr(getattr(self._ctx.store, "capabilities", None), "local", False)
        with ExitStack() as stack:
            results: Iterator[tuple[PackStat, str | None, set[bytes] | None]] = map(trailer, present)
            if not local:
                results = stack.enter_context(ThreadPoolExecutor(self._workers)).map(trailer, present)
            for stat, error, lost in results:
                if error:
                    self._pack_problem(scan, report, stat, "bad-pack", error, lost)
                if lost is not None:
                    report.damage_found.blobs.update((stat.pack_id, c) for c in lost)
        report.unindexed_packs = sum(1 for stat in scan.packs.values() if not stat.indexed)

    def _lost_blobs(self, scan: RepositoryScan, stat: PackStat) -> set[bytes] | None:
        """The indexed chunks of one pack that do not decrypt and hash; None: the pack is unreadable."""
        ctx = self._ctx
        try:
            data = ctx.store.get(layout.pack_name(stat.pack_id, stat.kind == BLOB_META))
            key = pack_key(ctx.sealer, data, stat.pack_id)
        except DtstoreError:
            # not recorded here: the trailer check saw the pack exist; --read-data tells damage apart
            return None
        return _open_blobs(ctx, scan, stat, data, key)[0]

    def _read_data(self, scan: RepositoryScan, report: CheckReport, subset: str | None) -> None:
        ctx = self._ctx
        verified = load_times(ctx.store, ctx.sealer, VERIFIED)
        candidates = [s for s in scan.packs.values() if s.indexed and s.listed_size is not None]
        chosen = choose_packs(sorted(candidates, key=lambda s: s.pack_id), subset, verified.packs)
        self._progress(f"reading {len(chosen)} pack(s)")

        lock = threading.Lock()

        def read(stat: PackStat) -> tuple[PackStat, int, str | None, set[bytes] | None]:
            """(stat, bytes read, what is wrong, the chunks that are lost — None: all of them)."""
            name = layout.pack_name(stat.pack_id, stat.kind == BLOB_META)
            try:
                data = ctx.store.get(name)
                key = pack_key(ctx.sealer, data, stat.pack_id)
            except (BlobNotFound, IntegrityError) as exc:  # gone, or its header is damaged: all of it
                with lock:
                    report.damage_found.packs.add(stat.pack_id)
                return stat, 0, str(exc), None
            except DtstoreError as exc:  # storage trouble is not damage: not recorded
                return stat, 0, str(exc), None
            errors = []
            if pack_id_of(data) != stat.pack_id:
                errors.append("content does not match its name (BLAKE3)")
            # every blob on its own, so that the report names only what is really lost
            lost, first = _open_blobs(ctx, scan, stat, data, key)
            if lost:
                errors.append(f"{len(lost)} blob(s) unreadable ({first})")
                with lock:
                    report.damage_found.blobs.update((stat.pack_id, c) for c in lost)
            try:
                parse_pack(ctx.sealer, data, stat.pack_id)
            except DtstoreError as exc:
                errors.append(f"trailer: {exc}")
            return stat, len(data), "; ".join(errors) or None, lost

        now = clock.now()
        with ThreadPoolExecutor(self._workers) as pool:
            for stat, nbytes, error, lost in pool.map(read, chosen):
                report.packs_read += 1
                report.bytes_read += nbytes
                if error:
                    self._pack_problem(scan, report, stat, "corrupt-pack", error, lost)
                else:
                    verified.packs[stat.pack_id] = now
        for pack_id in list(verified.packs):
            if pack_id not in scan.packs:
                del verified.packs[pack_id]
        save_times(ctx.store, ctx.sealer, VERIFIED, verified)

    def _check_recorded_damage(self, scan: RepositoryScan, report: CheckReport) -> None:
        """Damage an earlier check, restore or read recorded, in packs this run did not report:
        a problem while some named copy is still the only one (``damaged-data``), else healed."""
        reported = {p.where for p in report.problems} | {p.where for p in report.healed}
        for pack_id in sorted(scan.damage.pack_ids()):
            stat = scan.packs.get(pack_id)
            if stat is None or not stat.indexed or f"pack {pack_id}" in reported:
                continue
            named = None if pack_id in scan.damage.packs else {c for p, c in scan.damage.blobs if p == pack_id}
            chunks = {c for c, _, _, _ in scan.blobs_of(pack_id) if named is None or c in named}
            if not chunks:
                continue  # the index no longer lists those copies here
            self._pack_problem(scan, report, stat, "damaged-data",
                               f"holds {len(chunks)} chunk(s) recorded as damaged (damaged/)", chunks)

    def _pack_problem(self, scan: RepositoryScan, report: CheckReport, stat: PackStat, kind: str,
                      message: str, lost: set[bytes] | None = None) -> None:
        if healed(scan, stat.pack_id, lost):
            report.healed.append(Problem(
                kind, f"pack {stat.pack_id}",
                f"pack {stat.pack_id[:16]} {message}; every chunk it lost has a good copy in another "
                "pack, and prune removes it once nothing uses it"))
            return
        snapshots, paths = affected(self._ctx, scan, stat.pack_id, lost)
        report.problems.append(Problem(kind, f"pack {stat.pack_id}", f"pack {stat.pack_id[:16]} {message}",
                                       snapshots, paths))


WHOLE_PACK_BELOW = 256 << 10
"""a pack smaller than this is read whole for its trailer (one read instead of two)"""


def read_trailer_of(store: BlobStore, sealer: Sealer, name: str, size: int, index_end: int) -> PackRecord:
    """A pack's entries from its own trailer, as ``read_pack_record`` reads them, in fewer reads: a
    small pack (under ``WHOLE_PACK_BELOW``) in one; a larger one in two, the header and everything
    from the end of the last indexed blob, where [P2] puts the trailer and its length (a third read
    when the trailer starts before that: the index misses the pack's last blobs)."""
    pack_id = layout.pack_id_of(name)
    if size < HEADER_SIZE + TRAILER_LENGTH_SIZE:
        raise IntegrityError(f"pack {pack_id} is truncated ({size} bytes)")
    if size < WHOLE_PACK_BELOW:
        data = store.get(name)
        kind, entries = parse_pack(sealer, data, pack_id)
        return PackRecord(pack_id, kind, len(data), entries)
    if not HEADER_SIZE <= index_end <= size - TRAILER_LENGTH_SIZE:
        return read_pack_record(store, sealer, name, size)
    header = store.get_range(name, 0, min(HEADER_V2_SIZE, size))
    key = trailer_key(sealer, header, pack_id)
    tail = store.get_range(name, index_end, size - index_end)
    length = trailer_length(tail, pack_id, size)
    start = size - TRAILER_LENGTH_SIZE - length
    sealed = tail[start - index_end : -TRAILER_LENGTH_SIZE] if start >= index_end \
        else store.get_range(name, start, length)
    kind, entries = read_trailer(key, sealed, pack_id)
    return PackRecord(pack_id, kind, size, entries)


def healed(scan: RepositoryScan, pack_id: str, lost: set[bytes] | None) -> bool:
    """Pure over the scan: the pack's damage costs nothing any more.  Its lost chunks (all of them
    when ``lost`` is None or the damage set names the whole pack) each have their counted copy in
    another pack — the scan prefers copies the damage set does not name, in packs that exist."""
    whole = lost is None or pack_id in scan.damage.packs
    chunks = {c for c, _, _, _ in scan.blobs_of(pack_id) if whole or (lost is not None and c in lost)}
    if not chunks:
        return False
    pid = bytes.fromhex(pack_id)
    with scan.scratch.env.begin(db=scan.scratch.chosen) as txn:
        return all(chosen_pack(txn, c) not in (None, pid) for c in chunks)


def _open_blobs(ctx: MaintenanceContext, scan: RepositoryScan, stat: PackStat, data: bytes,
                key: SubKey) -> tuple[set[bytes], str]:
    """Decrypt and hash every indexed blob of one pack: (chunks that fail, the first error)."""
    lost: set[bytes] = set()
    first = ""
    for chunk_id, offset, length, raw in scan.blobs_of(stat.pack_id):
        try:
            open_blob(key, memoryview(data)[offset : offset + length], chunk_id, raw, stat.pack_id, ctx.hasher)
        except DtstoreError as exc:
            lost.add(chunk_id)
            first = first or str(exc)
    return lost, first


def affected(ctx: MaintenanceContext, scan: RepositoryScan, pack_id: str,
             lost: set[bytes] | None = None) -> tuple[list[str], list[str]]:
    """Snapshots and paths that need a chunk stored only in this pack (of ``lost``: the chunks of
    this pack that are damaged; all of them when None)."""
    chunks = {c for c, _, _, _ in scan.blobs_of(pack_id) if lost is None or c in lost}
    with scan.scratch.env.begin(db=scan.scratch.chosen) as txn:
        only_here = {c for c in chunks if chosen_pack(txn, c) == bytes.fromhex(pack_id)}
    snapshots: list[str] = []
    paths: set[str] = set()
    for snap in scan.snapshots:
        hit = False
        if only_here.intersection(snap.items_chunks):
            hit = True
            paths.add("(item list)")
        else:
            try:
                for item in ctx.list_items(snap):
                    if only_here.intersection(item.chunks):
                        hit = True
                        paths.add("/" + item.name)
            except DtstoreError:
                hit = True
                paths.add("(item list unreadable)")
        if hit:
            snapshots.append(snap.id)
    return snapshots, sorted(paths)
