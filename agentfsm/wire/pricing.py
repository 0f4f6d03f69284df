"""Prices: what a reply cost, from its usage and a per-model price table.

The built-in table holds list prices (USD per million tokens) for models whose
prices were published when this table was written; it is a default, not a
source of truth. Prices change and new models arrive: pass your own with
``Policy(prices={"model-name": Price(...)})`` (it wins over the table). A
model with no price anywhere has an unknown cost (``cost_usd`` is None), and a
``max_cost_usd`` budget cannot be enforced for it — the run says so in a
``budget.unknown_cost`` warning rather than guessing.

A reply the Message Batches API served says so in its usage
(``service_tier: "batch"``) and is billed at ``BATCH_PRICE_FACTOR`` (half) of
the list price — every token kind, cache writes and reads included (the cache
multipliers apply on top of the batch discount).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

#: What the Message Batches API bills, as a fraction of the list price (every token kind).
BATCH_PRICE_FACTOR = 0.5


class Price(BaseModel):
    """USD per million tokens. Unless given, cache writes cost 1.25x input (5-minute entries) or 2x
    (1-hour entries), and cache reads 0.1x: the API's multipliers for every model."""

    model_config = ConfigDict(frozen=True)

    input: float
    output: float
    cache_write: float | None = None
    cache_write_1h: float | None = None
    cache_read: float | None = None

    def cost(self, usage: Mapping[str, Any] | None) -> float:
        """The cost of one reply's ``usage`` object, as the API sent it.

        ``input_tokens`` excludes the tokens read from or written to the cache, as the API reports
        it; the 1-hour part of the writes is ``cache_creation.ephemeral_1h_input_tokens``. A reply
        served by the Message Batches API (``service_tier == "batch"``) costs ``BATCH_PRICE_FACTOR`` of it.
        """
        if not usage:
            return 0.0
        write = self.cache_write if self.cache_write is not None else self.input * 1.25
        write_1h = self.cache_write_1h if self.cache_write_1h is not None else self.input * 2
        read = self.cache_read if self.cache_read is not None else self.input * 0.1
        written = int(usage.get("cache_creation_input_tokens") or 0)
        breakdown = usage.get("cache_creation")
        written_1h = int(breakdown.get("ephemeral_1h_input_tokens") or 0) if isinstance(breakdown, Mapping) else 0
        written_1h = min(written_1h, written)
        listed = (
            int(usage.get("input_tokens") or 0) * self.input
            + int(usage.get("output_tokens") or 0) * self.output
            + (written - written_1h) * write
            + written_1h * write_1h
            + int(usage.get("cache_read_input_tokens") or 0) * read
        ) / 1_000_000
        return listed * BATCH_PRICE_FACTOR if usage.get("service_tier") == "batch" else listed


#: Published list prices (USD / MTok) by model-name prefix; the longest matching prefix wins. Source: the
#: pricing table of https://platform.claude.com/docs/en/build-with-claude/prompt-caching#pricing (base
#: input, output; its cache columns are the default multipliers above). Models whose price that table
#: does not give, or gives only for a period, are left out rather than guessed.
DEFAULT_PRICES: dict[str, Price] = {
    "claude-opus-4-8": Price(input=5.0, output=25.0),
    "claude-opus-4-7": Price(input=5.0, output=25.0),
    "claude-opus-4-6": Price(input=5.0, output=25.0),
    "claude-opus-4-5": Price(input=5.0, output=25.0),
    "claude-opus-4-1": Price(input=15.0, output=75.0),
    "claude-opus-4-0": Price(input=15.0, output=75.0),
    "claude-opus-4-2025": Price(input=15.0, output=75.0),
    "claude-sonnet-4-6": Price(input=3.0, output=15.0),
    "claude-sonnet-4-5": Price(input=3.0, output=15.0),
    "claude-sonnet-4-0": Price(input=3.0, output=15.0),
    "claude-sonnet-4-2025": Price(input=3.0, output=15.0),
    "claude-haiku-4-5": Price(input=1.0, output=5.0),
    "claude-3-5-haiku": Price(input=0.8, output=4.0),
}


def price_for(model: str, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """The price of ``model``: an exact override, else the longest matching prefix, else None."""
    if overrides:
        if model in overrides:
            return overrides[model]
        found = _longest_prefix(overrides, model)
        if found is not None:
            return found
    return _listed(model)


def _longest_prefix(table: Mapping[str, Price], model: str) -> Price | None:
    matches = [prefix for prefix in table if model.startswith(prefix)]
    return table[max(matches, key=len)] if matches else None


@functools.lru_cache(maxsize=256)
def _listed(model: str) -> Price | None:
    """The list price of ``model``, looked up once per model name (asked after every reply)."""
    return _longest_prefix(DEFAULT_PRICES, model)
