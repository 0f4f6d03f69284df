"""Message threads as a transport (``Policy.transport="thread"``): each turn sends only what the server lacks.

``core.plan`` builds every request with the full history, as always; ``shape``
then sends it on the run's server-held thread (``agentfsm.wire.threads``):

* **continue** when the server's thread holds exactly a prefix of what the
  request would send — same messages (cache marks aside), same ``system`` and
  ``tools``, same model: only the messages after that prefix go, with
  ``thread: {"type": "continue", "previous_message_id": ...}`` and no
  ``system``/``tools`` (``[]`` resumes a paused turn, as the SDK does);
* **create** otherwise — the first request, and whenever the history the
  server holds would differ from ours: a max_tokens ladder retry (the cut reply
  is dropped from our history, and the reply it continued was continued
  already), a prefill continuation (our history joins the seam into one text
  block), a compacted history, a fallback to another model, changed tools;
* **full** (no thread) for what cannot go on one: a compaction request (its
  history is summarised, not kept), a retry redeeming a fallback credit token
  (it must repeat the refused request's body), a Message Batch (the Batches
  API takes no ``thread``), and every turn after the server said
  ``thread_unsupported_request``.

The rule is one check, not a case per state: **continue only while the
server's history equals a prefix of ours** (``ThreadPosition.digest``, the
fingerprint of what the server holds, recorded when each reply arrives). Our
store stays the source of truth: ``RunState.messages`` is always the whole
history, and a lost thread costs one request with the full history.

A refused reply, or one a server-side fallback model wrote, is not continued
(the SDK starts a new thread after either). A continue the server rejects with
``thread_not_found`` (404), ``thread_already_continued`` or
``thread_continue_in_flight`` (400) is sent again at once as a create with the
full history (``thread.lost``); that create is never replayed again, so a turn
costs at most one extra request (two when the server then answers
``thread_unsupported_request``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentfsm.wire import api
from agentfsm.wire.threads import (
    CREATE_ONLY_FIELDS,
    REPLAY_CODES,
    THREADS_BETA,
    UNSUPPORTED_CODE,
    ThreadPosition,
    chain,
    fields_digest,
    reply_turn,
)

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation


def shape(conv: Conversation, params: dict[str, Any], betas: tuple[str, ...]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The request ``params`` (the full history) as the run's transport sends it, and its betas."""
    run = conv.runstate
    if conv.policy.transport != "thread":
        return params, betas
    position = run.thread
    if position is None:
        position = run.thread = ThreadPosition()
    if run.batched or position.off or "compaction" in params or "fallback_credit_token" in params:
        position.sending = "full"
        return params, betas
    betas = betas if THREADS_BETA in betas else (*betas, THREADS_BETA)
    messages: list[dict[str, Any]] = params["messages"]
    fields = fields_digest(params)
    held = position.held if position.previous_message_id is not None and position.held <= len(messages) else -1
    sent = len(messages) - 1 if messages and messages[-1].get("role") == "assistant" else len(messages)
    # One pass over the history: its fingerprint where the server's ends, and where this request's new turn starts.
    digest, at_held = "", None
    for i in range(max(held, sent) + 1):
        if i == held:
            at_held = digest
        if i == sent:
            position.sent_digest = digest
        if i < len(messages):
            digest = chain(digest, messages[i])
    if (
        at_held is not None
        and at_held == position.digest
        and position.fields == fields
        and position.model == params.get("model")
    ):
        position.sending = "continue"
        shaped = {k: v for k, v in params.items() if k not in CREATE_ONLY_FIELDS}
        shaped["messages"] = messages[position.held :]
        shaped["thread"] = {"type": "continue", "previous_message_id": position.previous_message_id}
        return shaped, betas
    position.sending = "create"
    position.previous_message_id = None
    position.fields = fields
    position.model = str(params.get("model"))
    return {**params, "thread": {"type": "create"}}, betas


def note_reply(conv: Conversation, outcome: api.Reply | api.RequestFailure, sent: list[dict[str, Any]]) -> None:
    """Record what the server holds once the request in flight is answered (``sent``: its full history)."""
    position = conv.runstate.thread
    if position is None or position.sending is None:
        return
    sending, position.sending = position.sending, None
    if isinstance(outcome, api.RequestFailure):
        return  # the server holds nothing new: the same turn may continue the same reply again
    iterations = (outcome.usage or {}).get("iterations") or []
    fallback = any(isinstance(i, Mapping) and i.get("type") == "fallback_message" for i in iterations)
    if sending == "full" or outcome.id is None or outcome.stop_reason == "refusal" or fallback:
        position.previous_message_id = None  # nothing to continue: the next threaded turn creates a thread
        return
    resumed = sent[-1] if sent and sent[-1].get("role") == "assistant" else None
    position.previous_message_id = outcome.id
    position.held = len(sent) if resumed is not None else len(sent) + 1
    position.digest = chain(position.sent_digest, reply_turn(resumed, outcome.content))
    if sending == "create":
        position.thread_id = outcome.id


def lost(conv: Conversation, outcome: api.Reply | api.RequestFailure) -> bool:
    """Whether ``outcome`` says the thread is gone (or cannot be used): then the position is reset, the loss
    said in a ``thread.lost`` event, and the same turn is to be sent again (the caller re-plans it)."""
    position = conv.runstate.thread
    if not isinstance(outcome, api.RequestFailure) or position is None or position.sending is None:
        return False
    code = outcome.error_code
    if code in REPLAY_CODES and position.sending == "continue":
        pass
    elif code == UNSUPPORTED_CODE and position.sending in ("create", "continue"):
        position.off = True
    else:
        return False
    conv.emit(
        "thread.lost",
        level="warning",
        reason=code,
        previous_message_id=position.previous_message_id,
        status_code=outcome.status_code,
    )
    position.previous_message_id = None
    position.sending = None
    return True
