"""The message history on the wire: its rules, the checks against them, and facts read off it.

Three checks live here, beside the rest of the wire. ``validate_history`` runs
on what a caller hands to ``run()`` and raises ``InvalidHistoryError`` (a
``ValueError``) naming the first problem, before any request is sent.
``wire_problems`` states the stricter wire rules that every request *agentfsm*
sends must keep (listed in docs/02-state-machine.md, "The wire rules"); the
test suite runs it on every request the simulator receives.
``history_problems`` names the rule (``RULES``) each problem breaks, for the
``InvalidActionError`` a subclass's action gets when it leaves a broken history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentfsm.errors import InvalidHistoryError

Message = dict[str, Any]
Block = dict[str, Any]

# Blocks that end a reply "mid-thought": a reply cut by max_tokens after one of
# these cannot be continued by appending text, only retried with more room.
CUT_BLOCK_TYPES = frozenset({"tool_use", "server_tool_use", "mcp_tool_use", "thinking", "redacted_thinking"})
THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})


def blocks(message: Message) -> list[Block]:
    """A message's content as a list of blocks (a plain string becomes one text block)."""
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content) if isinstance(content, list) else []


def text_of(content: Sequence[Block]) -> str:
    """The concatenated text of the text blocks in ``content``."""
    return "".join(b.get("text", "") for b in content if b.get("type") == "text")


def size_of(messages: Sequence[Message]) -> tuple[int, int, int]:
    """The history's size, as ``TraceStep.history_size`` records it: (messages, blocks of the last one,
    characters of its last block when that is text, else 0)."""
    if not messages:
        return (0, 0, 0)
    content = blocks(messages[-1])
    last = content[-1] if content else {}
    return (len(messages), len(content), len(last.get("text", "")) if last.get("type") == "text" else 0)


def tool_use_ids(message: Message) -> list[str]:
    return [b["id"] for b in blocks(message) if b.get("type") == "tool_use" and "id" in b]


def tool_result_ids(message: Message) -> list[str]:
    return [b["tool_use_id"] for b in blocks(message) if b.get("type") == "tool_result" and "tool_use_id" in b]


def is_tool_result_message(message: Message) -> bool:
    content = blocks(message)
    return message.get("role") == "user" and bool(content) and all(b.get("type") == "tool_result" for b in content)


def opens_with_compaction(message: Message) -> bool:
    """A compacted history's first message: an assistant message whose first block is the compaction block.

    After a compaction request, the API takes the block first in ``messages`` in place of the messages it
    summarises (the reply, sent back as it came: an assistant message).
    """
    content = blocks(message)
    return message.get("role") == "assistant" and bool(content) and content[0].get("type") == "compaction"


def is_empty_content(content: Sequence[Block]) -> bool:
    """True for a reply with nothing in it: no blocks, or only whitespace text."""
    return all(b.get("type") == "text" and not b.get("text", "").strip() for b in content)


#: The text of the ``is_error`` result that answers a call whose turn ended without running it.
ABANDONED_CALL = (
    "not run: the turn that made this call ended without a tool_use stop (the run finished before running it); "
    "call the tool again if it is still needed"
)


def answer_abandoned_calls(messages: list[Any]) -> list[Any]:
    """A history carried on after a run that ended with client tool calls it did not run, made sendable.

    A run that ends on a reply holding client ``tool_use`` blocks under another stop reason
    (end_turn, stop_sequence, refusal, model_context_window_exceeded, an unknown one, or a
    pause_turn/max_tokens limit) does not run them: the turn is over. ``result.messages`` keeps
    the reply as the API sent it, so ``run(result.messages + [{"role": "user", ...}])`` would send
    calls without results. Here, an assistant message with client calls that the next message —
    a user message holding no ``tool_result`` at all — does not answer gets a user message of
    ``is_error`` results (``ABANDONED_CALL``) inserted between the two. The request then keeps every
    wire rule: the results follow the calls, alone in their message, and the caller's message
    follows them (the one repeat of a role allowed, as after a nudge). A next message that answers
    some of the calls but not all is left alone (``validate_history`` names the missing ids).
    Returns ``messages`` itself when nothing needs answering.
    """
    out: list[Any] | None = None
    for i, message in enumerate(messages):
        following = messages[i + 1] if i + 1 < len(messages) else None
        if (
            isinstance(message, dict)
            and message.get("role") == "assistant"
            and isinstance(following, dict)
            and following.get("role") == "user"
            and _blocks_valid(message)
            and _blocks_valid(following)
        ):
            ids = tool_use_ids(message)
            if ids and not any(b.get("type") == "tool_result" for b in blocks(following)):
                if out is None:
                    out = list(messages[:i])
                out.append(message)
                out.append(
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": t, "content": ABANDONED_CALL, "is_error": True}
                            for t in ids
                        ],
                    }
                )
                continue
        if out is not None:
            out.append(message)
    return messages if out is None else out


