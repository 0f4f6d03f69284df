"""Limits on what one tool result may put into the history.

A tool result is sent again with every later request of the run, so one
runaway output (a 50 MB log, a binary dump, a whole table) would fill the
context window and fail every request after it, or quietly bill it on each
turn. ``cut_content`` bounds a result to ``Policy.max_tool_result_chars``
characters of text, keeping its head and its tail (where logs, tracebacks and
test runs put their conclusion) around a marker that says how much was cut
and why, so the model knows it has not seen everything.

The cut works on Python strings, so it never splits a character, and the
result is always content the API accepts: a string, or a list of blocks whose
text blocks keep some text (other blocks — images, documents — are kept
whole: they are not characters).
"""

from __future__ import annotations

from typing import Any

__all__ = ["MIN_TOOL_RESULT_CHARS", "cut_content", "cut_text", "marker"]

#: The smallest limit: room for the marker and some of the output on either side of it.
MIN_TOOL_RESULT_CHARS = 200

_HEAD_SHARE = 3 / 4  # of the text kept, the share taken from the start; the rest comes from the end


def marker(removed: int, limit: int) -> str:
    """The line that stands in for the characters cut out of a tool result."""
    return f"\n\n[... {removed:,} characters cut by agentfsm: Policy.max_tool_result_chars={limit} ...]\n\n"


def cut_text(text: str, size: int, limit: int | None = None) -> str:
    """``text`` if it has at most ``size`` characters, else its head and tail around a marker, ``size`` in all.

    ``limit`` is the policy value the marker names (``size`` itself by default). ``size`` below
    ``MIN_TOOL_RESULT_CHARS`` is raised to it, so the marker always fits.
    """
    size = max(size, MIN_TOOL_RESULT_CHARS)
    if len(text) <= size:
        return text
    named = size if limit is None else limit
    removed = len(text) - (size - len(marker(len(text), named)))
    keep = size - len(marker(removed, named))  # the marker can only be shorter once the count is right
    removed = len(text) - keep
    head = round(keep * _HEAD_SHARE)
    tail = keep - head
    return text[:head] + marker(removed, named) + (text[-tail:] if tail else "")


def cut_content(content: str | list[dict[str, Any]], limit: int | None) -> str | list[dict[str, Any]]:
    """A tool result's ``content`` with its text bounded by ``limit`` characters (None: unchanged).

    A string is cut by ``cut_text``. In a list of blocks, the text blocks share the limit:
    short blocks stay whole and the long ones are cut to one common size, the largest that
    fits (when there are so many text blocks that this size would be under
    ``MIN_TOOL_RESULT_CHARS``, each is cut to that minimum instead). Cutting again changes nothing.
    """
    if limit is None:
        return content
    if isinstance(content, str):
        return cut_text(content, limit)
    lengths = [len(b["text"]) for b in content if _is_text(b)]
    if sum(lengths) <= limit:
        return content
    size = _common_size(lengths, limit)
    return [{**b, "text": cut_text(b["text"], size, limit)} if _is_text(b) else b for b in content]


def _is_text(block: dict[str, Any]) -> bool:
    return block.get("type") == "text" and isinstance(block.get("text"), str)


def _common_size(lengths: list[int], limit: int) -> int:
    """The largest ``size`` with ``sum(min(n, size) for n in lengths) <= limit`` (water-filling)."""
    remaining, left = limit, len(lengths)
    for n in sorted(lengths):
        share = remaining // left
        if n > share:
            return share
        remaining -= n
        left -= 1
    return limit  # everything fits (not reached: the caller cuts only when it does not)
