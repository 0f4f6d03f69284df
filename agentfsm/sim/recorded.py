"""Replaying exchanges recorded from the real Messages API.

The simulator is ours; the API is not. A recording is one real exchange in
the format of the shared ``realtraffic`` corpus: a JSON object with the
``request`` body (or null), the ``status_code``, and either the ``response``
body (JSON) or the raw ``sse`` text of a streamed answer. ``Recording.load``
reads one; ``replies.recorded(...)`` turns one into a script item, and
``Simulator.from_recording(...)`` builds a simulator that serves recordings
in order.

Served, a recording is sent as it was recorded: a streaming request gets the
recorded SSE text byte for byte (one chunk per event, exactly as stored —
padding, ``ping`` events and a missing final blank line included); a
non-streaming request gets the recorded JSON body. When only the other form
was recorded it is derived: SSE is folded into its Message
(``accumulate``), a JSON Message is framed as SSE the way the simulator
frames its own replies. Error bodies go out with their recorded status,
streaming or not, as the API sends errors before a stream starts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentfsm.sim import sse
from agentfsm.sim.accumulate import accumulate, decode
from agentfsm.sim.model import RecordedReply, SimRequest
from agentfsm.sim.wire import RETRY_NOW, WireResponse, is_retryable, stream_usages
from agentfsm.wire.api import ERROR_STATUS

_FRAME_END = re.compile(r"(?<=\n\n)")


class Recording(BaseModel):
    """One recorded exchange: what was asked (if kept) and what the real API answered."""

    model_config = ConfigDict(frozen=True)

    file: str = Field(default="", description="the file it was read from (its name), or a label")
    status_code: int = Field(description="the recorded HTTP status, inferred from the error type when not kept")
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = Field(default=None, description="the JSON body, when the answer was JSON")
    sse: str | None = Field(default=None, description="the raw event-stream text, when the answer was streamed")
    meta: dict[str, Any] = Field(default_factory=dict, description="every other field of the file")

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        path = Path(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a recording is a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, file=path.name)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, file: str = "") -> Recording:
        """A recording from the parsed file (``request``, ``status_code``, ``response`` or ``sse``)."""
        response = data.get("response")
        stream = data.get("sse")
        if not isinstance(response, dict) and not isinstance(stream, str):
            raise ValueError(f"recording {file or '(dict)'}: needs a 'response' object or an 'sse' string")
        request = data.get("request")
        status = data.get("status_code")
        if not isinstance(status, int):
            status = _status_of(response if isinstance(response, dict) else None)
        known = {"request", "response", "sse", "status_code"}
        return cls(
            file=file,
            status_code=status,
            request=request if isinstance(request, dict) else None,
            response=response if isinstance(response, dict) else None,
            sse=stream if isinstance(stream, str) else None,
            meta={k: v for k, v in data.items() if k not in known},
        )

    @property
    def streamed(self) -> bool:
        return self.sse is not None

    @property
    def is_error(self) -> bool:
        """An error answer (HTTP 4xx/5xx), not a Message."""
        return self.status_code >= 400 or _is_error_body(self.response)

    def message(self) -> dict[str, Any] | None:
        """The Message the API answered (folded from the stream if only that was recorded); None for errors."""
        if self.is_error:
            return None
        if self.response is not None:
            return self.response
        assert self.sse is not None
        return accumulate(decode(self.sse))

    @property
    def stop_reason(self) -> str | None:
        """The answer's ``stop_reason`` (None for an error or a null stop_reason)."""
        message = self.message()
        value = message.get("stop_reason") if message else None
        return value if isinstance(value, str) else None

    def reply(self) -> RecordedReply:
        """This recording as a simulator script item."""
        return RecordedReply(status=self.status_code, body=self.response, sse=self.sse, source=self.file)


def load(source: str | Path | Mapping[str, Any] | Recording) -> Recording:
    """A ``Recording`` from a path, a parsed recording file, or a ``Recording``."""
    if isinstance(source, Recording):
        return source
    if isinstance(source, str | Path):
        return Recording.load(source)
    return Recording.from_dict(source)


def frames(text: str) -> tuple[bytes, ...]:
    """The SSE text as one chunk per event; the chunks join to exactly the recorded bytes."""
    return tuple(part.encode("utf-8") for part in _FRAME_END.split(text) if part)


def recorded_response(request: SimRequest, reply: RecordedReply, *, request_id: str) -> WireResponse:
    """The HTTP response that replays ``reply`` for ``request`` (JSON or SSE, as the request asks)."""
    if reply.status >= 400 or _is_error_body(reply.body):
        return _error(reply, request_id)
    if request.stream:
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "request-id": request_id,
        }
        if reply.sse is not None:
            return WireResponse(status=reply.status, headers=headers, chunks=frames(reply.sse))
        assert reply.body is not None
        return WireResponse(status=reply.status, headers=headers, chunks=_framed(reply.body, request_id))
    body = reply.body if reply.body is not None else accumulate(decode(reply.sse or ""))
    headers = {"content-type": "application/json", "request-id": request_id}
    return WireResponse(status=reply.status, headers=headers, chunks=(_json_bytes(body),))


def _error(reply: RecordedReply, request_id: str) -> WireResponse:
    body = reply.body or {"type": "error", "error": {"type": "api_error", "message": "recorded error without a body"}}
    status = reply.status if reply.status >= 400 else _status_of(body)
    recorded_id = body.get("request_id")
    headers = {
        "content-type": "application/json",
        "request-id": recorded_id if isinstance(recorded_id, str) else request_id,
        "x-should-retry": "true" if is_retryable(status) else "false",
    }
    if is_retryable(status):
        headers.update(RETRY_NOW)  # the SDK's own retries then cost nothing (each one takes a script item)
    return WireResponse(status=status, headers=headers, chunks=(_json_bytes(body),))


def _framed(message: dict[str, Any], seed: str) -> tuple[bytes, ...]:
    """A recorded JSON Message as the simulator frames its own streams (no recorded SSE to replay)."""
    start_usage, delta_usage = stream_usages(dict(message.get("usage") or {}))
    full = {"stop_reason": None, "stop_sequence": None, **message, "content": list(message.get("content") or [])}
    events = sse.message_events(full, start_usage=start_usage, delta_usage=delta_usage)
    return tuple(sse.encode(events, seed=seed))


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _is_error_body(body: Mapping[str, Any] | None) -> bool:
    return body is not None and (body.get("type") == "error" or str(body.get("type", "")).endswith("_error"))


def _status_of(body: Mapping[str, Any] | None) -> int:
    """The status a body implies: 200 for a Message, the error type's status for an error."""
    if not _is_error_body(body):
        return 200
    assert body is not None
    error = body.get("error")
    kind = error.get("type") if isinstance(error, dict) else body.get("type")
    return ERROR_STATUS.get(str(kind), 400)
