"""A total deadline for one HTTP request: connect, status line, headers and body together.

``requests`` bounds each socket operation (the connect timeout, the read timeout of each read):
a server that sends one byte just inside the read timeout, again and again, holds the request
for as long as it likes. Here a timer armed when the request starts shuts the connection's
socket down at the deadline, which ends whatever read is blocked on it, in whichever phase.

The socket reaches the timer two ways: the connection classes behind ``GuardedAdapter`` hand it
over when they start waiting for the answer (status line and headers), and the answer itself
(urllib3's ``HTTPResponse.shutdown()``) covers the body for any session.

The same connection classes refuse a host whose address is loopback, link-local or private
(``django_conversions.endpoints``) before connecting, and check the address actually reached
before anything is sent.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import suppress
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from django_conversions.endpoints import DestinationRefused, address_problem, resolved_problem

_current = threading.local()


class RequestDeadline:
    """The time one request may take; used as ``with RequestDeadline(30) as clock: ...``.

    Entering starts the timer and makes this the deadline of the thread's request (the
    connection classes below find it there); leaving, or ``finish()``, stops it. ``cut_off``
    says whether the deadline ended the request.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = max(float(seconds), 0.001)
        self.started = time.monotonic()
        self.ends = self.started + self.seconds
        self.cut_off = False
        self._finished = False
        self._socket: socket.socket | None = None
        self._answer: requests.Response | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(self.seconds, self.cut)
        self._timer.daemon = True

    def __enter__(self) -> RequestDeadline:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.finish()
        _current.deadline = None

    def left(self) -> float:
        return self.ends - time.monotonic()

    def passed(self) -> bool:
        return self.left() <= 0

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def describe(self) -> str:
        return f"no complete answer within {self.seconds:g} s (deadline)"

    def watch_socket(self, sock: socket.socket | None) -> None:
        self._watch(sock=sock)

    def watch_answer(self, answer: requests.Response) -> None:
        self._watch(answer=answer)

    def finish(self) -> None:
        """The request is over (answered, failed or cut): the timer leaves it alone now."""
        with self._lock:
            self._finished = True
        self._timer.cancel()

    def cut(self) -> None:
        """End the request now: reads blocked on its socket return at once."""
        with self._lock:
            if self._finished:
                return
            self.cut_off = True
            sock, answer = self._socket, self._answer
        _shut_down(sock, answer)

    def _watch(
        self, sock: socket.socket | None = None, answer: requests.Response | None = None
    ) -> None:
        with self._lock:
            self._socket = sock or self._socket
            self._answer = answer or self._answer
            cut_off = self.cut_off
        if cut_off:  # the deadline passed before the socket was known
            _shut_down(sock, answer)


def _shut_down(sock: socket.socket | None, answer: requests.Response | None) -> None:
    # A socket already closed, an answer already released to the pool or without a socket
    # (a mocked one): nothing is blocked on it, and the check between reads ends the request.
    if sock is not None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    if answer is not None:
        with suppress(OSError, RuntimeError, ValueError):
            answer.raw.shutdown()


def _watched(sock: socket.socket | None) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch_socket(sock)


def _refuse_private_host(connection: HTTPConnection) -> None:
    """Before connecting: the addresses the host resolves to must be public (unless allowed).
    A proxy's own address is not checked: the proxy, not this process, reaches the host."""
    if connection.proxy is None:
        problem = resolved_problem(connection.host, connection.port)
        if problem:
            raise DestinationRefused(problem)


def _refuse_private_peer(connection: HTTPConnection) -> None:
    """After connecting, before anything is sent: the address reached must be public too (the
    name may have resolved differently the second time)."""
    if connection.proxy is None and connection.sock is not None:
        peer = str(connection.sock.getpeername()[0])
        problem = address_problem(connection.host, peer)
        if problem:
            connection.close()
            raise DestinationRefused(problem)


class _GuardedHTTPConnection(HTTPConnection):
    """The address checks around connecting, and the socket handed to the deadline's timer
    before the answer is read."""

    def connect(self) -> None:
        _refuse_private_host(self)
        super().connect()
        _refuse_private_peer(self)

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _watched(self.sock)
        return super().getresponse(*args, **kwargs)


class _GuardedHTTPSConnection(_GuardedHTTPConnection, HTTPSConnection):
    """The same over TLS: the methods above run around ``HTTPSConnection``'s own."""


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


_GUARDED_POOLS: dict[str, type[HTTPConnectionPool]] = {
    "http": _GuardedHTTPPool,
    "https": _GuardedHTTPSPool,
}


class GuardedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections let a ``RequestDeadline`` end a request that is
    still waiting for its status line and headers (direct, or through an HTTP(S) proxy)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _GUARDED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS brings connection classes of its own
            manager.pool_classes_by_scheme = _GUARDED_POOLS
        return manager
