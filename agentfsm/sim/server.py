"""The simulator on a real socket: a loopback HTTP/1.1 server.

Used when a client must be pointed at a URL (``base_url=``, ``ANTHROPIC_BASE_URL``,
the ``agentfsm sim serve`` command). SSE goes out with chunked transfer
encoding, one chunk per event, so a dropped stream looks to the client exactly
like a real cut connection (an incomplete chunked body).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from agentfsm.sim.wire import WireResponse, error_response

Responder = Callable[[str, str, str, dict[str, str], bytes], WireResponse]
"""``(method, path, query, headers, raw_body) -> WireResponse``: the simulator's entry point."""

log = logging.getLogger(__name__)


class SimHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that answers every request through ``respond``."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], respond: Responder) -> None:
        self.respond = respond
        #: TCP connections accepted so far: a client that keeps its connection alive opens one.
        self.connections = 0
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1  # the accepting thread is the only writer
        super().process_request(request, client_address)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked SSE, as the real API
    disable_nagle_algorithm = True  # without it every request stalls ~40 ms on delayed ACKs
    server: SimHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("sim server: " + format, *args)

    def do_POST(self) -> None:
        self._serve()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        headers = {key.lower(): value for key, value in self.headers.items()}
        try:
            wire = self.server.respond(self.command, url.path, url.query, headers, raw)
        except Exception as exc:  # an observer raised: answer clearly instead of killing the connection
            log.warning("simulator raised while answering %s %s", self.command, self.path, exc_info=True)
            message = f"simulator error: {type(exc).__name__}: {exc}"
            wire = error_response(400, "invalid_request_error", message, request_id="req_011CSimulatorError000000")
        self._send(wire)

    def _send(self, wire: WireResponse) -> None:
        if wire.drop and not wire.chunks:
            self.close_connection = True  # close without a response
            return
        self.send_response(wire.status)
        for key, value in wire.headers.items():
            self.send_header(key, value)
        if not wire.streaming and not wire.drop:
            body = b"".join(wire.chunks)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for chunk in wire.chunks:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if wire.drop:
            self.close_connection = True  # no terminating chunk: the client sees a cut body
            return
        self.wfile.write(b"0\r\n\r\n")
