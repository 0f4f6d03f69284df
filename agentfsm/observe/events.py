"""Structured events: every step of a run, as data.

Each event goes up to three ways:

* onto the run's ``RunResult.events``, always (an ``Event`` model when read), so tests and tools
  can assert on it;
* to a logger. By default that is the standard library logger ``agentfsm`` (structlog bound to
  ``logging``): silent until the application configures ``logging`` (a ``NullHandler`` keeps
  warnings from reaching Python's last-resort handler), and cheap while silent — the level is
  checked before anything is built. Once the application configures structlog, its
  configuration takes over. ``Agent(logger=...)`` takes any structlog logger; ``None`` turns
  logging off;
* to an ``Observer``, when tracing is on (``agentfsm.otel``): the one seam OpenTelemetry spans
  hang on;
* to the taps (``add_tap``), while a test captures every run's events
  (``agentfsm.testing.capture_events``). Empty, they cost one check per event.

Event names are a stable public interface: they are listed in ``EVENT_NAMES`` and in
docs/08-seeing-a-run.md, and a test keeps the two in step.

Secrets never leave this module: every value is scrubbed of the client's API key and anything
shaped like an Anthropic key (``agentfsm.redaction``) before it is recorded, logged or
observed.
"""

from __future__ import annotations

import io
import json
import logging
import marshal
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

import structlog
from pydantic import BaseModel, ConfigDict

from agentfsm.redaction import Redactor

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation

Level = Literal["debug", "info", "warning", "error"]

