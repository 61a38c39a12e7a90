"""The TDS 7.x wire protocol, server side: packets, PRELOGIN, LOGIN7, and the token stream.

Written from the MS-TDS specification (packet header §2.2.3.1, PRELOGIN §2.2.6.5, LOGIN7 §2.2.6.4,
SQLBatch §2.2.6.7, tokens §2.2.7) for what FreeTDS 1.3 (Debian ``tdsodbc``) sends and expects with
``TDS_Version=7.4`` and encryption off.  Only what the simulator needs: no TLS, no MARS, no
SSPI, no PLP (``(max)``) types, no RPC parameters beyond what :func:`parse_rpc` reads.
"""

from __future__ import annotations

import datetime as dt
import decimal
import socket
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# packet types (MS-TDS 2.2.3.1.1)
SQL_BATCH, PRE_TDS7_LOGIN, RPC, TABULAR, ATTENTION, BULK, TRANSACTION, LOGIN7, SSPI, PRELOGIN = (
    0x01, 0x02, 0x03, 0x04, 0x06, 0x07, 0x0E, 0x10, 0x11, 0x12)
STATUS_EOM = 0x01

# tokens (MS-TDS 2.2.7)
COLMETADATA, ROW, DONE, DONEPROC, DONEINPROC, INFO, ERROR, ENVCHANGE, LOGINACK, RETURNSTATUS = (
    0x81, 0xD1, 0xFD, 0xFE, 0xFF, 0xAB, 0xAA, 0xE3, 0xAD, 0x79)
DONE_FINAL, DONE_MORE, DONE_ERROR, DONE_COUNT, DONE_ATTN = 0x00, 0x01, 0x02, 0x10, 0x20

# Latin1_General_CI_AS: LCID 0x0409, flags, sort id 52
COLLATION = bytes([0x09, 0x04, 0xD0, 0x00, 0x34])


class ClientGone(Exception):
    """The client closed the connection."""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ClientGone
        data += part
    return bytes(data)


def read_message(sock: socket.socket) -> tuple[int, bytes]:
    """One TDS message: packets of one type up to the one with the end-of-message status."""
    payload = bytearray()
    while True:
        header = _recv_exact(sock, 8)
        kind, status, length = header[0], header[1], struct.unpack(">H", header[2:4])[0]
        payload += _recv_exact(sock, length - 8)
        if status & STATUS_EOM:
            return kind, bytes(payload)


def send_message(sock: socket.socket, kind: int, payload: bytes, *, packet_size: int, spid: int,
                 last: bool = True) -> None:
    """Send ``payload`` as packets of at most ``packet_size`` bytes; ``last`` marks the end of the message."""
    room = packet_size - 8
    chunks = [payload[i : i + room] for i in range(0, len(payload), room)] or [b""]
    out = bytearray()
    for i, chunk in enumerate(chunks):
        status = STATUS_EOM if last and i == len(chunks) - 1 else 0
        out += struct.pack(">BBHHBB", kind, status, len(chunk) + 8, spid, (i + 1) & 0xFF, 0) + chunk
    sock.sendall(bytes(out))


# --- PRELOGIN -------------------------------------------------------------------------------------


def prelogin_response(version: tuple[int, int, int]) -> bytes:
    """VERSION, ENCRYPTION = ENCRYPT_NOT_SUP (2: this server has no TLS), INSTOPT, THREADID, MARS off."""
    major, minor, build = version
    options = [
        (0x00, struct.pack(">BBHH", major, minor, build, 0)),
        (0x01, b"\x02"),
        (0x02, b"\x00"),
        (0x03, b""),
        (0x04, b"\x00"),
    ]
    offset = len(options) * 5 + 1
    head, body = bytearray(), bytearray()
    for token, data in options:
        head += struct.pack(">BHH", token, offset + len(body), len(data))
        body += data
    return bytes(head + b"\xff" + body)


def prelogin_encryption(payload: bytes) -> int:
    """The client's ENCRYPTION option (0 off, 1 on, 2 not supported, 3 required)."""
    i = 0
    while i < len(payload) and payload[i] != 0xFF:
        token, offset, length = struct.unpack(">BHH", payload[i : i + 5])
        if token == 0x01 and length:
            return payload[offset]
        i += 5
    return 2


# --- LOGIN7 ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    tds_version: int
    packet_size: int
    host: str
    user: str
    password: str
    app: str
    server: str
    database: str


def _unscramble(data: bytes) -> str:
    """LOGIN7 passwords: each byte has its nibbles swapped and is XORed with 0xA5."""
    plain = bytes((((b ^ 0xA5) << 4) & 0xF0) | (((b ^ 0xA5) >> 4) & 0x0F) for b in data)
    return plain.decode("utf-16-le")


def parse_login7(payload: bytes) -> Login:
    _length, version, packet_size = struct.unpack("<III", payload[0:12])
    fields = []
    for i in range(9):  # HostName UserName Password AppName ServerName Extension CltIntName Language Database
        offset, count = struct.unpack("<HH", payload[36 + 4 * i : 40 + 4 * i])
        fields.append(payload[offset : offset + 2 * count])
    text = [f.decode("utf-16-le", "replace") for f in fields]
    return Login(tds_version=version, packet_size=packet_size, host=text[0], user=text[1],
                 password=_unscramble(fields[2]), app=text[3], server=text[4], database=text[8])


# --- request payloads -----------------------------------------------------------------------------


def skip_all_headers(payload: bytes, tds_version: int) -> bytes:
    if tds_version >= 0x72000000 and len(payload) >= 4:
        total = struct.unpack("<I", payload[:4])[0]
        if 4 <= total <= len(payload):
            return payload[total:]
    return payload


