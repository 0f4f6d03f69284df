"""Actions: what each transition of the state table does to the conversation.

An action runs while its transition fires. It is the only place the message
history changes, and each one keeps the rules of SPEC.md §3: a reply is
either kept (appended, or merged into the assistant turn it continues) or
discarded (a cut tool call, an empty reply, a refused reply being retried),
never half of each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentfsm.machine import history, stitch
from agentfsm.result import RunError

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation


# --- keeping and discarding the reply -------------------------------------------------


def keep_reply(conv: Conversation) -> None:
    """Put the reply into the history and update the answer text.

    A reply to a request that ended in an assistant turn (a prefill or a
    resumed pause_turn) continues that turn, so it is merged into it rather
    than appended: the history keeps alternating roles.
    """
    reply = conv.require_reply()
    content = reply.content
    new_text = history.text_of(content)
    kind = conv.pending_kind
    last = conv.messages[-1] if conv.messages else None
    if last is not None and last.get("role") == "assistant":
        old = history.blocks(last)
        merged = old + content if kind == "pause" else _merge_prefill(old, content)
        conv.messages[-1] = {"role": "assistant", "content": merged}
    elif content:
        conv.messages.append({"role": "assistant", "content": content})
    if kind == "prompt":
        conv.answer = stitch.join_prompted(conv.answer, new_text)
    elif kind in ("prefill", "caller_prefill"):
        conv.answer = stitch.join_prefill(conv.answer, new_text)
    elif kind == "pause":
        conv.answer += new_text
    else:
        conv.answer = new_text
    conv.pending_kind = None
    conv.reason = reply.stop_reason


def _merge_prefill(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join a continuation onto the prefilled turn: the seam's two text blocks become one."""
    if old and new and old[-1].get("type") == "text" and new[0].get("type") == "text":
        head, first = old[-1], new[0]
        joined = {**head, "text": stitch.join_prefill(head.get("text", ""), first.get("text", ""))}
        citations = (head.get("citations") or []) + (first.get("citations") or [])
        if citations:
            joined["citations"] = citations
        return [*old[:-1], joined, *new[1:]]
    return old + new


def discard_reply(conv: Conversation, reason: str) -> None:
    reply = conv.require_reply()
    conv.discards += 1
    conv.emit(
        "reply.discarded",
        reason=reason,
        stop_reason=reply.stop_reason,
        block_types=[b.get("type") for b in reply.content],
    )


# --- requesting -------------------------------------------------------------------------


def stop_at_turn_limit(conv: Conversation) -> None:
    conv.reason = "max_turns"


def stop_over_budget(conv: Conversation) -> None:
    conv.reason = conv.spent_budget()


def switch_to_prompt(conv: Conversation) -> None:
    """The model refused our prefill: continue with a user prompt, now and for the rest of the run."""
    conv.continuation_mode = "prompt"
    conv.agent.remember_prefill_unsupported(conv.model)
    conv.prefill_was_rejected = False
    conv.error = None
    conv.messages.append({"role": "user", "content": conv.policy.continuation_prompt})
    conv.pending_kind = "prompt"
    conv.emit("continuation.fallback", model=conv.model)


def fail_on_error(conv: Conversation) -> None:
    conv.reason = "api_error"


# --- end_turn ---------------------------------------------------------------------------


def nudge(conv: Conversation) -> None:
    """An empty reply after tool results: never resend it; ask again in a new user message.

    A second nudge goes into the first one's message (one more text block), so the request
    changes and only one user message follows the tool results, as SPEC.md §3 rule 1 allows.
    """
    discard_reply(conv, "empty reply after tool results")
    conv.empty_retries += 1
    last = conv.messages[-1]
    if last["role"] == "user" and not history.is_tool_result_message(last):  # an earlier nudge
        again = {"type": "text", "text": conv.policy.nudge_prompt}
        conv.messages[-1] = {"role": "user", "content": [*history.blocks(last), again]}
    else:
        conv.messages.append({"role": "user", "content": conv.policy.nudge_prompt})
    conv.pending_kind = None
    conv.emit("empty.nudged", retry=conv.empty_retries)


def finish_empty(conv: Conversation) -> None:
    """An empty reply that is accepted as the end: nothing to add to the history."""
    keep_reply(conv)
    conv.reason = "empty_reply"


# --- max_tokens -------------------------------------------------------------------------


def climb_ladder(conv: Conversation) -> None:
    """A reply cut inside a tool call: drop it and send the same request with more room."""
    discard_reply(conv, "cut off inside a block at max_tokens")
    before = conv.max_tokens
    conv.max_tokens = conv.policy.max_tokens_ladder[conv.rung]
    conv.rung += 1
    conv.emit("ladder.climbed", from_max_tokens=before, to_max_tokens=conv.max_tokens)


