"""The first bytes of a source file, read on a thread while the repository opens.

Opening a repository costs the password KDF (scrypt, ~0.3 s by design) before anything can be
chunked: the chunker seed and the chunk-ID key come from the master key.  Reading needs no key, so
a backup starts reading its first file at once (issue 18 §3) and the backup then takes those bytes
instead of reading them again.  If the file changed in between (another inode, size, mtime or
ctime than the walk finds), the bytes are dropped and the file is read afresh.
"""

from __future__ import annotations

import io
import os
import threading
from typing import BinaryIO

from dtstore.sources.base import FileIdentity

READ_AHEAD_BYTES = 4 << 20
"""what is read before the key is known: one block of the pipeline.  More saves nothing measurable
(reading is ~0.2 s/GiB) and adds to the peak RSS, which the KDF's 64 MiB already sets."""


class ReadAhead:
    """Opens ``path`` and reads up to ``limit`` bytes of it on a daemon thread."""

    def __init__(self, path: bytes, limit: int = READ_AHEAD_BYTES) -> None:
        self.path = path
        self._limit = limit
        self._file: BinaryIO | None = None
        self._head = bytearray()
        self._identity: FileIdentity | None = None
        self._done = threading.Event()
        threading.Thread(target=self._read, name="dtstore-read-ahead", daemon=True).start()

    def _read(self) -> None:
        try:
            stream = open(self.path, "rb", buffering=0)  # noqa: SIM115 (handed to take())
        except OSError:
            self._done.set()  # the backup's own open reports it
            return
        try:
            st = os.fstat(stream.fileno())
            self._identity = FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            self._head = bytearray(min(self._limit, st.st_size))
            view, done = memoryview(self._head), 0
            while done < len(view):
                n = stream.readinto(view[done:])
                if not n:
                    break
                done += n
            del view
            del self._head[done:]
            self._file = stream
        except OSError:
            stream.close()
            self._head = bytearray()
        finally:
            self._done.set()

    def take(self, identity: FileIdentity | None) -> BinaryIO | None:
        """The file as a stream that starts with the bytes read ahead, if it is still the file the
        backup found (``identity``); None otherwise, and the caller opens the file itself."""
        self._done.wait()
        stream, head, self._file, self._head = self._file, self._head, None, bytearray()
        if stream is None:
            return None
        if identity is None or identity != self._identity:
            stream.close()
            return None
        return _HeadThenFile(head, stream)  # type: ignore[return-value]  # a raw binary stream

    def discard(self) -> None:
        """Close what was not taken (the file was unchanged, excluded, or the backup failed)."""
        if self._done.wait(timeout=5.0) and self._file is not None:
            self._file.close()
            self._file, self._head = None, bytearray()


class _HeadThenFile(io.RawIOBase):
    """``head`` (the first bytes of ``rest``'s file), then the file from where the head ends."""

    def __init__(self, head: bytearray, rest: BinaryIO) -> None:
        self._head: bytearray | None = head
        self._at = 0
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._head is not None:
            n = min(len(buffer), len(self._head) - self._at)
            if n > 0:
                buffer[:n] = memoryview(self._head)[self._at : self._at + n]
                self._at += n
                return n
            self._head = None  # handed over: its memory goes back at once
        return self._rest.readinto(buffer) or 0  # type: ignore[attr-defined]

    def close(self) -> None:
        self._head = None
        self._rest.close()
        super().close()
