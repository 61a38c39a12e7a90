"""The part every connector Source with a log chain shares: identity, display, and its history.

A connector's Source class inherits :class:`ChainedSource` and sets ``url`` (with ``display()``),
``info`` (with ``source_id``: the server's own identity, never its address), ``repo`` and ``history``
in its constructor.  The core holds the source lock (``exclusive``) for the whole run and calls
``prepare()`` under it, which reads this source's snapshots oldest first: no other run can extend
the chain between the read and the commit.
"""

from __future__ import annotations

from typing import Any, ClassVar

from dtstore.connectors.base import RepositoryView, SnapshotInfo, snapshots_of


class ChainedSource:
    kind: ClassVar[str]
    exclusive: ClassVar[bool] = True

    url: Any
    info: Any
    repo: RepositoryView | None
    history: list[SnapshotInfo]

    def prepare(self) -> None:
        """Read this source's history, under the source lock."""
        if self.repo is not None:
            self.history = snapshots_of(self.repo.snapshots(), self.kind, self.source_id)

    @property
    def source_id(self) -> str:
        return str(self.info.source_id)

    @property
    def display_paths(self) -> list[str]:
        return [str(self.url.display())]


__all__ = ["ChainedSource"]
