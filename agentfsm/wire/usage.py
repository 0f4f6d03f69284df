"""Usage: reading a reply's ``usage`` object, and adding usage up — the arithmetic in one place.

The API reports a reply's tokens in its top-level fields, except for passes it
ran on the side: a compaction pass is billed but reported only in
``usage.iterations`` (type ``compaction``), and a reply a fallback model served
has a ``fallback_message`` entry there. ``billed_usage`` folds the compaction
passes into the top-level fields (what budgets and prices count);
``context_tokens`` reads the size of the context the request sent;
``Usage`` sums replies over a run, and two ``Usage`` add up (``+``, ``sum``)
field by field — every field, the compaction ones included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

#: The top-level token counts of a ``usage`` object.
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
_PROMPT_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def iterations(usage: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The entries of ``usage.iterations`` (the passes one request ran: sampling, compaction, fallback)."""
    found = (usage or {}).get("iterations")
    return [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []


def compaction_passes(usage: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The ``compaction`` entries of ``usage.iterations``: billed, but not in the top-level fields."""
    return [e for e in iterations(usage) if e.get("type") == "compaction"]


def prompt_tokens(usage: Mapping[str, Any]) -> int:
    """A request's prompt: its input tokens, cache writes and cache reads."""
    return sum(int(usage.get(k) or 0) for k in _PROMPT_FIELDS)


def context_tokens(usage: Mapping[str, Any] | None) -> int | None:
    """The size of the context the request sent: the last sampling iteration's input (cache included).

    Never a ``compaction`` entry's: that is the cost of the summarising pass, not the context size.
    """
    if not usage:
        return None
    sampled = [e for e in iterations(usage) if e.get("type") in ("message", "fallback_message")]
    return prompt_tokens(sampled[-1] if sampled else usage)


def billed_usage(usage: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """One reply's ``usage`` with its compaction passes added to the top-level token fields (what is billed)."""
    if not usage or not usage.get("iterations"):  # nearly every reply: nothing to add, nothing to copy
        return usage or {}
    passes = compaction_passes(usage)
    if not passes:
        return usage
    billed = dict(usage)
    for key in TOKEN_FIELDS:
        billed[key] = int(billed.get(key) or 0) + sum(int(e.get(key) or 0) for e in passes)
    given = billed.get("cache_creation")
    breakdown = dict(given) if isinstance(given, Mapping) else {}
    for entry in passes:
        extra = entry.get("cache_creation")
        if isinstance(extra, Mapping):
            for key, value in extra.items():
                breakdown[key] = int(breakdown.get(key) or 0) + int(value or 0)
    if breakdown:
        billed["cache_creation"] = breakdown
    return billed


class Usage(BaseModel):
    """Tokens summed over every request of a run (failed requests add nothing).

    Compaction passes are included: the API reports them in ``usage.iterations`` rather than the
    top-level fields, and bills them. ``compaction_input_tokens`` and ``compaction_output_tokens`` say how
    much of the totals they were. Two ``Usage`` add up field by field (``a + b``, ``sum(usages, Usage())``).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    requests: int = 0
    #: Of the totals above: prompt tokens (cache included) and output tokens of compaction passes.
    compaction_input_tokens: int = 0
    compaction_output_tokens: int = 0

    def add(self, usage: Mapping[str, Any] | None) -> None:
        """Add one reply's ``usage`` object (as the API sent it; missing or null fields count 0)."""
        self.requests += 1
        if not usage:
            return
        billed = billed_usage(usage)
        self.input_tokens += int(billed.get("input_tokens") or 0)
        self.output_tokens += int(billed.get("output_tokens") or 0)
        self.cache_creation_input_tokens += int(billed.get("cache_creation_input_tokens") or 0)
        self.cache_read_input_tokens += int(billed.get("cache_read_input_tokens") or 0)
        for entry in compaction_passes(usage) if billed is not usage else ():
            self.compaction_input_tokens += prompt_tokens(entry)
            self.compaction_output_tokens += int(entry.get("output_tokens") or 0)

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(**{name: getattr(self, name) + getattr(other, name) for name in Usage.model_fields})

    def __radd__(self, other: object) -> Usage:
        if other == 0:  # sum() starts from 0
            return self.model_copy()
        return NotImplemented

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens
