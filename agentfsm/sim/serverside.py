"""The simulator's side of compaction, server-side fallbacks and fallback credit tokens.

What the real API does with them, as the installed ``anthropic`` package documents it (the request
parameters in ``types/beta/message_create_params.py``, the blocks and usage in ``types/beta/``), and as
recorded exchanges show it (a compaction block is ``{"type": "compaction", "content": ...}``; streamed,
it starts with ``content: null`` and one ``compaction_delta`` carries the whole summary; a compaction
pass is reported in ``usage.iterations``, not in the top-level fields):

* ``validate`` gives the HTTP 400 a request gets for the invalid combinations: ``compaction`` without
  its beta, with ``context_management``, with a parameter that only shapes a reply, or on a history
  whose last turn has unanswered tool calls; ``fallbacks`` without its beta, malformed, or as a list to
  a model without fallbacks; ``fallback_credit_token`` with ``fallbacks``, or in the object form
  without its beta; a compaction block whose ``content`` is an empty string. The messages are this
  simulator's wording (the SDK documents the rules, not the API's words).
* ``summarize`` answers a compaction request with one block (``Simulator(auto_compact=True)``).
* ``CreditLedger`` mints a refusal's ``fallback_credit_token`` (only for a request that carries the
  fallback-credit beta, as the API does) and redeems it: ``redeemed`` when the retry's ``system``,
  ``messages`` and ``tools`` are the refused request's, on another model, within 5 minutes; otherwise a
  400 (``strict``, the bare-string form) or ``not_applied`` with the reason (``best_effort``).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agentfsm.sim.model import ScriptedReply, SimRequest

COMPACTION_BETAS = frozenset({"compact-2026-09-04"})
FALLBACK_BETAS = frozenset({"server-side-fallback-2026-06-01", "server-side-fallback-2026-07-01"})
CREDIT_BETAS = frozenset({"fallback-credit-2026-06-01", "fallback-credit-2026-07-01"})
#: The model ``fallbacks: "default"`` falls back to in this simulator.
DEFAULT_FALLBACK_MODEL = "claude-opus-4-8"
#: A credit token's lifetime (``BetaRefusalStopDetails.fallback_credit_token``: "Expires 5 minutes after the refusal").
CREDIT_TOKEN_TTL_S = 300.0
FALLBACK_ENTRY_KEYS = frozenset({"model", "max_tokens", "thinking", "output_config", "speed"})
#: Summaries ``summarize`` writes are cut to this many characters: a compaction must make the context smaller.
SUMMARY_CHARS = 400

FallbackPolicy = Collection[str] | Callable[[str], bool] | None
"""Which models reject a ``fallbacks`` list: model-name prefixes, a predicate, or None for the default."""

_GENERATION_5 = re.compile(r"^claude-[a-z]+-5(?:$|[-.@])")


def default_fallbacks_unsupported(model: str) -> bool:
    """Fallbacks come with the models that have refusal classifiers (``claude-<family>-5…``); others reject a list."""
    return not _GENERATION_5.match(model)


def fallbacks_predicate(policy: FallbackPolicy) -> Callable[[str], bool]:
    if policy is None:
        return default_fallbacks_unsupported
    if callable(policy):
        return policy
    prefixes = tuple(policy)
    return lambda model: model.startswith(prefixes)


def betas(headers: Mapping[str, str]) -> frozenset[str]:
    """The ``anthropic-beta`` header's names."""
    return frozenset(b.strip() for b in headers.get("anthropic-beta", "").split(",") if b.strip())


def _blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _unanswered_tool_calls(messages: list[dict[str, Any]]) -> bool:
    if not messages or messages[-1].get("role") != "assistant":
        return False
    return any(b.get("type") == "tool_use" for b in _blocks(messages[-1]))


def validate(
    body: Mapping[str, Any], headers: Mapping[str, str], *, fallbacks_unsupported: Callable[[str], bool]
) -> str | None:
    """The 400 message for a request that misuses compaction, fallbacks or credit tokens; None if it is fine."""
    on = betas(headers)
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    for i, message in enumerate(messages):
        for k, block in enumerate(_blocks(message)):
            if block.get("type") == "compaction" and block.get("content") == "":
                return (
                    f"messages.{i}.content.{k}.content: a compaction block's content must be a non-empty "
                    "summary, or null for a failed compaction"
                )
    return (
        _check_compaction(body, on, messages)
        or _check_fallbacks(body, on, fallbacks_unsupported)
        or _check_credit_token(body, on)
    )


