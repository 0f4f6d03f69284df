"""The fallback chain, client side: a request that ends in a refusal, or fails overloaded or rate limited,
goes on to the next model of ``Policy.fallback_models``.

The chain is ``[agent.model, *policy.fallback_chain]``; ``RunState.chain_at`` is the position of the model the
request is on (``RunState.model``), stored with the run so a resume carries on where it was. A hop moves one
step down the chain (each model once per request: a position is never gone back to within a request); the model
that answered stays for the rest of the conversation (``Policy.fallback_sticky``), or, not sticky, each new
request starts again on the agent's model. A refusal's credit token goes with the hop (``switch_to_fallback``);
a hop after a failed request carries on the token that request carried (it was never redeemed).

Thinking blocks are tied to the model that produced them: after a switch of model, the thinking and
redacted_thinking blocks of the history so far (``RunState.thinking_before`` messages) are left out of the
requests (they stay in the stored history and ``result.messages``); the API takes a history without them.

Never with server-side ``fallbacks`` in one policy (``serverside.check_request_params``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentfsm.machine.guards import guard
from agentfsm.wire.api_errors import action_of
from agentfsm.wire.usage import Usage

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation

_THINKING = ("thinking", "redacted_thinking")


def chain(conv: Conversation) -> tuple[str, ...]:
    """The agent's model, then the policy's fallback models."""
    return (conv.agent.model, *conv.policy.fallback_chain)


def next_position(conv: Conversation) -> int | None:
    """The position of the next model down the chain from the request's (skipping the request's own), or None."""
    models, run = chain(conv), conv.runstate
    at = run.chain_at + 1
    while at < len(models) and models[at] == run.model:
        at += 1
    return at if at < len(models) else None


@guard("refusal in fallback_on, chain left")
def refusal_falls_back(conv: Conversation) -> bool:
    return "refusal" in conv.policy.fallback_on and next_position(conv) is not None


@guard("error kind in fallback_on, chain left")
def failure_falls_back(conv: Conversation) -> bool:
    error = conv.runstate.error
    kind = error.kind if error is not None else None
    return (
        kind is not None
        and action_of(kind) == "fallback"
        and kind in conv.policy.fallback_on
        and next_position(conv) is not None
    )


def hop(conv: Conversation, why: str) -> None:
    """Move the request to the next model of the chain, saying so (``fallback.hop``)."""
    at = next_position(conv)
    assert at is not None  # the guards checked
    run = conv.runstate
    before = run.model
    switch(conv, at)
    conv.counters.fallback_used = True
    conv.emit(
        "fallback.hop", level="warning", from_model=before, to_model=run.model, trigger=why, position=at,
        credit_token=run.credit_token is not None,
    )  # fmt: skip


def switch(conv: Conversation, at: int) -> None:
    """Put the conversation on the chain's model at ``at``; the thinking so far is the other model's."""
    run = conv.runstate
    model = chain(conv)[at]
    if model != run.model:
        run.thinking_before = len(run.messages)
    run.chain_at, run.model = at, model


def switch_after_failure(conv: Conversation) -> None:
    """The request failed overloaded or rate limited: send it again on the next model of the chain."""
    error = conv.runstate.error
    hop(conv, error.kind if error is not None and error.kind is not None else "error")
    conv.runstate.error = None  # the run carries on: this error is not its outcome


def answered(conv: Conversation, model: str, *, refused: bool) -> None:
    """A reply came: note the model that answered this turn. Unless it is a refusal (which the chain may send
    on), the next request starts on the agent's model again when the policy is not sticky."""
    run = conv.runstate
    if not run.turn_models or run.turn_models[-1][1] != model:
        run.turn_models.append((run.counters.turns, model))
    if not refused and not conv.policy.fallback_sticky and run.chain_at:
        switch(conv, 0)
        run.thinking_before = len(run.messages) + 1  # this reply, about to join the history, is the other model's


def account(conv: Conversation, model: str, usage: dict[str, Any] | None, cost: float | None) -> None:
    """Add a reply's usage and cost to its model's (``RunState.usage_by_model``, ``cost_by_model``)."""
    run = conv.runstate
    run.usage_by_model.setdefault(model, Usage()).add(usage)
    spent = run.cost_by_model.get(model, 0.0)
    run.cost_by_model[model] = None if spent is None or cost is None else round(spent + cost, 10)


def without_other_thinking(messages: list[dict[str, Any]], before: int) -> list[dict[str, Any]]:
    """``messages`` with no thinking blocks in the assistant messages before ``before`` (another model's).

    A message that would be left empty keeps its blocks (an empty assistant turn is not a valid message)."""
    out = list(messages)
    for i in range(min(before, len(messages))):
        message = messages[i]
        content = message.get("content")
        if message.get("role") != "assistant" or not isinstance(content, list):
            continue
        kept = [b for b in content if not (isinstance(b, dict) and b.get("type") in _THINKING)]
        if kept and len(kept) != len(content):
            out[i] = {**message, "content": kept}
    return out
