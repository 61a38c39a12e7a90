"""scrypt, and derivations started before anyone asks for them.

The password KDF is the longest step of opening a repository (~0.3 s by design), and it can start
as soon as the key slot's salt and cost are known: ``start`` runs one on a thread, and ``derive``
with the same inputs waits for that one instead of starting again.  The CLI starts it for a local
repository right at process start, before the storage and crypto layers are imported (~70 ms
earlier than they could).  So this module imports only the standard library.

The KDF itself is OpenSSL's, through ``hashlib`` (the same bytes and speed as ``cryptography``'s);
costs beyond what ``hashlib`` allows (about N = 2^20 at r = 8) go to ``cryptography``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading

KEK_SIZE = 32
_HASHLIB_MAXMEM = 2**31 - 1
"""hashlib.scrypt refuses a larger ``maxmem``"""
_SLACK = 1 << 20

Inputs = tuple[bytes, bytes, int, int, int]
"""password, salt, n, r, p"""


def derive(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    """scrypt(password, salt, n, r, p), 32 bytes; a derivation ``start``-ed with the same inputs is
    taken (and waited for) instead of running a second one."""
    ahead = _take((password, salt, n, r, p))
    if ahead is not None:
        return ahead.result()
    return _scrypt(password, salt, n, r, p)


def start(password: bytes, salt: bytes, n: int, r: int, p: int) -> None:
    """Run ``derive(password, salt, n, r, p)`` on a thread, for a later ``derive`` to take."""
    inputs = (password, salt, n, r, p)
    with _lock:
        if inputs in _started:
            return
        _started[inputs] = ahead = _Ahead(inputs)
    ahead.thread.start()


def start_for_slot(password: bytes, slot: bytes) -> bool:
    """``start`` the derivation a key slot document (spec §4.2) asks for; False (and nothing started)
    if the document is not one this can read.  Unwrapping checks the document fully later."""
    try:
        kdf = json.loads(slot)["kdf"]
        if kdf["name"] != "scrypt":
            return False
        salt, n, r, p = base64.b64decode(kdf["salt"], validate=True), int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
    except (ValueError, KeyError, TypeError):
        return False
    if not (1 < n <= 1 << 24 and n & (n - 1) == 0 and 0 < r <= 64 and 0 < p <= 16):
        return False  # not a cost dtstore writes: leave it to the real opening, which reports it
    start(password, salt, n, r, p)
    return True


def settle() -> None:
    """Wait for the derivations no one took, and forget them (their thread must not outlive the
    interpreter: it would be stopped inside OpenSSL)."""
    with _lock:
        left = list(_started.values())
        _started.clear()
    for ahead in left:
        ahead.thread.join()


class _Ahead:
    def __init__(self, inputs: Inputs) -> None:
        self._inputs: Inputs | None = inputs
        self._kek: bytes | None = None
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="dtstore-kdf", daemon=True)

    def _run(self) -> None:
        assert self._inputs is not None
        try:
            self._kek = _scrypt(*self._inputs)
        except BaseException as exc:  # handed to the taker, which raises it where it belongs
            self._error = exc
        finally:
            self._inputs = None  # the password goes as soon as it is not needed

    def result(self) -> bytes:
        self.thread.join()
        if self._error is not None:
            raise self._error
        assert self._kek is not None
        return self._kek


_lock = threading.Lock()
_started: dict[Inputs, _Ahead] = {}


def _take(inputs: Inputs) -> _Ahead | None:
    with _lock:
        return _started.pop(inputs, None)


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    # OpenSSL needs 128·r·(n + 2) bytes for V and 128·r·p for B, and checks them against maxmem
    need = 128 * r * (n + 2 + p) + _SLACK
    if need <= _HASHLIB_MAXMEM and hasattr(hashlib, "scrypt"):
        return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=need, dklen=KEK_SIZE)
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=KEK_SIZE, n=n, r=r, p=p).derive(password)