def _check_compaction(body: Mapping[str, Any], on: frozenset[str], messages: list[dict[str, Any]]) -> str | None:
    if "compaction" not in body:
        return None
    if not on & COMPACTION_BETAS:
        return "compaction: Extra inputs are not permitted (send the `compact-2026-09-04` beta)"
    config = body["compaction"]
    if not isinstance(config, dict) or config.get("type") != "summarize":
        return "compaction.type: Input should be 'summarize'"
    if set(config) - {"type", "instructions"}:
        return f"compaction: unexpected field(s) {sorted(set(config) - {'type', 'instructions'})}"
    if "context_management" in body:
        return "compaction: cannot be combined with `context_management`"
    for name in ("stop_sequences", "output_format"):
        if name in body:
            return f"{name}: not supported on a compaction request (it returns only the compaction block)"
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        return "tool_choice: a compaction request cannot force tool use"
    output = body.get("output_config")
    if isinstance(output, dict) and "format" in output:
        return "output_config.format: not supported on a compaction request"
    chain = body.get("fallbacks")
    if isinstance(chain, list) and any(
        isinstance(e, dict) and isinstance(e.get("output_config"), dict) and "format" in e["output_config"]
        for e in chain
    ):
        return "fallbacks.output_config.format: not supported on a compaction request"
    if _unanswered_tool_calls(messages):
        return (
            "messages: a compaction request cannot compact a conversation whose last turn has unanswered "
            "`tool_use` blocks; send their `tool_result` blocks first"
        )
    return None


def _check_fallbacks(body: Mapping[str, Any], on: frozenset[str], unsupported: Callable[[str], bool]) -> str | None:
    if "fallbacks" not in body:
        return None
    if not on & FALLBACK_BETAS:
        return "fallbacks: Extra inputs are not permitted (send the `server-side-fallback-2026-07-01` beta)"
    chain = body["fallbacks"]
    if chain == "default":
        return None
    if not isinstance(chain, list) or not chain:
        return "fallbacks: Input should be 'default' or a non-empty list of fallback entries"
    for i, entry in enumerate(chain):
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            return f"fallbacks.{i}.model: Field required"
        extra = sorted(set(entry) - FALLBACK_ENTRY_KEYS)
        if extra:
            return f"fallbacks.{i}.{extra[0]}: Extra inputs are not permitted"
    model = str(body.get("model", ""))
    if unsupported(model):
        return f'fallbacks: {model} does not support a list of fallback models; remove `fallbacks` or send "default"'
    return None


def _check_credit_token(body: Mapping[str, Any], on: frozenset[str]) -> str | None:
    if "fallback_credit_token" not in body:
        return None
    if "fallbacks" in body:
        return "fallback_credit_token: cannot be combined with `fallbacks`"
    value = body["fallback_credit_token"]
    if isinstance(value, str):
        return None
    if not isinstance(value, dict):
        return "fallback_credit_token: Input should be a valid string"
    if not on & CREDIT_BETAS:
        return (
            "fallback_credit_token: Input should be a valid string (the object form needs the "
            "`fallback-credit-2026-07-01` beta)"
        )
    if not isinstance(value.get("token"), str):
        return "fallback_credit_token.token: Field required"
    if value.get("mode", "strict") not in ("strict", "best_effort"):
        return "fallback_credit_token.mode: Input should be 'strict' or 'best_effort'"
    return None


# --- compaction ------------------------------------------------------------------------------------


def _opaque(seed: str) -> str:
    return base64.b64encode(b"\x0c\x90" + hashlib.sha256(seed.encode()).digest() * 2).decode()


