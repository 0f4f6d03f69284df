"""Policy: every limit and strategy of a run, in one validated model.

The state table's guards read these numbers; nothing else bounds a loop, so
every loop in the machine is bounded by exactly one field here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentfsm.errors import ConfigurationError
from agentfsm.tools.limits import MIN_TOOL_RESULT_CHARS
from agentfsm.wire.pricing import UNPRICED, Price, price_for

ContinuationStrategy = Literal["auto", "prefill", "prompt"]
#: What sends a request on to the next model of ``Policy.fallback_models``.
FallbackTrigger = Literal["refusal", "overloaded", "rate_limited"]
FALLBACK_TRIGGERS: tuple[FallbackTrigger, ...] = ("refusal", "overloaded", "rate_limited")
OutputMode = Literal["auto", "native", "tool"]

DEFAULT_CONTINUATION_PROMPT = "Continue exactly where you stopped; do not repeat anything."
DEFAULT_NUDGE_PROMPT = "Please continue: use the tool results above to answer my request."
#: The keys a ``fallbacks`` entry may have (``BetaFallbackParam``); the API rejects any other.
FALLBACK_ENTRY_KEYS = frozenset({"model", "max_tokens", "thinking", "output_config", "speed"})


class Policy(BaseModel):
    """Limits and strategies for one agent. Immutable; copy with ``model_copy(update=...)``."""

    # No field means anything as infinity or NaN (None is "no limit" where there may be none): a NaN
    # backoff or lease would compare False with everything and never bound its loop.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_tokens: int = Field(1024, ge=1, description="max_tokens of an ordinary request")
    max_tokens_ladder: tuple[int, ...] = Field(
        (4096, 16384),
        description="larger max_tokens to retry with, in order, when a reply is cut inside a tool_use "
        "or thinking block",
    )
    max_continuations: int = Field(4, ge=0, description="text continuations after max_tokens before giving up")
    max_pause_resumes: int = Field(5, ge=0, description="pause_turn resumes before giving up")
    max_empty_retries: int = Field(1, ge=0, description="nudges after an empty end_turn before accepting it")
    max_turns: int = Field(25, ge=1, description="requests per run, every kind counted: the bound of all loops")
    continuation: ContinuationStrategy = Field(
        "auto",
        description="how to ask for the rest of a cut-off text: prefill the partial assistant turn, "
        "send a user prompt, or auto (prefill where the model's request rules take one, else prompt)",
    )
    continuation_prompt: str = Field(
        DEFAULT_CONTINUATION_PROMPT, description="the user message that asks for the rest of a cut-off text"
    )
    nudge_prompt: str = Field(
        DEFAULT_NUDGE_PROMPT, description="the user message sent after an empty end_turn that followed tool results"
    )
    fallback_model: str | None = Field(
        None, description="one model to fall back to: fallback_models=[fallback_model] (give one of the two)"
    )
    # A fallback chain, client side (docs/02-state-machine.md, "Falling back"): each request that ends in a
    # refusal, or fails overloaded or rate limited after the SDK's own retries, goes to the next model.
    fallback_models: tuple[str, ...] = Field(
        (),
        description="models to send a request on to, in order, when it ends in one of fallback_on: each hop once "
        "per request; a refusal's credit token goes with the hop",
    )
    fallback_on: tuple[FallbackTrigger, ...] = Field(
        FALLBACK_TRIGGERS,
        description="what sends a request to the next model of the chain: refusal (stop_reason), overloaded (529 "
        "overloaded_error) and rate_limited (429), the last two after the SDK's own retries",
    )
    fallback_sticky: bool = Field(
        True,
        description="keep the model that answered for the rest of the conversation (stored: a resume keeps it); "
        "False: every new request starts again on the agent's model",
    )
    # Errors the API says to retry later (docs/12-troubleshooting.md, the error kinds): the machine waits and resends.
    max_retries_later: int = Field(
        1, ge=0, description="resends of a request that failed not_ready or ramp_limited, per request, before failing"
    )
    retry_later_seconds: float = Field(
        60.0,
        ge=0,
        description="seconds to wait before such a resend when the API's retry-after header does not say",
    )
    # None by default, as in the SDK's tool_runner, pydantic-ai and LangGraph: a sync tool then runs in the
    # caller's thread (thread-bound resources such as a sqlite3 connection keep working, and no thread hop
    # is paid on every turn). A number bounds each call, which needs every sync call in a worker thread.
    tool_timeout: float | None = Field(
        None,
        gt=0,
        description="seconds one tool call may run, or None for no limit; with None a reply's sync call runs "
        "in the calling thread, with a number every sync call runs in a worker thread that can be given up on",
    )
    request_timeout: float | None = Field(
        None,
        gt=0,
        description="seconds per request, passed to the SDK; None keeps the client's own timeout, "
        "except on rungs too large for a non-streaming request, which get long_request_timeout",
    )
    long_request_timeout: float = Field(
        3600.0,
        gt=0,
        description="seconds per request when request_timeout is None and max_tokens is above 21,333, "
        "which the SDK refuses to send without an explicit timeout",
    )
    # 100,000 characters (about 25k tokens) never cuts an ordinary output (a file, a page of search
    # results) yet keeps one runaway output (a 50 MB log, a binary dump) from filling the context window
    # and failing every later request, or being billed again on every turn.
    max_tool_result_chars: int | None = Field(
        100_000,
        ge=MIN_TOOL_RESULT_CHARS,
        description="characters of text one tool result may put into the history; a longer one keeps its head "
        "and tail around a marker saying how much was cut; None for no limit",
    )
    stream_retries: int = Field(
        2,
        ge=0,
        description="resends of a request whose stream broke (dropped, SSE error event, no stop_reason); "
        "the SDK retries HTTP errors itself but never a stream that has started",
    )
    stream_retry_backoff: float = Field(0.5, ge=0, description="seconds before the first resend; doubles each time")
    stream_retry_max_backoff: float = Field(8.0, ge=0, description="the longest wait between two resends, in seconds")
    # Budgets: checked before every request, like max_turns; the first request that would start over
    # budget is not sent, and the run ends truncated with the budget's name as its reason.
    max_input_tokens: int | None = Field(None, ge=1, description="input tokens (cache reads and writes included)")
    max_output_tokens: int | None = Field(None, ge=1, description="output tokens, summed over every reply")
    max_cost_usd: float | None = Field(
        None,
        gt=0,
        description="dollars, from the price table (see agentfsm.wire.pricing); an agent whose model (or "
        "fallback model) has no price is refused when it is made",
    )
    max_wall_seconds: float | None = Field(None, gt=0, description="wall time of the run, across resumes")
    prices: dict[str, Price] | None = Field(None, description="per-model prices overriding the built-in table")
    prompt_caching: bool = Field(
        True,
        description="mark the history that the next request repeats with a cache breakpoint, on every request "
        "after the first, so it is billed at the cache-read rate (see agentfsm.wire.caching)",
    )
    lease_seconds: float = Field(
        600.0, gt=0, description="how long a worker's claim on a stored conversation lasts without renewal"
    )
    # Compaction (see docs/02-state-machine.md): between turns, once the last request's input
    # passes the threshold, the machine sends a compaction request and carries on from the summary block.
    compact_at_input_tokens: int | None = Field(
        None,
        ge=1,
        description="input tokens of the last request (cache reads and writes included) at which the history is "
        "compacted before the next turn; also compacts instead of ending at model_context_window_exceeded. "
        "None: never compact",
    )
    compaction_instructions: str | None = Field(
        None, description="replaces the server's summarisation prompt on compaction requests"
    )
    max_compactions: int = Field(
        10,
        ge=0,
        description="compactions per run: compaction requests sent, plus server-side compactions "
        "(pause_after_compaction) resumed",
    )
    # Refusals: server-side fallbacks, and fallback credit tokens for the client-side retry.
    fallbacks: list[dict[str, Any]] | Literal["default"] | None = Field(
        None,
        description="server-side fallback chain sent as `fallbacks` (with its beta): entries "
        '{"model", "max_tokens"?, "thinking"?, "output_config"?, "speed"?}, or "default"',
    )
    fallback_credit_tokens: bool = Field(
        True,
        description="with a fallback chain: ask for fallback credit tokens (the fallback-credit beta) and "
        "redeem a refusal's token on the retry",
    )

    # Typed output (Agent.output_type; see agentfsm.machine.output).
    max_output_retries: int = Field(
        2,
        ge=0,
        description="replies whose output does not validate against the agent's output_type that are sent back "
        "with the validation errors before the run ends failed (reason invalid_output)",
    )
    output_mode: OutputMode = Field(
        "auto",
        description="how an agent with an output_type asks for it: native (the API's structured outputs, "
        "output_config.format), tool (a final_answer tool whose input is the output), or auto (native where "
        "the model supports it, else tool)",
    )

    # Message threads (see docs/02-state-machine.md, "Message threads").
    transport: Literal["messages", "thread"] = Field(
        "messages",
        description='"thread": each turn goes on a server-held message thread (beta message-threads-2026-08-12), '
        "sending only the messages the server does not hold; the full history is sent again, on a new thread, "
        'when the thread is lost. "messages": every request carries the full history',
    )

    @property
    def fallback_chain(self) -> tuple[str, ...]:
        """The client-side chain: ``fallback_models``, or ``fallback_model`` as a chain of one."""
        if self.fallback_model is not None:
            return (self.fallback_model,)
        return self.fallback_models

    def named_models(self) -> list[str]:
        """The models this policy itself names, besides the agent's: the fallback chain and the
        ``fallbacks`` entries (``"default"`` names none: the API picks them at run time)."""
        named = list(self.fallback_chain)
        if isinstance(self.fallbacks, list):
            named += [str(entry["model"]) for entry in self.fallbacks]
        return list(dict.fromkeys(named))

    def require_prices(self, models: Iterable[str]) -> None:
        """Refuse a cost budget that could not be enforced: ``ConfigurationError`` when ``max_cost_usd`` is
        set and one of ``models`` has no price, neither in ``prices`` nor in the built-in table.

        Called when an ``Agent`` is made, with its model and ``self.named_models()``, so the mistake shows before
        any request (a budget that silently stops counting would let a run spend without limit).
        """
        if self.max_cost_usd is None:
            return
        missing = [m for m in dict.fromkeys(models) if price_for(m, self.prices) is None]
        if not missing:
            return
        why = "; ".join(
            f"{m!r} has no published list price" if m in UNPRICED else f"{m!r} is not in the price table"
            for m in missing
        )
        example = ", ".join(f"{m!r}: Price(input=..., output=...)" for m in missing)
        raise ConfigurationError(
            f"max_cost_usd={self.max_cost_usd:g} cannot be enforced: {why}. Give its price in USD per million "
            f"tokens, Policy(prices={{{example}}}) (Price from agentfsm.wire.pricing), or drop max_cost_usd"
        )

    @model_validator(mode="after")
    def _compaction_is_on(self) -> Self:
        if self.compaction_instructions is not None and self.compact_at_input_tokens is None:
            raise ValueError("compaction_instructions needs compact_at_input_tokens: compaction is off without it")
        return self

    @model_validator(mode="after")
    def _fallbacks_are_entries(self) -> Self:
        if not isinstance(self.fallbacks, list):
            return self
        if not self.fallbacks:
            raise ValueError('fallbacks must name at least one model, or be "default" (None to send none)')
        for i, entry in enumerate(self.fallbacks):
            if not isinstance(entry.get("model"), str) or not entry["model"]:
                raise ValueError(f"fallbacks[{i}] needs a 'model' string; got {entry!r}")
            extra = sorted(set(entry) - FALLBACK_ENTRY_KEYS)
            if extra:
                raise ValueError(
                    f"fallbacks[{i}] has {extra}: an entry may set only {sorted(FALLBACK_ENTRY_KEYS)} "
                    "(the API rejects any other key)"
                )
        return self

    @model_validator(mode="after")
    def _one_chain(self) -> Self:
        if self.fallback_model is not None and self.fallback_models:
            raise ValueError(
                f"give fallback_model={self.fallback_model!r} or fallback_models={list(self.fallback_models)}, not "
                "both: fallback_model is the chain of one, fallback_models=[...] the chain"
            )
        chain = self.fallback_chain
        if any(not m for m in chain) or len(set(chain)) != len(chain):
            raise ValueError(f"fallback_models must be distinct, non-empty model names; got {list(chain)}")
        return self

    @model_validator(mode="after")
    def _ladder_climbs(self) -> Self:
        rungs = (self.max_tokens, *self.max_tokens_ladder)
        if any(b <= a for a, b in itertools.pairwise(rungs)):
            raise ValueError(
                f"max_tokens_ladder must climb strictly above max_tokens={self.max_tokens}; "
                f"got {self.max_tokens_ladder}"
            )
        return self
