"""``Entry.stored``: a copy of an item already in the repository is recorded from its chunk list, unread."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any, BinaryIO, ClassVar

import dtstore
from dtstore import StdinSource
from dtstore.sources.base import Entry
from tests.helpers import random_bytes

DATA = random_bytes(300_000, seed=5)


class CopySource:
    """One file entry with ``stored`` set; ``opened`` counts how often the core fell back to reading."""

    kind = "copy"
    source_id = "copy:test"
    display_paths: ClassVar[list[str]] = ["copy"]

    def __init__(self, stored: tuple[list[bytes], int], data: bytes) -> None:
        self.stored, self.data, self.opened = stored, data, 0

    @contextlib.contextmanager
    def _open(self) -> Iterator[BinaryIO]:
        self.opened += 1
        yield io.BytesIO(self.data)

    def entries(self, reporter: Any) -> Iterator[Entry]:
        yield Entry(path=b"copy.bin", type="file", opener=self._open, size=len(self.data), stored=self.stored)

    def metadata(self) -> dict[str, Any]:
        return {}


def first_item(repo: dtstore.Repository) -> tuple[list[bytes], int]:
    snap = repo.snapshot([StdinSource("db.dump", io.BytesIO(DATA))])
    item = repo.find_item(snap, "db.dump")
    assert len(item.chunks) > 1
    return list(item.chunks), item.size


def test_a_stored_copy_is_not_read_and_restores(repo: dtstore.Repository) -> None:
    source = CopySource(first_item(repo), b"")  # reading would store nothing: the copy must not read
    snap = repo.snapshot([source])
    assert source.opened == 0
    assert snap.summary["bytes_stored"] < 20_000  # a manifest, no data
    assert repo.open_item(snap, "copy.bin").read() == DATA


def test_a_copy_whose_chunk_is_missing_is_read_instead(repo: dtstore.Repository) -> None:
    chunks, size = first_item(repo)
    source = CopySource(([*chunks[:-1], b"\0" * 32], size), DATA)
    snap = repo.snapshot([source])
    assert source.opened == 1
    assert repo.open_item(snap, "copy.bin").read() == DATA
