"""A real HTTP server on a thread of its own whose every GET is answered with the status a function
decides from the server's address and the path (a small JSON body), for tests of probes."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(address: str, port: int, status: Callable[[str, str], int]) -> ThreadingHTTPServer:
    """Started; `shutdown()` and `server_close()` it when done."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = status(str(self.server.server_address[0]), self.path)
            body = json.dumps({"status": "healthy" if code == 200 else "unhealthy"}).encode()
            self.send_response(code)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
