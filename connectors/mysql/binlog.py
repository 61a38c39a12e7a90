"""Binary log files, read without a server: event headers only (times, GTID state, rotation).

A log snapshot checks each file it stores: it must be the closed file the server lists (ends with a
Rotate event naming the next file), and on MariaDB start with the GTID state the chain expects.
"""

from __future__ import annotations

import datetime as dt
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from dtstore.connectors.base import iso
from dtstore.connectors.entries import BLOCK
from dtstore.errors import ConnectorError

BINLOG_MAGIC = b"\xfebin"
EVENT_HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server_id, event_size, next_pos, flags
ROTATE_EVENT, FORMAT_DESCRIPTION_EVENT, GTID_LIST_EVENT = 4, 15, 163


@dataclass(frozen=True)
class BinlogScan:
    """Facts about one binlog file, read from its event headers."""

    size: int
    first_event_time: int
    last_event_time: int
    closed: bool  # ends with a Rotate event
    rotate_to: str | None
    start_state: str | None  # MariaDB Gtid_list at the start, formatted like SHOW BINLOG EVENTS


def scan_binlog(path: Path) -> BinlogScan:
    """Walk the event headers of a binlog (no row data is decoded)."""
    with open(path, "rb", buffering=BLOCK) as f:
        size = os.fstat(f.fileno()).st_size
        if f.read(4) != BINLOG_MAGIC:
            raise ConnectorError(f"{path.name} is not a binary log (bad magic bytes)")
        pos, first, last, last_type = 4, 0, 0, -1
        checksummed, rotate_to, start_state = False, None, None
        while pos < size:
            f.seek(pos)
            header = f.read(EVENT_HEADER.size)
            if len(header) < EVENT_HEADER.size:
                raise ConnectorError(f"{path.name} is truncated at byte {pos}")
            ts, etype, _sid, esize, _next, _flags = EVENT_HEADER.unpack(header)
            if esize < EVENT_HEADER.size or pos + esize > size:
                raise ConnectorError(f"{path.name} is truncated or corrupt at byte {pos}")
            first = first or ts
            last = ts or last
            if etype in (FORMAT_DESCRIPTION_EVENT, GTID_LIST_EVENT, ROTATE_EVENT):
                body = f.read(esize - EVENT_HEADER.size)
                if etype == FORMAT_DESCRIPTION_EVENT:
                    checksummed = zlib.crc32(header + body[:-4]) == struct.unpack("<I", body[-4:])[0]
                else:
                    body = body[:-4] if checksummed else body
                    if etype == ROTATE_EVENT:
                        rotate_to = body[8:].decode("utf-8", "replace")
                    elif start_state is None:
                        start_state = _gtid_list_text(body)
            last_type, pos = etype, pos + esize
    return BinlogScan(size, first, last, last_type == ROTATE_EVENT, rotate_to, start_state)


def _gtid_list_text(body: bytes) -> str:
    count = struct.unpack_from("<I", body)[0] & 0x0FFFFFFF
    gtids = [struct.unpack_from("<IIQ", body, 4 + 16 * i) for i in range(count)]
    return "[" + ",".join(f"{d}-{s}-{n}" for d, s, n in gtids) + "]"


def utc_text(epoch: float) -> str:
    return iso(dt.datetime.fromtimestamp(epoch, dt.UTC))
