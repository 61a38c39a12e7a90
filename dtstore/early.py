"""What a command can start before the library loads: the KDF of a local repository's key slot.

Opening a repository reads its config and key slots through the storage layer, then derives the
key-encryption key (scrypt, ~0.3 s).  For a repository on a local path the first key slot can be
read with two system calls, so the KDF starts right at process start, while the storage and crypto
modules are still being imported; the opening then takes that derivation (``scrypt.derive``).
Imports only the standard library, the storage layout and ``crypto.scrypt``.
"""

from __future__ import annotations

import os

from dtstore.crypto import scrypt
from dtstore.storage import layout

MAX_SLOT_BYTES = 64 << 10
"""a key slot document is a few hundred bytes; anything larger is left to the real opening"""


def start_kdf(url: str, password: bytes) -> bool:
    """Start the KDF of the key slot a local repository's opening tries first (``unlock``: slots in
    name order).  True if one was started; a guess that turns out wrong only costs CPU."""
    if "://" in url:
        return False  # a remote store: reading its slot needs the storage layer anyway
    keys = os.path.join(os.path.expanduser(url), layout.KEYS)
    try:
        with os.scandir(keys) as entries:
            names = sorted(e.name for e in entries if e.is_file() and not e.name.startswith(".tmp-"))
        if not names:
            return False
        with open(os.path.join(keys, names[0]), "rb") as f:
            slot = f.read(MAX_SLOT_BYTES + 1)
    except OSError:
        return False
    return len(slot) <= MAX_SLOT_BYTES and scrypt.start_for_slot(password, slot)


def settle() -> None:
    """Wait for started derivations nothing took (before the interpreter exits), and forget them."""
    scrypt.settle()
