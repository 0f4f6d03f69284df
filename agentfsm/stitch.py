"""Seams: joining the chunks of a text that was cut off by max_tokens.

The rule is "no lost and no duplicated characters". Two cases differ:

* **Prefill.** The API rejects a final assistant turn that ends in
  whitespace, so the prefill is sent with its trailing whitespace stripped
  and the model continues from the stripped text. If the continuation begins
  with whitespace, the model has regenerated the gap and the stripped prefix
  is the right one to keep; if it begins with anything else, the whitespace
  the model wrote earlier is kept.
* **Prompt.** The model answers a "continue" prompt in a new message. It is
  told not to repeat itself; when it still repeats the tail of the previous
  chunk verbatim (at least ``MIN_OVERLAP`` characters), the repeat is cut.
"""

from __future__ import annotations

#: Shortest verbatim repeat treated as a duplicate rather than coincidence.
MIN_OVERLAP = 16
#: Longest repeat looked for (a model that repeats more is not continuing).
MAX_OVERLAP = 400


def prefill_form(text: str) -> str:
    """The text as it may be sent as a final assistant turn (no trailing whitespace)."""
    return text.rstrip()


def join_prefill(prefix: str, continuation: str) -> str:
    """Join a prefilled ``prefix`` (as kept, unstripped) and the model's continuation of it."""
    stripped = prefix.rstrip()
    if stripped == prefix or not continuation:
        return prefix + continuation
    if continuation[0].isspace():
        return stripped + continuation
    return prefix + continuation


def join_prompted(prefix: str, continuation: str) -> str:
    """Join ``prefix`` and a continuation written in reply to a continue prompt."""
    limit = min(len(prefix), len(continuation), MAX_OVERLAP)
    for size in range(limit, MIN_OVERLAP - 1, -1):
        if prefix.endswith(continuation[:size]):
            return prefix + continuation[size:]
    return prefix + continuation
