"""``writer``: a model that writes one long document across as many requests as ``max_tokens`` forces.

It is the test bed for continuation: every reply is at most the request's
``max_tokens`` (by ``count_tokens``), cut at an arbitrary character, even
mid-word, so seams are stressed. It follows both continuation styles:

* prefill: the request ends with an assistant message holding the text so far
  (trailing whitespace stripped, as the API requires); the reply continues
  exactly where that text ends, so it may start with the stripped whitespace;
* prompt: a user message ("Continue exactly where you stopped…") follows the
  assistant chunks so far; the reply is the next chunk.

"The text so far" is the assistant text written for this task: the assistant
text after the last user message that is not a continuation prompt, or else all
assistant text in the conversation, whichever is the longer prefix of the
document. If neither is a prefix the conversation was not written by this
writer (lost or duplicated text) and the request is answered with a 400.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentfsm.sim.model import ScriptedReply, ScriptError, SimRequest
from agentfsm.sim.tokens import max_chars


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _is_continuation_prompt(message: dict[str, Any], marker: str) -> bool:
    return message.get("role") == "user" and marker in _text_of(message).lower()


def _assistant_text(messages: list[dict[str, Any]]) -> str:
    return "".join(_text_of(m) for m in messages if m.get("role") == "assistant")


def written_so_far(document: str, messages: list[dict[str, Any]], *, marker: str = "continue") -> str:
    """The prefix of ``document`` this conversation already holds; raises ``ScriptError`` if it holds something else."""
    start = 0
    for i, message in enumerate(messages):
        if message.get("role") == "user" and not _is_continuation_prompt(message, marker):
            start = i + 1
    candidates = [_assistant_text(messages[start:]), _assistant_text(messages)]
    prefixes = [c for c in candidates if document.startswith(c)]
    if not prefixes:
        so_far = candidates[0]
        at = next((i for i, (a, b) in enumerate(zip(so_far, document, strict=False)) if a != b), len(document))
        raise ScriptError(
            f"writer: the assistant text in this conversation is not a prefix of the document: it differs at "
            f"character {at} (conversation has {so_far[at : at + 40]!r}, document has {document[at : at + 40]!r})"
        )
    return max(prefixes, key=len)


def _chunk_length(position: int, max_tokens: int) -> int:
    """Characters for a chunk of ``max_tokens`` tokens, shortened by 0-3 chars so seams land everywhere."""
    capacity = max_chars(max_tokens)
    jitter = (position * 7 + 3) % 4 if capacity > 4 else 0
    return capacity - jitter


def writer(
    document: str, *, end_stop_reason: str = "end_turn", continuation_marker: str = "continue"
) -> Callable[[SimRequest], ScriptedReply]:
    """A script callable that writes ``document`` in ``max_tokens``-sized chunks (deterministic).

    Each reply has stop_reason ``max_tokens`` while text remains and
    ``end_stop_reason`` for the chunk that finishes the document. A user message
    whose text contains ``continuation_marker`` (case-insensitive) counts as a
    continuation prompt, not a new task.
    """
    marker = continuation_marker.lower()

    def write(request: SimRequest) -> ScriptedReply:
        position = len(written_so_far(document, request.messages, marker=marker))
        limit = request.max_tokens or 1
        chunk = document[position : position + _chunk_length(position, limit)]
        finished = position + len(chunk) >= len(document)
        content = [{"type": "text", "text": chunk}] if chunk else []
        return ScriptedReply(content=content, stop_reason=end_stop_reason if finished else "max_tokens")

    return write