def _blocks_valid(message: Message) -> bool:
    content = message.get("content")
    return isinstance(content, str) or (isinstance(content, list) and all(isinstance(b, dict) for b in content))


def validate_history(messages: object, *, stored: bool = False) -> list[Message]:
    """Check a caller-supplied history and return it as a list of message dicts.

    Accepts any history the API accepts, including one ending in an assistant
    prefill. Raises ``InvalidHistoryError`` naming the first problem.

    ``stored``: the history of a stored conversation (``agentfsm.stores.base.read_snapshot``),
    checked by the same rules except those about its last message, which may be a finished
    run's reply (client calls it did not run, a thinking block) rather than something to send.
    """
    if not isinstance(messages, list) or not messages:
        raise InvalidHistoryError("expected a non-empty list of message dicts (or a prompt string)")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidHistoryError(f"expected a dict, got {type(message).__name__}", i)
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise InvalidHistoryError(f"role must be 'user' or 'assistant', got {role!r}", i)
        content = message.get("content")
        if isinstance(content, str):
            if not content and not (role == "assistant" and i == len(messages) - 1):
                raise InvalidHistoryError("content is an empty string", i)
        elif isinstance(content, list):
            if not content:
                raise InvalidHistoryError("content is an empty list", i)
            for j, block in enumerate(content):
                if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                    raise InvalidHistoryError(f"content[{j}] must be a dict with a string 'type'", i)
        else:
            raise InvalidHistoryError(f"content must be a string or a list of blocks, got {type(content).__name__}", i)
    if messages[0]["role"] != "user" and not opens_with_compaction(messages[0]):
        raise InvalidHistoryError(
            "the first message must have role 'user' (or be a compacted history's assistant message starting with "
            "its compaction block)",
            0,
        )
    for i in range(1, len(messages)):
        if messages[i]["role"] == "assistant" and messages[i - 1]["role"] == "assistant":
            raise InvalidHistoryError("two assistant messages in a row", i)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        ids = tool_use_ids(message)
        if not ids:
            continue
        if i == len(messages) - 1:
            if stored:
                continue
            raise InvalidHistoryError(
                f"the history ends with tool_use block(s) {ids} that have no tool_result; "
                "append a user message with their tool_result blocks",
                i,
            )
        answered = tool_result_ids(messages[i + 1])
        missing = [t for t in ids if t not in answered]
        if missing:
            raise InvalidHistoryError(f"tool_use id(s) {missing} have no tool_result in the next message", i + 1)
    for i, message in enumerate(messages):
        if message["role"] == "user":
            results = tool_result_ids(message)
            expected = tool_use_ids(messages[i - 1]) if i > 0 else []
            stray = [t for t in results if t not in expected]
            if stray:
                raise InvalidHistoryError(f"tool_result id(s) {stray} answer no tool_use in the previous message", i)
    last = messages[-1]
    if last["role"] == "assistant" and not stored:
        content = blocks(last)
        if content and content[-1].get("type") in THINKING_TYPES:
            raise InvalidHistoryError(
                "a final assistant message (prefill) cannot end with a thinking block", len(messages) - 1
            )
    return messages


