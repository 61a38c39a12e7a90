"""Restore never writes outside its target, whatever the manifest or the target directory holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dtstore.errors import IntegrityError
from dtstore.restore import _checked_tree, _make_dirs, _safe
from dtstore.snapshots.manifest import Item


@pytest.mark.parametrize("path", [b"../escape", b"/abs/file", b"a/../../b", b"a//b", b"a/\0b"])
def test_unsafe_item_paths_are_refused(path: bytes) -> None:
    with pytest.raises(IntegrityError, match="unsafe path"):
        _safe(Item(path=path, type="file"))


def test_duplicate_paths_are_refused() -> None:
    with pytest.raises(IntegrityError, match="twice"):
        _checked_tree([Item(path=b"a", type="symlink", target=b"/etc"), Item(path=b"a", type="file")])


def test_items_below_a_symlink_are_refused() -> None:
    with pytest.raises(IntegrityError, match="below a symlink"):
        _checked_tree([Item(path=b"d", type="symlink", target=b"/etc"), Item(path=b"d/passwd", type="file")])


def test_symlink_already_in_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "d").symlink_to(outside)
    _make_dirs(os.fsencode(target), b"d/sub")
    assert not (target / "d").is_symlink()
    assert (target / "d" / "sub").is_dir()
    assert list(outside.iterdir()) == []
