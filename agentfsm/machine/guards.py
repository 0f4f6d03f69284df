"""Guards: the conditions on the state table's transitions.

A guard is a plain predicate over the conversation. Its ``label`` is what a
graph shows on the edge (``continuations < max_continuations``), so a label
should read as the condition itself. Use ``@guard("...")`` for your own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from agentfsm.machine import serverside
from agentfsm.tools.approval import requires_approval
from agentfsm.wire import messages as history
from agentfsm.wire import usage

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation


class Guard(Protocol):
    label: str
    __name__: str

    def __call__(self, conv: Conversation, /) -> bool: ...


def guard(label: str) -> Callable[[Callable[[Conversation], bool]], Guard]:
    """Mark a predicate as a guard, with the label graphs show for it."""

    def mark(fn: Callable[[Conversation], bool]) -> Guard:
        fn.label = label  # type: ignore[attr-defined]
        return fn  # type: ignore[return-value]

    return mark


def label_of(fn: Callable[..., object]) -> str:
    return str(getattr(fn, "label", getattr(fn, "__name__", repr(fn))))


@guard("turns >= max_turns")
def no_turns_left(conv: Conversation) -> bool:
    return conv.turns >= conv.policy.max_turns


@guard("a budget is spent (tokens, cost or wall time)")
def over_budget(conv: Conversation) -> bool:
    return conv.spent_budget() is not None


@guard("our prefill was rejected and strategy is auto")
def prefill_rejected_in_auto(conv: Conversation) -> bool:
    return (
        conv.policy.continuation == "auto"
        and conv.runstate.pending_kind == "prefill"
        and conv.runstate.prefill_was_rejected
    )


@guard("reply empty after tool results")
def empty_after_tool_results(conv: Conversation) -> bool:
    if conv.reply is None or not history.is_empty_content(conv.reply.content):
        return False
    messages = conv.messages
    if messages and history.is_tool_result_message(messages[-1]):
        return True
    # ... or after the nudge that followed them (the retry came back empty too)
    return len(messages) >= 2 and history.is_tool_result_message(messages[-2]) and messages[-1]["role"] == "user"


@guard("empty_retries < max_empty_retries")
def empty_retries_left(conv: Conversation) -> bool:
    return conv.counters.empty_retries < conv.policy.max_empty_retries


@guard("reply cut inside a tool_use or thinking block")
def cut_mid_block(conv: Conversation) -> bool:
    if conv.reply is None:
        return False
    content = conv.reply.content
    return not content or content[-1].get("type") in history.CUT_BLOCK_TYPES


@guard("rung < len(max_tokens_ladder)")
def rungs_left(conv: Conversation) -> bool:
    return conv.counters.rung < len(conv.policy.max_tokens_ladder)


@guard("continuations < max_continuations")
def continuations_left(conv: Conversation) -> bool:
    return conv.counters.continuations < conv.policy.max_continuations


@guard("reply has client tool_use blocks")
def has_tool_calls(conv: Conversation) -> bool:
    return conv.reply is not None and any(b.get("type") == "tool_use" for b in conv.reply.content)


@guard("a call needs approval")
def calls_need_approval(conv: Conversation) -> bool:
    """A client call of the reply is of a tool whose ``needs_approval`` says so (``agentfsm.tools.approval``)."""
    tools = conv.agent.tool_map
    return any(requires_approval(tools, call) for call in conv.reply_calls())


@guard("pause_resumes < max_pause_resumes")
def pause_resumes_left(conv: Conversation) -> bool:
    return conv.counters.pause_resumes < conv.policy.max_pause_resumes


# --- compaction ---------------------------------------------------------------------------------


def _threshold_reached(conv: Conversation) -> bool:
    """The last ordinary reply's request sent at least ``compact_at_input_tokens`` (cache included)."""
    threshold = conv.policy.compact_at_input_tokens
    reply = conv.reply
    if threshold is None or reply is None or reply.stop_reason == "compaction":
        return False
    tokens = usage.context_tokens(reply.usage)
    return tokens is not None and tokens >= threshold


def _just_compacted(conv: Conversation) -> bool:
    """The last reply answers the first request sent after a compaction replaced the history."""
    applied = conv.runstate.compaction_applied_at
    return applied is not None and conv.turns == applied + 1


def _compaction_on(conv: Conversation) -> bool:
    return (
        conv.policy.compact_at_input_tokens is not None
        and not conv.runstate.compaction_off
        and conv.counters.compactions < conv.policy.max_compactions
        # room for the turn the compaction is for: never spend the last request on a compaction
        and conv.turns + 1 < conv.policy.max_turns
    )


@guard("a compaction left the input >= compact_at_input_tokens")
def compaction_ineffective(conv: Conversation) -> bool:
    return not conv.runstate.compaction_off and _just_compacted(conv) and _threshold_reached(conv)


@guard("input >= compact_at_input_tokens and compactions < max_compactions")
def compaction_due(conv: Conversation) -> bool:
    requested = conv.runstate.compaction_requested_at
    return (
        _compaction_on(conv)
        and conv.runstate.pending_kind is None  # between turns: nothing is being continued or resumed
        and conv.runstate.credit_token is None  # a credit token is redeemed by the same request body only
        and (requested is None or conv.turns > requested)  # a reply since the last compaction request
        and not _just_compacted(conv)
        and _threshold_reached(conv)
        and not serverside.unanswered_tool_calls(conv.messages)
    )


@guard("compaction on and compactions < max_compactions")
def can_compact_at_window(conv: Conversation) -> bool:
    return _compaction_on(conv) and conv.runstate.pending_kind is None and not _just_compacted(conv)


@guard("it was our compaction request")
def compaction_request_pending(conv: Conversation) -> bool:
    return conv.runstate.pending_kind == "compaction"


@guard("the reply is one compaction block with a summary")
def lone_summary(conv: Conversation) -> bool:
    """Only such a reply can go first in ``messages`` (``serverside.lone_summary`` says why)."""
    return conv.reply is not None and serverside.lone_summary(conv.reply.content) is not None


@guard("compactions < max_compactions")
def compactions_left(conv: Conversation) -> bool:
    return conv.counters.compactions < conv.policy.max_compactions
