"""Progress of a batch run: what ``BatchRunner`` reports, and a display for a terminal or a log.

``BatchRunner(progress=...)`` calls its callback with a ``BatchProgress``
after every submit, poll and applied batch, and once at the end.
``ProgressDisplay`` renders it: on a terminal a block of lines redrawn in place
(conversations per state, open batches and their status, results so far,
tokens and dollars); elsewhere (a pipe, a CI log) one plain line per change.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from agentfsm.wire.usage import Usage

#: The order states are listed in (others follow, alphabetically).
_ORDER = ("requesting", "tool_use", "done", "truncated", "refused", "failed")


@dataclass(frozen=True)
class BatchStatus:
    """One open batch as last polled."""

    batch_id: str
    processing_status: str
    request_counts: dict[str, int] = field(default_factory=dict)


class _Run(Protocol):
    """What a progress report reads of a conversation."""

    @property
    def state(self) -> str: ...
    @property
    def usage(self) -> Usage: ...
    @property
    def cost_usd(self) -> float | None: ...


def totals(convs: Iterable[_Run]) -> tuple[dict[str, int], Usage, float | None]:
    """Conversations per state, their usage added up (every field: ``Usage`` adds itself), and their cost
    (None when one of them has an unknown cost)."""
    convs = list(convs)
    costs = [conv.cost_usd for conv in convs]
    cost = None if None in costs else sum(c for c in costs if c is not None)
    return dict(Counter(conv.state for conv in convs)), sum((conv.usage for conv in convs), Usage()), cost


@dataclass
class BatchProgress:
    """A batch run at one moment."""

    run_id: str
    conversations: int
    #: Conversations per state (those waiting on a batch are ``requesting``).
    states: dict[str, int]
    #: Conversations whose request is in a batch now.
    waiting: int
    #: Conversations that raised and stopped (see ``batch.conversation_error``).
    errors: int
    #: The batches open now.
    batches: list[BatchStatus]
    batches_submitted: int
    #: Results applied so far by type: succeeded, errored, expired, canceled.
    results: dict[str, int]
    #: Tokens of every reply so far, over all conversations.
    usage: Usage
    #: Dollars so far, at batch prices; None when a model's price is unknown.
    cost_usd: float | None
    elapsed_s: float
    finished: bool = False
    #: Conversations left waiting when the run stopped at its deadline (their batches are in ``batches``,
    #: still in progress): a run started later on the same store carries them on.
    unfinished: int = 0

    def lines(self) -> list[str]:
        """The progress as a few lines of text."""
        states = sorted(self.states.items(), key=lambda kv: (_rank(kv[0]), kv[0]))
        by_state = " · ".join(f"{name} {n}" for name, n in states) or "none"
        head = f"batch run {self.run_id}  {_duration(self.elapsed_s)}" + ("  (finished)" if self.finished else "")
        open_batches = (
            ", ".join(f"{b.batch_id} {b.processing_status} {_counts(b.request_counts)}".rstrip() for b in self.batches)
            or "none open"
        )
        results = " · ".join(f"{k} {self.results.get(k, 0)}" for k in ("succeeded", "errored", "expired", "canceled"))
        u = self.usage
        cost = (
            "unknown"
            if self.cost_usd is None
            else f"${self.cost_usd:,.2f}"
            if self.cost_usd >= 10
            else (f"${self.cost_usd:.6f}")
        )
        lines = [
            head,
            f"conversations {self.conversations}: {by_state}  (waiting on a batch {self.waiting}"
            + (f", stopped by an error {self.errors}" if self.errors else "")
            + ")",
            f"batches submitted {self.batches_submitted}: {open_batches}",
            f"requests {results}",
            f"tokens in {u.input_tokens:,} · out {u.output_tokens:,} · cache read {u.cache_read_input_tokens:,} · "
            f"cache write {u.cache_creation_input_tokens:,}   cost {cost} (batch prices)",
        ]
        if self.unfinished:
            lines.append(
                f"stopped at the deadline: {self.unfinished} conversation(s) unfinished, waiting on "
                f"{len(self.batches)} batch(es) still in progress; run again with the same store to carry them on"
            )
        return lines

    def line(self) -> str:
        """The progress on one line (for logs)."""
        return " | ".join(self.lines())


def _rank(state: str) -> int:
    return _ORDER.index(state) if state in _ORDER else len(_ORDER)


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items() if v)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class ProgressDisplay:
    """Renders ``BatchProgress`` to ``stream``: redrawn in place on a terminal, plain lines otherwise.

    ``tty`` forces one mode (default: ``stream.isatty()``). In plain mode a line is written only when
    something other than the elapsed time changed.
    """

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._drawn = 0
        self._last: str | None = None

    def __call__(self, progress: BatchProgress) -> None:
        lines = progress.lines()
        if self.tty:
            up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
            self.stream.write(up + "\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            same = "\n".join(lines[1:]) + str(progress.finished)
            if same == self._last:
                return
            self._last = same
            self.stream.write(progress.line() + "\n")
        self.stream.flush()
