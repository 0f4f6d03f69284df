"""Prices: what a reply cost, from its usage and a per-model price table.

The built-in table holds the list prices (USD per million tokens) of the models whose prices are
published; it is a default, not a source of truth. Prices change and new models arrive: pass your
own with ``Policy(prices={"model-name": Price(...)})`` (it wins over the table). A model with no
price anywhere has an unknown cost (``cost_usd`` is None). An ``Agent`` whose ``max_cost_usd``
budget could not be enforced for a model it is configured to use is refused when it is made
(``Policy.require_prices``); a model that only turns up at run time (a server-side fallback
answering for another) gets a ``budget.unknown_cost`` warning instead.

A reply the Message Batches API served says so in its usage (``service_tier: "batch"``) and is
billed at ``BATCH_PRICE_FACTOR`` (half) of the list price — every token kind, cache writes and
reads included (the cache multipliers apply on top of the batch discount).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentfsm.wire.usage import compaction_passes

#: What the Message Batches API bills, as a fraction of the list price (every token kind).
BATCH_PRICE_FACTOR = 0.5

_PROMPT_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


class Price(BaseModel):
    """USD per million tokens. Unless given, cache writes cost 1.25x input (5-minute entries) or 2x
    (1-hour entries), and cache reads 0.1x: the API's multipliers for most models (not all: the
    built-in table gives every rate the pricing page lists).

    A model priced by prompt length (Claude Haiku 5.5) sets ``long_prompt_tokens`` and ``long_prompt``:
    a request whose prompt (``input_tokens`` + cache writes + cache reads) is *over* that many tokens
    is billed, every token of it, output included, at the ``long_prompt`` rates.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float | None = Field(None, ge=0)
    cache_write_1h: float | None = Field(None, ge=0)
    cache_read: float | None = Field(None, ge=0)
    long_prompt_tokens: int | None = Field(None, ge=1)
    long_prompt: Price | None = None

    @model_validator(mode="after")
    def _band_is_whole(self) -> Self:
        if (self.long_prompt_tokens is None) != (self.long_prompt is None):
            raise ValueError("long_prompt_tokens and long_prompt go together: the threshold and its rates")
        if self.long_prompt is not None and self.long_prompt.long_prompt is not None:
            raise ValueError("long_prompt has one band: its own Price may not have a long_prompt")
        return self

    def cost(self, usage: Mapping[str, Any] | None) -> float:
        """The cost of one request's ``usage`` object, as the API sent it.

        ``input_tokens`` excludes the tokens read from or written to the cache, as the API reports
        it; the 1-hour part of the writes is ``cache_creation.ephemeral_1h_input_tokens``. A reply
        served by the Message Batches API (``service_tier == "batch"``) costs ``BATCH_PRICE_FACTOR`` of it.
        """
        if not usage:
            return 0.0
        rates = self
        if self.long_prompt is not None and self.long_prompt_tokens is not None:
            prompt = sum(int(usage.get(key) or 0) for key in _PROMPT_FIELDS)
            if prompt > self.long_prompt_tokens:
                rates = self.long_prompt
        write = rates.cache_write if rates.cache_write is not None else rates.input * 1.25
        write_1h = rates.cache_write_1h if rates.cache_write_1h is not None else rates.input * 2
        read = rates.cache_read if rates.cache_read is not None else rates.input * 0.1
        written = int(usage.get("cache_creation_input_tokens") or 0)
        breakdown = usage.get("cache_creation")
        written_1h = int(breakdown.get("ephemeral_1h_input_tokens") or 0) if isinstance(breakdown, Mapping) else 0
        written_1h = min(written_1h, written)
        listed = (
            int(usage.get("input_tokens") or 0) * rates.input
            + int(usage.get("output_tokens") or 0) * rates.output
            + (written - written_1h) * write
            + written_1h * write_1h
            + int(usage.get("cache_read_input_tokens") or 0) * read
        ) / 1_000_000
        return listed * BATCH_PRICE_FACTOR if usage.get("service_tier") == "batch" else listed

    def reply_cost(self, usage: Mapping[str, Any] | None) -> float:
        """The cost of one reply: its own request, plus each compaction pass in ``usage.iterations``.

        The API leaves a compaction pass out of the top-level fields and bills it all the same; each
        pass is a request of its own, so a price by prompt length bands each pass on its own prompt.
        """
        cost = self.cost(usage)
        passes = compaction_passes(usage)
        if passes:
            tier = {"service_tier": usage["service_tier"]} if usage and "service_tier" in usage else {}
            for entry in passes:
                cost += self.cost({**entry, **tier})
        return cost


