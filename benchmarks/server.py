"""A minimal fast HTTP/1.1 server (keep-alive) answering every POST with a provider-style 200.

Run in its own process by the benchmarks so that server work doesn't share the client's GIL.
Prints its port on the first line of stdout. ``server.py 0.02`` answers after 20 ms.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Seconds each answer takes (first argument, default 0).
LATENCY = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
OK = json.dumps({"success": True, "message": "Event received"}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if LATENCY:
            time.sleep(LATENCY)  # a provider across the internet, not on this machine
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(OK)))
        self.end_headers()
        self.wfile.write(OK)

    def log_message(self, format: str, *args: Any) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