def _snippet(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in _blocks(message):
        kind = block.get("type")
        if kind == "text":
            parts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            parts.append(f"called {block.get('name')}")
        elif kind == "tool_result":
            parts.append("got a result")
        elif kind == "compaction":
            parts.append(f"[earlier: {block.get('content')}]")
    return " ".join(p for p in parts if p)


def summary_of(request: SimRequest) -> str:
    """A deterministic summary of the request's conversation, at most ``SUMMARY_CHARS`` characters."""
    messages = request.messages
    lines = [f"{m.get('role')}: {_snippet(m)}" for m in messages]
    text = f"Summary of {len(messages)} messages. " + " / ".join(lines)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def summarize(request: SimRequest) -> ScriptedReply:
    """The answer to a compaction request: one block with the summary and opaque metadata."""
    summary = summary_of(request)
    block = {"type": "compaction", "content": summary, "encrypted_content": _opaque(request.raw_body.decode())}
    return ScriptedReply(content=[block], stop_reason="compaction")


# --- fallbacks ---------------------------------------------------------------------------------------


def fallback_target(request: SimRequest, wanted: str | None) -> str:
    """The model a server-side fallback hands over to: ``wanted``, else the request's first entry, else the default."""
    if wanted:
        return wanted
    chain = request.body.get("fallbacks")
    if isinstance(chain, list) and chain and isinstance(chain[0], dict) and isinstance(chain[0].get("model"), str):
        return str(chain[0]["model"])
    return DEFAULT_FALLBACK_MODEL


# --- credit tokens -------------------------------------------------------------------------------------


def _body_key(body: Mapping[str, Any]) -> str:
    """What a redeeming retry must repeat: the render-shaping fields of the refused request."""
    return json.dumps({k: body.get(k) for k in ("system", "messages", "tools")}, sort_keys=True)


@dataclass(frozen=True)
class _Minted:
    model: str
    key: str
    at: float


class CreditLedger:
    """The fallback credit tokens a simulator has minted, and their redemption."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[str, _Minted] = {}
        self._lock = threading.Lock()
        self._count = itertools.count(1)

    def mint(self, request: SimRequest) -> str:
        key = _body_key(request.body)
        with self._lock:
            token = "fct_" + hashlib.sha256(f"{next(self._count)}:{key}".encode()).hexdigest()[:32]
            self._tokens[token] = _Minted(request.model, key, self._clock())
        return token

    def redeem(self, request: SimRequest) -> tuple[dict[str, Any] | None, str | None]:
        """``(usage.fallback_credit, None)`` for the retry, or ``(None, message)`` for its HTTP 400."""
        value = request.body.get("fallback_credit_token")
        if isinstance(value, dict):
            token, mode = str(value.get("token")), str(value.get("mode", "strict"))
        else:
            token, mode = str(value), "strict"
        with self._lock:
            minted = self._tokens.get(token)
        if minted is None:
            return None, "fallback_credit_token: malformed or unknown token"
        reason = None
        if self._clock() - minted.at > CREDIT_TOKEN_TTL_S:
            reason = "expired"
        elif request.model == minted.model:
            reason = "invalid_target_model"
        elif _body_key(request.body) != minted.key:
            reason = "body_mismatch"
        if reason is None:
            return {"status": {"type": "redeemed"}}, None
        if mode == "strict":
            return None, f"fallback_credit_token: the token cannot be redeemed ({reason})"
        return {"status": {"type": "not_applied", "reason": reason}}, None


def with_credit_token(reply: ScriptedReply, request: SimRequest, ledger: CreditLedger) -> ScriptedReply:
    """A refusal scripted with ``credit_token=True``, with a token minted when the request has the beta."""
    if reply.stop_reason != "refusal" or not betas(request.headers) & CREDIT_BETAS:
        return reply
    details = {
        **(reply.stop_details or {"type": "refusal", "category": None, "explanation": None}),
        "fallback_credit_token": ledger.mint(request),
        "fallback_has_prefill_claim": bool(reply.content),
    }
    return reply.model_copy(update={"stop_details": details})


def iterations_for(
    request: SimRequest, reply: ScriptedReply, content: Iterable[Mapping[str, Any]], usage: dict[str, Any]
) -> dict[str, Any]:
    """``usage`` with ``iterations`` as the API reports them for compaction passes and fallback-served replies.

    A reply holding only compaction blocks is a compaction pass alone: its tokens go in a ``compaction``
    entry and the top-level fields are 0 (a compaction pass is never in them). A compaction block before
    other content is a pass, then a sampling iteration on the summary. A reply served by a fallback model
    has the declined model's ``message`` entry, then the ``fallback_message`` entry the top level repeats.
    """
    blocks = list(content)
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
    cache = {k: usage.get(k, 0) for k in keys}
    summary = next((b for b in blocks if b.get("type") == "compaction"), None)
    if summary is not None:
        from agentfsm.sim.tokens import count_tokens

        summary_tokens = count_tokens(str(summary.get("content") or ""))
        compaction = {**cache, "output_tokens": summary_tokens, "type": "compaction"}
        if usage.get("cache_creation") is not None:
            compaction["cache_creation"] = usage["cache_creation"]
        if all(b.get("type") == "compaction" for b in blocks):
            usage = {**usage, **dict.fromkeys(keys, 0), "iterations": [compaction]}
            if isinstance(usage.get("cache_creation"), dict):
                usage["cache_creation"] = dict.fromkeys(usage["cache_creation"], 0)
            return usage
        sampled = {
            "input_tokens": summary_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": max(1, int(usage.get("output_tokens", 1)) - summary_tokens),
            "type": "message",
        }
        return {**usage, **{k: sampled[k] for k in keys}, "iterations": [compaction, sampled]}
    if reply.fallback is not None:
        served = {**cache, "type": "fallback_message", "model": str(reply.model)}
        declined = {**cache, "output_tokens": 0, "type": "message", "model": request.model}
        return {**usage, "iterations": [declined, served]}
    return usage
