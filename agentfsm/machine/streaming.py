"""What a streaming caller sees: text as it arrives, state changes, tool calls, and the result.

``Agent.stream`` / ``Agent.astream`` yield these events. The text events are
written so that a caller who appends every ``text`` and honours every
``rewind`` ends with exactly the text the run produced: continuation seams
drop the characters a continuation repeats, and when a request has to be
sent again (a stream that dropped, a reply cut inside a tool call and
retried larger, a request sent on down the fallback chain) the text the caller
already saw is not shown twice: the new attempt's text is matched against
it, and only if the new attempt says something different does a ``rewind``
tell the caller how many characters to take back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from agentfsm.machine.stitch import Seam
from agentfsm.result import RunResult

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation
    from agentfsm.machine.output import PartialOutput


class TextEvent(BaseModel):
    """New text to show."""

    model_config = ConfigDict(frozen=True)
    type: Literal["text"] = "text"
    text: str


class RewindEvent(BaseModel):
    """Take back the last ``chars`` characters shown: a retried request said something else."""

    model_config = ConfigDict(frozen=True)
    type: Literal["rewind"] = "rewind"
    chars: int


class TransitionEvent(BaseModel):
    """The machine moved."""

    model_config = ConfigDict(frozen=True)
    type: Literal["transition"] = "transition"
    source: str
    dest: str
    trigger: str
    turn: int


class ToolCallEvent(BaseModel):
    """A client tool call started or finished."""

    model_config = ConfigDict(frozen=True)
    type: Literal["tool_call"] = "tool_call"
    phase: Literal["started", "finished"]
    tool: str
    tool_use_id: str
    is_error: bool | None = None
    duration_ms: float | None = None


class RetryEvent(BaseModel):
    """A request failed mid-stream and is being sent again."""

    model_config = ConfigDict(frozen=True)
    type: Literal["retry"] = "retry"
    attempt: int
    error_type: str
    message: str
    delay_s: float


class OutputEvent(BaseModel):
    """The typed output so far (an agent with an ``output_type``, asked for natively): the JSON parsed from
    the text streamed so far, incomplete values left out; sent whenever it changes. ``result.output`` is the
    validated whole."""

    model_config = ConfigDict(frozen=True)
    type: Literal["output"] = "output"
    partial: Any


class ResultEvent(BaseModel):
    """The last event of a stream: the run's result."""

    type: Literal["result"] = "result"
    result: RunResult


StreamEvent = TextEvent | RewindEvent | TransitionEvent | ToolCallEvent | RetryEvent | OutputEvent | ResultEvent


def stream_event_for(name: str, turn: int, data: dict[str, Any]) -> StreamEvent | None:
    """The stream event (if any) that mirrors one structured event."""
    if name == "transition":
        return TransitionEvent(source=data["source"], dest=data["dest"], trigger=data["trigger"], turn=turn)
    if name == "tool.started":
        return ToolCallEvent(phase="started", tool=data["tool"], tool_use_id=data["tool_use_id"])
    if name == "tool.finished":
        return ToolCallEvent(
            phase="finished",
            tool=data["tool"],
            tool_use_id=data["tool_use_id"],
            is_error=data["is_error"],
            duration_ms=data["duration_ms"],
        )
    if name == "request.retried":
        return RetryEvent(
            attempt=data["attempt"], error_type=data["error_type"], message=data["message"], delay_s=data["delay_s"]
        )
    return None


class TextView:
    """The text a streaming caller has been shown for the reply in progress, and what to show next."""

    def __init__(self) -> None:
        self._screen = ""  # shown for the current reply (across attempts of the same request)
        self._unconfirmed = ""  # the part of _screen the current attempt has not yet reproduced
        self._seam = Seam("", "none")
        self._discards_seen = 0
        self._broken = False  # the last attempt ended without a reply
        self._partial: PartialOutput | None = None  # the typed output so far (agentfsm.machine.output)

    def begin(self, conv: Conversation, *, retry: bool) -> None:
        """A request is about to stream; ``retry`` when it repeats one whose stream broke.

        Text shown for a reply that was then discarded, or for an attempt that broke, stays on
        the caller's screen until an attempt that succeeds confirms or takes it back.
        """
        # An attempt that broke and is not resent as such (its request gone on down a fallback chain) is repeated too.
        repeat = retry or self._broken or conv.counters.discards != self._discards_seen or bool(self._unconfirmed)
        self._discards_seen = conv.counters.discards
        if repeat:
            self._unconfirmed = self._screen
        else:
            self._screen, self._unconfirmed = "", ""
        kind = conv.runstate.pending_kind
        mode = "prefill" if kind in ("prefill", "caller_prefill") else "prompt" if kind == "prompt" else "none"
        self._seam = Seam(conv.answer, mode)
        from agentfsm.machine.output import PartialOutput

        self._partial = PartialOutput.of(conv)

    def already_shown(self, text: str) -> None:
        """The caller was shown ``text`` for the reply in progress by a process that then died (a durable
        engine sends the request again): the next ``begin(..., retry=True)`` matches it like a retry's."""
        self._screen = text

    def feed(self, delta: str) -> list[StreamEvent]:
        return self._with_output(self._show(self._seam.feed(delta)))

    def end(self, *, ok: bool) -> list[StreamEvent]:
        """The attempt ended; on success, take back anything shown before that it did not repeat."""
        events = self._show(self._seam.finish())
        self._broken = not ok
        if ok and self._unconfirmed:
            events.append(self._rewind(len(self._unconfirmed)))
        return self._with_output(events)

    def _with_output(self, events: list[StreamEvent]) -> list[StreamEvent]:
        """``events``, then the typed output so far when what was shown changed it."""
        if self._partial is not None and events:
            partial = self._partial.update(self._screen)
            if partial is not None:
                events.append(partial)
        return events

    def close(self, conv: Conversation) -> list[StreamEvent]:
        """The run is over: take back what the last reply showed if it is not in the answer after all
        (its stream broke and was not resent, or it was discarded), so the caller ends with the answer."""
        if (self._broken or conv.counters.discards != self._discards_seen) and self._screen:
            return [self._rewind(len(self._screen))]
        return []

    def _show(self, visible: str) -> list[StreamEvent]:
        if not visible:
            return []
        if not self._unconfirmed:
            self._screen += visible
            return [TextEvent(text=visible)]
        pending = self._unconfirmed
        common = 0
        for a, b in zip(visible, pending, strict=False):
            if a != b:
                break
            common += 1
        if common == len(visible):  # the retry is repeating what the caller already has
            self._unconfirmed = pending[common:]
            return []
        events: list[StreamEvent] = []
        if common < len(pending):
            self._unconfirmed = pending[common:]
            events.append(self._rewind(len(self._unconfirmed)))
        self._unconfirmed = ""
        self._screen += visible[common:]
        events.append(TextEvent(text=visible[common:]))
        return events

    def _rewind(self, chars: int) -> RewindEvent:
        self._screen = self._screen[: len(self._screen) - chars]
        self._unconfirmed = ""
        return RewindEvent(chars=chars)
