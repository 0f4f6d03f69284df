"""Actions: what each transition of the state table does to the conversation.

An action runs while its transition fires. It is the only place the message
history changes, and each one keeps the wire rules (docs/02-state-machine.md): a reply is
either kept (appended, or merged into the assistant turn it continues) or
discarded (a cut tool call, an empty reply, a refused reply being retried),
never half of each.

The actions a subclass uses on its own transitions, so that it never edits the
history by hand: ``keep_reply``, ``answer_tool_calls`` (with ``runs_tools=True``),
``refuse_tool_calls``, ``answer_with(results)`` and ``add_user_message(text)``.
Whatever a subclass's action does, the history it leaves is checked
(``agentfsm.wire.messages.history_problems``) before the transition completes; a broken one raises
``InvalidActionError`` naming the action and the rule, and is put back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agentfsm.errors import InvalidActionError
from agentfsm.machine import fallback, serverside, stitch
from agentfsm.result import RunError
from agentfsm.tools.calls import ToolCall, ToolResult, for_history
from agentfsm.wire import messages as history
from agentfsm.wire import models, usage

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation

#: What ``refuse_tool_calls`` answers when the resume's ``input`` gives no reason.
DEFAULT_REFUSAL = "The operator refused this tool call; it was not run."


# --- keeping and discarding the reply -------------------------------------------------


def keep_reply(conv: Conversation) -> None:
    """Put the reply into the history and update the answer text.

    A reply to a request that ended in an assistant turn (a prefill, a
    resumed pause_turn, or a compaction block) continues that turn, so it is
    merged into it rather than appended: the history keeps alternating roles. Keeping a reply
    that is already in the history does nothing, so actions can be combined.
    """
    reply = conv.require_reply()
    if conv.runstate.reply_kept:
        return
    answer = stitched_answer(conv, reply)
    conv.runstate.reply_kept = True
    content = reply.content
    kind = conv.runstate.pending_kind
    if reply.stop_reason != "compaction":
        _note_server_compaction(conv, content)
    last = conv.messages[-1] if conv.messages else None
    if last is not None and last.get("role") == "assistant":
        old = history.blocks(last)
        merged = old + content if kind in ("pause", "compacted") else _merge_prefill(old, content)
        conv.messages[-1] = {"role": "assistant", "content": merged}
    elif content:
        conv.messages.append({"role": "assistant", "content": content})
    conv.runstate.answer = answer
    conv.runstate.pending_kind = None
    conv.runstate.reason = reply.stop_reason


def stitched_answer(conv: Conversation, reply: Any) -> str:
    """The answer text once ``reply`` is kept: continuations stitched on (``keep_reply`` sets it; a guard may
    read it before). The answer itself once it is kept."""
    if conv.runstate.reply_kept:
        return conv.runstate.answer
    new_text = history.text_of(reply.content)
    kind = conv.runstate.pending_kind
    if kind == "prompt":
        return stitch.join_prompted(conv.answer, new_text)
    if kind in ("prefill", "caller_prefill"):
        return stitch.join_prefill(conv.answer, new_text)
    if kind == "pause":
        return conv.answer + new_text
    return new_text


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
    conv.counters.discards += 1
    conv.emit(
        "reply.discarded",
        reason=reason,
        stop_reason=reply.stop_reason,
        block_types=[b.get("type") for b in reply.content],
    )


# --- requesting -------------------------------------------------------------------------


def stop_at_turn_limit(conv: Conversation) -> None:
    conv.runstate.reason = "max_turns"


def stop_over_budget(conv: Conversation) -> None:
    conv.runstate.reason = conv.spent_budget()


def switch_to_prompt(conv: Conversation) -> None:
    """The model refused our prefill: continue with a user prompt, now and for the rest of the run."""
    conv.runstate.continuation_mode = "prompt"
    # the safety net: the model's rules (agentfsm.wire.models) said it accepts prefill; the agent remembers
    models.remember_prefill_refused(conv.model, by=conv.agent)
    conv.runstate.prefill_was_rejected = False
    conv.runstate.error = None
    conv.messages.append({"role": "user", "content": conv.policy.continuation_prompt})
    conv.runstate.pending_kind = "prompt"
    conv.emit("continuation.fallback", model=conv.model)


def fail_on_error(conv: Conversation) -> None:
    conv.runstate.reason = "api_error"


# --- end_turn ---------------------------------------------------------------------------


def nudge(conv: Conversation) -> None:
    """An empty reply after tool results: never resend it; ask again in a new user message.

    A second nudge goes into the first one's message (one more text block), so the request
    changes and only one user message follows the tool results, as wire rule 1 allows.
    """
    discard_reply(conv, "empty reply after tool results")
    conv.counters.empty_retries += 1
    last = conv.messages[-1]
    if last["role"] == "user" and not history.is_tool_result_message(last):  # an earlier nudge
        again = {"type": "text", "text": conv.policy.nudge_prompt}
        conv.messages[-1] = {"role": "user", "content": [*history.blocks(last), again]}
    else:
        conv.messages.append({"role": "user", "content": conv.policy.nudge_prompt})
    conv.runstate.pending_kind = None
    conv.emit("empty.nudged", retry=conv.counters.empty_retries)


def finish_empty(conv: Conversation) -> None:
    """An empty reply that is accepted as the end: nothing to add to the history."""
    keep_reply(conv)
    conv.runstate.reason = "empty_reply"


# --- max_tokens -------------------------------------------------------------------------


def climb_ladder(conv: Conversation) -> None:
    """A reply cut inside a tool call: drop it and send the same request with more room."""
    discard_reply(conv, "cut off inside a block at max_tokens")
    before = conv.runstate.max_tokens
    conv.runstate.max_tokens = conv.policy.max_tokens_ladder[conv.counters.rung]
    conv.counters.rung += 1
    conv.emit("ladder.climbed", from_max_tokens=before, to_max_tokens=conv.runstate.max_tokens)


def fail_ladder_exhausted(conv: Conversation) -> None:
    discard_reply(conv, "cut off inside a block at the top of the max_tokens ladder")
    conv.runstate.reason = "max_tokens_ladder_exhausted"
    conv.runstate.error = RunError(
        type="max_tokens_ladder_exhausted",
        message=(
            f"the reply was cut off inside a tool_use or thinking block at max_tokens={conv.runstate.max_tokens}, "
            "the top of Policy.max_tokens_ladder; add a larger rung or ask for smaller tool inputs"
        ),
    )


def continue_text(conv: Conversation) -> None:
    """Keep the cut text and ask for the rest, by prefill where allowed, else by prompt."""
    keep_reply(conv)
    conv.counters.continuations += 1
    if (
        conv.runstate.continuation_mode == "prefill"
        # auto: the model asked now (after a fallback, another) must take a prefill
        and (conv.policy.continuation != "auto" or models.prefill_allowed(conv.model, by=conv.agent))
        and _prefillable(conv.messages[-1])
    ):
        conv.runstate.pending_kind = "prefill"
    else:
        conv.messages.append({"role": "user", "content": conv.policy.continuation_prompt})
        conv.runstate.pending_kind = "prompt"
    conv.emit("continuation.requested", strategy=conv.runstate.pending_kind, continuation=conv.counters.continuations)


def _prefillable(message: dict[str, Any]) -> bool:
    """Whether an assistant turn can be sent as a prefill: it must end in non-blank text."""
    content = history.blocks(message)
    return (
        bool(content) and content[-1].get("type") == "text" and bool(stitch.prefill_form(content[-1].get("text", "")))
    )


def stop_at_continuation_limit(conv: Conversation) -> None:
    keep_reply(conv)
    conv.runstate.reason = "max_continuations"


# --- tool_use ---------------------------------------------------------------------------


def answer_tool_calls(conv: Conversation) -> None:
    """Keep the reply and answer it with one user message holding only tool_result blocks, in call order.

    The results are the ones the executor just produced (``conv.tool_results``): declare the
    transition with ``runs_tools=True``.

    Taken from ``tool_use``, and also from stop reasons whose reply holds complete client calls
    that the next request could not otherwise carry (a call must be answered in the very next
    message):

    * ``max_tokens`` when the reply's last block is cut text and the client tool_use blocks
      before it are complete (a reply cut *inside* a call climbs the ladder instead). The calls
      are run and answered, the cut text stays in the history and the answer, and the model
      goes on from the results — the text is not continued by prefill, which would send the
      calls back unanswered.
    * ``pause_turn`` (and a server compaction that paused the turn) when the paused turn holds
      client tool_use blocks: sending it back for the server to resume would send them
      unanswered, so they are run and answered, and the turn goes on from their results (its
      server tool blocks stay in the history as sent).

    Under the stop reasons that end a run (end_turn, stop_sequence, refusal,
    model_context_window_exceeded, an unknown one) client calls are not run: the turn is over,
    and ``result.messages`` keeps the reply as sent. Carrying such a history on with
    ``run(result.messages + [user message])`` answers them with ``is_error`` results
    (``agentfsm.wire.messages.answer_abandoned_calls``).
    """
    # Made sendable again (idempotent, and the same objects when they already are): a custom action may have
    # put results of its own in conv.tool_results, and those are redacted and cut like the executor's.
    _answer(conv, conv.tool_results, "answer_tool_calls")
    conv.tool_results = []


def hold_tool_results(conv: Conversation) -> None:
    """Keep the results of the calls just run in the tool ledger, answering nothing yet (``runs_tools=True``).

    The way into ``awaiting_tool_approval``: the reply's calls that need no approval ran, and wait, with
    their results committed, for the ones a person decides. The decision's ``run_tools`` then answers every
    call at once, in call order (the ledger's results are never run again).
    """
    conv.runstate.tool_results.update((r.tool_use_id, r) for r in conv.tool_results)
    conv.tool_results = []


def refuse_tool_calls(conv: Conversation) -> None:
    """Keep the reply and answer every pending tool call with an ``is_error`` result, running none of them.

    The text is the reason the resume gave (``input={"reason": ...}``, or ``input`` itself when it is a
    string), else ``DEFAULT_REFUSAL``. The model reads it and carries on.
    """
    reason = _reason(conv.input) or DEFAULT_REFUSAL
    results = [ToolResult(tool_use_id=c.id, content=reason, is_error=True) for c in conv.pending_tool_calls]
    _answer(conv, results, "refuse_tool_calls")


#: What ``answer_with`` takes: ``{tool_use_id: content or ToolResult}``, or a list of ``ToolResult``.
Results = Mapping[str, "str | list[dict[str, Any]] | ToolResult"] | Sequence[ToolResult]


def answer_with(results: Results | Callable[[Conversation], Results]) -> Callable[[Conversation], None]:
    """An action that keeps the reply and answers every pending tool call with results given from outside.

    For calls something else carried out (a person ran the command, another system answered):
    ``results`` is ``{tool_use_id: content}`` (content a string or a list of content blocks, or a
    ``ToolResult``), or a list of ``ToolResult``; or a function of the conversation returning one,
    e.g. ``answer_with(lambda conv: conv.input["results"])`` to take them from ``resume(input=...)``.
    Every pending call must be answered, and nothing else.
    """

    def action(conv: Conversation) -> None:
        given = results(conv) if callable(results) else results
        _answer(conv, _given_results(given), "answer_with")

    action.__name__ = action.__qualname__ = "answer_with(...)"
    return action


def add_user_message(text: str | Callable[[Conversation], str]) -> Callable[[Conversation], None]:
    """An action that keeps the reply (if any) and adds a user message: a follow-up for the model.

    ``text`` is a string, or a function of the conversation returning one, e.g.
    ``add_user_message(lambda conv: conv.input["message"])``. A reply that called tools must have
    its calls answered instead (``refuse_tool_calls`` carries a reason to the model). Right after
    a user message the text joins it, so roles keep alternating.
    """

    def action(conv: Conversation) -> None:
        value = text(conv) if callable(text) else text
        if not isinstance(value, str) or not value.strip():
            raise InvalidActionError(
                f"add_user_message needs a non-empty string, got {type(value).__name__} {value!r:.60}"
            )
        pending = conv.pending_tool_calls
        if pending:
            raise InvalidActionError(
                f"add_user_message cannot follow a reply whose tool calls are unanswered "
                f"({', '.join(c.id for c in pending)}): the next message must hold their tool_result blocks. "
                "Use refuse_tool_calls (its reason reaches the model), answer_tool_calls or answer_with"
            )
        if conv.reply is not None:
            keep_reply(conv)
        last = conv.messages[-1] if conv.messages else None
        if last is not None and last.get("role") == "user" and not history.is_tool_result_message(last):
            conv.messages[-1] = {"role": "user", "content": [*history.blocks(last), {"type": "text", "text": value}]}
        else:
            conv.messages.append({"role": "user", "content": value})
        conv.runstate.pending_kind = None

    shown = text if isinstance(text, str) else getattr(text, "__name__", "...")
    action.__name__ = action.__qualname__ = f"add_user_message({shown!r:.40})"
    return action


def _reason(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, Mapping):
        reason = value.get("reason")
        if isinstance(reason, str) and reason.strip():
            return reason
    return None


def _given_results(given: object) -> list[ToolResult]:
    what = "{tool_use_id: content} (content a string or a list of content blocks) or a list of ToolResult"
    if isinstance(given, Mapping):
        out: list[ToolResult] = []
        for key, value in given.items():
            if isinstance(value, ToolResult):
                if value.tool_use_id != key:
                    raise InvalidActionError(f"answer_with: the result under {key!r} answers {value.tool_use_id!r}")
                out.append(value)
            elif isinstance(value, str | list):
                out.append(ToolResult(tool_use_id=str(key), content=value))
            else:
                kind = type(value).__name__
                raise InvalidActionError(f"answer_with: the result for {key!r} is a {kind}; give {what}")
        return out
    if isinstance(given, Sequence) and not isinstance(given, str | bytes):
        bad = [type(r).__name__ for r in given if not isinstance(r, ToolResult)]
        if bad:
            raise InvalidActionError(f"answer_with: got a list holding {bad[0]}; give {what}")
        return list(given)
    raise InvalidActionError(f"answer_with: got {type(given).__name__}; give {what}")


def _answer(conv: Conversation, results: Sequence[ToolResult], who: str) -> None:
    """Keep the reply, then answer each of its pending calls, in call order, with its result (made sendable)."""
    calls: list[ToolCall] = conv.pending_tool_calls
    by_id = {r.tool_use_id: r for r in results}
    missing = [f"{c.id} ({c.name})" for c in calls if c.id not in by_id]
    stray = sorted(set(by_id) - {c.id for c in calls})
    if not calls or missing or stray:
        hint = (
            " (declare its transition with runs_tools=True so the executor runs them first)"
            if who == "answer_tool_calls"
            else ""
        )
        raise InvalidActionError(
            f"{who}: the results must answer every pending tool call and nothing else{hint}; "
            f"pending: {[f'{c.id} ({c.name})' for c in calls]}, no result for: {missing}, "
            f"results for no pending call: {stray}",
            action=who,
        )
    keep_reply(conv)
    limit, secrets = conv.policy.max_tool_result_chars, conv.agent.secrets()
    blocks = [for_history(by_id[c.id], limit=limit, secrets=secrets).to_block() for c in calls]
    conv.messages.append({"role": "user", "content": blocks})


def fail_no_tool_calls(conv: Conversation) -> None:
    keep_reply(conv)
    conv.runstate.reason = "no_tool_calls"
    conv.runstate.error = RunError(
        type="protocol_error",
        message="the reply's stop_reason is tool_use but it holds no client tool_use block to answer",
    )


# --- pause_turn -------------------------------------------------------------------------


def resume_pause(conv: Conversation) -> None:
    """Send the paused turn back unchanged, as the last message, so the server resumes it.

    Only for a turn with no client tool_use block (those are answered first: ``answer_tool_calls``).
    """
    keep_reply(conv)
    conv.counters.pause_resumes += 1
    conv.runstate.pending_kind = "pause"
    conv.emit("pause.resumed", resume=conv.counters.pause_resumes)


def stop_at_pause_limit(conv: Conversation) -> None:
    keep_reply(conv)
    conv.runstate.reason = "max_pause_resumes"


# --- refusal, context window, unknown ---------------------------------------------------


def switch_to_fallback(conv: Conversation) -> None:
    """Drop the refusal and send the same request on the next model of the fallback chain, with the refusal's
    credit token (``agentfsm.machine.fallback``).

    The token (``stop_details.fallback_credit_token``) refunds the cache-miss cost of the retry when the
    retry's body is the refused request's; it goes on that one request only (``serverside.shape_request``).
    """
    reply = conv.require_reply()
    discard_reply(conv, "refusal, retried on the fallback model")
    token = (reply.stop_details or {}).get("fallback_credit_token")
    if isinstance(token, str) and token and conv.policy.fallback_credit_tokens:
        conv.runstate.credit_token = token
    before = conv.model
    fallback.hop(conv, "refusal")
    conv.emit(
        "refusal.fallback", from_model=before, to_model=conv.model, credit_token=conv.runstate.credit_token is not None
    )


def finish_refused(conv: Conversation) -> None:
    keep_reply(conv)
    conv.runstate.reason = "refusal"


def stop_at_context_window(conv: Conversation) -> None:
    keep_reply(conv)
    conv.runstate.reason = "model_context_window_exceeded"


def finish_unknown(conv: Conversation) -> None:
    """Keep the reply and finish, with a warning event naming the raw stop_reason (client calls in it are not run)."""
    raw = conv.require_reply().stop_reason
    conv.emit("stop_reason.unknown", level="warning", raw_stop_reason=raw)
    keep_reply(conv)
    conv.runstate.reason = "unknown_stop_reason"


# --- compaction -------------------------------------------------------------------------------


def _note_server_compaction(conv: Conversation, content: list[dict[str, Any]]) -> None:
    """A reply that carries the server's own compaction (a context_management edit) keeps it as sent."""
    block = serverside.compaction_block(content)
    if block is None:
        return
    if block.get("content") is None:
        conv.emit("compaction.failed", level="warning", source="server", reason="the compaction block has no summary")
    else:
        conv.emit("compaction.received", summary_chars=len(str(block["content"])))


def stop_compacting(conv: Conversation) -> None:
    """The summary alone is over the threshold: compacting again would not help, so stop for this run."""
    conv.runstate.compaction_off = True
    conv.emit(
        "compaction.ineffective",
        level="warning",
        input_tokens=usage.context_tokens(conv.require_reply().usage),
        threshold=conv.policy.compact_at_input_tokens,
    )


def _request(conv: Conversation, reason: str) -> None:
    conv.counters.compactions += 1
    conv.runstate.pending_kind = "compaction"
    conv.runstate.compaction_requested_at = conv.turns + 1  # the turn of the compaction request about to go out
    reply = conv.reply
    conv.emit(
        "compaction.requested",
        reason=reason,
        input_tokens=usage.context_tokens(reply.usage) if reply is not None else None,
        threshold=conv.policy.compact_at_input_tokens,
        messages=len(conv.messages),
        compaction=conv.counters.compactions,
    )


def request_compaction(conv: Conversation) -> None:
    """Make the next request a compaction request (``serverside.shape_request`` builds it)."""
    _request(conv, "input_tokens")


def compact_at_context_window(conv: Conversation) -> None:
    """The reply stopped at the context window: drop it, compact, and ask again from the summary."""
    discard_reply(conv, "stopped at the context window; compacting and asking again")
    _request(conv, "context_window")


def apply_compaction(conv: Conversation) -> None:
    """Put the compaction reply first, in place of every message it summarises; they move to the transcript.

    The reply is kept exactly as sent (an assistant message holding the block), and the next reply
    continues it: the model carries on from the summary. Only a reply that is one compaction block with
    a summary is applied (the guard ``lone_summary``); this refuses any other, whoever calls it.
    """
    reply = conv.require_reply()
    block = serverside.lone_summary(reply.content)
    if block is None:
        raise InvalidActionError(
            "apply_compaction: " + _not_a_summary(reply.content) + "; only such a reply can go first in messages",
            action="apply_compaction",
        )
    replaced = conv.messages
    conv.runstate.replaced_messages.extend(replaced)
    conv.messages = [{"role": "assistant", "content": reply.content}]
    conv.runstate.pending_kind = "compacted"
    conv.runstate.compaction_applied_at = conv.turns
    conv.emit(
        "compaction.applied",
        replaced_messages=len(replaced),
        summary_chars=len(str(block.get("content") or "")),
        compaction=conv.counters.compactions,
        usage=usage.compaction_passes(reply.usage),
    )


def _not_a_summary(content: list[dict[str, Any]]) -> str:
    """Why a reply to our compaction request is not applied (it is not ``serverside.lone_summary``)."""
    if len(content) == 1 and content[0].get("type") == "compaction":
        return "the compaction block has no summary"
    return (
        "the reply is not one compaction block with a summary, alone (it cannot go first in messages): "
        f"got {serverside.shape_of(content)}"
    )


def skip_failed_compaction(conv: Conversation) -> None:
    """A compaction that produced no summary (or whose request failed) changes nothing: carry on as before.

    So does an answer of any other shape than one compaction block with a summary (text around the
    block, a tool call beside it, no block): it is dropped whole — a call in it is never run nor sent
    back — and the next request is the ordinary one the compaction request went before.

    An HTTP 400 would come back on every later attempt (the model or the parameters do not allow it),
    so it turns compaction at the threshold off for the run.
    """
    error = conv.runstate.error
    if error is not None:
        reason, status = f"the compaction request failed: {error.type}", error.status_code
        if status == 400:
            conv.runstate.compaction_off = True
        conv.runstate.error = None
    else:
        reply = conv.require_reply()
        stop = reply.stop_reason
        if stop != "compaction":
            reason = f"the compaction request was answered with stop_reason {stop!r}, not a compaction"
        else:
            reason = _not_a_summary(reply.content)
        status = None
        discard_reply(conv, reason)  # a streamed caller has seen its text: take it back
    conv.runstate.pending_kind = None
    conv.emit(
        "compaction.failed",
        level="warning",
        source="request",
        reason=reason,
        status_code=status,
        compaction_off=conv.runstate.compaction_off,
    )


def resume_compaction(conv: Conversation) -> None:
    """The server compacted and paused (``pause_after_compaction``): send the turn back unchanged to continue it."""
    keep_reply(conv)
    conv.counters.compactions += 1
    conv.runstate.pending_kind = "pause"
    conv.emit("compaction.resumed", compaction=conv.counters.compactions)


def stop_at_compaction_limit(conv: Conversation) -> None:
    keep_reply(conv)
    conv.runstate.reason = "max_compactions"
