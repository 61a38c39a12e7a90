"""Converting a v1 repository to key roles (spec/repository-format.md §15.11).

Order, each step crash-safe and the whole idempotent (run it again after a crash):

1. put the new config (features ``chunk-keys`` + ``key-roles``, the chunk keys, the data public key),
   sealed under the shared key C.  From here on admins open both forms (the role sealer falls back
   to E), so the repository stays readable whatever happens next;
2. every index segment and damage record still sealed under E: put a copy sealed under C under a
   new random name, then delete the old one;
3. ``maintenance/marks`` and ``maintenance/verified``: rewritten under C.

Packs and manifests are not touched: they stay readable by admin keys only, which is what a backup
key must not read anyway.  Sessions and locks are transient (the caller holds the exclusive lock).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from dtstore.crypto.aead import Sealer
from dtstore.errors import BlobNotFound, IntegrityError
from dtstore.format import AAD_DAMAGED, AAD_INDEX, AAD_MAINTENANCE
from dtstore.maintenance.state import MARKS, VERIFIED
from dtstore.storage import layout
from dtstore.storage.base import BlobStore


def convert_to_key_roles(store: BlobStore, old: Sealer, new: Sealer, config: bytes,
                         progress: Callable[[str], None]) -> int:
    """Returns the number of objects sealed again."""
    store.put(layout.CONFIG, config)
    count = 0
    for prefix, label, rename in ((layout.INDEX, AAD_INDEX, layout.index_name),
                                  (layout.DAMAGED, AAD_DAMAGED, layout.damage_name)):
        for info in list(store.list(prefix)):
            try:
                sealed = store.get(info.name)
            except BlobNotFound:
                continue
            if _opens(new, sealed, label):
                continue
            plain = old.open(sealed, label, info.name)
            store.put(rename(os.urandom(16).hex()), new.seal(plain, label))
            store.delete(info.name)
            count += 1
    for name in (MARKS, VERIFIED):
        label = AAD_MAINTENANCE + b"/" + name.encode()
        try:
            sealed = store.get(name)
        except BlobNotFound:
            continue
        if not _opens(new, sealed, label):
            store.put(name, new.seal(old.open(sealed, label, name), label))
            count += 1
    progress(f"{count} object(s) sealed under the shared key")
    return count


def _opens(sealer: Sealer, sealed: bytes, label: bytes) -> bool:
    """Under C already?  (``Sealer.open`` of the base class: no fallback to E.)"""
    try:
        Sealer.open(sealer, sealed, label, "object")
    except IntegrityError:
        return False
    return True