def fail_ladder_exhausted(conv: Conversation) -> None:
    discard_reply(conv, "cut off inside a block at the top of the max_tokens ladder")
    conv.reason = "max_tokens_ladder_exhausted"
    conv.error = RunError(
        type="max_tokens_ladder_exhausted",
        message=(
            f"the reply was cut off inside a tool_use or thinking block at max_tokens={conv.max_tokens}, "
            "the top of Policy.max_tokens_ladder; add a larger rung or ask for smaller tool inputs"
        ),
    )


def continue_text(conv: Conversation) -> None:
    """Keep the cut text and ask for the rest, by prefill where allowed, else by prompt."""
    keep_reply(conv)
    conv.continuations += 1
    if conv.continuation_mode == "prefill" and _prefillable(conv.messages[-1]):
        conv.pending_kind = "prefill"
    else:
        conv.messages.append({"role": "user", "content": conv.policy.continuation_prompt})
        conv.pending_kind = "prompt"
    conv.emit("continuation.requested", strategy=conv.pending_kind, continuation=conv.continuations)


def _prefillable(message: dict[str, Any]) -> bool:
    """Whether an assistant turn can be sent as a prefill: it must end in non-blank text."""
    content = history.blocks(message)
    return (
        bool(content) and content[-1].get("type") == "text" and bool(stitch.prefill_form(content[-1].get("text", "")))
    )


def stop_at_continuation_limit(conv: Conversation) -> None:
    keep_reply(conv)
    conv.reason = "max_continuations"


# --- tool_use ---------------------------------------------------------------------------


def answer_tool_calls(conv: Conversation) -> None:
    """Keep the reply and answer it with one user message holding only tool_result blocks.

    Taken from ``tool_use``, and also from two stop reasons whose reply holds complete client
    calls that the next request could not otherwise carry (a call must be answered in the very
    next message):

    * ``max_tokens`` when the reply's last block is cut text and the client tool_use blocks
      before it are complete (a reply cut *inside* a call climbs the ladder instead). The calls
      are run and answered, the cut text stays in the history and the answer, and the model
      goes on from the results — the text is not continued by prefill, which would send the
      calls back unanswered.
    * ``pause_turn`` when the paused turn holds client tool_use blocks: sending it back for the
      server to resume would send them unanswered, so they are run and answered, and the turn
      goes on from their results (its server tool blocks stay in the history as sent).

    Under the stop reasons that end a run (end_turn, stop_sequence, refusal,
    model_context_window_exceeded, an unknown one) client calls are not run: the turn is over,
    and ``result.messages`` keeps the reply as sent. Carrying such a history on with
    ``run(result.messages + [user message])`` answers them with ``is_error`` results
    (``agentfsm.machine.history.answer_abandoned_calls``).
    """
    keep_reply(conv)
    conv.messages.append({"role": "user", "content": [r.to_block() for r in conv.tool_results]})
    conv.tool_results = []


def fail_no_tool_calls(conv: Conversation) -> None:
    keep_reply(conv)
    conv.reason = "no_tool_calls"
    conv.error = RunError(
        type="protocol_error",
        message="the reply's stop_reason is tool_use but it holds no client tool_use block to answer",
    )


# --- pause_turn -------------------------------------------------------------------------


def resume_pause(conv: Conversation) -> None:
    """Send the paused turn back unchanged, as the last message, so the server resumes it.

    Only for a turn with no client tool_use block (those are answered first: ``answer_tool_calls``).
    """
    keep_reply(conv)
    conv.pause_resumes += 1
    conv.pending_kind = "pause"
    conv.emit("pause.resumed", resume=conv.pause_resumes)


def stop_at_pause_limit(conv: Conversation) -> None:
    keep_reply(conv)
    conv.reason = "max_pause_resumes"


# --- refusal, context window, unknown ---------------------------------------------------


def switch_to_fallback(conv: Conversation) -> None:
    discard_reply(conv, "refusal, retried on the fallback model")
    conv.fallback_used = True
    before, conv.model = conv.model, str(conv.policy.fallback_model)
    conv.emit("refusal.fallback", from_model=before, to_model=conv.model)


def finish_refused(conv: Conversation) -> None:
    keep_reply(conv)
    conv.reason = "refusal"


def stop_at_context_window(conv: Conversation) -> None:
    keep_reply(conv)
    conv.reason = "model_context_window_exceeded"


def finish_unknown(conv: Conversation) -> None:
    """Keep the reply and finish, with a warning event naming the raw stop_reason (client calls in it are not run)."""
    raw = conv.require_reply().stop_reason
    conv.emit("stop_reason.unknown", level="warning", raw_stop_reason=raw)
    keep_reply(conv)
    conv.reason = "unknown_stop_reason"