def wire_problems(messages: Sequence[Message]) -> list[str]:
    """Violations of the wire rules in a request's ``messages`` (empty when the request is sound)."""
    problems: list[str] = []
    if not messages:
        return ["no messages"]
    if messages[0].get("role") != "user" and not opens_with_compaction(messages[0]):
        problems.append("messages[0] is not a user message (nor a compaction block, in an assistant message)")
    for i in range(1, len(messages)):
        prev, cur = messages[i - 1], messages[i]
        # The one allowed repeat: a nudge after an empty end_turn follows the tool results.
        nudge = cur.get("role") == "user" and is_tool_result_message(prev) and not is_tool_result_message(cur)
        if prev.get("role") == cur.get("role") and not nudge:
            problems.append(f"messages[{i}]: two {cur.get('role')} messages in a row")
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        ids = tool_use_ids(message)
        if not ids:
            continue
        if i == len(messages) - 1:
            problems.append(f"messages[{i}]: client tool_use {ids} sent without results (a cut call sent back?)")
            continue
        nxt = messages[i + 1]
        if not is_tool_result_message(nxt):
            problems.append(f"messages[{i + 1}]: must hold only tool_result blocks")
        if tool_result_ids(nxt) != ids:
            problems.append(
                f"messages[{i + 1}]: tool_result ids {tool_result_ids(nxt)} do not match tool_use ids {ids}"
            )
    last = messages[-1]
    if last.get("role") == "assistant":
        content = blocks(last)
        if content and content[-1].get("type") in THINKING_TYPES:
            problems.append("final assistant message ends with a thinking block")
        if (
            content
            and content[-1].get("type") == "text"
            and content[-1].get("text", "") != content[-1].get("text", "").rstrip()
        ):
            problems.append("final assistant message ends with whitespace")
    return problems


# --- the rules, named: what a subclass's action left is checked against them ----------------------

#: The rules every request keeps, as an InvalidActionError names them.
RULES = {
    "shape": "every message is a dict with role 'user' or 'assistant' and non-empty content: a string, or a "
    "list of blocks that are dicts with a string 'type'",
    "roles": "roles alternate user / assistant, starting with user",
    "tools": "every tool_use is answered by exactly one tool_result with its id, in the very next user message, "
    "which holds only tool_result blocks",
    "prefill": "a final assistant message (a prefill) ends in text without trailing whitespace, never in thinking",
}


def history_problems(messages: Sequence[Any], *, sending: bool) -> list[tuple[str, str]]:
    """Where ``messages`` (as they would be sent) break the rules every request keeps: (problem, rule) pairs.

    ``sending`` is False when the history is not sent next (the transition leads to another state
    than ``requesting``): a last assistant message may then still be waiting for its answer.
    """
    found: list[tuple[str, str]] = []
    for i, m in enumerate(messages):
        shape = _shape_problem(m, final=i == len(messages) - 1)
        if shape:
            found.append((f"messages[{i}]: {shape}", RULES["shape"]))
    if found:
        return found
    if not messages:
        return [("the history is empty", RULES["roles"])]
    checked = list(messages)
    if not sending and checked[-1]["role"] == "assistant":
        last = checked.pop()
        if not checked:  # a lone assistant turn is valid only as a compaction block, which opens a history
            return [] if opens_with_compaction(last) else [("messages[0] is not a user message", RULES["roles"])]
        if checked[-1]["role"] == "assistant":
            found.append((f"messages[{len(checked)}]: two assistant messages in a row", RULES["roles"]))
    for problem in wire_problems(checked):
        found.append((problem, _rule_of(problem)))
    for i, m in enumerate(checked):
        results = tool_result_ids(m) if m["role"] == "user" else []
        if results and i > 0 and not tool_use_ids(checked[i - 1]):
            found.append(
                (f"messages[{i}]: tool_result ids {results} answer no tool_use in the previous message", RULES["tools"])
            )
    return found


def _shape_problem(m: object, *, final: bool) -> str | None:
    if not isinstance(m, dict):
        return f"is a {type(m).__name__}, not a message dict"
    if m.get("role") not in ("user", "assistant"):
        return f"role is {m.get('role')!r}"
    content = m.get("content")
    if isinstance(content, str):
        return None if content or (final and m["role"] == "assistant") else "content is an empty string"
    if not isinstance(content, list) or not content:
        return f"content is {type(content).__name__ if not isinstance(content, list) else 'an empty list'}"
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"content[{j}] is {type(block).__name__}, not a block dict with a string 'type'"
    return None


def _rule_of(problem: str) -> str:
    if "in a row" in problem or "not a user message" in problem or problem == "no messages":
        return RULES["roles"]
    if "tool_use" in problem or "tool_result" in problem:
        return RULES["tools"]
    if "final assistant" in problem:
        return RULES["prefill"]
    return "the rules every request keeps"
