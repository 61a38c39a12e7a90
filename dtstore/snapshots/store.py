"""Save (the single commit point), list, load and resolve snapshots.

Manifests are immutable and named by the BLAKE3 hash of their sealed bytes, so a local copy can never
be stale: ``local`` (a folder in the host's cache) keeps the sealed manifests already read, and a run
downloads only the ones it has not seen.  A nightly full plus a log snapshot every 15 minutes is ~35k
manifests a year; without the copy, every snapshot would fetch them all to find its parent.  A local
copy is used only if it still hashes to its name; copies of snapshots gone from the listing are
deleted when the whole list is loaded.

A backup key (feature key-roles) cannot open manifests: they are sealed to the repository's data
public key.  So the manifests a backup host writes are also kept in its cache as ``own/<id>``, sealed
under the shared key, and that host's listing is exactly those of its own snapshots that are still
listed remotely (its parents and log chains).  Without the cache, it sees no snapshot: its next run
is a full.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import blake3

from dtstore.crypto.aead import Sealer
from dtstore.errors import (
    AdminKeyRequired,
    BlobNotFound,
    DtstoreError,
    IntegrityError,
    SnapshotNotFound,
    UnsupportedFormat,
    UsageError,
)
from dtstore.format import AAD_OWN_SNAPSHOT, AAD_SNAPSHOT
from dtstore.snapshots.manifest import Snapshot, decode_manifest, encode_manifest
from dtstore.storage import layout
from dtstore.storage.base import BlobStore

OWN = "own"


class SnapshotStore:
    def __init__(self, store: BlobStore, sealer: Sealer, local: BlobStore | None = None, *,
                 backup_role: bool = False) -> None:
        self._store = store
        self._sealer = sealer
        self._local = local
        self._backup_role = backup_role
        """opened with a backup key: only the snapshots of this host's cache (``own/``) can be read"""
        self._loaded: dict[str, Snapshot] = {}
        self.unreadable: dict[str, str] = {}
        """snapshot ID → why its manifest could not be read (filled by ``load_all``)"""

    def save(self, snapshot: Snapshot) -> Snapshot:
        """Write the sealed manifest; its ID is the BLAKE3 hash of the sealed bytes."""
        plain = encode_manifest(snapshot)
        sealed = self._sealer.seal(plain, AAD_SNAPSHOT)
        snapshot.id = blake3.blake3(sealed).hexdigest()
        self._store.put(layout.snapshot_name(snapshot.id), sealed)
        self._keep_local(snapshot.id, sealed)
        if self._backup_role and self._local is not None:
            with contextlib.suppress(DtstoreError):
                self._local.put(f"{OWN}/{snapshot.id}", self._sealer.seal(plain, AAD_OWN_SNAPSHOT))
        self._loaded[snapshot.id] = snapshot
        return snapshot

    def ids(self) -> list[str]:
        return [layout.pack_id_of(info.name) for info in self._store.list(layout.SNAPSHOTS)]

    def load(self, snapshot_id: str) -> Snapshot:
        if snapshot_id not in self._loaded and self._backup_role:
            own = self._own_copy(snapshot_id)
            if own is None:
                raise AdminKeyRequired(f"reading snapshot {snapshot_id[:8]} needs an admin key: a backup key "
                                       "reads only the snapshots this host wrote (from its cache)")
            self._loaded[snapshot_id] = decode_manifest(snapshot_id, own)
        if snapshot_id not in self._loaded:
            sealed = self._local_copy(snapshot_id)
            if sealed is None:
                try:
                    sealed = self._store.get(layout.snapshot_name(snapshot_id))
                except BlobNotFound:
                    raise SnapshotNotFound(f"snapshot {snapshot_id[:8]} does not exist") from None
                self._keep_local(snapshot_id, sealed)
            plain = self._sealer.open(sealed, AAD_SNAPSHOT, f"snapshot {snapshot_id[:8]}")
            self._loaded[snapshot_id] = decode_manifest(snapshot_id, plain)
        return self._loaded[snapshot_id]

    def load_all(self, ids: Iterable[str] | None = None) -> list[Snapshot]:
        """The given snapshots, or every listed one; one forgotten between the listing and its
        download (a concurrent ``forget``) is left out rather than failing the whole call."""
        listed = ids is None
        if listed:
            self.unreadable.clear()
        wanted = list(self.ids() if ids is None else ids)
        readable = wanted
        if self._backup_role:
            mine = self._own_ids()
            readable = [i for i in wanted if i in mine]

        def load(snapshot_id: str) -> Snapshot | None:
            try:
                return self.load(snapshot_id)
            except SnapshotNotFound:
                if listed:
                    return None
                raise
            except (IntegrityError, UnsupportedFormat, ValueError, KeyError, TypeError) as exc:
                # one damaged manifest must not hide every other snapshot; check reports it
                self.unreadable[snapshot_id] = str(exc)
                return None

        # Reads from a local folder or the host's cache take microseconds, and threads would only
        # contend for the interpreter (8 threads on 2 cores: ~5x slower for 1,000 manifests); so
        # only downloads from a remote store run in parallel.
        far = [i for i in readable if not self._near(i)] if self._remote() else []
        downloads = set(far)
        found = {i: load(i) for i in readable if i not in downloads}
        if far:
            with ThreadPoolExecutor(min(8, len(far))) as pool:
                found.update(zip(far, pool.map(load, far), strict=True))
        snapshots = [s for s in found.values() if s is not None]
        if listed:
            self._forget_local_except(set(wanted))
        return sorted(snapshots, key=lambda s: (s.time, s.id))

    def _remote(self) -> bool:
        capabilities = getattr(self._store, "capabilities", None)
        return capabilities is not None and not capabilities.local

    def _near(self, snapshot_id: str) -> bool:
        """``load`` reads no remote object for it: loaded already, a backup key's own copy, or a
        local copy exists (one that does not verify is fetched again, in this thread)."""
        if snapshot_id in self._loaded or self._backup_role:
            return True
        if self._local is None:
            return False
        try:
            return self._local.exists(layout.snapshot_name(snapshot_id))
        except DtstoreError:
            return False

    def delete(self, snapshot_id: str) -> None:
        self._store.delete(layout.snapshot_name(snapshot_id))
        self._drop_local(snapshot_id)
        self._loaded.pop(snapshot_id, None)

    # the local copies: a cache, so any failure there only means "fetch it again" ------------------
    def _local_copy(self, snapshot_id: str) -> bytes | None:
        if self._local is None:
            return None
        try:
            sealed = self._local.get(layout.snapshot_name(snapshot_id))
        except DtstoreError:
            return None
        return sealed if blake3.blake3(sealed).hexdigest() == snapshot_id else None

    def _keep_local(self, snapshot_id: str, sealed: bytes) -> None:
        if self._local is not None and blake3.blake3(sealed).hexdigest() == snapshot_id:
            with contextlib.suppress(DtstoreError):
                self._local.put(layout.snapshot_name(snapshot_id), sealed)

    def _drop_local(self, snapshot_id: str) -> None:
        if self._local is not None:
            with contextlib.suppress(DtstoreError):
                self._local.delete(layout.snapshot_name(snapshot_id))
            if self._backup_role:
                with contextlib.suppress(DtstoreError):
                    self._local.delete(f"{OWN}/{snapshot_id}")

    def _own_ids(self) -> set[str]:
        if self._local is None:
            return set()
        try:
            return {layout.pack_id_of(info.name) for info in self._local.list(OWN)}
        except DtstoreError:
            return set()

    def _own_copy(self, snapshot_id: str) -> bytes | None:
        """The plaintext of a manifest this host wrote with a backup key, from its cache."""
        if self._local is None:
            return None
        try:
            return self._sealer.open(self._local.get(f"{OWN}/{snapshot_id}"), AAD_OWN_SNAPSHOT,
                                     f"the cached copy of snapshot {snapshot_id[:8]}")
        except DtstoreError:
            return None

    def _forget_local_except(self, listed: set[str]) -> None:
        if self._local is None:
            return
        with contextlib.suppress(DtstoreError):
            for info in list(self._local.list(layout.SNAPSHOTS)):
                snapshot_id = layout.pack_id_of(info.name)
                if snapshot_id not in listed:
                    self._drop_local(snapshot_id)

    def resolve(self, ref: str) -> Snapshot:
        """``latest``, a full ID or a unique prefix of one."""
        return self.load(self.resolve_id(ref))

    def resolve_id(self, ref: str, ids: list[str] | None = None) -> str:
        """Like ``resolve`` without reading the manifest (so a damaged one can still be forgotten);
        pass ``ids`` (one listing) when resolving many references."""
        if not ref:
            raise UsageError("no snapshot given")
        ids = self.ids() if ids is None else ids
        if ref == "latest":
            snapshots = self.load_all()
            if not snapshots:
                raise SnapshotNotFound("the repository has no snapshots yet")
            return snapshots[-1].id
        return _unique(ref, [i for i in ids if i.startswith(ref.lower())])

    def resolve_ids(self, refs: Sequence[str]) -> list[str]:
        """``resolve_id`` of each reference, with one listing; a prefix is looked up in the sorted
        listing (forget of 500 IDs among 1,000 snapshots: 500,000 comparisons otherwise)."""
        ids = self.ids()
        ordered = sorted(ids)
        resolved = []
        for ref in refs:
            if not ref or ref == "latest":
                resolved.append(self.resolve_id(ref, ids))
                continue
            prefix = ref.lower()
            start = end = bisect.bisect_left(ordered, prefix)
            while end < len(ordered) and ordered[end].startswith(prefix):
                end += 1
            resolved.append(_unique(ref, ordered[start:end]))
        return resolved


def _unique(ref: str, matches: list[str]) -> str:
    """The one snapshot ID that ``ref`` names, given the IDs that start with it."""
    if not matches:
        raise SnapshotNotFound(f"no snapshot matches {ref!r}")
    if len(matches) > 1:
        raise UsageError(f"{ref!r} matches {len(matches)} snapshots; give more of the ID")
    return matches[0]
