"""A minimal fast HTTP/1.1 server (keep-alive) answering every POST with a provider-style 200.

Run in its own process by the benchmarks so that server work doesn't share the client's GIL.
Prints its port on the first line of stdout. ``server.py 0.02`` answers after 20 ms;
``server.py 0.02 FILE`` also appends each request (path, headers, body) to FILE as a JSON line,
so a bare client can replay exactly what the worker sent.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Seconds each answer takes (first argument, default 0).
LATENCY = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
RECORD = sys.argv[2] if len(sys.argv) > 2 else None
OK = json.dumps({"success": True, "message": "Event received"}).encode()
_record_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if RECORD:
            line = {"path": self.path, "headers": dict(self.headers), "body": body.decode()}
            with _record_lock, open(RECORD, "a") as record:
                record.write(json.dumps(line) + "\n")
        if LATENCY:
            time.sleep(LATENCY)  # a provider across the internet, not on this machine
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(OK)))
        self.end_headers()
        self.wfile.write(OK)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


if __name__ == "__main__":
    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
