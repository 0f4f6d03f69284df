"""Turning a scripted answer into the HTTP response the real API would send.

``WireResponse`` is transport-neutral: the in-process ``MockTransport`` adapter
and the loopback server both send it. A response with ``drop`` set ends with the
connection cut (after its chunks, or before any response at all when it has
none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agentfsm.sim import serverside, sse
from agentfsm.sim.caching import CacheUsage
from agentfsm.sim.model import ScriptedReply, SimRequest
from agentfsm.sim.tokens import count_input_tokens, count_output_tokens

MESSAGES_PATH = "/v1/messages"
_RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

RETRY_NOW: dict[str, str] = {"retry-after-ms": "1"}
"""Headers that make the SDK's built-in retry wait 1 ms instead of backing off."""


@dataclass(frozen=True)
class WireResponse:
    """Status, headers and body chunks of one response (one chunk per SSE event)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    chunks: tuple[bytes, ...] = ()
    drop: bool = False

    @property
    def streaming(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def is_retryable(status: int) -> bool:
    """Whether the SDK (and the API's ``x-should-retry`` header) treats this status as transient."""
    return status in _RETRYABLE or status >= 500


def error_response(
    status: int,
    error_type: str,
    message: str,
    *,
    request_id: str,
    headers: dict[str, str] | None = None,
    error_code: str | None = None,
) -> WireResponse:
    """An error in the API's shape: ``{"type": "error", "error": {...}, "request_id": ...}`` (with
    ``error.details.error_code`` when given)."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    body = {"type": "error", "error": error, "request_id": request_id}
    merged = {
        "content-type": "application/json",
        "request-id": request_id,
        "x-should-retry": "true" if is_retryable(status) else "false",
    }
    merged.update({k.lower(): v for k, v in (headers or {}).items()})
    return WireResponse(status=status, headers=merged, chunks=(_compact(body),))


def dropped() -> WireResponse:
    """The connection closes before any response is sent."""
    return WireResponse(status=0, drop=True)


def compute_usage(
    request: SimRequest, reply: ScriptedReply, content: list[dict[str, Any]], cached: CacheUsage | None = None
) -> dict[str, Any]:
    """Usage like the real API's, from deterministic token counts (``reply.usage`` overrides keys).

    ``cached`` is how the prompt cache billed the prompt: ``input_tokens`` is what is left after the
    tokens read from and written to the cache, as the API reports it.
    """
    cached = cached or CacheUsage()
    output = count_output_tokens(content)
    limit = request.max_tokens
    if limit is not None:
        output = limit if reply.stop_reason == "max_tokens" else min(output, limit)
    usage: dict[str, Any] = {
        "input_tokens": max(0, count_input_tokens(request.body, unmarked=True) - cached.read - cached.write),
        "cache_creation_input_tokens": cached.write,
        "cache_read_input_tokens": cached.read,
        "cache_creation": {"ephemeral_5m_input_tokens": cached.write_5m, "ephemeral_1h_input_tokens": cached.write_1h},
        "output_tokens": output,
        "service_tier": "standard",
        "inference_geo": "not_available",
    }
    if any(b.get("type") == "server_tool_use" for b in content):
        usage["server_tool_use"] = {
            "web_search_requests": sum(b.get("type") == "web_search_tool_result" for b in content),
            "web_fetch_requests": sum(b.get("type") == "web_fetch_tool_result" for b in content),
        }
    usage = serverside.iterations_for(request, reply, content, usage)
    if reply.usage:
        usage.update(reply.usage)
    return usage


def message_body(
    request: SimRequest,
    reply: ScriptedReply,
    content: list[dict[str, Any]],
    *,
    message_id: str,
    cached: CacheUsage | None = None,
) -> dict[str, Any]:
    """The full Message object, keys in the real API's order."""
    return {
        "model": reply.model or request.model,
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        "stop_details": reply.stop_details,
        "usage": compute_usage(request, reply, content, cached),
    }


def stream_usages(usage: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The usage a stream reports in ``message_start`` and in ``message_delta``, from the final usage."""
    late = ("server_tool_use", "output_tokens_details", "iterations", "fallback_credit")
    start = {k: v for k, v in usage.items() if k not in late}
    start["output_tokens"] = min(1, int(usage.get("output_tokens", 1)))
    keys = (
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "output_tokens",
        "output_tokens_details",
        "server_tool_use",
        "iterations",
        "fallback_credit",
    )
    return start, {k: usage[k] for k in keys if k in usage}


def reply_response(
    request: SimRequest,
    reply: ScriptedReply,
    content: list[dict[str, Any]],
    *,
    message_id: str,
    request_id: str,
    cached: CacheUsage | None = None,
) -> WireResponse:
    """A served reply as JSON or SSE (as the request asked), with its fault applied."""
    if reply.fault is not None and not request.stream:
        if reply.fault == "drop":
            return dropped()
        if reply.fault == "error_event":
            return error_response(529, "overloaded_error", "Overloaded", request_id=request_id, headers=RETRY_NOW)
        reply = reply.model_copy(update={"stop_reason": None, "stop_sequence": None, "stop_details": None})
    body = message_body(request, reply, content, message_id=message_id, cached=cached)
    if not request.stream:
        headers = {"content-type": "application/json", "request-id": request_id}
        return WireResponse(status=200, headers=headers, chunks=(_compact(body),))
    start_usage, delta_usage = stream_usages(body["usage"])
    events = sse.message_events(
        body, start_usage=start_usage, delta_usage=delta_usage, truncated_input_json=reply.truncated_input_json
    )
    events, drop = sse.apply_fault(events, reply.fault)
    headers = {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        "request-id": request_id,
    }
    return WireResponse(status=200, headers=headers, chunks=tuple(sse.encode(events, seed=message_id)), drop=drop)
