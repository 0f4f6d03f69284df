"""The history as it stood after each step, from the final history and the sizes the trace recorded.

A store keeps one snapshot per conversation (the latest), not one per step.
What it does keep is, on every trace step, the size of the history after
that step (``TraceStep.history_size``: messages, blocks of the last message,
characters of that block when it is text). The library's actions only ever
*grow* the history: they append messages, or extend the last one (a
continuation merges into the assistant turn it continues, a resumed pause
appends blocks to it, a second nudge adds a text block to the first). So the
history after step ``k`` is the final history cut to step ``k``'s size, and
each piece of the final history — a message, a block, or a run of characters
of a text block — has a first step at which it was there. That is all the
inspector needs: the view of step ``k`` shows the pieces of step ``k`` and
before, and the diff from step ``k - 1`` is the pieces of step ``k``.

When the recorded sizes are missing (a trace written before they were kept)
or do not describe a growing history (a custom action or a compaction that
rewrote earlier messages), ``growth`` says so (``exact`` is False, ``problem``
says why) and every piece counts as present from the first step: the views
show the final history, and the page says it cannot show the earlier ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentfsm.wire.messages import blocks

Message = dict[str, Any]
Size = tuple[int, int, int]


@dataclass(frozen=True)
class Growth:
    """When each piece of the final history appeared, by step (1 = after the first transition)."""

    #: The step each message first appears at.
    messages: list[int]
    #: The step each block of each message first appears at.
    blocks: list[list[int]]
    #: For a text block that grew over several steps: ``[(end, step), ...]`` — characters up to ``end``
    #: were there from ``step`` on (ascending). Blocks that appeared whole are absent.
    cuts: dict[tuple[int, int], list[tuple[int, int]]] = field(default_factory=dict)
    #: True when the sizes describe a history that only grew, so every view is the history as it was.
    exact: bool = True
    #: Why the views are not exact (None when they are).
    problem: str | None = None

    def step_of(self, message: int, block: int | None = None) -> int:
        return self.messages[message] if block is None else self.blocks[message][block]


def _length(block: dict[str, Any]) -> int | None:
    """A text block's length in characters; None for any other block (which appears whole)."""
    if block.get("type") == "text" and isinstance(block.get("text"), str):
        return len(block["text"])
    return None


def _check(messages: Sequence[Message], sizes: Sequence[Size | None]) -> str | None:
    """Why ``sizes`` cannot be read as the steps of a history that grew into ``messages`` (None if they can)."""
    if any(size is None for size in sizes):
        return "this run was recorded before agentfsm kept the history's size at each step"
    previous: Size = (0, 0, 0)
    for step, size in enumerate(sizes, start=1):
        assert size is not None
        count, nblocks, chars = size
        if count > len(messages) or count < 1:
            return f"after step {step} the history had {count} messages, but the stored history has {len(messages)}"
        content = blocks(messages[count - 1])
        if nblocks > len(content):
            return f"after step {step} message {count} had {nblocks} blocks, more than the stored one has"
        last = _length(content[nblocks - 1]) if nblocks else None
        if last is not None and chars > last:
            return f"after step {step} message {count} had more text than the stored one has"
        if size < previous:
            return (
                f"the history shrank or was rewritten after step {step - 1} (a compaction or a custom action): "
                "earlier steps can only be shown as the final history"
            )
        previous = size
    if sizes and sizes[-1] is not None and sizes[-1][0] < len(messages):
        return "the stored history has messages that no step recorded"
    return None


def growth(messages: Sequence[Message], sizes: Sequence[Size | None]) -> Growth:
    """When each piece of ``messages`` (the final history) appeared, given each step's recorded size."""
    contents = [blocks(m) for m in messages]
    problem = _check(messages, sizes) if sizes else None
    if problem is not None or not sizes:
        return Growth(
            messages=[1] * len(messages),
            blocks=[[1] * len(c) for c in contents],
            exact=problem is None,
            problem=problem,
        )
    message_step = [0] * len(messages)
    block_step = [[0] * len(c) for c in contents]
    cuts: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for step, size in enumerate(sizes, start=1):
        assert size is not None
        count, nblocks, chars = size
        for i in range(count):
            if not message_step[i]:
                message_step[i] = step
            shown = len(contents[i]) if i < count - 1 else nblocks
            for j in range(shown):
                if not block_step[i][j]:
                    block_step[i][j] = step
            if i == count - 1 and nblocks:
                j = nblocks - 1
                full = _length(contents[i][j])
                if full is not None and chars < full:
                    seen = cuts.setdefault((i, j), [])
                    if not seen or seen[-1][0] < chars:
                        seen.append((chars, step))
    last = len(sizes)
    for (i, j), seen in cuts.items():
        full = _length(contents[i][j]) or 0
        # The rest of the text arrived at the first step that showed the block whole.
        whole = next(
            (
                step
                for step, (count, nblocks, chars) in enumerate(_sized(sizes), start=1)
                if count > i + 1 or (count == i + 1 and (nblocks > j + 1 or (nblocks == j + 1 and chars >= full)))
            ),
            last,
        )
        seen.append((full, whole))
    # A piece no step showed (only possible in an inconsistent record, which _check refuses) counts as last.
    message_step = [s or last for s in message_step]
    block_step = [[s or last for s in row] for row in block_step]
    return Growth(messages=message_step, blocks=block_step, cuts=cuts)


def _sized(sizes: Sequence[Size | None]) -> list[Size]:
    return [s for s in sizes if s is not None]


def pieces(text: str, cuts: Sequence[tuple[int, int]] | None, step: int) -> list[tuple[str, int]]:
    """A text block's text as ``(chunk, step it appeared at)`` pieces (one piece when it appeared whole)."""
    if not cuts:
        return [(text, step)]
    out: list[tuple[str, int]] = []
    start = 0
    for end, at in cuts:
        if end > start:
            out.append((text[start:end], at))
            start = end
    if start < len(text):
        out.append((text[start:], cuts[-1][1]))
    return out


def history_at(messages: Sequence[Message], size: Size | None) -> list[Message]:
    """The history as it stood when it had ``size`` (the whole of ``messages`` when ``size`` is None)."""
    if size is None:
        return [dict(m) for m in messages]
    count, nblocks, chars = size
    out = [dict(m) for m in messages[:count]]
    if not out:
        return out
    last = out[-1]
    whole = blocks(last)
    if nblocks >= len(whole) and (not whole or _length(whole[-1]) is None or chars >= (_length(whole[-1]) or 0)):
        return out  # the last message whole, as it is stored (a string content stays a string): the exact prefix
    content = [dict(b) for b in whole][:nblocks]
    if content and _length(content[-1]) is not None:
        content[-1]["text"] = content[-1]["text"][:chars]
    last["content"] = content
    return out


def added(growth: Growth, messages: Sequence[Message], step: int) -> list[dict[str, Any]]:
    """What step ``step`` added to the history: whole messages, blocks, or text from a character on."""
    found: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if growth.messages[i] == step:
            found.append({"message": i})
            continue
        for j, block in enumerate(blocks(message)):
            if growth.blocks[i][j] == step:
                found.append({"message": i, "block": j})
                continue
            start = 0
            for end, at in growth.cuts.get((i, j), []):
                if at == step and end > start:
                    found.append({"message": i, "block": j, "from_char": start, "text": block["text"][start:end]})
                start = end
    return found
