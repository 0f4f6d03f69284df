"""A deliberately minimal fake Messages API for the hostile tests: raw bytes out, nothing assumed.

Not the simulator. The simulator is written by the same hands as the library
and shares its assumptions; this server knows nothing of the Messages API but
its URL. Each POST gets the next item of a script, sent as the bytes the item
says — valid JSON, malformed JSON, an SSE stream built event by event (data
that is not JSON, blocks never closed, any field of any type), or a body cut
off mid-way by closing the socket.

Every request it receives is parsed and checked against the wire rules of
SPEC.md §3 (``wire_problems``) and the API's own request schema, as the
simulator's requests are by ``conftest``: ``server.problems`` lists what broke.

    with HostileServer([json_body({"hello": "world"})]) as server:
        client = anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0)
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import realtraffic

from agentfsm.wire.messages import wire_problems


@dataclass
class Response:
    """One scripted answer: a status, a content type and the raw body; ``cut_at`` closes the socket after that
    many bytes of the body (the headers announce all of it)."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    cut_at: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


#: A script item: a fixed response, or a function of the request's JSON body.
Item = Response | Callable[[dict[str, Any]], Response]


def json_body(body: object, status: int = 200) -> Response:
    """``body`` as JSON (``ensure_ascii``, so a lone surrogate goes out as its ``\\ud800`` escape)."""
    return Response(json.dumps(body).encode(), status=status)


def raw(text: str, status: int = 200, content_type: str = "application/json") -> Response:
    return Response(text.encode("utf-8"), status=status, content_type=content_type)


def sse(events: Sequence[tuple[str, object]], *, cut_at: int | None = None) -> Response:
    """A stream of ``(event, data)``; data that is not a string is sent as JSON, a string as it is."""
    out = []
    for event, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out.append(f"event: {event}\ndata: {text}\n\n")
    return Response("".join(out).encode("utf-8"), content_type="text/event-stream", cut_at=cut_at)


def message(content: list[Any], stop_reason: object = "end_turn", **extra: Any) -> dict[str, Any]:
    """A minimal message body (anything may be overridden, with any type)."""
    body: dict[str, Any] = {
        "id": "msg_hostile",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    body.update(extra)
    return body


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": args}


def stream_events(body: dict[str, Any], *, unclosed: Sequence[int] = ()) -> list[tuple[str, object]]:
    """The SSE events that stream ``body`` (a well-formed message): the blocks opened empty and filled by
    deltas, then ``message_delta`` with the stop reason; ``unclosed`` blocks get no ``content_block_stop``."""
    start = {k: v for k, v in body.items() if k not in ("content", "stop_reason", "stop_sequence")}
    start.update(content=[], stop_reason=None, stop_sequence=None)
    events: list[tuple[str, object]] = [("message_start", {"type": "message_start", "message": start})]
    for i, block in enumerate(body["content"]):
        kind = block["type"]
        if kind == "text":
            opened, deltas = {"type": "text", "text": ""}, [{"type": "text_delta", "text": block["text"]}]
        elif kind == "tool_use":
            opened = {**block, "input": {}}
            whole = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": part} for part in (whole[:3], whole[3:])]
        else:  # arrives whole
            opened, deltas = block, []
        events.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": opened}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}) for d in deltas]
        if i not in unclosed:
            events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    delta = {"stop_reason": body["stop_reason"], "stop_sequence": body.get("stop_sequence")}
    events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": {"output_tokens": 5}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def reply(body: dict[str, Any], *, unclosed: Sequence[int] = ()) -> Callable[[dict[str, Any]], Response]:
    """``body`` as the request asked for it: plain JSON, or streamed (``unclosed`` blocks never closed)."""

    def answer(request: dict[str, Any]) -> Response:
        if request.get("stream"):
            return sse(stream_events(body, unclosed=unclosed))
        return json_body(body)

    return answer


def dropped(body: dict[str, Any], fraction: float = 0.5) -> Callable[[dict[str, Any]], Response]:
    """``body`` (plain or streamed) cut off after ``fraction`` of its bytes: the connection drops."""

    def answer(request: dict[str, Any]) -> Response:
        full = reply(body)(request)
        full.cut_at = int(len(full.body) * fraction)
        return full

    return answer


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:  # a client hanging up is no news here
        pass


class HostileServer:
    """A loopback HTTP server answering each POST with the next script item (then HTTP 500s)."""

    def __init__(self, script: Sequence[Item] | Callable[[dict[str, Any]], Response] = ()) -> None:
        self._next: Callable[[dict[str, Any]], Response]
        if callable(script):
            self._next = script
        else:
            items = list(script)

            def next_item(request: dict[str, Any]) -> Response:
                if not items:
                    return json_body({"type": "error", "error": {"type": "api_error", "message": "script over"}}, 500)
                item = items.pop(0)
                return item(request) if callable(item) else item

            self._next = next_item
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.problems: list[str] = []
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record(self, body: bytes, headers: dict[str, str], query: str = "") -> dict[str, Any]:
        try:
            request = json.loads(body)
        except ValueError:
            request = {}
        with self._lock:
            n = len(self.requests) + 1
            self.requests.append(request)
            self.headers.append(headers)
            for problem in wire_problems(request.get("messages") or []):
                self.problems.append(f"request #{n}: {problem}")
            schema = realtraffic.schema_problems(request, realtraffic.schema_name(query, headers))
            if schema:
                self.problems.append(f"request #{n}: {schema[0]}")
        return request

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = server._record(self.rfile.read(length), headers, self.path.partition("?")[2])
                response = server._next(request)
                self.send_response(response.status)
                self.send_header("content-type", response.content_type)
                self.send_header("content-length", str(len(response.body)))
                for name, value in response.headers.items():
                    self.send_header(name, value)
                if response.cut_at is not None:
                    self.send_header("connection", "close")
                self.end_headers()
                if response.cut_at is None:
                    self.wfile.write(response.body)
                    self.wfile.flush()
                    return
                self.wfile.write(response.body[: response.cut_at])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):  # an abrupt end: no more bytes will come
                    self.connection.shutdown(socket.SHUT_RDWR)

        return Handler
