"""Reading a streamed reply: server-sent events in, one Message body out.

agentfsm parses the raw SSE lines itself rather than using the SDK's
accumulated message, for the same reason ``api`` reads raw JSON: content
blocks and fields this version does not know must reach the history exactly
as the API sent them.

A stream can end four ways that are *not* a finished reply, and the
assembler tells them apart so the driver can retry the request: the
connection drops (an exception while reading), the server sends an
``error`` event, the stream stops before ``message_delta`` (no
stop_reason), or a content block was opened and never closed
(``unclosed``). The one block allowed to stay open is the last one of a
reply cut by max_tokens: the API sends no ``content_block_stop`` for a
block it cut, and its partial JSON is never parsed into an input.

An event the stream protocol defines whose data is not what the protocol
says (not JSON, not an object, a block index that is not a number) is a
malformed reply, not a broken connection: ``MalformedStreamError``, which
the caller reports like a malformed JSON body (``invalid_response``).
"""

from __future__ import annotations

import json
import re
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
        error = body.get("error")
        error = error if isinstance(error, dict) else {}
        kind, message = error.get("type"), error.get("message")
        self.error_type = kind if isinstance(kind, str) and kind else "error"
        super().__init__(message if isinstance(message, str) else "the stream sent an error event with no message")


_SURROGATE = re.compile("[\ud800-\udfff]")
#: A JSON escape of a UTF-16 surrogate: the only way a lone one can reach a decoded string.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def without_lone_surrogates(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings replaced by U+FFFD; the same object when there is none.

    JSON can carry a lone surrogate as an escape (``"\\ud800"``); no request can (it cannot be
    encoded as UTF-8), and a caller printing one fails. A valid pair is one character by now.
    """
    return _replaced(value) if _has_lone_surrogate(value) else value


def _has_lone_surrogate(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return not value.isascii() and _SURROGATE.search(value) is not None
    if kind is dict:
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if kind is list:
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _replaced(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_replaced(v) for v in value]
    if isinstance(value, dict):
        return {_replaced(k): _replaced(v) for k, v in value.items()}
    return value


class MalformedStreamError(Exception):
    """An event of the stream protocol carried data the protocol does not allow; the message says which."""


#: The events of the Messages stream protocol: their data must be a JSON object.
PROTOCOL_EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "error",
    }
)


class ReplyAssembler:
    """Builds a reply from stream events, reporting text deltas as they arrive."""

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.content: list[dict[str, Any]] = []
        self._json: dict[int, str] = {}
        self._open: dict[int, str] = {}  # index -> type of each block started and not stopped
        self.stopped = False  # message_delta seen: the reply has its stop_reason

    def feed(self, event: str, data: str) -> str:
        """Take one event; return the text it adds to a text block ("" for none)."""
        if event == "ping":
            return ""
        try:
            body = json.loads(data)
        except ValueError:
            if event in PROTOCOL_EVENTS:
                raise MalformedStreamError(f"a {event} event's data is not JSON") from None
            return ""  # an event this version does not know, with data it need not read
        if not isinstance(body, dict):
            if event in PROTOCOL_EVENTS:
                raise MalformedStreamError(f"a {event} event's data is not a JSON object")
            return ""
        if SURROGATE_ESCAPE.search(data):  # text shown as it streams must be the text the reply keeps
            body = without_lone_surrogates(body)
        kind = body.get("type", event)
        if kind == "error" or event == "error":
            raise StreamError(body)
        if kind == "message_start":
            message = _object(body, "message", kind)
            content = message.get("content", [])
            if not isinstance(content, list):
                raise MalformedStreamError("message_start's message.content is not a list")
            self.content = list(content)
            message["content"] = self.content
            self.message = message
        elif kind == "content_block_start":
            # Appended, as the SDK does: the block's position is its arrival order (real streams have
            # been seen repeating a start's index; the deltas and the stop then use the position).
            block = _object(body, "content_block", kind)
            self._open[len(self.content)] = str(block.get("type"))
            self.content.append(block)
            if block.get("type") == "fallback" and self.message is not None:
                # The hop's model serves what follows: the JSON reply names it in ``model`` (as the SDK relabels).
                to = block.get("to")
                if isinstance(to, dict) and isinstance(to.get("model"), str):
                    self.message["model"] = to["model"]
            text = block.get("text") if block.get("type") == "text" else None
            if text and isinstance(text, str):
                return text
        elif kind == "content_block_delta":
            return self._delta(_index(body, kind), _object(body, "delta", kind))
        elif kind == "content_block_stop":
            index = _index(body, kind)
            self._open.pop(index, None)
            self._close(index)
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
        if not isinstance(block, dict):
            raise MalformedStreamError(f"a content_block_delta event's index {index} names no content block object")
        kind = delta.get("type")
        if kind == "text_delta":
            text = str(delta.get("text", ""))
            block["text"] = _text(block, "text") + text
            return text
        if kind == "input_json_delta":
            self._json[index] = self._json.get(index, "") + str(delta.get("partial_json", ""))
        elif kind == "thinking_delta":
            block["thinking"] = _text(block, "thinking") + str(delta.get("thinking", ""))
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature")
        elif kind == "citations_delta":
            if not isinstance(block.get("citations"), list):
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
        if raw and index < len(self.content) and isinstance(self.content[index], dict):
            try:
                parsed = json.loads(raw)
                self.content[index]["input"] = (
                    without_lone_surrogates(parsed) if SURROGATE_ESCAPE.search(raw) else parsed
                )
            except ValueError:
                # A complete block with malformed JSON: keep it visible instead of guessing.
                self.content[index]["input"] = {"_unparsed_input_json": raw}

    def _message_delta(self, body: dict[str, Any]) -> None:
        if self.message is None:
            self.message = {"content": self.content}
        delta = _object(body, "delta", "message_delta")
        for key, value in delta.items():  # stop_reason, stop_sequence, stop_details, container, ...
            if value is not None or key not in self.message or key in ("stop_sequence", "stop_details"):
                self.message[key] = value
        for key, value in body.items():  # context_management, input_transformations, ...
            if key not in ("type", "delta", "usage") and value is not None:
                self.message[key] = value
        usage = body.get("usage")
        if usage is not None and not isinstance(usage, dict):
            raise MalformedStreamError("a message_delta event's usage is not a JSON object")
        if usage:
            before = self.message.get("usage")
            merged = dict(before) if isinstance(before, dict) else {}
            merged.update({k: v for k, v in usage.items() if v is not None})
            self.message["usage"] = merged
        self.stopped = True

    def unclosed(self) -> str | None:
        """What is wrong with the blocks left open, or None when the stream closed every block it had to.

        Only the last block of a reply cut by max_tokens may stay open: the API cuts it without a
        ``content_block_stop``. Any other open block means the stream broke mid-block (a streamed
        tool_use whose input never finished must never be run with the ``{}`` it started with).
        """
        open_ = dict(self._open)
        if self.message is not None and self.message.get("stop_reason") == "max_tokens" and self.content:
            open_.pop(len(self.content) - 1, None)
        if not open_:
            return None
        described = ", ".join(f"{i} ({kind})" for i, kind in sorted(open_.items()))
        return f"the stream ended with content block(s) {described} never closed (no content_block_stop)"

    def body(self) -> dict[str, Any]:
        """The assembled Message body, as the non-streaming API would have sent it."""
        message = dict(self.message or {})
        message["content"] = self.content
        return message


def _object(body: dict[str, Any], field: str, event: str) -> dict[str, Any]:
    """``body[field]`` as a (copied) object; absent or null is an empty one; anything else is malformed."""
    value = body.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedStreamError(f"a {event} event's {field} is not a JSON object")
    return dict(value)


def _index(body: dict[str, Any], event: str) -> int:
    value = body.get("index", 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedStreamError(f"a {event} event's index is not a non-negative integer")
    return value


def _text(block: dict[str, Any], field: str) -> str:
    """A block's text field to append a delta to (a field that is not a string is replaced, not appended to)."""
    value = block.get(field)
    return value if isinstance(value, str) else ""