#: name → meaning. Stable: renaming one is a breaking change.
EVENT_NAMES: dict[str, str] = {
    "run.started": "a run began: the Agent class (module:QualName), model, number of input messages",
    "request.sent": "a Messages API request is about to go out: max_tokens, message count",
    "response.received": "a reply arrived: stop_reason, usage, latency_ms",
    "request.failed": "a request failed after the SDK's own retries: error type, HTTP status, message, latency_ms",
    "request.retried": "a streamed request broke mid-stream and is sent again: attempt, error, fault, delay_s",
    "transition": "the machine moved: source, dest, trigger, stop_reason, history_size",
    "tool.started": "a client tool call is about to run: tool, tool_use_id",
    "tool.finished": "a client tool call ended: tool, tool_use_id, is_error, duration_ms, and traceback when the "
    "tool raised",
    "tool.denied": "a client tool call is answered is_error without running: tool, tool_use_id, by (approval: a "
    "person denied it; before_tool: the agent's hook denied it, or failed), reason",
    "tool.rewritten": "the agent's before_tool rewrote a call's input: tool, tool_use_id, valid (false: the new input "
    "does not validate, and the call is answered is_error without running)",
    "tool.result_replaced": "the agent's after_tool replaced a call's result: tool, tool_use_id, is_error, and reason "
    "when the hook failed and the result was withheld",
    "tool.reconciled": "on resume, a call in doubt was checked with its tool's reconcile: tool, tool_use_id, outcome "
    "(happened, not_happened or unknown), and reason when unknown",
    "continuation.requested": "a cut-off text is being continued: strategy, continuation number",
    "continuation.fallback": "a model whose request rules accept prefill rejected one (the safety net); continuing "
    "with a user prompt for the rest of the run",
    "ladder.climbed": "a reply cut inside a tool_use block is retried with a larger max_tokens: from, to",
    "pause.resumed": "a pause_turn reply is sent back unchanged: resume number",
    "empty.nudged": "an empty end_turn after tool results gets a continuation prompt: retry number",
    "refusal.fallback": "a refusal is sent on to the next model of the fallback chain: from_model, to_model, "
    "credit_token",
    "request.adapted": "a request goes to another model than the agent's (a fallback) and is made fit for it (its "
    "request rules, agentfsm.wire.models): model, changed (what was dropped or replaced)",
    "reply.discarded": "a reply is dropped from the history (cut tool call, empty reply, refusal retried): reason",
    "stop_reason.unknown": "the API sent a stop_reason this version does not know: raw value",
    "run.finished": "a run ended: final_state, reason, stop_reason, usage, cost_usd, turns, latency_ms, batched",
    "run.resumed": "a stored conversation is carried on: state, turns, committed and interrupted tool calls",
    "tool.interrupted": "a tool call was running when the process stopped and is not idempotent: tool, tool_use_id",
    "budget.unknown_cost": "max_cost_usd is set but the model has no known price, so cost cannot be enforced",
    "run.waiting": "the run stopped to wait for a decision from outside: waiting state, triggers, pending tool calls",
    "wait.decided": "a waiting run is carried on: the trigger decided (None: ask the hook again), input's keys",
    "compaction.requested": "the next request is a compaction request: reason (input_tokens or context_window), "
    "input_tokens, threshold, messages, compaction number",
    "compaction.applied": "a compaction block replaced the messages it summarises: replaced_messages, "
    "summary_chars, compaction number, usage of the compaction pass",
    "compaction.failed": "a compaction produced no summary (content null) or its request failed: the history "
    "stays as it was; source (request or server), reason, status_code, compaction_off",
    "compaction.resumed": "a reply paused after the server's own compaction (pause_after_compaction) is sent back "
    "unchanged: compaction number",
    "compaction.received": "a reply carries the server's own compaction block, kept in the history as sent: "
    "summary_chars",
    "compaction.ineffective": "the first request after a compaction was still over compact_at_input_tokens: no "
    "more compactions at the threshold this run; input_tokens, threshold",
    "fallback.served": "a server-side fallback model answered instead of the requested one: requested_model, "
    "served_by, hops (from, to, category)",
    "fallback.credit": "the API's verdict on a fallback credit token sent with a retry: status (redeemed or "
    "not_applied), reason, remove_to_redeem",
    "fallback.hop": "a request goes on to the next model of Policy.fallback_models: from_model, to_model, trigger "
    "(refusal, overloaded, rate_limited), position in the chain, credit_token",
    "output.invalid": "a reply's output did not validate against the agent's output_type: mode (native or tool), "
    "errors, retry (the retry it is sent back for; None when none is left and the run fails)",
    "thread.lost": "the run's message thread (Policy.transport thread) could not be continued: the same turn "
    "is sent again with the full history, on a new thread (or on none, for thread_unsupported_request): reason "
    "(the API's error_code), previous_message_id, status_code",
    # The Message Batches API (agentfsm.batch.BatchRunner). The runner's own events carry the run's id
    # where a conversation's id would be; the others are on the conversation they concern.
    "batch.submitted": "runner: a Message Batch was created: batch_id, requests, bytes",
    "batch.polled": "runner: a Message Batch was polled: batch_id, processing_status, request_counts",
    "batch.ended": "runner: a Message Batch ended; its results are applied next: batch_id, request_counts, elapsed_s",
    "batch.resumed": "runner: batches stored by an earlier process are polled, not sent again: batch_ids, waiting",
    "batch.adopted": "runner: a batch created by a process that died before storing its id was found: batch_id",
    "batch.result_unreadable": "runner: a line of a batch's results file could not be used and was skipped (its "
    "request, with any other left without a usable line, counts as missing): batch_id, line, custom_id, problem",
    "batch.unfinished": "the run stopped polling at its deadline (deadline= or max_wall_seconds) with the batch still "
    "in progress; a later run on the same store polls it again: batch_id, stopped_by (the runner's event: "
    "processing_status, request_counts, waiting, elapsed_s; a conversation's: custom_id)",
    "batch.request_added": "the conversation's request is in a batch: batch_id, custom_id, attempt",
    "batch.result_applied": "a batch result drove the conversation's transition: batch_id, custom_id, result, "
    "error_type",
    "batch.result_stale": "a batch result for a point the conversation had passed (applied before a crash) was "
    "skipped: batch_id, custom_id",
    "batch.request_resent": "the request goes into the next batch: reason (a retryable error type, expired, "
    "canceled, missing), attempt",
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


#: One event as read back from a run's record: (event, level, turn, state, timestamp, data).
#: ``Event`` models are built only when someone reads them.
RawEvent = tuple[str, Level, int, str, float, dict[str, Any]]


def materialise(conversation_id: str, raw: Iterable[RawEvent]) -> list[Event]:
    """``Event`` models for raw events."""
    return [
        Event(event=e, level=lv, conversation_id=conversation_id, turn=t, state=st, timestamp=ts, data=d)
        for e, lv, t, st, ts, d in raw
    ]


# --- a run's record of its events, kept packed -----------------------------------------------------------

# Every run keeps every event (``RunResult.events``), about six a turn, and thousands of runs may be in
# flight at once: kept as tuples of dicts, a tool turn's events held ~2.7 KB. So a record keeps them as
# bytes: each event one ``marshal`` record (exact for the builtin types an event's fields are made of, and
# written in C), appended to a buffer that is deflated every ``_CHUNK`` bytes against a dictionary of
# typical events (``_ZDICT``): a tool turn's events then take ~150 bytes. They are read back on demand.

_CHUNK = 512
#: Raw deflate with a 4 KiB window: the dictionary and a chunk fit in it, and the compressor stays small.
_WBITS = -12
_MEM_LEVEL = 4
#: Stands in the stream for an event whose fields marshal could not give back exactly as they were (a
#: value of another type, or one that held a credential); the event itself is kept as it is, aside.
_ASIDE = marshal.dumps(None)


def _zdict() -> bytes:
    """What the events of a tool loop look like, as marshal writes them: deflate finds each new event's
    names, keys and values here, so even the first chunk of a run packs well. (Only a matter of size: any
    event packs and reads back exactly.) The most frequent come last, where references are cheapest."""
    usage = {
        "input_tokens": 1000,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 100,
        "service_tier": "standard",
        "inference_geo": "not_available",
    }
    total = {
        "input_tokens": 1000,
        "output_tokens": 100,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "requests": 2,
        "compaction_input_tokens": 0,
        "compaction_output_tokens": 0,
    }
    now = 1.8e9
    samples: list[tuple[Any, ...]] = [
        ("run.finished", "info", 2, "done", now, {"final_state": "done", "reason": "end_turn",
         "stop_reason": "end_turn", "usage": total, "cost_usd": 0.001, "turns": 2, "latency_ms": 1.0,
         "batched": False}),
        ("run.started", "info", 0, "requesting", now, {"agent": "agentfsm.agent:Agent", "model": "claude-sonnet-4-5",
         "messages": 1}),
        ("transition", "info", 2, "end_turn", now, {"source": "requesting", "dest": "end_turn",
         "trigger": "end_turn", "stop_reason": "end_turn", "history_size": [3, 1, 0]}),
        ("transition", "info", 2, "done", now, {"source": "end_turn", "dest": "done", "trigger": "finish",
         "stop_reason": "end_turn", "history_size": [4, 1, 100]}),
        ("request.sent", "info", 1, "requesting", now, {"max_tokens": 4096, "messages": 1,
         "model": "claude-sonnet-4-5"}),
        ("response.received", "info", 1, "requesting", now, {"stop_reason": "tool_use", "usage": usage,
         "latency_ms": 1.0, "block_types": ["text", "tool_use"]}),
        ("transition", "info", 1, "tool_use", now, {"source": "requesting", "dest": "tool_use",
         "trigger": "tool_use", "stop_reason": "tool_use", "history_size": [1, 1, 20]}),
        ("tool.started", "info", 1, "tool_use", now, {"tool": "lookup", "tool_use_id": "toolu_01"}),
        ("tool.finished", "info", 1, "tool_use", now, {"tool": "lookup", "tool_use_id": "toolu_01",
         "is_error": False, "duration_ms": 0.1}),
        ("transition", "info", 1, "requesting", now, {"source": "tool_use", "dest": "requesting",
         "trigger": "run_tools", "stop_reason": "tool_use", "history_size": [3, 1, 0]}),
    ]  # fmt: skip
    return b"".join(marshal.dumps(sample) for sample in samples)


_ZDICT = _zdict()
# Primed once: a packer or unpacker is a copy of these, which skips loading the dictionary into a fresh
# one every chunk (deflateSetDictionary hashes all of it): ~40% of what packing a chunk costs. Only ever
# copied, never used, so sharing them between threads is safe.
_PACKER = zlib.compressobj(6, zlib.DEFLATED, _WBITS, _MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY, _ZDICT)
_UNPACKER = zlib.decompressobj(_WBITS, _ZDICT)


def _exact(value: Any, depth: int = 3) -> bool:
    """Whether marshal gives ``value`` back as it is: builtin scalars, and lists, tuples and dicts of them."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return True
    if not depth:
        return False
    if kind is list or kind is tuple:
        return all(_exact(v, depth - 1) for v in value)
    if kind is dict:
        return all(type(k) is str and _exact(v, depth - 1) for k, v in value.items())
    return False


def _unpack(chunk: bytes) -> bytes:
    """A chunk of an ``EventRecord``, inflated."""
    unpacker = _UNPACKER.copy()
    return unpacker.decompress(chunk) + unpacker.flush()


class EventRecord(Sequence[RawEvent]):
    """A run's events, in order, kept packed (see above); reading it (iterating, ``len``, an index) gives
    ``RawEvent`` tuples, decoded anew each time."""

    __slots__ = ("_aside", "_chunks", "_count", "_levels", "_tail")

    def __init__(self, events: Iterable[RawEvent] = ()) -> None:
        self._chunks: list[bytes] = []
        self._levels = bytearray()  # _levels[i]: chunk i holds 2**_levels[i] chunks' worth of events
        self._tail = bytearray()
        self._aside: dict[int, RawEvent] | None = None
        self._count = 0
        for event in events:
            self.add(event, plain=_exact(event[5]))

    def add(self, event: RawEvent, plain: bool) -> None:
        """Record one event; ``plain``: its fields are of the types marshal keeps exactly (``_exact``)."""
        record = None
        if plain:
            try:
                record = marshal.dumps(event)
            except ValueError:  # a name, level or state of another type than str
                record = None
        if record is None:
            if self._aside is None:
                self._aside = {}
            self._aside[self._count] = event
            record = _ASIDE
        self._tail += record
        self._count += 1
        if len(self._tail) >= _CHUNK:
            chunks, levels, data = self._chunks, self._levels, bytes(self._tail)
            level = 0
            # Chunks merge as a binary counter does (two of one level make one of the next): a long
            # stream packs better than many short ones (each event finds the last turns' in its window)
            # and a run of n chunks' worth keeps log2(n) chunks, each byte re-packed log2(n) times.
            while levels and levels[-1] == level:
                data = _unpack(chunks.pop()) + data
                levels.pop()
                level += 1
            packer = _PACKER.copy()
            chunks.append(packer.compress(data) + packer.flush())
            levels.append(level)
            self._tail = bytearray()

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[RawEvent]:
        chunks, tail, aside, count = list(self._chunks), bytes(self._tail), self._aside or {}, self._count
        index = 0
        for chunk in [*chunks, None]:
            data = tail if chunk is None else _unpack(chunk)
            stream = io.BytesIO(data)
            while index < count and stream.tell() < len(data):
                event = marshal.load(stream)
                yield event if event is not None else aside[index]
                index += 1

    @overload
    def __getitem__(self, index: int) -> RawEvent: ...

    @overload
    def __getitem__(self, index: slice) -> list[RawEvent]: ...

    def __getitem__(self, index: int | slice) -> RawEvent | list[RawEvent]:
        """Decodes the whole record: read it once (``list(record)``) to index it often."""
        return list(self)[index]

    def __reversed__(self) -> Iterator[RawEvent]:
        return reversed(list(self))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventRecord | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        # Unpickled by another process, perhaps another agentfsm: the events, not the packing.
        return (EventRecord, (list(self),))

    def __repr__(self) -> str:
        return f"<EventRecord of {self._count} events>"


# --- where events go ----------------------------------------------------------------------------------

#: The standard library logger agentfsm's events go to by default.
LOGGER_NAME = "agentfsm"
#: The name agentfsm's state machines carry (``transitions`` prefixes its log lines with it).
MACHINE_NAME = "agentfsm"

_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_stdlib = logging.getLogger(LOGGER_NAME)
# A library is quiet until the application says otherwise: without a handler of its own, a warning
# would reach Python's last-resort handler (stderr) in a program that never configured logging.
_stdlib.addHandler(logging.NullHandler())


class _QuietMachines(logging.Filter):
    """Drops ``transitions``' debug and info lines about agentfsm's own machines (several per
    transition: "Finished processing state requesting exit callbacks."); agentfsm says the same once,
    as its ``transition`` event. Lines about the application's own machines pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return record.levelno >= logging.WARNING or not (
            isinstance(args, tuple) and args and args[0] == f"{MACHINE_NAME}: "
        )


