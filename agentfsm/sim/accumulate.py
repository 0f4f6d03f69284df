"""An SSE text back into the Message it carries, as raw JSON.

Recorded traffic holds many replies only as SSE. Replaying one to a
non-streaming request needs the Message body the API would have sent instead,
so the stream is folded the way the SDK's accumulator folds it, but on plain
dicts: block types and fields nobody here knows pass through unchanged. A
``tool_use`` cut off by ``max_tokens`` (no ``content_block_stop``) gets
``input: {}``, which is what the non-streaming API returns for it.
"""

from __future__ import annotations

import copy
import json
from typing import Any

Event = tuple[str, dict[str, Any]]

_TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})


class StreamFormatError(ValueError):
    """The text is not a Message stream (no ``message_start``, an event before it, or bad JSON)."""


def decode(text: str) -> list[Event]:
    """The ``(event, data)`` pairs of an SSE text, in order; frames without data or an ``event:`` line are skipped.

    Like the SDK, a frame counts only when it has an ``event:`` line, and a
    final frame without its closing blank line still counts here.
    """
    events: list[Event] = []
    for frame in text.replace("\r\n", "\n").split("\n\n"):
        name: str | None = None
        data: list[str] = []
        for line in frame.split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if name is None or not data:
            continue
        try:
            payload = json.loads("\n".join(data))
        except ValueError as exc:
            raise StreamFormatError(f"event {name!r}: data is not JSON ({exc})") from exc
        if isinstance(payload, dict):
            events.append((name, payload))
    return events


def accumulate(events: list[Event]) -> dict[str, Any]:
    """The Message a stream of events describes, as the JSON body a non-streaming request would get."""
    message: dict[str, Any] | None = None
    buffers: dict[int, str] = {}
    stopped: set[int] = set()
    for name, data in events:
        if name in ("ping", "message_stop"):
            continue
        if name == "error":
            raise StreamFormatError(f"the stream carries an error event: {data.get('error')!r}")
        if name == "message_start":
            if message is None:
                message = copy.deepcopy(data.get("message") or {})
                message.setdefault("content", [])
            continue
        if message is None:
            raise StreamFormatError(f"event {name!r} before message_start")
        content: list[dict[str, Any]] = message["content"]
        if name == "content_block_start":
            # Appended, as the SDK does: a block's place is its order (recorded streams exist whose
            # ``index`` fields were edited by hand and repeat).
            content.append(copy.deepcopy(data.get("content_block") or {}))
        elif name == "content_block_delta":
            index = int(data.get("index", 0))
            if not 0 <= index < len(content):
                raise StreamFormatError(f"content_block_delta for block {index}, which has not started")
            _apply_delta(content[index], data.get("delta") or {}, buffers, index)
        elif name == "content_block_stop":
            stopped.add(int(data.get("index", 0)))
        elif name == "message_delta":
            _apply_message_delta(message, data)
    if message is None:
        raise StreamFormatError("no message_start event")
    for index, raw in buffers.items():
        block = message["content"][index]
        if index not in stopped:
            block["input"] = {}  # cut off by max_tokens: the non-streaming API says input: {}
            continue
        try:
            block["input"] = json.loads(raw) if raw.strip() else block.get("input", {})
        except ValueError:
            block["input"] = {}
    return message


def _apply_delta(block: dict[str, Any], delta: dict[str, Any], buffers: dict[int, str], index: int) -> None:
    kind = delta.get("type")
    if kind == "text_delta":
        block["text"] = str(block.get("text") or "") + str(delta.get("text", ""))
    elif kind == "input_json_delta":
        if block.get("type") in _TOOL_BLOCKS:
            buffers[index] = buffers.get(index, "") + str(delta.get("partial_json", ""))
    elif kind == "citations_delta":
        block["citations"] = [*(block.get("citations") or []), delta.get("citation")]
    elif kind == "thinking_delta":
        block["thinking"] = str(block.get("thinking") or "") + str(delta.get("thinking", ""))
    elif kind == "signature_delta":
        block["signature"] = delta.get("signature")
    elif kind == "compaction_delta":
        for key in ("content", "encrypted_content"):
            if key in delta:
                block[key] = delta[key]


def _apply_message_delta(message: dict[str, Any], data: dict[str, Any]) -> None:
    delta = data.get("delta") or {}
    for key, value in delta.items():
        if key == "container" and value is None:
            continue
        message[key] = value
    for key, value in data.items():
        if key not in ("type", "delta", "usage") and value is not None:
            message[key] = value  # context_management, input_transformations, ...
    usage = data.get("usage")
    if isinstance(usage, dict):
        merged = dict(message.get("usage") or {})
        merged.update({k: v for k, v in usage.items() if v is not None})
        message["usage"] = merged
