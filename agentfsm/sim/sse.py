"""A Message as a server-sent-event stream, framed like the real API's.

Real streams send compact JSON padded with a few spaces before the closing
brace, a ``ping`` (with spaced JSON) after the first block starts, text in many
small ``text_delta`` pieces and tool input as ``input_json_delta`` pieces of the
serialised input (default ``json.dumps`` separators, first piece empty).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from typing import Any

from agentfsm.sim.model import Fault

Event = tuple[str, dict[str, Any]]

_PIECE_SIZES = (3, 9, 5, 14, 7, 11, 4, 16, 8, 6)
_TOOL_BLOCKS = ("tool_use", "server_tool_use", "mcp_tool_use")


def pieces(text: str) -> list[str]:
    """Split ``text`` into delta-sized pieces: small and uneven, bigger for long texts (≤ ~40 pieces then)."""
    floor = math.ceil(len(text) / 40)
    out: list[str] = []
    i = k = 0
    while i < len(text):
        size = max(_PIECE_SIZES[k % len(_PIECE_SIZES)], floor)
        out.append(text[i : i + size])
        i += size
        k += 1
    return out


def _start_block(block: dict[str, Any]) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": ""}
    if kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    if kind in _TOOL_BLOCKS:
        return {key: ({} if key == "input" else value) for key, value in block.items()}
    if kind == "compaction":  # the summary arrives in one compaction_delta
        return {**{k: v for k, v in block.items() if k != "encrypted_content"}, "content": None}
    return block  # server tool results, redacted_thinking, fallback, …: they arrive whole


def _deltas(block: dict[str, Any], partial_json: str | None) -> Iterator[dict[str, Any]]:
    kind = block.get("type")
    if kind == "text":
        for piece in pieces(str(block.get("text", ""))):
            yield {"type": "text_delta", "text": piece}
        for citation in block.get("citations") or []:
            yield {"type": "citations_delta", "citation": citation}
    elif kind == "thinking":
        for piece in pieces(str(block.get("thinking", ""))):
            yield {"type": "thinking_delta", "thinking": piece}
        yield {"type": "signature_delta", "signature": str(block.get("signature", ""))}
    elif kind == "compaction":
        yield {"type": "compaction_delta", **{k: block[k] for k in ("content", "encrypted_content") if k in block}}
    elif kind in _TOOL_BLOCKS:
        serialised = (
            partial_json if partial_json is not None else json.dumps(block.get("input", {}), ensure_ascii=False)
        )
        yield {"type": "input_json_delta", "partial_json": ""}
        for piece in pieces(serialised):
            yield {"type": "input_json_delta", "partial_json": piece}


def message_events(
    message: dict[str, Any],
    *,
    start_usage: dict[str, Any],
    delta_usage: dict[str, Any],
    truncated_input_json: str | None = None,
) -> list[Event]:
    """Every event of a complete stream for ``message`` (a full Message body)."""
    head = {key: value for key, value in message.items() if key != "usage"}
    head.update(content=[], stop_reason=None, stop_sequence=None, stop_details=None, usage=start_usage)
    hops = [b for b in message["content"] if b.get("type") == "fallback" and isinstance(b.get("from"), dict)]
    if hops:  # the stream opens as the requested model's; each fallback block hands it on (the JSON names the last)
        head["model"] = hops[0]["from"].get("model", head.get("model"))
    events: list[Event] = [("message_start", {"type": "message_start", "message": head})]
    content: list[dict[str, Any]] = message["content"]
    for index, block in enumerate(content):
        truncated = truncated_input_json is not None and index == len(content) - 1 and block.get("type") == "tool_use"
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": _start_block(block)},
            )
        )
        if index == 0:
            events.append(("ping", {"type": "ping"}))
        for delta in _deltas(block, truncated_input_json if truncated else None):
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        if not truncated:  # the real API sends no stop for a tool_use cut off by max_tokens
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    if not content:
        events.append(("ping", {"type": "ping"}))
    delta = {
        "stop_reason": message["stop_reason"],
        "stop_sequence": message["stop_sequence"],
        "stop_details": message.get("stop_details"),
    }
    events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": delta_usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


OVERLOADED_EVENT: Event = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


def apply_fault(events: list[Event], fault: Fault | None) -> tuple[list[Event], bool]:
    """Cut or corrupt a stream as ``fault`` says; returns the events to send and whether to drop the connection."""
    if fault is None:
        return events, False
    if fault == "no_message_delta":
        return [e for e in events if e[0] not in ("message_delta", "message_stop")], False
    delta_positions = [i for i, (name, _) in enumerate(events) if name == "content_block_delta"]
    if delta_positions:
        cut = delta_positions[(len(delta_positions) - 1) // 2] + 1  # after about half of the deltas
    else:
        cut = next((i + 1 for i, (name, _) in enumerate(events) if name == "content_block_start"), 1)
    kept = events[:cut]
    if fault == "error_event":
        return [*kept, OVERLOADED_EVENT], False
    return kept, True


def encode(events: list[Event], seed: str) -> list[bytes]:
    """SSE frames; the padding is pseudo-random but reproducible from ``seed``."""
    rng = random.Random(seed)
    frames: list[bytes] = []
    for name, data in events:
        if name == "ping":
            payload = json.dumps(data)  # the real API spaces its ping payload
        else:
            compact = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
            payload = compact[:-1] + " " * rng.randrange(0, 15) + "}"
        frames.append(f"event: {name}\ndata: {payload}\n\n".encode())
    return frames