logging.getLogger("transitions.core").addFilter(_QuietMachines())


class EventMessage(dict[str, Any]):
    """One event as the ``msg`` of a standard library log record.

    It is the event dict, flat (``event``, ``level``, ``conversation_id``, ``turn``, ``state``,
    ``timestamp``, then the event's fields: the form ``agentfsm replay`` reads), so structlog's
    ``ProcessorFormatter`` renders it like one of its own events (as JSON, say); any other
    formatter gets one line of text from ``str()``:
    ``transition conversation_id=conv_1 turn=1 state=tool_use source=requesting dest=tool_use ...``.
    """

    __slots__ = ()

    def __str__(self) -> str:
        parts = [str(self.get("event"))]
        for key, value in self.items():
            if key not in ("event", "level", "timestamp"):
                parts.append(f"{key}={_logfmt(value)}")
        return " ".join(parts)


def _logfmt(value: Any) -> str:
    if isinstance(value, str) and value and not any(c in value for c in ' ="\\\n'):
        return value
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


class StdlibLogger:
    """agentfsm's default logger: its events as records of the standard library logger ``agentfsm``.

    Nothing is built unless ``logging.getLogger("agentfsm").isEnabledFor(level)`` (which the
    standard library caches per level and clears on ``setLevel``); the record's ``msg`` is an
    ``EventMessage``, with the two extras structlog's ``ProcessorFormatter.wrap_for_formatter``
    sets, so a ``ProcessorFormatter`` on any handler renders it as structured data. Once the
    application configures structlog (``structlog.configure``), events go to
    ``structlog.get_logger("agentfsm")`` instead: the application's chain decides.

    Also usable as a structlog-style logger (``.info(event, **fields)``).
    """

    __slots__ = ()

    def enabled(self, level: Level) -> bool:
        """Whether an event of ``level`` goes anywhere (always, once structlog is configured)."""
        return structlog.is_configured() or _stdlib.isEnabledFor(_LEVELS[level])

    def event(
        self,
        level: Level,
        name: str,
        conversation_id: str,
        turn: int,
        state: str,
        timestamp: float,
        data: dict[str, Any],
    ) -> None:
        """Log one event; the cheap path of ``EventLog.emit``."""
        if structlog.is_configured():
            getattr(_structlog_logger, level)(name, conversation_id=conversation_id, turn=turn, state=state, **data)
            return
        number = _LEVELS[level]
        if not _stdlib.isEnabledFor(number):
            return
        message = EventMessage(
            event=name, level=level, conversation_id=conversation_id, turn=turn, state=state, timestamp=timestamp
        )
        message.update(data)
        _stdlib.log(number, message, extra={"_logger": _stdlib, "_name": level})

    def _log(self, level: Level, event: str, fields: dict[str, Any]) -> None:
        if structlog.is_configured():
            getattr(_structlog_logger, level)(event, **fields)
        elif _stdlib.isEnabledFor(_LEVELS[level]):
            message = EventMessage(event=event, level=level, timestamp=time.time())
            message.update(fields)
            _stdlib.log(_LEVELS[level], message, extra={"_logger": _stdlib, "_name": level})

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, fields)

    def __repr__(self) -> str:
        return f"<StdlibLogger {LOGGER_NAME!r}>"