# The list prices, read on the official pages on 2026-12-07 (the stored copies the docs search holds;
# each page's snapshot is a few weeks older at most):
#   * https://platform.claude.com/docs/en/about-claude/pricing ("Model pricing": every rate of Fable 5.1,
#     Mythos 5.1, Fable 5, Mythos 5, Opus 5, Opus 4.8 to 4.5, Opus 4.1 and Opus 4);
#   * the model overview pages, https://platform.claude.com/docs/en/models/<model>/overview ("Pricing":
#     Opus 5.5, Sonnet 5.5, Sonnet 5, Haiku 5.5 and Opus 5, every rate);
#   * the release notes, https://platform.claude.com/docs/en/release-notes/overview: 2026-10-07, Sonnet 5.5's
#     cache reads cut from $0.20 to $0.10 (0.05x input); 2026-11-09, Fable 5.2 and Mythos 5.2 at $8 / $40.
# Three rates could not be read on an official page in the stored copies, and follow the published
# pattern instead (check them against the pricing page when it is next read):
#   * Fable 5.2 / Mythos 5.2 cache rates: the release note gives input and output only. Writes at 1.25x / 2x
#     input (every official row), reads at 0.025x input (Fable 5.1's official ratio): $10, $16, $0.20.
#   * Haiku 5.5 over 100K tokens, 1-hour writes and cache reads: the overview page lists every other rate
#     of both bands, each band-2 rate 5x its band-1 rate; read as $1.00 and $0.05 (band 1: $0.20, $0.01).
# Sonnet 4.6 / 4.5 / 4, Haiku 4.5 and Haiku 3.5 keep the list prices of the earlier table (source: the
# pricing table of https://platform.claude.com/docs/en/build-with-claude/prompt-caching#pricing), whose
# cache rates are the default multipliers.


def _rates(input: float, output: float, write: float, write_1h: float, read: float) -> Price:
    return Price(input=input, output=output, cache_write=write, cache_write_1h=write_1h, cache_read=read)


_FABLE_5 = _rates(10.0, 50.0, 12.5, 20.0, 1.0)
_FABLE_5_1 = _rates(10.0, 50.0, 12.5, 20.0, 0.25)
_FABLE_5_2 = _rates(8.0, 40.0, 10.0, 16.0, 0.20)
_OPUS_5 = _rates(5.0, 25.0, 6.25, 10.0, 0.50)
_OPUS_4_0 = _rates(15.0, 75.0, 18.75, 30.0, 1.50)
_SONNET_4 = Price(input=3.0, output=15.0)
_HAIKU_5_5 = Price(
    input=0.10,
    output=0.50,
    cache_write=0.125,
    cache_write_1h=0.20,
    cache_read=0.01,
    long_prompt_tokens=100_000,
    long_prompt=_rates(0.50, 2.50, 0.625, 1.00, 0.05),
)

#: Published list prices (USD / MTok) by model id. An id here also prices its dated snapshots
#: (``claude-sonnet-4-5-20250929`` is ``claude-sonnet-4-5``), never a later version that starts the same
#: way: ``claude-sonnet-5-7`` is not Sonnet 5, and stays unpriced until it is in this table.
DEFAULT_PRICES: dict[str, Price] = {
    "claude-fable-5-2": _FABLE_5_2,
    "claude-mythos-5-2": _FABLE_5_2,  # limited availability, listed at Fable 5.2's price
    "claude-fable-5-1": _FABLE_5_1,
    "claude-mythos-5-1": _FABLE_5_1,  # limited availability, listed at Fable 5.1's price
    "claude-fable-5": _FABLE_5,
    "claude-mythos-5": _FABLE_5,  # limited availability, listed at Fable 5's price
    "claude-opus-5-5": _rates(4.0, 20.0, 5.0, 8.0, 0.20),
    "claude-opus-5": _OPUS_5,
    "claude-opus-4-8": _OPUS_5,
    "claude-opus-4-7": _OPUS_5,
    "claude-opus-4-6": _OPUS_5,
    "claude-opus-4-5": _OPUS_5,
    "claude-opus-4-1": _OPUS_4_0,
    "claude-opus-4-0": _OPUS_4_0,
    "claude-opus-4": _OPUS_4_0,  # claude-opus-4-20250514
    "claude-sonnet-5-5": _rates(2.0, 10.0, 2.5, 4.0, 0.10),
    "claude-sonnet-5": _rates(2.0, 10.0, 2.5, 4.0, 0.20),
    "claude-sonnet-4-6": _SONNET_4,
    "claude-sonnet-4-5": _SONNET_4,
    "claude-sonnet-4-0": _SONNET_4,
    "claude-sonnet-4": _SONNET_4,  # claude-sonnet-4-20250514
    "claude-haiku-5-5": _HAIKU_5_5,
    "claude-haiku-4-5": Price(input=1.0, output=5.0),
    "claude-3-5-haiku": Price(input=0.8, output=4.0),
}

#: Models of the installed SDK's lineup (``anthropic.types.Model``) with no published list price: a cost
#: budget on one needs ``Policy(prices={...})``. Claude Mythos Preview is offered to invited
#: organisations only, at terms not published on the pricing page.
UNPRICED: frozenset[str] = frozenset({"claude-mythos-preview"})

# A snapshot id is its model's id and a date (or the old "-latest" alias): the suffix the table ignores.
_SNAPSHOT = re.compile(r"-(?:\d{8}|latest)$")


def price_for(model: str, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """The price of ``model``: an override (exact name, else the longest prefix), else the list price
    (the model's id, or the id its dated snapshot names), else None."""
    if overrides:
        if model in overrides:
            return overrides[model]
        matches = [prefix for prefix in overrides if model.startswith(prefix)]
        if matches:
            return overrides[max(matches, key=len)]
    return _listed(model)


@functools.lru_cache(maxsize=256)
def _listed(model: str) -> Price | None:
    """The list price of ``model``, looked up once per model name (asked after every reply)."""
    found = DEFAULT_PRICES.get(model)
    if found is None:
        found = DEFAULT_PRICES.get(_SNAPSHOT.sub("", model))
    return found
