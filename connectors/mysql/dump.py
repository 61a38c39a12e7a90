"""The full dump: one ``mysqldump``/``mariadb-dump`` run, cut into one item per database.

ONE run of ``--single-transaction --master-data=2 --gtid --routines --triggers --events --hex-blob
--databases A B ...`` gives every database from the same instant.  :class:`DumpSplitter` cuts its
stdout on the ``-- Current Database:`` comments into ``mysql/<db>.sql`` items (each starting with the
dump's header, so it loads on its own) and keeps the second pass of view definitions apart
(``mysql/views/<db>.sql``, loaded after every database).  The binlog coordinates come from the
dump's own ``CHANGE MASTER`` comment; ``-- Dump completed`` in the trailer proves the dump is whole.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from typing import BinaryIO
from urllib.parse import quote

from dtstore.connectors.entries import BLOCK
from dtstore.connectors.mysql.server import ServerInfo, quote_ident, unquote_ident
from dtstore.connectors.mysql.url import MysqlUrl
from dtstore.connectors.positions import BinlogPosition
from dtstore.errors import ConnectorError

COORDINATES = re.compile(rb"(?:MASTER|SOURCE)_LOG_FILE='([^']+)',\s*(?:MASTER|SOURCE)_LOG_POS=(\d+)")
GTID_SLAVE_POS = re.compile(rb"gtid_slave_pos='([^']*)'")
TRAILER_KEEP = 16384


class DumpTruncated(Exception):
    """The dump stream ended before the comment that starts the named database."""


MARKER_PREFIX = b"\n--\n-- Current Database: "
QUOTED_NAME = re.compile(rb"(`(?:[^`]|``)*`)\n--\n")


def database_marker(name: str) -> bytes:
    """The comment block mysqldump writes before each database with ``--databases``."""
    return MARKER_PREFIX + quote_ident(name).encode() + b"\n--\n"


class DumpSplitter:
    """Cuts the stdout of one ``--databases A B ...`` dump into one section per database.

    Each section starts with the dump's header (``SET NAMES``, ``TIME_ZONE='+00:00'``,
    ``FOREIGN_KEY_CHECKS=0`` ...) so it loads on its own.  Sections must be read in order.
    Searching is done on 1 MiB blocks, never line by line.

    mysqldump writes views in two passes: a stand-in (``CREATE VIEW v AS SELECT 1 AS c``) inside
    each database, and the real definitions after the last database, under a second
    ``Current Database`` comment per database (so that a view may use tables of a database dumped
    later).  That second pass is not part of the last database's section: ``views`` maps each
    database to its own part of it (header first), to be loaded after the databases.  The trailer,
    where the GTID position and the ``-- Dump completed`` line are, ends the last part read.
    """

    def __init__(self, stream: BinaryIO, databases: Sequence[str], block_size: int = BLOCK) -> None:
        self._stream = stream
        self._block_size = block_size
        self._pending = list(databases)
        self._buf = b""
        self.views: dict[str, bytes] = {}
        self.header: bytes | None = None
        self.coordinates: BinlogPosition | None = None
        self.gtid: str | None = None
        self.completed = False

    def _header(self) -> bytes:
        if self.header is None:
            raise ConnectorError("the dump has no header before its first database")
        return self.header

    def _fill(self) -> bool:
        block = self._stream.read(self._block_size)
        self._buf += block
        return bool(block)

    def _read_header(self, first: str) -> None:
        marker = database_marker(first)
        while (i := self._buf.find(marker)) < 0:
            if not self._fill():
                raise DumpTruncated(first)
        self.header, self._buf = self._buf[: i + 1], self._buf[i + 1 :]
        if match := COORDINATES.search(self.header):
            self.coordinates = BinlogPosition(match.group(1).decode(), int(match.group(2)))

    def section(self, name: str) -> Iterator[bytes]:
        """The bytes of one database's section (header first); raises DumpTruncated on a short dump."""
        if not self._pending or self._pending[0] != name:
            raise ValueError(f"dump sections must be read in order; {name!r} is not next")
        self._pending.pop(0)
        if self.header is None:
            self._read_header(name)
        yield self._header()
        if self._pending:
            yield from self._until(database_marker(self._pending[0]), self._pending[0])
        else:
            yield from self._until_end()

    def _until(self, marker: bytes, next_name: str) -> Iterator[bytes]:
        keep = len(marker) - 1
        while (i := self._buf.find(marker)) < 0:
            if len(self._buf) > keep:
                yield self._buf[:-keep]
                self._buf = self._buf[-keep:]
            if not self._fill():
                raise DumpTruncated(next_name)
        yield self._buf[: i + 1]
        self._buf = self._buf[i + 1 :]

    def _until_end(self) -> Iterator[bytes]:
        """The last section runs to the views pass or to EOF; its tail is kept back to search."""
        while (i := self._buf.find(MARKER_PREFIX)) < 0:
            if len(self._buf) > TRAILER_KEEP:
                yield self._buf[:-TRAILER_KEEP]
                self._buf = self._buf[-TRAILER_KEEP:]
            if not self._fill():
                break
        if i < 0:
            tail, self._buf = self._buf, b""
            self._read_trailer(tail)
            yield tail
            return
        yield self._buf[: i + 1]
        self._buf = self._buf[i + 1 :]
        while self._fill():
            pass
        views_pass, self._buf = self._buf, b""
        self._split_views(views_pass)

    def _split_views(self, views_pass: bytes) -> None:
        """The second pass holds only view definitions and the trailer: small, so read whole."""
        header = self._header()
        text = b"\n" + views_pass
        starts = [m.start() + 1 for m in re.finditer(re.escape(MARKER_PREFIX), text)]
        for start, end in itertools.pairwise([*starts, len(text)]):
            part = text[start:end]
            match = QUOTED_NAME.match(part, len(MARKER_PREFIX) - 1)
            if match is None:
                raise ConnectorError(f"the dump's view definitions start with an unreadable comment: {part[:60]!r}")
            name = unquote_ident(match.group(1).decode("utf-8", "surrogateescape"))
            self.views[name] = self.views.get(name, header) + part
        self._read_trailer(views_pass[-TRAILER_KEEP:])

    def _read_trailer(self, tail: bytes) -> None:
        self.completed = b"\n-- Dump completed" in tail
        if match := GTID_SLAVE_POS.search(tail):
            self.gtid = match.group(1).decode()