#: structlog's lazy proxy: it reads the configuration current at each call.
_structlog_logger: Any = structlog.get_logger(LOGGER_NAME)
_DEFAULT_LOGGER = StdlibLogger()


def default_logger() -> StdlibLogger:
    """The logger agentfsm writes to unless an Agent is given another (or None)."""
    return _DEFAULT_LOGGER


# --- the observer seam: tracing ---------------------------------------------------------------------


class Observer(Protocol):
    """Watches one conversation's events; what ``agentfsm.otel`` hangs its spans on.

    ``event`` is called for every event, after it is recorded and logged, with its redacted data.
    ``scope()`` is entered around the conversation's code each time it runs (a whole ``run``, each
    step of a stream): there the observer may make its spans current, and the scope restores the
    caller's context on the way out. ``abort`` is called when the conversation's code raised (or a
    stream was closed before its end).
    """

    def event(self, name: str, level: Level, turn: int, state: str, timestamp: float, data: dict[str, Any]) -> None: ...

    def scope(self) -> AbstractContextManager[Any]: ...

    def abort(self, error: BaseException) -> None: ...


#: Makes the observer of a new conversation, once tracing is switched on for every agent
#: (``agentfsm.otel.instrument``); None (the default) costs nothing.
_global_observer: Callable[[Conversation], Observer | None] | None = None


