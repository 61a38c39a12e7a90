"""The simulator's TCP side: one thread per connection, TDS messages in, the engine's tokens out.

A batch's answer is produced by the engine as a generator of token bytes and :class:`Flush` markers.
At a ``Flush`` the tokens so far are sent (packets without the end-of-message bit) and the server
waits ``delay`` seconds, watching the socket: a client that sends ATTENTION (what FreeTDS does when
a statement is closed before its results are read) or closes the connection cancels the statement,
as a real server aborts a BACKUP whose client went away.  The engine sees the cancel as
:class:`Cancelled` thrown into its generator and undoes its work.
"""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.sim.mssql import tds


@dataclass(frozen=True)
class Flush:
    delay: float = 0.0


class Cancelled(Exception):
    """The client cancelled (ATTENTION) or went away in the middle of a statement."""


Answer = Iterator[Any]  # bytes | Flush


class Session:
    """Per-connection state the engine reads and changes."""

    def __init__(self, login: tds.Login, spid: int) -> None:
        self.login, self.spid = login, spid
        self.database = login.database or "master"
        self.implicit_transactions = False
        self.trancount = 0
        self.envchanges: list[bytes] = []


class Handler(socketserver.BaseRequestHandler):
    server: SimServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        spid = self.server.next_spid()
        packet_size = 4096
        try:
            kind, payload = tds.read_message(sock)
            if kind == tds.PRELOGIN:
                if tds.prelogin_encryption(payload) == 3:
                    return  # encryption required: this server has no TLS (the client reports the failure)
                tds.send_message(sock, tds.TABULAR, tds.prelogin_response(self.server.engine.version),
                                 packet_size=packet_size, spid=spid)
                kind, payload = tds.read_message(sock)
            if kind != tds.LOGIN7:
                return
            login = tds.parse_login7(payload)
            packet_size = max(512, min(login.packet_size or 4096, 32767))
            session = Session(login, spid)
            ok, tokens = self.server.engine.login(session)
            tds.send_message(sock, tds.TABULAR, tokens, packet_size=packet_size, spid=spid)
            if not ok:
                return
            while True:
                kind, payload = tds.read_message(sock)
                if kind == tds.SQL_BATCH:
                    sql = tds.parse_sql_batch(payload, login.tds_version)
                    self._answer(sock, self.server.engine.batch(session, sql), packet_size, spid)
                elif kind == tds.TRANSACTION:
                    self._answer(sock, self.server.engine.transaction(session, payload), packet_size, spid)
                elif kind == tds.ATTENTION:
                    tds.send_message(sock, tds.TABULAR, tds.done(tds.DONE_ATTN), packet_size=packet_size, spid=spid)
                elif kind == tds.RPC:
                    self._answer(sock, self.server.engine.rpc(session, payload), packet_size, spid)
                else:
                    return
        except (tds.ClientGone, ConnectionError, OSError):
            return
        except Exception:  # a simulator bug: say so on stderr, drop the connection
            traceback.print_exc(file=sys.stderr)

    def _answer(self, sock: socket.socket, answer: Answer, packet_size: int, spid: int) -> None:
        pending = bytearray()
        try:
            for piece in answer:
                if isinstance(piece, Flush):
                    tds.send_message(sock, tds.TABULAR, bytes(pending), packet_size=packet_size, spid=spid,
                                     last=False)
                    pending.clear()
                    if self._cancelled(sock, piece.delay):
                        with contextlib.suppress(Cancelled, StopIteration):
                            answer.throw(Cancelled())  # type: ignore[attr-defined]
                        tds.send_message(sock, tds.TABULAR, tds.done(tds.DONE_ATTN), packet_size=packet_size,
                                         spid=spid)
                        return
                else:
                    pending += piece
        except Exception:
            traceback.print_exc(file=sys.stderr)
            pending += tds.message(50000, "simulator error (see its stderr)", severity=16)
            pending += tds.done(tds.DONE_ERROR)
        tds.send_message(sock, tds.TABULAR, bytes(pending), packet_size=packet_size, spid=spid)

    @staticmethod
    def _cancelled(sock: socket.socket, delay: float) -> bool:
        """Did the client send ATTENTION (or close) within ``delay`` seconds?"""
        readable, _, _ = select.select([sock], [], [], delay)
        if not readable:
            return False
        try:
            kind, _ = tds.read_message(sock)
        except (tds.ClientGone, OSError):
            return True
        print(f"cancel: packet type {kind}", file=sys.stderr)
        return True  # ATTENTION, or anything else in the middle of a statement, ends it


class SimServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, engine: Any) -> None:
        self.engine = engine
        self._spid = 50
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", port), Handler)

    def next_spid(self) -> int:
        with self._lock:
            self._spid += 1
            return self._spid


__all__ = ["Answer", "Cancelled", "Flush", "Session", "SimServer"]