def dump_command(tool: str, url: MysqlUrl, info: ServerInfo, databases: Sequence[str]) -> list[str]:
    """The one dump command of a full (binlog coordinates only when binary logging is on)."""
    argv = [
        tool,
        *url.client_args(),
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--no-tablespaces",
        "--skip-dump-date",
    ]
    if info.log_bin and info.flavor == "mariadb":
        argv += ["--master-data=2", "--gtid"]
    elif info.log_bin:
        modern = info.version_tuple >= (8, 0, 26)
        argv += ["--source-data=2" if modern else "--master-data=2", "--set-gtid-purged=OFF"]
    return [*argv, "--databases", *databases]


VIEWS_DIR = "mysql/views"


def views_item_path(database: str) -> str:
    """``mysql/views/<db>.sql``: the database's real view definitions (a directory, so no database
    name can collide with it)."""
    return f"{VIEWS_DIR}/{item_path(database).removeprefix('mysql/')}"


def item_path(database: str) -> str:
    """``mysql/<db>.sql``; ``/``, ``%`` and a leading ``_`` or ``.`` are percent-encoded."""
    name = quote(database, safe=" !#$&'()*+,-;=@[]^`{|}~") if database else "%"
    if name[0] in "_.":
        name = f"%{ord(name[0]):02X}{name[1:]}"
    return f"mysql/{name}.sql"