def set_global_observer(factory: Callable[[Conversation], Observer | None] | None) -> None:
    """Switch tracing on (a factory) or off (None) for every agent without a tracer provider of its own."""
    global _global_observer
    _global_observer = factory


def observer_for(conv: Conversation) -> Observer | None:
    """The observer of a new conversation: its agent's tracer provider's, else the global one, else None."""
    provider = getattr(conv.agent, "tracer_provider", None)
    if provider is not None:
        from agentfsm.observe.otel import observer

        return observer(conv, provider)
    factory = _global_observer
    return None if factory is None else factory(conv)


_T = TypeVar("_T")


def observed(gen: Iterator[_T], obs: Observer) -> Iterator[_T]:
    """A stream whose every step runs inside ``obs.scope()``, and nothing outside it.

    The caller's code between two items keeps its own context, so a span made current for a
    request is never current in the caller's loop body, and two streams interleaved in one thread
    never see each other's spans.
    """
    finished = False
    try:
        while True:
            with obs.scope():
                try:
                    item = next(gen)
                except StopIteration:
                    finished = True
                    return
            yield item
    finally:
        if not finished:  # closed early (or failed): close the run's generator inside its scope too
            closer = getattr(gen, "close", None)
            if closer is not None:
                with obs.scope():
                    closer()
            obs.abort(GeneratorExit())


