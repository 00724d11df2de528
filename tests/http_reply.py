"""One HTTP reply from a test's stand-in server (http.server handlers): status, length, body."""

from __future__ import annotations

import http.server


def reply(handler: http.server.BaseHTTPRequestHandler, status: int, data: bytes, content_type: str = "application/json") -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
