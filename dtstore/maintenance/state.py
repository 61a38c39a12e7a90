"""Small sealed documents prune and check keep in ``maintenance/``: pack marks and verification times.

``maintenance/marks``: ``{"version": 1, "packs": {pack_id: mark time (ISO 8601 UTC)}}`` — packs a
prune found unreferenced.  Writers never deduplicate against a marked pack, so a later prune may
delete it once the grace period has passed and no writer that started before the mark is alive.

``maintenance/verified``: ``{"version": 1, "packs": {pack_id: time}}`` — when ``check --read-data``
last read each pack, so repeated subset checks cover the whole repository over time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import msgpack

from dtstore.crypto.aead import Sealer
from dtstore.errors import BlobNotFound
from dtstore.format import AAD_MAINTENANCE
from dtstore.storage import layout
from dtstore.storage.base import BlobStore

MARKS = f"{layout.MAINTENANCE}/marks"
VERIFIED = f"{layout.MAINTENANCE}/verified"
DEFAULT_GRACE = dt.timedelta(hours=24)
"""how long a pack stays marked before prune deletes it"""


@dataclass
class PackTimes:
    """pack ID → time; used for both marks and verification records."""

    packs: dict[str, dt.datetime] = field(default_factory=dict)


def load_times(store: BlobStore, sealer: Sealer, name: str) -> PackTimes:
    try:
        sealed = store.get(name)
    except BlobNotFound:
        return PackTimes()
    doc = msgpack.unpackb(sealer.open(sealed, AAD_MAINTENANCE + b"/" + name.encode(), name))
    return PackTimes({pid: dt.datetime.fromisoformat(t) for pid, t in doc["packs"].items()})


def save_times(store: BlobStore, sealer: Sealer, name: str, times: PackTimes) -> None:
    doc = {"version": 1, "packs": {pid: t.isoformat() for pid, t in sorted(times.packs.items())}}
    store.put(name, sealer.seal(msgpack.packb(doc), AAD_MAINTENANCE + b"/" + name.encode()))
