"""Serving a ``WireResponse`` through ``httpx2.MockTransport`` (no sockets).

A dropped connection is modelled the way httpx2 reports a real one:
``httpx2.RemoteProtocolError``, raised before the response (nothing sent) or
from the body stream (cut mid-stream).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx2

from agentfsm.sim.wire import WireResponse

_NO_RESPONSE = "Server disconnected without sending a response."
_CUT = "peer closed connection without sending complete message body (incomplete chunked read)"


def _sync_body(chunks: tuple[bytes, ...], drop: bool) -> Iterator[bytes]:
    yield from chunks
    if drop:
        raise httpx2.RemoteProtocolError(_CUT)


async def _async_body(chunks: tuple[bytes, ...], drop: bool) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    if drop:
        raise httpx2.RemoteProtocolError(_CUT)


def to_httpx(wire: WireResponse, request: httpx2.Request, *, asynchronous: bool) -> httpx2.Response:
    """The httpx2 response for ``wire``; raises ``RemoteProtocolError`` if nothing would be sent."""
    if wire.drop and not wire.chunks:
        raise httpx2.RemoteProtocolError(_NO_RESPONSE, request=request)
    if not wire.streaming and not wire.drop:
        return httpx2.Response(wire.status, headers=wire.headers, content=b"".join(wire.chunks), request=request)
    if asynchronous:
        return httpx2.Response(
            wire.status, headers=wire.headers, content=_async_body(wire.chunks, wire.drop), request=request
        )
    return httpx2.Response(
        wire.status, headers=wire.headers, content=_sync_body(wire.chunks, wire.drop), request=request
    )
