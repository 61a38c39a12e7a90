"""A small TCP proxy on 127.0.0.1 that forwards to a target and breaks connections on request.

    proxy = FlakyProxy("127.0.0.1", server_port)   # listens on proxy.host:proxy.port
    proxy.fail_rate(0.3, seed=1)   # 30% of new connections are cut, at once or after a few bytes
    proxy.drop_after_bytes(1000)   # every new connection is cut after 1000 bytes (both directions)
    proxy.pause(); proxy.resume()  # while paused: live connections are cut, new ones reset at once
    proxy.heal()                   # all failures off
    proxy.close()                  # stops listening, cuts everything, joins its threads

Fixture:
  flaky_proxy_factory  function  make(target_host, target_port) -> FlakyProxy; all closed at teardown
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Self

import pytest

from tests.servers.ports import LOOPBACK

_POLL = 0.2  # seconds; how fast the threads notice close()


def _abort(sock: socket.socket) -> None:
    """Close with RST instead of FIN, like a crashed peer or a broken network."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FlakyProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(_POLL)
        self.host: str = LOOPBACK
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._rng = random.Random(0)
        self._fail_p = 0.0
        self._fail_max_bytes = 4096
        self._drop_after: int | None = None
        self._paused = False
        self._closed = threading.Event()
        self._live: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.connections = 0  # connections accepted
        self.cut = 0  # connections broken on purpose
        self._accepter = threading.Thread(target=self._accept_loop, name=f"flaky-{self.port}", daemon=True)
        self._accepter.start()

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://{self.host}:{self.port}"

    # --- failure controls ---------------------------------------------------------------
    def fail_rate(self, p: float, seed: int | None = 0, max_bytes: int = 4096) -> None:
        """Cut a fraction p of new connections: half at once, half after 1..max_bytes bytes."""
        with self._lock:
            self._fail_p, self._fail_max_bytes, self._rng = p, max_bytes, random.Random(seed)

    def drop_after_bytes(self, n: int | None) -> None:
        """Cut every new connection after n bytes in total (None: no limit)."""
        with self._lock:
            self._drop_after = n

    def pause(self) -> None:
        """Cut the live connections and reset new ones until resume()."""
        with self._lock:
            self._paused = True
            live = list(self._live)
        for sock in live:
            self._shutdown(sock)

    def resume(self) -> None:
        with self._lock:
            self._paused = False

    def heal(self) -> None:
        """Turn every failure off."""
        with self._lock:
            self._fail_p, self._drop_after, self._paused = 0.0, None, False

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._live) // 2

    # --- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        self._closed.set()
        self._accepter.join(5)
        self._listener.close()
        with self._lock:
            live = list(self._live)
        for sock in live:
            self._shutdown(sock)
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------
    def _budget(self) -> int | None:
        """Decide the fate of a new connection: bytes it may carry (0: cut at once, None: no limit)."""
        with self._lock:
            self.connections += 1
            if self._paused:
                return 0
            if self._fail_p > 0 and self._rng.random() < self._fail_p:
                return 0 if self._rng.random() < 0.5 else self._rng.randint(1, self._fail_max_bytes)
            return self._drop_after

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            budget = self._budget()
            if budget == 0:
                self._count_cut()
                _abort(client)
                continue
            thread = threading.Thread(target=self._serve, args=(client, budget), daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _count_cut(self) -> None:
        with self._lock:
            self.cut += 1

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _serve(self, client: socket.socket, budget: int | None) -> None:
        client.settimeout(None)
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _abort(client)
            return
        upstream.settimeout(None)
        with self._lock:
            self._live.update((client, upstream))
        try:
            if not self._pump(client, upstream, budget):
                self._count_cut()
                _abort(client)
                _abort(upstream)
        except OSError:
            pass
        finally:
            with self._lock:
                self._live.difference_update((client, upstream))
            client.close()
            upstream.close()

    def _pump(self, client: socket.socket, upstream: socket.socket, budget: int | None) -> bool:
        """Forward both ways until both sides are done (True) or the budget runs out (False)."""
        peer = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as sel:
            for sock in peer:
                sel.register(sock, selectors.EVENT_READ)
            while sel.get_map() and not self._closed.is_set():
                for key, _ in sel.select(_POLL):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(65536)
                    if not data:  # EOF: pass the half-close on
                        sel.unregister(src)
                        self._shutdown_write(peer[src])
                        continue
                    if budget is not None and len(data) >= budget:
                        peer[src].sendall(data[:budget])
                        return False
                    if budget is not None:
                        budget -= len(data)
                    peer[src].sendall(data)
        return True

    @staticmethod
    def _shutdown_write(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)


@pytest.fixture
def flaky_proxy_factory() -> Iterator[Callable[[str, int], FlakyProxy]]:
    proxies: list[FlakyProxy] = []

    def make(target_host: str, target_port: int) -> FlakyProxy:
        proxy = FlakyProxy(target_host, target_port)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()
