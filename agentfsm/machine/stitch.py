"""Seams: joining the chunks of a text that was cut off by max_tokens.

The rule is "no lost and no duplicated characters", and it must hold for a
caller reading a stream as much as for the final text, so every rule here is
a ``Seam``: it sees the continuation's first characters as they arrive,
holds back at most a short lookahead, and decides what of them to drop.

* **Prefill.** The API rejects a final assistant turn that ends in
  whitespace, so the prefill is sent stripped and the model continues from
  the stripped text, usually by regenerating the whitespace it cannot see.
  The continuation's leading characters that repeat the stripped whitespace
  are dropped (they are already in the text); anything else is kept.
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


class Seam:
    """Joins a continuation onto ``prefix``, incrementally.

    ``feed`` takes the continuation's text as it arrives and returns what may
    be shown now; ``finish`` returns whatever was held back. The
    concatenation of everything returned is the continuation with its
    duplicated start removed.
    """

    def __init__(self, prefix: str, mode: str) -> None:
        self._mode = mode
        self._held = ""
        self._decided = mode not in ("prefill", "prompt")
        if mode == "prefill":
            self._gap = prefix[len(prefix.rstrip()) :]  # the whitespace the prefill could not carry
            self._decided = not self._gap
        else:
            self._tail = prefix[-MAX_OVERLAP:]

    def feed(self, text: str) -> str:
        if self._decided:
            return text
        self._held += text
        if self._ready():
            return self._decide()
        return ""

    def finish(self) -> str:
        return "" if self._decided else self._decide()

    def _ready(self) -> bool:
        held = self._held
        if self._mode == "prefill":
            return len(held) >= len(self._gap) or not self._gap.startswith(held)
        if len(held) >= MAX_OVERLAP or len(held) > len(self._tail):
            return True
        # Past MIN_OVERLAP characters, once the held text is nowhere in the tail, no longer
        # repeat can appear: every candidate is already decidable from what is held.
        return len(held) >= MIN_OVERLAP and held not in self._tail

    def _decide(self) -> str:
        self._decided = True
        held, self._held = self._held, ""
        if self._mode == "prefill":
            common = 0
            for a, b in zip(self._gap, held, strict=False):
                if a != b:
                    break
                common += 1
            return held[common:]
        limit = min(len(self._tail), len(held), MAX_OVERLAP)
        for size in range(limit, MIN_OVERLAP - 1, -1):
            if self._tail.endswith(held[:size]):
                return held[size:]
        return held


def join(prefix: str, continuation: str, mode: str) -> str:
    """``prefix`` followed by ``continuation`` with its duplicated start removed (see ``Seam``)."""
    seam = Seam(prefix, mode)
    return prefix + seam.feed(continuation) + seam.finish()


def join_prefill(prefix: str, continuation: str) -> str:
    """Join a prefilled ``prefix`` (as kept, unstripped) and the model's continuation of it."""
    return join(prefix, continuation, "prefill")


def join_prompted(prefix: str, continuation: str) -> str:
    """Join ``prefix`` and a continuation written in reply to a continue prompt."""
    return join(prefix, continuation, "prompt")
