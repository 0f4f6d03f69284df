"""Prompt-caching breakpoints on the requests the machine sends, so a growing history is billed at the
cache-read rate instead of in full on every turn.

The API writes a cache entry only at a block marked ``cache_control``, keyed by everything up to and
including that block, and a later request reads it when the same prefix ends at a block within 20
blocks before one of its own marks (see ``agentfsm.sim.caching`` for the rules and their source). So
the mark belongs on the last block that will still be there, unchanged, in the next request:

* the last user message is kept as is by every follow-up (tool results, a continuation prompt, a
  nudge, the prompt itself): mark its last block;
* a paused turn (``pause_turn``) must go back byte for byte, so the mark goes on the last block of the
  user message before it;
* a prefill grows on every continuation (the continuation is joined onto it), so a mark on it would
  never be read back: the request would only pay the write premium, every time. Its text is sent
  instead as consecutive text blocks cut at fixed offsets (``prefill_pieces``: the earlier pieces stay
  identical as the text grows), and the mark goes on the last full piece; a prefill too short to
  have one is treated like a paused turn. (This assumes the API reads an assistant turn's consecutive
  text blocks as one text, as it must for a reply with citations, which comes back in pieces;
  ``continuation="prompt"`` does without the assumption.)

Only the wire copy is marked; the stored history never holds agentfsm's marks. A request never gets
more than ``MAX_BREAKPOINTS`` marks, the caller's own (``system``, ``tools``, messages, a top-level
``cache_control``) counted first; when the caller uses automatic caching (a top-level
``cache_control``), agentfsm adds none.

Counting the caller's marks would walk the whole history on every turn; a conversation keeps a
``MarkCounter`` instead, which walks each message once (see its docstring), so the pass costs about
the same on the 200th turn as on the second.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agentfsm.wire.messages import Message, blocks

#: The mark agentfsm places: a 5-minute cache entry.
BREAKPOINT: dict[str, str] = {"type": "ephemeral"}
#: The API's limit of marked blocks per request (more is an HTTP 400).
MAX_BREAKPOINTS = 4
#: Block types whose request schema has a ``cache_control`` field (thinking blocks have none).
MARKABLE_TYPES = frozenset(
    {
        "text",
        "image",
        "document",
        "search_result",
        "tool_use",
        "tool_result",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "container_upload",
    }
)
#: The smallest piece a prefill is cut into, whatever ``max_tokens`` is.
MIN_PIECE_CHARS = 64


class MarkCounter:
    """The marks in a request body, counted incrementally along one conversation.

    A message counted before is not walked again while it is still there (the same object, or an
    equal one, at the same place): agentfsm never changes a message of the history in place, it
    replaces it. Checking the earlier messages is one C-level list comparison (object identity
    first); only the new messages and the last ``TAIL`` of the history counted before (where an
    extension's action edits, and where a mark goes) are walked again. A message deeper in the
    history changed in place (never done by agentfsm) would keep its old count. ``tools`` and
    ``system`` are counted again only when they are other objects. Otherwise the result is always
    ``count_breakpoints(params)``.
    """

    __slots__ = ("_seen", "_static", "_static_marks", "_sums")

    #: The last messages, always counted afresh.
    TAIL = 2

    def __init__(self) -> None:
        self._seen: list[Message] = []  # the messages counted last time
        self._sums: list[int] = [0]  # _sums[i]: marks in _seen[:i]
        self._static: tuple[Any, Any] = (None, None)  # the tools and system counted last time
        self._static_marks = 0

    def count(self, params: Mapping[str, Any]) -> int:
        """Marked blocks in ``params`` (a top-level ``cache_control`` takes a slot too)."""
        count = 1 if isinstance(params.get("cache_control"), dict) else 0
        tools, system = params.get("tools"), params.get("system")
        if tools is not self._static[0] or system is not self._static[1]:
            self._static = (tools, system)
            self._static_marks = _count(tools if isinstance(tools, list) else []) + _count(
                system if isinstance(system, list) else []
            )
        return count + self._static_marks + self.count_messages(params.get("messages") or [])

    def count_messages(self, messages: list[Message]) -> int:
        """Marked blocks in ``messages``."""
        seen, sums = self._seen, self._sums
        kept = max(0, min(len(seen), len(messages)) - self.TAIL)
        if kept and seen[:kept] != messages[:kept]:  # something earlier changed: count from there
            kept = next(i for i in range(kept) if seen[i] != messages[i])
        del sums[kept + 1 :]
        for message in messages[kept:]:
            sums.append(sums[-1] + _count(blocks(message)))
        self._seen = list(messages)
        return sums[-1]


def count_breakpoints(params: Mapping[str, Any]) -> int:
    """Marked blocks in a request body (a top-level ``cache_control`` takes a slot too)."""
    count = 1 if isinstance(params.get("cache_control"), dict) else 0
    tools = params.get("tools")
    system = params.get("system")
    count += _count(tools if isinstance(tools, list) else [])
    count += _count(system if isinstance(system, list) else [])
    for message in params.get("messages") or []:
        count += _count(blocks(message))
    return count


def _count(items: Iterable[Any]) -> int:
    n = 0
    for item in items:
        if isinstance(item, dict):
            n += isinstance(item.get("cache_control"), dict)
            content = item.get("content")
            if isinstance(content, list):
                n += _count(content)
    return n


def unmarked(messages: Iterable[Message]) -> list[Message]:
    """``messages`` without their cache breakpoints, for comparing requests: every ``cache_control``
    removed, consecutive plain text blocks joined (a cut prefill), and a message holding one plain text
    block written as a string (a mark turns a string into a block)."""
    out: list[Message] = []
    for message in messages:
        content: list[dict[str, Any]] = []
        for block in blocks(message):
            block = _without_marks(block)
            if content and set(block) == set(content[-1]) == {"type", "text"} and block["type"] == "text":
                content[-1] = {"type": "text", "text": content[-1]["text"] + block["text"]}
            else:
                content.append(block)
        plain = len(content) == 1 and set(content[0]) == {"type", "text"} and content[0]["type"] == "text"
        out.append({**message, "content": content[0]["text"] if plain else content})
    return out


def _without_marks(block: Any) -> Any:
    if not isinstance(block, dict):
        return block
    clean = {k: v for k, v in block.items() if k != "cache_control"}
    if isinstance(clean.get("content"), list):
        clean["content"] = [_without_marks(b) for b in clean["content"]]
    return clean


def prefill_pieces(text: str, size: int) -> list[str]:
    """``text`` cut every ``size`` characters, the last piece holding the rest.

    A cut is made only where the piece before it has non-whitespace text (the API rejects a blank
    text block), and only before the end, so no piece is empty. Every cut depends only on the text
    before it: when the text grows, the earlier pieces come out the same.
    """
    pieces: list[str] = []
    start, end = 0, size
    while end < len(text):
        if text[start:end].strip():
            pieces.append(text[start:end])
            start = end
        end += size
    pieces.append(text[start:])
    return pieces


def piece_size(max_tokens: int) -> int:
    """Characters per prefill piece: about a quarter of a ``max_tokens`` chunk, so a continuation adds
    a few pieces (far fewer than the 20-block lookback) and leaves at most one piece unread."""
    return max(MIN_PIECE_CHARS, max_tokens)


def with_breakpoint(
    params: dict[str, Any], *, prefill: bool, max_tokens: int, counter: MarkCounter | None = None
) -> dict[str, Any]:
    """``params`` with one cache breakpoint placed by the rule above (the messages are copied, never
    changed in place); ``params`` itself when no mark can be added. ``counter``: the conversation's
    ``MarkCounter``, so the caller's marks are not counted over the whole history on every turn."""
    if isinstance(params.get("cache_control"), dict):
        return params
    marks = count_breakpoints(params) if counter is None else counter.count(params)
    if marks >= MAX_BREAKPOINTS:
        return params
    messages: list[Message] = list(params.get("messages") or [])
    if not messages:
        return params
    last = messages[-1]
    if last.get("role") == "user":
        at, marked = len(messages) - 1, _mark_last(last)
    elif prefill and (split := _split_prefill(last, piece_size(max_tokens))) is not None:
        at, marked = len(messages) - 1, split
    elif len(messages) >= 2 and not _has_long_ttl(blocks(last)):
        at, marked = len(messages) - 2, _mark_last(messages[-2])
    else:
        return params
    if marked is None:
        return params
    messages[at] = marked
    return {**params, "messages": messages}


def _markable(block: Mapping[str, Any]) -> bool:
    return block.get("type") in MARKABLE_TYPES and not (block.get("type") == "text" and not block.get("text"))


def _has_long_ttl(items: Iterable[Any]) -> bool:
    """Whether a 1-hour mark is among ``items`` (a 5-minute mark before it would be an HTTP 400)."""
    for item in items:
        if isinstance(item, dict):
            control = item.get("cache_control")
            if isinstance(control, dict) and control.get("ttl") == "1h":
                return True
            content = item.get("content")
            if isinstance(content, list) and _has_long_ttl(content):
                return True
    return False


def _mark_last(message: Message) -> Message | None:
    """``message`` with its last markable block marked; None when it has none, or is marked already."""
    content = blocks(message)
    for k in range(len(content) - 1, -1, -1):
        block = content[k]
        if not _markable(block):
            continue
        if isinstance(block.get("cache_control"), dict) or _has_long_ttl(content[k + 1 :]):
            return None
        return {**message, "content": [*content[:k], {**block, "cache_control": dict(BREAKPOINT)}, *content[k + 1 :]]}
    return None


def _split_prefill(message: Message, size: int) -> Message | None:
    """The prefill with its final text cut into pieces and the last full piece marked; None when the
    text is too short to cut (or is not plain text)."""
    content = blocks(message)
    if not content or content[-1].get("type") != "text" or set(content[-1]) != {"type", "text"}:
        return None
    pieces = prefill_pieces(str(content[-1]["text"]), size)
    if len(pieces) < 2:
        return None
    split: list[dict[str, Any]] = [{"type": "text", "text": piece} for piece in pieces]
    split[-2] = {**split[-2], "cache_control": dict(BREAKPOINT)}
    return {**message, "content": [*content[:-1], *split]}
