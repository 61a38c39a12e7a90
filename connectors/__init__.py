"""Database connectors: a URL scheme picks the connector, loaded only when it is used.

The CLI calls :func:`is_connector_url` (is this argument a database rather than a path?),
:func:`make_source` (``dtstore snapshot URL``), :func:`restore_to` (``dtstore restore --to URL``, with
a :class:`RestoreRequest`), :func:`restore_points` (``dtstore restore-points``) and
:func:`snapshot_dependencies` (what ``forget`` must keep together).  Each connector lives in its own
module or package and needs its own extra, e.g.
``pip install dtstore[mysql]``; a missing extra gives an install hint, not an ImportError.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from dtstore.connectors.base import Connector, RepositoryView, RestorePlan
from dtstore.connectors.modes import check_mode
from dtstore.connectors.points import SourcePoints, restore_points, snapshot_dependencies
from dtstore.connectors.request import RestoreRequest, run_restore
from dtstore.errors import UsageError
from dtstore.progress import ProgressCallback, no_progress

if TYPE_CHECKING:
    from dtstore.sources.base import Source

# scheme -> ("module:attribute", the extra to install when its dependencies are missing)
REGISTRY: MappingProxyType[str, tuple[str, str]] = MappingProxyType(
    {
        "mysql": ("dtstore.connectors.mysql.connector:CONNECTOR", "mysql"),
        "mariadb": ("dtstore.connectors.mysql.connector:CONNECTOR", "mysql"),
        "postgresql": ("dtstore.connectors.postgresql.connector:CONNECTOR", "postgresql"),
        "postgres": ("dtstore.connectors.postgresql.connector:CONNECTOR", "postgresql"),
        "exchange": ("dtstore.connectors.exchange.connector:CONNECTOR", "exchange"),
        "oracle": ("dtstore.connectors.oracle.connector:CONNECTOR", "oracle"),
        "domino": ("dtstore.connectors.domino.connector:CONNECTOR", "domino"),
        "mssql": ("dtstore.connectors.mssql.connector:CONNECTOR", "mssql"),
    }
)


def scheme_of(text: str) -> str | None:
    scheme, sep, _ = text.partition("://")
    return scheme.lower() if sep and scheme.isidentifier() else None


def is_connector_url(text: str) -> bool:
    """True for ``mysql://…`` and every other registered database URL."""
    return scheme_of(text) in REGISTRY


def load(scheme: str) -> Connector:
    """Import the connector for ``scheme`` (lazily), with an install hint if its extra is missing."""
    try:
        target, extra = REGISTRY[scheme]
    except KeyError:
        raise UsageError(f"no connector for {scheme}://; known: {', '.join(sorted(REGISTRY))}") from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise  # a bug in dtstore itself, not a missing extra
        raise UsageError(
            f'the {scheme} connector needs an optional dependency ({exc.name}): pip install "dtstore[{extra}]"'
        ) from exc
    connector: Connector = getattr(module, attr)
    return connector


def _connector_for(url: str) -> Connector:
    scheme = scheme_of(url)
    if scheme is None:
        raise UsageError(f"not a database URL: {url.split('://')[0]!r} (expected e.g. mysql://USER@HOST/DB)")
    return load(scheme)


def make_source(url: str, *, repo: RepositoryView | None, mode: str = "full", stage_dir: Path | None = None) -> Source:
    """The Source for ``dtstore snapshot URL [--mode full|diff|log|auto] [--stage DIR]``."""
    connector = _connector_for(url)
    check_mode(mode, connector.modes, connector.kind)  # before any connection: names the modes it has
    return connector.make_source(url, repo=repo, mode=mode, stage_dir=stage_dir)


def restore_to(
    request: RestoreRequest, *, repo: RepositoryView, progress: ProgressCallback = no_progress
) -> RestorePlan:
    """Plan a restore into the server at ``request.url``, verify the chain, run it unless ``dry_run``."""
    return run_restore(_connector_for(request.url), request, repo, progress)


__all__ = [
    "REGISTRY",
    "RestorePlan",
    "RestoreRequest",
    "SourcePoints",
    "is_connector_url",
    "load",
    "make_source",
    "restore_points",
    "restore_to",
    "snapshot_dependencies",
]
