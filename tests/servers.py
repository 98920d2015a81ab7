"""A real local HTTP server for tests whose claim is about the wire.

``RecordingServer`` answers every POST with the next scripted answer (or a default) and records
what it received, so tests can count requests per event_id across processes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=lambda: {"success": True, "message": "Event received"})
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the answer starts
    drip: float = 0.0  # seconds between the body's bytes, after headers sent at once


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any

    def event_ids(self) -> list[str]:
        """Event ids in a Scanova single or batch body."""
        if isinstance(self.body, dict) and "events" in self.body:
            return [e.get("event_id") for e in self.body["events"]]
        if isinstance(self.body, dict) and "event_id" in self.body:
            return [self.body["event_id"]]
        return []


class RecordingServer:
    def __init__(self, default: Answer | None = None) -> None:
        self.default = default or Answer()
        self.script: list[Answer] = []
        self.received: list[Received] = []
        self.responder: Callable[[Received], Answer] | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> RecordingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # ends drips still going
        self._server.shutdown()
        self._server.server_close()

    def event_id_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._lock:
            for request in self.received:
                for event_id in request.event_ids():
                    counts[event_id] = counts.get(event_id, 0) + 1
        return counts

    def _next_answer(self, received: Received) -> Answer:
        with self._lock:
            self.received.append(received)
            if self.script:
                return self.script.pop(0)
        if self.responder is not None:
            return self.responder(received)
        return self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                received = Received(self.path, dict(self.headers.items()), body)
                answer = server._next_answer(received)
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                if answer.delay:
                    time.sleep(answer.delay)
                with server._lock:
                    server.in_flight -= 1
                payload = json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                with suppress(BrokenPipeError, ConnectionResetError):
                    if not answer.drip:
                        self.wfile.write(payload)
                        return
                    for byte in payload:
                        if server._stopping.wait(answer.drip):
                            return
                        self.wfile.write(bytes([byte]))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@contextmanager
def recording_server(default: Answer | None = None) -> Iterator[RecordingServer]:
    server = RecordingServer(default).start()
    try:
        yield server
    finally:
        server.stop()


class HeldProvider:
    """A provider holding each request until the test releases it, or until it gives up
    waiting (then it answers anyway, and says so)."""

    def __init__(self, hold_seconds: float) -> None:
        self.hold_seconds = hold_seconds
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.gave_up = threading.Event()

    def __call__(self, received: Received) -> Answer:
        self.arrived.set()
        if not self.release.wait(self.hold_seconds):
            self.gave_up.set()
        return Answer()


@contextmanager
def held_provider(hold_seconds: float = 10.0) -> Iterator[tuple[str, HeldProvider]]:
    """A recording server whose answers wait for ``provider.release`` (set on leaving)."""
    provider = HeldProvider(hold_seconds)
    with recording_server() as server:
        server.responder = provider
        try:
            yield server.url, provider
        finally:
            provider.release.set()
