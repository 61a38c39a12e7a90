"""``dtstore find``: the items of a snapshot whose name or path matches a pattern (restic's ``find``).

A pattern without ``/`` is matched against the item's base name; one with ``/`` against its whole
path (as stored, with a leading ``/``), with the exclude patterns' glob rules (``**`` included),
and it must reach the end of the path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from dtstore.errors import UsageError
from dtstore.snapshots.manifest import Item
from dtstore.sources.excludes import Pattern


def compile_patterns(patterns: Sequence[str], *, ignore_case: bool = False) -> list[Pattern]:
    if not patterns:
        raise UsageError("find needs at least one PATTERN")
    if any(p.startswith("!") or not p for p in patterns):
        raise UsageError("a find PATTERN must not be empty or start with '!'")
    compiled = [Pattern(p if "/" in p else "/**/" + p, ignore_case=ignore_case) for p in patterns]
    for p in compiled:
        p.matches("/")  # validate now
    return compiled


def find_items(items: Iterable[Item], patterns: Sequence[Pattern]) -> Iterator[Item]:
    """The items matching any of the patterns, in stored order."""
    for item in items:
        path = "/" + item.name
        if any(p.matches(path, whole=True) for p in patterns):
            yield item