def parse_sql_batch(payload: bytes, tds_version: int) -> str:
    return skip_all_headers(payload, tds_version).decode("utf-16-le")


# --- the token stream -----------------------------------------------------------------------------


def b_varchar(text: str) -> bytes:
    data = text.encode("utf-16-le")
    return bytes([len(data) // 2]) + data


def us_varchar(text: str) -> bytes:
    data = text.encode("utf-16-le")
    return struct.pack("<H", len(data) // 2) + data


def envchange(kind: int, new: str, old: str = "") -> bytes:
    body = bytes([kind]) + b_varchar(new) + b_varchar(old)
    return struct.pack("<BH", ENVCHANGE, len(body)) + body


def envchange_collation() -> bytes:
    body = bytes([7, len(COLLATION)]) + COLLATION + b"\x00"
    return struct.pack("<BH", ENVCHANGE, len(body)) + body


def loginack(tds_version: int, program: str, version: tuple[int, int, int]) -> bytes:
    major, minor, build = version
    body = (bytes([1]) + struct.pack(">I", tds_version) + b_varchar(program)
            + struct.pack(">BBH", major, minor, build))
    return struct.pack("<BH", LOGINACK, len(body)) + body


def message(number: int, text: str, *, severity: int, state: int = 1, server: str = "", proc: str = "",
            line: int = 1) -> bytes:
    """An ERROR (severity > 10) or INFO token."""
    body = (struct.pack("<iBB", number, state, severity) + us_varchar(text) + b_varchar(server)
            + b_varchar(proc) + struct.pack("<i", line))
    return struct.pack("<BH", ERROR if severity > 10 else INFO, len(body)) + body


def done(status: int = DONE_FINAL, rowcount: int = 0, curcmd: int = 0xC1, token: int = DONE) -> bytes:
    return struct.pack("<BHHQ", token, status, curcmd, rowcount)


# column types the simulator sends
INT, TEXT, NUMERIC, DATETIME, GUID, BINARY, BIT, FLOAT = "int", "text", "numeric", "datetime", "guid", "binary", \
    "bit", "float"

_EPOCH_1900 = dt.datetime(1900, 1, 1)


def _type_info(kind: str) -> bytes:
    if kind == INT:
        return bytes([0x26, 8])  # INTN(8) = bigint
    if kind == TEXT:
        return bytes([0xE7]) + struct.pack("<H", 8000) + COLLATION  # nvarchar(4000)
    if kind == NUMERIC:
        return bytes([0x6C, 17, 38, 0])  # numeric(38,0)
    if kind == DATETIME:
        return bytes([0x6F, 8])  # DATETIMN(8) = datetime
    if kind == GUID:
        return bytes([0x24, 16])
    if kind == BINARY:
        return bytes([0xA5]) + struct.pack("<H", 8000)  # varbinary(8000)
    if kind == BIT:
        return bytes([0x68, 1])
    if kind == FLOAT:
        return bytes([0x6D, 8])
    raise ValueError(kind)


def colmetadata(columns: Sequence[tuple[str, str]]) -> bytes:
    out = bytearray(struct.pack("<BH", COLMETADATA, len(columns)))
    for name, kind in columns:
        out += struct.pack("<IH", 0, 0x0001) + _type_info(kind) + b_varchar(name)
    return bytes(out)


def _value(kind: str, value: Any) -> bytes:
    if kind in (TEXT, BINARY):
        if value is None:
            return b"\xff\xff"
        data = str(value).encode("utf-16-le") if kind == TEXT else bytes(value)
        if len(data) > 8000:
            raise ValueError("value longer than 8000 bytes: the simulator has no (max) types")
        return struct.pack("<H", len(data)) + data
    if value is None:
        return b"\x00"
    if kind == INT:
        return b"\x08" + struct.pack("<q", int(value))
    if kind == NUMERIC:
        number = int(value)
        return b"\x11" + bytes([1 if number >= 0 else 0]) + abs(number).to_bytes(16, "little")
    if kind == DATETIME:
        moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
        moment = moment.replace(tzinfo=None)
        days = (moment.date() - _EPOCH_1900.date()).days
        seconds = moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6
        return b"\x08" + struct.pack("<iI", days, round(seconds * 300))
    if kind == GUID:
        return b"\x10" + uuid.UUID(str(value)).bytes_le
    if kind == BIT:
        return b"\x01" + bytes([1 if value else 0])
    if kind == FLOAT:
        return b"\x08" + struct.pack("<d", float(value))
    raise ValueError(kind)


def row(columns: Sequence[tuple[str, str]], values: Sequence[Any]) -> bytes:
    return bytes([ROW]) + b"".join(_value(kind, v) for (_, kind), v in zip(columns, values, strict=True))


def kind_of(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return BIT
    if isinstance(value, int):
        return INT if -(2**63) <= value < 2**63 else NUMERIC
    if isinstance(value, decimal.Decimal):
        return NUMERIC
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, dt.datetime):
        return DATETIME
    if isinstance(value, uuid.UUID):
        return GUID
    if isinstance(value, (bytes, bytearray, memoryview)):
        return BINARY
    return TEXT


__all__ = [
    "ATTENTION", "DONE_ATTN", "DONE_COUNT", "DONE_ERROR", "DONE_MORE", "LOGIN7", "PRELOGIN", "RPC", "SQL_BATCH",
    "TABULAR", "TRANSACTION", "ClientGone", "Login", "colmetadata", "done", "envchange", "envchange_collation",
    "kind_of", "loginack", "message", "parse_login7", "parse_sql_batch", "prelogin_encryption",
    "prelogin_response", "read_message", "row", "send_message",
]
