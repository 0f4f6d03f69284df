"""Structured events: every step of a run, as data.

Each event is emitted twice: to structlog (so applications route, filter and
render it with their own processors) and onto the run's ``RunResult.events``
as an ``Event`` model (so tests and tools can assert on it). Event names are
a stable public interface: they are listed in ``EVENT_NAMES`` and in the
README, and a test keeps the two in step.

Secrets never leave this module: every value is scrubbed of the client's API
key and anything shaped like an Anthropic key (``agentfsm.observe.redaction``)
before it is recorded or logged.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict

from agentfsm.observe.redaction import redact

Level = Literal["debug", "info", "warning", "error"]

#: name → meaning. Stable: renaming one is a breaking change.
EVENT_NAMES: dict[str, str] = {
    "run.started": "a run began: the Agent class (module:QualName), model, number of input messages",
    "request.sent": "a Messages API request is about to go out: max_tokens, message count",
    "response.received": "a reply arrived: stop_reason, usage, latency_ms",
    "request.failed": "a request failed after the SDK's own retries: error type, HTTP status, message, latency_ms",
    "request.retried": "a streamed request broke mid-stream and is sent again: attempt, error, fault, delay_s",
    "transition": "the machine moved: source, dest, trigger",
    "tool.started": "a client tool call is about to run: tool, tool_use_id",
    "tool.finished": "a client tool call ended: tool, tool_use_id, is_error, duration_ms",
    "continuation.requested": "a cut-off text is being continued: strategy, continuation number",
    "continuation.fallback": "the model rejected prefill; continuing with a user prompt for the rest of the run",
    "ladder.climbed": "a reply cut inside a tool_use block is retried with a larger max_tokens: from, to",
    "pause.resumed": "a pause_turn reply is sent back unchanged: resume number",
    "empty.nudged": "an empty end_turn after tool results gets a continuation prompt: retry number",
    "refusal.fallback": "a refusal is retried once on the policy's fallback model",
    "reply.discarded": "a reply is dropped from the history (cut tool call, empty reply, refusal retried): reason",
    "stop_reason.unknown": "the API sent a stop_reason this version does not know: raw value",
    "run.finished": "a run ended: final_state, reason, stop_reason, usage, cost_usd, turns, latency_ms, batched",
    "run.resumed": "a stored conversation is carried on: state, turns, committed and interrupted tool calls",
    "tool.interrupted": "a tool call was running when the process stopped and is not idempotent: tool, tool_use_id",
    "budget.unknown_cost": "max_cost_usd is set but the model has no known price, so cost cannot be enforced",
    # The Message Batches API (agentfsm.batch.BatchRunner). The runner's own events carry the run's id
    # where a conversation's id would be; the others are on the conversation they concern.
    "batch.submitted": "runner: a Message Batch was created: batch_id, requests, bytes",
    "batch.polled": "runner: a Message Batch was polled: batch_id, processing_status, request_counts",
    "batch.ended": "runner: a Message Batch ended; its results are applied next: batch_id, request_counts, elapsed_s",
    "batch.resumed": "runner: batches stored by an earlier process are polled, not sent again: batch_ids, waiting",
    "batch.adopted": "runner: a batch created by a process that died before storing its id was found: batch_id",
    "batch.request_added": "the conversation's request is in a batch: batch_id, custom_id, attempt",
    "batch.result_applied": "a batch result drove the conversation's transition: batch_id, custom_id, result, "
    "error_type",
    "batch.result_stale": "a batch result for a point the conversation had passed (applied before a crash) was "
    "skipped: batch_id, custom_id",
    "batch.request_resent": "the request goes into the next batch: reason (a retryable error type, expired, "
    "canceled), attempt",
    "batch.conversation_error": "the conversation raised (a hook, a lost lease) and stops; the others carry on: "
    "error_type, message",
}


class Event(BaseModel):
    """One step of a run, as recorded on ``RunResult.events``."""

    model_config = ConfigDict(frozen=True)

    event: str
    level: Level = "info"
    conversation_id: str
    turn: int
    state: str
    timestamp: float
    data: dict[str, Any] = {}


#: One event as kept while a run is going: (event, level, turn, state, timestamp, data).
#: Tuples, not models: a run keeps every event, and a model costs ~1 KiB where this costs a few
#: hundred bytes; ``Event`` models are built when someone reads them.
RawEvent = tuple[str, Level, int, str, float, dict[str, Any]]


def materialise(conversation_id: str, raw: Iterable[RawEvent]) -> list[Event]:
    """``Event`` models for raw events."""
    return [
        Event(event=e, level=lv, conversation_id=conversation_id, turn=t, state=st, timestamp=ts, data=d)
        for e, lv, t, st, ts, d in raw
    ]


class EventLog:
    """Emits the events of one conversation and keeps them for its result."""

    __slots__ = ("_logger", "_secrets", "conversation_id", "raw")

    def __init__(self, conversation_id: str, logger: Any | None, secrets: Iterable[str] = ()) -> None:
        self.conversation_id = conversation_id
        self.raw: list[RawEvent] = []
        self._secrets = tuple(s for s in secrets if s)
        self._logger = logger

    @property
    def events(self) -> list[Event]:
        """The events so far, as models."""
        return materialise(self.conversation_id, self.raw)

    def emit(self, name: str, *, turn: int, state: str, level: Level = "info", **data: Any) -> dict[str, Any]:
        """Record and log one event; return its (redacted) data."""
        if name not in EVENT_NAMES:
            raise KeyError(f"undeclared event name {name!r}; add it to agentfsm.observe.events.EVENT_NAMES")
        clean: dict[str, Any] = redact(data, self._secrets)
        self.raw.append((name, level, turn, state, time.time(), clean))
        if self._logger is not None:
            getattr(self._logger, level)(name, conversation_id=self.conversation_id, turn=turn, state=state, **clean)
        return clean


def default_logger() -> Any:
    """The structlog logger agentfsm writes to unless an Agent is given another (or None)."""
    return structlog.get_logger("agentfsm")