async def aobserved(gen: AsyncIterator[_T], obs: Observer) -> AsyncIterator[_T]:
    """``observed`` for an async stream: each step awaited inside ``obs.scope()``."""
    finished = False
    try:
        while True:
            with obs.scope():
                try:
                    item = await anext(gen)
                except StopAsyncIteration:
                    finished = True
                    return
            yield item
    finally:
        if not finished:
            closer = getattr(gen, "aclose", None)
            if closer is not None:
                with obs.scope():
                    await closer()
            obs.abort(GeneratorExit())


# --- taps: every event of every run, for tests -----------------------------------------------------

#: Called with each event of every conversation in the process, after it is recorded and redacted. A
#: plain list, not per conversation or context: a capture sees runs started before it opened, and runs
#: in other threads, as ``structlog.testing.capture_logs`` does.
_taps: list[Callable[[Event], None]] = []


def add_tap(tap: Callable[[Event], None]) -> None:
    """Call ``tap`` with every event of every run from now on (``remove_tap`` stops it)."""
    _taps.append(tap)


def remove_tap(tap: Callable[[Event], None]) -> None:
    """Stop calling ``tap`` (the same function ``add_tap`` was given)."""
    _taps.remove(tap)


# --- one conversation's events ------------------------------------------------------------------------


class EventLog:
    """Emits the events of one conversation and keeps them for its result."""

    __slots__ = ("_logger", "_redactor", "_stdlib", "conversation_id", "observer", "raw")

    def __init__(
        self,
        conversation_id: str,
        logger: Any | None,
        secrets: Iterable[str] = (),
        observer: Observer | None = None,
    ) -> None:
        self.conversation_id = conversation_id
        self.raw = EventRecord()
        self._redactor = Redactor(secrets)
        self._logger = logger
        self._stdlib = logger if isinstance(logger, StdlibLogger) else None
        self.observer = observer

    @property
    def events(self) -> list[Event]:
        """The events so far, as models."""
        return materialise(self.conversation_id, self.raw)

    def emit(self, name: str, *, turn: int, state: str, level: Level = "info", **data: Any) -> dict[str, Any]:
        """Record, log and observe one event; return its (redacted) data."""
        return self.record(name, level, turn, state, data)

    def record(self, name: str, level: Level, turn: int, state: str, data: dict[str, Any]) -> dict[str, Any]:
        """``emit`` with the fields as a dict of their own (which may be kept as it is: do not change it)."""
        if name not in EVENT_NAMES:
            raise KeyError(f"undeclared event name {name!r}; add it to agentfsm.observe.events.EVENT_NAMES")
        clean, plain = self._redactor.scrub(data)
        timestamp = time.time()
        self.raw.add((name, level, turn, state, timestamp, clean), plain)
        if self._stdlib is not None:
            self._stdlib.event(level, name, self.conversation_id, turn, state, timestamp, clean)
        elif self._logger is not None:
            getattr(self._logger, level)(name, conversation_id=self.conversation_id, turn=turn, state=state, **clean)
        if self.observer is not None:
            self.observer.event(name, level, turn, state, timestamp, clean)
        if _taps:
            event = Event(
                event=name,
                level=level,
                conversation_id=self.conversation_id,
                turn=turn,
                state=state,
                timestamp=timestamp,
                data=clean,
            )
            for tap in tuple(_taps):
                tap(event)
        return clean
