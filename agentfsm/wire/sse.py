"""Reading a streamed reply: server-sent events in, one Message body out.

agentfsm parses the raw SSE lines itself rather than using the SDK's
accumulated message, for the same reason ``api`` reads raw JSON: content
blocks and fields this version does not know must reach the history exactly
as the API sent them.

A stream can end three ways that are *not* a finished reply, and the
assembler tells them apart so the driver can retry the request: the
connection drops (an exception while reading), the server sends an
``error`` event, or the stream stops before ``message_delta`` (no
stop_reason). A tool_use block cut off by max_tokens gets no
``content_block_stop``; its partial JSON is never parsed into an input.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Yield ``(event, data)`` for each server-sent event in ``lines`` (line terminators stripped)."""
    event = ""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            event = line[6:].strip()
        # comments (":...") and other fields are ignored, as the SSE spec says
    if data:
        yield event or "message", "\n".join(data)


class StreamError(Exception):
    """The server sent an ``error`` event in the middle of a stream."""

    def __init__(self, body: dict[str, Any]) -> None:
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        self.error_type = str(error.get("type", "error")) if error else "error"
        super().__init__(str(error.get("message", body)) if error else str(body))


class ReplyAssembler:
    """Builds a reply from stream events, reporting text deltas as they arrive."""

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.content: list[dict[str, Any]] = []
        self._json: dict[int, str] = {}
        self.stopped = False  # message_delta seen: the reply has its stop_reason

    def feed(self, event: str, data: str) -> str:
        """Take one event; return the text it adds to a text block ("" for none)."""
        if event == "ping":
            return ""
        try:
            body = json.loads(data)
        except ValueError:
            return ""
        if not isinstance(body, dict):
            return ""
        kind = body.get("type", event)
        if kind == "error" or event == "error":
            raise StreamError(body)
        if kind == "message_start":
            message = dict(body.get("message") or {})
            self.content = list(message.get("content") or [])
            message["content"] = self.content
            self.message = message
        elif kind == "content_block_start":
            # Appended, as the SDK does: the block's position is its arrival order.
            block = dict(body.get("content_block") or {})
            self.content.append(block)
            if block.get("type") == "fallback" and self.message is not None:
                # The hop's model serves what follows: the JSON reply names it in ``model`` (as the SDK relabels).
                to = block.get("to")
                if isinstance(to, dict) and isinstance(to.get("model"), str):
                    self.message["model"] = to["model"]
            if block.get("type") == "text" and block.get("text"):
                return str(block["text"])
        elif kind == "content_block_delta":
            return self._delta(int(body.get("index", 0)), body.get("delta") or {})
        elif kind == "content_block_stop":
            self._close(int(body.get("index", 0)))
        elif kind == "message_delta":
            self._message_delta(body)
        elif kind == "message_stop" and self.message is not None and self.message.get("stop_reason") is not None:
            # Some replies (programmatic tool calling) arrive whole in message_start, stop_reason
            # included, and end with message_stop and no message_delta: that is a finished reply.
            self.stopped = True
        return ""

    def _delta(self, index: int, delta: dict[str, Any]) -> str:
        if index >= len(self.content):
            return ""
        block = self.content[index]
        kind = delta.get("type")
        if kind == "text_delta":
            text = str(delta.get("text", ""))
            block["text"] = block.get("text", "") + text
            return text
        if kind == "input_json_delta":
            self._json[index] = self._json.get(index, "") + str(delta.get("partial_json", ""))
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + str(delta.get("thinking", ""))
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature")
        elif kind == "citations_delta":
            block.setdefault("citations", [])
            if block["citations"] is None:
                block["citations"] = []
            block["citations"].append(delta.get("citation"))
        elif kind == "compaction_delta":
            # One delta carries the whole summary (null for a failed compaction) and the opaque metadata:
            # set, as the SDK does, never appended.
            for key in ("content", "encrypted_content"):
                if key in delta:
                    block[key] = delta[key]
        else:  # a delta this version does not know: append strings, set anything else
            for key, value in delta.items():
                if key == "type":
                    continue
                if isinstance(value, str) and isinstance(block.get(key), str):
                    block[key] += value
                else:
                    block[key] = value
        return ""

    def _close(self, index: int) -> None:
        raw = self._json.pop(index, None)
        if raw and index < len(self.content):
            try:
                self.content[index]["input"] = json.loads(raw)
            except ValueError:
                # A complete block with malformed JSON: keep it visible instead of guessing.
                self.content[index]["input"] = {"_unparsed_input_json": raw}

    def _message_delta(self, body: dict[str, Any]) -> None:
        if self.message is None:
            self.message = {"content": self.content}
        delta = body.get("delta") or {}
        for key, value in delta.items():  # stop_reason, stop_sequence, stop_details, container, ...
            if value is not None or key not in self.message or key in ("stop_sequence", "stop_details"):
                self.message[key] = value
        for key, value in body.items():  # context_management, input_transformations, ...
            if key not in ("type", "delta", "usage") and value is not None:
                self.message[key] = value
        usage = body.get("usage")
        if isinstance(usage, dict):
            merged = dict(self.message.get("usage") or {})
            merged.update({k: v for k, v in usage.items() if v is not None})
            self.message["usage"] = merged
        self.stopped = True

    def body(self) -> dict[str, Any]:
        """The assembled Message body, as the non-streaming API would have sent it."""
        message = dict(self.message or {})
        message["content"] = self.content
        return message
