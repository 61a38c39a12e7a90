"""Save (the single commit point), list, load and resolve snapshots."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import blake3

from dtstore.crypto.aead import Sealer
from dtstore.errors import BlobNotFound, SnapshotNotFound, UsageError
from dtstore.format import AAD_SNAPSHOT
from dtstore.snapshots.manifest import Snapshot, decode_manifest, encode_manifest
from dtstore.storage import layout
from dtstore.storage.base import BlobStore


class SnapshotStore:
    def __init__(self, store: BlobStore, sealer: Sealer) -> None:
        self._store = store
        self._sealer = sealer
        self._loaded: dict[str, Snapshot] = {}

    def save(self, snapshot: Snapshot) -> Snapshot:
        """Write the sealed manifest; its ID is the BLAKE3 hash of the sealed bytes."""
        sealed = self._sealer.seal(encode_manifest(snapshot), AAD_SNAPSHOT)
        snapshot.id = blake3.blake3(sealed).hexdigest()
        self._store.put(layout.snapshot_name(snapshot.id), sealed)
        self._loaded[snapshot.id] = snapshot
        return snapshot

    def ids(self) -> list[str]:
        return [layout.pack_id_of(info.name) for info in self._store.list(layout.SNAPSHOTS)]

    def load(self, snapshot_id: str) -> Snapshot:
        if snapshot_id not in self._loaded:
            try:
                sealed = self._store.get(layout.snapshot_name(snapshot_id))
            except BlobNotFound:
                raise SnapshotNotFound(f"snapshot {snapshot_id[:8]} does not exist") from None
            plain = self._sealer.open(sealed, AAD_SNAPSHOT, f"snapshot {snapshot_id[:8]}")
            self._loaded[snapshot_id] = decode_manifest(snapshot_id, plain)
        return self._loaded[snapshot_id]

    def load_all(self, ids: Iterable[str] | None = None) -> list[Snapshot]:
        wanted = list(self.ids() if ids is None else ids)
        with ThreadPoolExecutor(8) as pool:
            snapshots = list(pool.map(self.load, wanted))
        return sorted(snapshots, key=lambda s: (s.time, s.id))

    def delete(self, snapshot_id: str) -> None:
        self._store.delete(layout.snapshot_name(snapshot_id))
        self._loaded.pop(snapshot_id, None)

    def resolve(self, ref: str) -> Snapshot:
        """``latest``, a full ID or a unique prefix of one."""
        if not ref:
            raise UsageError("no snapshot given")
        ids = self.ids()
        if ref == "latest":
            if not ids:
                raise SnapshotNotFound("the repository has no snapshots yet")
            return self.load_all(ids)[-1]
        matches = [i for i in ids if i.startswith(ref.lower())]
        if not matches:
            raise SnapshotNotFound(f"no snapshot matches {ref!r}")
        if len(matches) > 1:
            raise UsageError(f"{ref!r} matches {len(matches)} snapshots; give more of the ID")
        return self.load(matches[0])
