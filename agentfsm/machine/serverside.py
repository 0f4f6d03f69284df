"""The API's own answers to a long context and to a refusal: compaction, server-side fallbacks, credit tokens.

What the machine must know of them, read off the installed ``anthropic`` package (2.14):

* **A compaction request** is an ordinary request plus ``compaction: {"type": "summarize",
  "instructions"?}`` (beta ``compact-2026-09-04``). The conversation in ``messages`` is summarised and
  the reply holds one ``compaction`` block, ``stop_reason: "compaction"``; later requests send that
  block first in ``messages`` — as an assistant message, the way the SDK's ``message.to_param()``
  writes the reply — in place of the messages it summarises. The API rejects on it the parameters that
  only shape a reply (the SDK's ``_without_compaction_incompatible_params``): ``context_management``,
  ``stop_sequences``, ``output_format``, a forced ``tool_choice`` (``any``/``tool``) and
  ``output_config.format`` (inside ``fallbacks`` entries too). It cannot compact a history whose last
  turn has unanswered tool calls.
* **The block** (``content``, ``encrypted_content``, ``signature``, ``tool_changes``) goes back
  verbatim. ``content: null`` is a failed compaction, a no-op.
* **Usage**: a ``compaction`` entry of ``usage.iterations`` is *not* in the top-level usage fields;
  the context size is the last ``message`` (or ``fallback_message``) entry's input.
* **Server-side fallbacks**: ``fallbacks`` (a list of entries, or ``"default"``; beta
  ``server-side-fallback-2026-07-01``). The reply's ``model`` names the model that served it, one
  ``fallback`` block marks each hop, and ``usage.iterations`` has a ``fallback_message`` entry.
* **Credit tokens**: a refusal's ``stop_details.fallback_credit_token`` goes on the retry as
  ``fallback_credit_token`` — here in the object form ``{"token", "mode": "best_effort"}`` (beta
  ``fallback-credit-2026-07-01``), so a token that cannot be redeemed costs the refund, never the
  retry. Refusals carry tokens only when that beta is on. Never sent together with ``fallbacks``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agentfsm.errors import ConfigurationError
from agentfsm.wire.messages import Block, Message, tool_result_ids, tool_use_ids
from agentfsm.wire.usage import iterations

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation
    from agentfsm.policy import Policy
    from agentfsm.wire.api import Reply

COMPACTION_BETA = "compact-2026-09-04"
"""The ``compaction`` request parameter (a compaction request)."""
COMPACTION_EDIT_BETA = "compact-2026-01-12"
"""The ``compact_20260112`` context-management edit (the server compacts on its own)."""
SERVER_FALLBACK_BETA = "server-side-fallback-2026-07-01"
FALLBACK_CREDIT_BETA = "fallback-credit-2026-07-01"
MCP_CONNECTOR_BETA = "mcp-client-2025-11-20"
"""The ``mcp_servers`` request parameter (the API's MCP connector) with ``mcp_toolset`` tool entries."""

#: Parameters that only shape a reply: the API rejects them on a compaction request.
COMPACTION_INCOMPATIBLE = ("context_management", "stop_sequences", "output_format")
#: Parameters the machine sets per request; an agent's ``request_params`` may not set them.
MACHINE_PARAMS = {
    "compaction": "Policy.compact_at_input_tokens (the machine sends compaction requests between turns)",
    "fallbacks": "Policy.fallbacks",
    "fallback_credit_token": "Policy.fallback_models (a refusal's credit token goes on the hop by itself)",
}


# --- configuration ---------------------------------------------------------------------------------


def check_request_params(policy: Policy, request_params: Mapping[str, Any]) -> None:
    """Refuse, at construction, what would make every request fail (or compact) later."""
    for name, instead in MACHINE_PARAMS.items():
        if name in request_params:
            raise ConfigurationError(f"request_params may not set {name!r}: use {instead}")
    if policy.fallbacks is not None and policy.fallback_chain:
        raise ConfigurationError(
            f"Policy.fallbacks (server-side: the API retries a refusal on its chain within the request) and a "
            f"client-side chain (Policy.fallback_models={list(policy.fallback_chain)}) cannot be combined: the API "
            "rejects a refusal's credit token beside `fallbacks`, and a request would fall back twice. Use "
            "fallback_models (it also falls back on overloads and rate limits), or fallbacks alone."
        )
    if policy.compact_at_input_tokens is not None and has_compaction_edit(request_params):
        raise ConfigurationError(
            "Policy.compact_at_input_tokens cannot be used with a compact_20260112 edit in "
            "request_params['context_management']: the API does not accept a compaction block from a compaction "
            "request together with that edit. Use one of the two."
        )


def has_compaction_edit(params: Mapping[str, Any]) -> bool:
    """Whether ``context_management`` asks the server to compact on its own (``compact_*`` edits)."""
    management = params.get("context_management")
    edits = management.get("edits") if isinstance(management, Mapping) else None
    return isinstance(edits, list) and any(
        isinstance(e, Mapping) and str(e.get("type", "")).startswith("compact_") for e in edits
    )


# --- shaping a request -----------------------------------------------------------------------------


def shape_request(conv: Conversation, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as this request must go out: a compaction request, a retry redeeming a credit token,
    or an ordinary request with the policy's ``fallbacks``."""
    policy = conv.policy
    if policy.fallbacks is not None and not conv.counters.fallback_used:
        # The chain is the agent's model's: after a client-side switch to another model it is not sent
        # (a list sent to a model without fallbacks is an HTTP 400).
        chain = policy.fallbacks
        params["fallbacks"] = [dict(e) for e in chain] if isinstance(chain, list) else chain
    if conv.runstate.pending_kind == "compaction":
        params = without_compaction_incompatible(params)
        config: dict[str, Any] = {"type": "summarize"}
        if policy.compaction_instructions and policy.compaction_instructions.strip():
            config["instructions"] = policy.compaction_instructions
        params["compaction"] = config
    elif conv.runstate.credit_token is not None:
        params.pop("fallbacks", None)  # the API rejects fallback_credit_token with fallbacks, always
        params["fallback_credit_token"] = credit_token_param(conv.runstate.credit_token)
    return params


def without_compaction_incompatible(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` without what the API rejects on a compaction request (what the SDK's runner strips)."""
    trimmed = {k: v for k, v in params.items() if k not in COMPACTION_INCOMPATIBLE}
    choice = params.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") in ("any", "tool"):
        del trimmed["tool_choice"]
    config = params.get("output_config")
    if isinstance(config, Mapping):
        kept = _without_format(config)
        if kept:
            trimmed["output_config"] = kept
        else:
            del trimmed["output_config"]
    chain = params.get("fallbacks")
    if isinstance(chain, list):
        trimmed["fallbacks"] = [
            {**e, "output_config": _without_format(e["output_config"])}
            if isinstance(e, Mapping) and isinstance(e.get("output_config"), Mapping)
            else e
            for e in chain
        ]
    return trimmed


def _without_format(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "format"}


def credit_token_param(token: str) -> dict[str, str]:
    """The retry's ``fallback_credit_token``: best effort, so a token that fails still gets the retry served."""
    return {"token": token, "mode": "best_effort"}


def request_betas(conv: Conversation, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The agent's betas plus those the request's parameters need."""
    betas = list(conv.agent.betas)
    edit = has_compaction_edit(params)
    if "compaction" in params or (not edit and carries_compaction(conv)):
        betas.append(COMPACTION_BETA)  # a compaction block goes back only through the beta API
    if edit:
        betas.append(COMPACTION_EDIT_BETA)
    if "fallbacks" in params:
        betas.append(SERVER_FALLBACK_BETA)
    if "mcp_servers" in params and not any(b.startswith("mcp-client-") for b in betas):
        betas.append(MCP_CONNECTOR_BETA)
    policy = conv.policy
    if "fallback_credit_token" in params or (policy.fallback_chain and policy.fallback_credit_tokens):
        betas.append(FALLBACK_CREDIT_BETA)
    return tuple(dict.fromkeys(betas))


# --- reading the history -----------------------------------------------------------------------------


def carries_compaction(conv: Conversation) -> bool:
    """Whether the history holds a compaction block (then every request goes through the beta API).

    Asked before every request, so it is incremental: the history only grows, or has its last message
    extended, or is replaced whole (a compaction, an assignment to ``conv.messages``), so only the
    messages added since the last look, and the last one looked at, are looked at again. A subclass's
    action may change anything, so ``Conversation.acting`` forgets what was seen.
    """
    messages = conv.messages
    seen = conv._compaction_seen
    start = 0
    if seen is not None and seen[0] is messages and seen[1] <= len(messages):
        if seen[2]:
            return True
        start = max(seen[1] - 1, 0)
    found = any(
        isinstance(m.get("content"), list) and any(b.get("type") == "compaction" for b in m["content"])
        for m in messages[start:]
    )
    conv._compaction_seen = (messages, len(messages), found)
    return found


def unanswered_tool_calls(messages: Sequence[Message]) -> list[str]:
    """Client tool calls of the last assistant turn that no tool_result answers (a compaction must wait)."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "assistant":
            wanted = tool_use_ids(messages[i])
            answered = tool_result_ids(messages[i + 1]) if i + 1 < len(messages) else []
            return [t for t in wanted if t not in answered]
    return []


def compaction_block(content: Sequence[Block]) -> Block | None:
    """The (last) compaction block of a reply's content, or None."""
    found = [b for b in content if b.get("type") == "compaction"]
    return found[-1] if found else None


def lone_summary(content: Sequence[Block]) -> Block | None:
    """The compaction block of an answer to our compaction request that can go first in ``messages``; else None.

    What the API promises for that answer (``BetaCompactionConfigParam``: "a signed ``compaction``
    block, alone ... nothing is sampled after the block"), and the only shape applied: exactly one
    block, a ``compaction`` block whose ``content`` is a non-empty string (null is a failed
    compaction; an empty string the API rejects when it comes back). Anything else — text before or
    after it, a tool call beside it (which the next message would have to answer), thinking, a second
    block — is not what was asked for, and the compaction counts as failed (``skip_failed_compaction``).
    """
    if len(content) != 1:
        return None
    block = content[0]
    summary = block.get("content")
    return block if block.get("type") == "compaction" and isinstance(summary, str) and summary else None


def shape_of(content: Sequence[Block]) -> str:
    """The block types of ``content``, as a reason shows them: ``[text, compaction, text]``."""
    return "[" + ", ".join(str(b.get("type")) for b in content) + "]"


# --- who served a reply ---------------------------------------------------------------------------


def served_by(reply: Reply) -> str | None:
    """The model that produced the reply: a fallback model's ``fallback_message`` entry, the last
    ``fallback`` block's ``to``, or the reply's ``model`` (which the API sets to the serving model)."""
    for entry in reversed(iterations(reply.usage)):
        if entry.get("type") == "fallback_message" and isinstance(entry.get("model"), str):
            return str(entry["model"])
    hops = fallback_hops(reply.content)
    if hops and hops[-1]["to"]:
        return str(hops[-1]["to"])
    return reply.model


def fallback_hops(content: Sequence[Block]) -> list[dict[str, Any]]:
    """One ``{"from", "to", "category"}`` per ``fallback`` block, in order."""
    hops = []
    for block in content:
        if block.get("type") != "fallback":
            continue
        source, dest, trigger = block.get("from"), block.get("to"), block.get("trigger")
        hops.append(
            {
                "from": source.get("model") if isinstance(source, Mapping) else None,
                "to": dest.get("model") if isinstance(dest, Mapping) else None,
                "category": trigger.get("category") if isinstance(trigger, Mapping) else None,
            }
        )
    return hops


def note_reply(conv: Conversation, reply: Reply) -> None:
    """Say what the server did for this reply: a fallback model served it, a credit token's outcome."""
    hops = fallback_hops(reply.content)
    # A fallback model served it: the usage says so; a hop's block may be absent when no model declined
    # in this reply (BetaFallbackBlock), so either one is enough.
    if hops or any(e.get("type") == "fallback_message" for e in iterations(reply.usage)):
        conv.emit("fallback.served", requested_model=conv.model, served_by=served_by(reply), hops=hops)
    credit = (reply.usage or {}).get("fallback_credit")
    status = credit.get("status") if isinstance(credit, Mapping) else None
    if isinstance(status, Mapping):
        redeemed = status.get("type") == "redeemed"
        conv.emit(
            "fallback.credit",
            level="info" if redeemed else "warning",
            status=status.get("type"),
            reason=status.get("reason"),
            remove_to_redeem=status.get("remove_to_redeem"),
        )
