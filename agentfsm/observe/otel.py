"""OpenTelemetry spans of agentfsm's runs, with the GenAI semantic conventions (``agentfsm[otel]``).

    from agentfsm.otel import instrument
    instrument()                                  # every agent's runs, on the global tracer provider
    instrument(tracer_provider=provider)          # ... or on this one
    MyAgent(tracer_provider=provider)             # one agent's runs only

The spans (every one carries ``gen_ai.conversation.id``; the README lists every attribute)::

    invoke_agent {AgentClass}     one per run, from the caller's current span; transitions and the
    │                             other events are its span events; its status says how the run ended
    ├── chat {model}              one per request sent (a resend after a broken stream is another);
    │   └── (the SDK's own span)  kind CLIENT; the anthropic SDK's ``anthropic.messages.create`` span,
    │                             when the client traces too, is its child
    └── execute_tool {name}       one per client tool call run; spans the tool makes are its children

Built from agentfsm's events, through the one seam a conversation offers for this
(``agentfsm.observe.events.Observer``): the drivers know nothing about spans. Our spans are
parented explicitly (a run's spans hang under its own run span whatever else is running on the
event loop); a span is made *current* only inside the conversation's scope (each ``run``, each
step of a stream), so the SDK's span of a request and a tool's own spans nest under ours, and the
caller's code between two streamed items keeps its own context.

Attribute names follow the GenAI conventions and, where they overlap, the names the anthropic
SDK's own tracing uses (``anthropic.lib._tracing``): ``gen_ai.usage.input_tokens`` counts cache
reads and writes as the SDK's does, ``gen_ai.usage.cache_read.input_tokens`` /
``cache_write.input_tokens``, ``anthropic.message.stop_reason``, ``error.type`` ``tool_error``.

Message content (``gen_ai.input.messages``, ``gen_ai.output.messages``,
``gen_ai.system_instructions``, tool arguments and results) is recorded only when asked:
``instrument(capture_content=True)`` or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``;
credentials are scrubbed from it like from events.

Nothing here is imported unless tracing is asked for: without it a run pays one attribute check.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import traceback
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from agentfsm.errors import ConfigurationError
from agentfsm.machine.around import DECISION_EVENTS, span_attributes
from agentfsm.observe import events
from agentfsm.redaction import redact
from agentfsm.tools.executor import call_scope

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ConfigurationError(
        "OpenTelemetry tracing needs the opentelemetry-api package: pip install 'agentfsm[otel]'"
    ) from exc

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from agentfsm.machine.conversation import Conversation
    from agentfsm.tools.calls import ToolCall

__all__ = ["CONTENT_ENV", "instrument", "instrumented", "observer", "uninstrument"]

_log = logging.getLogger(__name__)

#: The environment variable OpenTelemetry's GenAI instrumentations read to record message content.
CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
#: The instrumentation scope of agentfsm's tracer.
SCOPE = "agentfsm"
#: The default cap on one span's content attributes, in bytes of UTF-8 (the anthropic SDK's default).
MAX_CONTENT_BYTES = 750_000

PROVIDER = "anthropic"
ERROR_TYPE = "error.type"
CONVERSATION_ID = "gen_ai.conversation.id"

_COMMON: dict[str, str] = {"gen_ai.provider.name": PROVIDER, "gen_ai.system": PROVIDER}
#: Events that are spans of their own (or end one), not span events on the run span.
_SPAN_EVENTS = frozenset({"run.started", "run.resumed", "request.sent", "response.received", "request.failed"})
_TOOL_EVENTS = frozenset({"tool.started", "tool.finished", *DECISION_EVENTS})
#: Request parameters recorded as ``gen_ai.request.<name>``.
_REQUEST_PARAMS = ("temperature", "top_p", "top_k")


class _Settings:
    __slots__ = ("capture_content", "max_content_bytes")

    def __init__(self) -> None:
        self.capture_content: bool | None = None  # None: the environment decides
        self.max_content_bytes = MAX_CONTENT_BYTES

    def content(self) -> bool:
        if self.capture_content is not None:
            return self.capture_content
        return os.environ.get(CONTENT_ENV, "").strip().lower() == "true"


_settings = _Settings()
_tracers: weakref.WeakKeyDictionary[Any, Tracer] = weakref.WeakKeyDictionary()
_global_provider: TracerProvider | None = None
_instrumented = False


def instrument(
    tracer_provider: TracerProvider | None = None,
    *,
    capture_content: bool | None = None,
    max_content_bytes: int = MAX_CONTENT_BYTES,
) -> None:
    """Trace the runs of every agent that has no ``tracer_provider`` of its own.

    ``tracer_provider``: where the spans go; None is OpenTelemetry's global provider (the one
    ``trace.set_tracer_provider`` set, even later). ``capture_content``: record message content on
    the spans; None follows ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``. Both content
    settings apply to agents with a provider of their own too. Calling it again replaces the
    settings; ``uninstrument()`` stops it.
    """
    global _global_provider, _instrumented
    if tracer_provider is not None:
        check_provider(tracer_provider)
    if max_content_bytes < 1:
        raise ConfigurationError(f"max_content_bytes must be at least 1, got {max_content_bytes}")
    _settings.capture_content = capture_content
    _settings.max_content_bytes = max_content_bytes
    _global_provider = tracer_provider
    _instrumented = True
    events.set_global_observer(_global_observer)


def uninstrument() -> None:
    """Stop tracing agents without a provider of their own (runs already started keep their spans)."""
    global _global_provider, _instrumented
    _global_provider, _instrumented = None, False
    _settings.capture_content, _settings.max_content_bytes = None, MAX_CONTENT_BYTES
    events.set_global_observer(None)


def instrumented() -> bool:
    """Whether ``instrument()`` is in force."""
    return _instrumented


def check_provider(provider: Any) -> Any:
    """``provider`` if it is a tracer provider; else a clear error."""
    if not callable(getattr(provider, "get_tracer", None)):
        raise ConfigurationError(
            f"tracer_provider must be an OpenTelemetry TracerProvider, got {type(provider).__name__}"
        )
    return provider


def _global_observer(conv: Conversation) -> SpanObserver:
    return SpanObserver(conv, _tracer(_global_provider))


def observer(conv: Conversation, provider: TracerProvider) -> SpanObserver:
    """The observer that traces ``conv`` on ``provider``."""
    return SpanObserver(conv, _tracer(provider))


def _tracer(provider: TracerProvider | None) -> Tracer:
    if provider is None:
        return trace.get_tracer(SCOPE, _version())  # the global provider, looked up at each span
    try:
        tracer = _tracers.get(provider)
    except TypeError:  # a provider that takes no weak reference: not cached
        return trace.get_tracer(SCOPE, _version(), tracer_provider=provider)
    if tracer is None:
        tracer = _tracers[provider] = trace.get_tracer(SCOPE, _version(), tracer_provider=provider)
    return tracer


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agentfsm")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
        return "0"


def _ns(timestamp: float) -> int:
    return int(timestamp * 1e9)


class _ToolSpan:
    __slots__ = ("end_ns", "error", "finished", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.end_ns: int | None = None  # when the call returned, as its scope saw it
        self.finished = False  # tool.finished seen: ends at the next event, with its result
        self.error = False


class SpanObserver:
    """Turns one conversation's events into spans (see the module docstring). Made per conversation."""

    __slots__ = (
        "_chat",
        "_chat_ctx",
        "_chat_from_retry",
        "_content",
        "_conv",
        "_limit",
        "_request",
        "_run",
        "_run_ctx",
        "_secrets",
        "_stack",
        "_tools",
        "_tracer",
    )

    def __init__(self, conv: Conversation, tracer: Tracer) -> None:
        self._conv = conv
        self._tracer = tracer
        self._content = _settings.content()
        self._limit = _settings.max_content_bytes
        self._secrets = tuple(conv.agent.secrets())
        self._run: Span | None = None
        self._run_ctx: Context | None = None
        self._chat: Span | None = None
        self._chat_ctx: Context | None = None
        self._chat_from_retry = False  # the open chat span was opened for a resend, before its request.sent
        self._tools: dict[str, _ToolSpan] = {}
        self._stack: list[tuple[Token[Context], Token[Any]]] = []  # tokens of the scopes entered
        self._request: tuple[str, int | None] = (conv.model, None)  # model and max_tokens of the last request

    # --- the scope: our spans current while the conversation's code runs ------------------------

    def scope(self) -> SpanObserver:
        return self

    def __enter__(self) -> SpanObserver:
        ctx = self._chat_ctx or self._run_ctx or otel_context.get_current()
        self._stack.append((otel_context.attach(ctx), call_scope.set(self._call_scope)))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        otel_token, call_token = self._stack.pop()
        call_scope.reset(call_token)
        otel_context.detach(otel_token)
        if exc is not None:
            self.abort(exc)

    def _make_current(self, ctx: Context | None) -> None:
        """Inside a scope, make ``ctx`` current now (the scope restores the caller's on the way out)."""
        if self._stack and ctx is not None:
            otel_context.attach(ctx)

    @contextmanager
    def _call_scope(self, call: ToolCall) -> Iterator[None]:
        """Around one tool call as the executor runs it: its span current, and when it returned."""
        entry = self._tools.get(call.id)
        if entry is None:
            yield
            return
        token = otel_context.attach(trace.set_span_in_context(entry.span))
        try:
            yield
        finally:
            entry.end_ns = time.time_ns()
            otel_context.detach(token)

    # --- events -------------------------------------------------------------------------------------

    def event(
        self, name: str, level: events.Level, turn: int, state: str, timestamp: float, data: dict[str, Any]
    ) -> None:
        """Turn one event into span work. Never raises: tracing must not break a run."""
        try:
            self._event(name, turn, timestamp, data)
        except Exception:
            _log.debug("could not record event %r on its span", name, exc_info=True)

    def _event(self, name: str, turn: int, timestamp: float, data: dict[str, Any]) -> None:
        if self._tools and name not in _TOOL_EVENTS:
            self._end_tools()
        ts = _ns(timestamp)
        if name == "run.started" or name == "run.resumed":
            self._end_run(None, ts)  # a run span still open (a conversation restarted in place) ends here
            self._start_run(ts, resumed=data if name == "run.resumed" else None)
            return
        run = self._ensure_run(ts)
        if name == "request.sent":
            self._request_sent(data, turn, ts)
        elif name == "response.received":
            self._response_received(data, ts)
        elif name == "request.failed":
            self._request_failed(data, ts)
        elif name == "request.retried":
            self._request_retried(data, turn, ts)
        elif name == "tool.started":
            self._tool_started(data, ts)
        elif name == "tool.finished":
            self._tool_finished(data, ts, run)
        elif name in DECISION_EVENTS:  # around the call (machine/around.py): one that never runs gets its span here
            self._tool_started(data, ts).span.set_attributes(span_attributes(name, data))
        else:
            attributes = _flat(data)
            attributes["agentfsm.turn"] = turn
            run.add_event(name, attributes, timestamp=ts)
            if name == "run.finished":
                self._run_finished(data, ts)

    # --- the run ---------------------------------------------------------------------------------

    def _start_run(self, ts: int, *, resumed: dict[str, Any] | None = None, continued: bool = False) -> Span:
        conv = self._conv
        agent = type(conv.agent)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            **_COMMON,
            "gen_ai.agent.name": agent.__name__,
            CONVERSATION_ID: conv.id,
            "gen_ai.request.model": conv.model,
            "agentfsm.agent": agent.qualified_name(),
        }
        if resumed is not None:
            attributes["agentfsm.resumed"] = True
            attributes.update({f"agentfsm.resumed.{k}": v for k, v in _flat(resumed).items() if k != "agent"})
        if continued:
            attributes["agentfsm.continued"] = True
        span = self._tracer.start_span(
            f"invoke_agent {agent.__name__}", kind=SpanKind.INTERNAL, attributes=attributes, start_time=ts
        )
        self._run, self._run_ctx = span, trace.set_span_in_context(span)
        self._make_current(self._run_ctx)
        return span

    def _ensure_run(self, ts: int) -> Span:
        """The run span; a new one when the last ended (the conversation is carried on after an error)."""
        return self._run if self._run is not None else self._start_run(ts, continued=True)

    def _run_finished(self, data: dict[str, Any], ts: int) -> None:
        conv, span = self._conv, self._run
        if span is None:
            return
        if span.is_recording():
            attributes = {
                "agentfsm.final_state": data.get("final_state"),
                "agentfsm.reason": data.get("reason"),
                "agentfsm.turns": data.get("turns"),
                "agentfsm.cost_usd": data.get("cost_usd"),
                "gen_ai.response.model": conv.reply.model if conv.reply is not None else None,
                "gen_ai.response.finish_reasons": [data["stop_reason"]] if data.get("stop_reason") else None,
                **_usage_attributes(conv.usage.model_dump()),
            }
            span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        if data.get("final_state") == "failed":
            error = conv.runstate.error
            span.set_attribute(ERROR_TYPE, error.type if error is not None else "failed")
            span.set_status(Status(StatusCode.ERROR, error.message if error is not None else data.get("reason")))
        elif data.get("final_state") == "done":
            span.set_status(Status(StatusCode.OK))
        self._end_run(None, ts)

    def _end_run(self, error: BaseException | None, ts: int | None = None) -> None:
        """End every span still open; ``error`` is why (a non-``Exception`` leaves the status unset)."""
        self._end_tools(error, ts, every=True)
        if self._chat is not None:
            self._fail(self._chat, error)
            self._chat.end(end_time=ts)
            self._chat = self._chat_ctx = None
        if self._run is not None:
            self._fail(self._run, error)
            self._run.end(end_time=ts)
            self._run = self._run_ctx = None

    def _fail(self, span: Span, error: BaseException | None) -> None:
        if error is None or not isinstance(error, Exception):
            return
        message = redact(f"{type(error).__name__}: {error}", self._secrets)
        span.add_event(
            "exception",
            {
                "exception.type": f"{type(error).__module__}.{type(error).__qualname__}",
                "exception.message": redact(str(error), self._secrets),
                "exception.stacktrace": redact(
                    "".join(traceback.format_exception(type(error), error, error.__traceback__)), self._secrets
                ),
            },
        )
        span.set_attribute(ERROR_TYPE, type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, message))

    def abort(self, error: BaseException) -> None:
        """The conversation's code raised (or its stream was closed early): end what is open. Never raises."""
        try:
            self._end_run(error)
        except Exception:
            _log.debug("could not end the spans of an aborted run", exc_info=True)

    # --- requests ----------------------------------------------------------------------------------

    def _request_sent(self, data: dict[str, Any], turn: int, ts: int) -> None:
        if self._chat is not None and self._chat_from_retry:
            self._chat_from_retry = False  # the resend's own request.sent: its span is open already
            self._chat.set_attribute("gen_ai.request.max_tokens", data.get("max_tokens") or 0)
            return
        if self._chat is not None:  # a request that never completed: it ends here, unfinished
            self._chat.end(end_time=ts)
        self._open_chat(data.get("model") or self._conv.model, data.get("max_tokens"), turn, ts)

    def _open_chat(self, model: str, max_tokens: int | None, turn: int, ts: int, resend: int = 0) -> None:
        conv = self._conv
        self._request = (model, max_tokens)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            **_COMMON,
            "gen_ai.request.model": model,
            CONVERSATION_ID: conv.id,
            "gen_ai.request.stream": conv._outbox is not None,
            "agentfsm.turn": turn,
        }
        if max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = max_tokens
        if resend:
            attributes["agentfsm.request.resend"] = resend
        params = conv.agent.static_params()
        for name in _REQUEST_PARAMS:
            value = params.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[f"gen_ai.request.{name}"] = value
        span = self._tracer.start_span(
            f"chat {model}", context=self._run_ctx, kind=SpanKind.CLIENT, attributes=attributes, start_time=ts
        )
        if self._content and span.is_recording():
            self._set_content(
                span,
                {
                    "gen_ai.system_instructions": _system_parts(params.get("system")),
                    "gen_ai.input.messages": [_message(m) for m in conv.messages],
                },
            )
        self._chat, self._chat_ctx = span, trace.set_span_in_context(span, self._run_ctx)
        self._make_current(self._chat_ctx)

    def _close_chat(self, ts: int) -> Span | None:
        span = self._chat
        if span is not None:
            span.end(end_time=ts)
        self._chat = self._chat_ctx = None
        self._chat_from_retry = False
        self._make_current(self._run_ctx)
        return span

    def _response_received(self, data: dict[str, Any], ts: int) -> None:
        span, reply = self._chat, self._conv.reply
        if span is None:
            return
        if span.is_recording():
            stop_reason = data.get("stop_reason")
            attributes: dict[str, Any] = {
                "gen_ai.response.finish_reasons": [stop_reason] if stop_reason else [],
                "agentfsm.latency_ms": data.get("latency_ms"),
                **_usage_attributes(data.get("usage")),
            }
            if stop_reason:
                attributes["anthropic.message.stop_reason"] = stop_reason
            if reply is not None:
                attributes["gen_ai.response.id"] = reply.id
                attributes["gen_ai.response.model"] = reply.model
            span.set_attributes({k: v for k, v in attributes.items() if v is not None})
            if self._content and reply is not None:
                output = {"role": "assistant", "parts": [_part(b) for b in reply.content], "finish_reason": stop_reason}
                self._set_content(span, {"gen_ai.output.messages": [output]})
        span.set_status(Status(StatusCode.OK))
        self._close_chat(ts)

    def _request_failed(self, data: dict[str, Any], ts: int) -> None:
        span = self._chat
        if span is None:
            return
        _error(span, data)
        self._close_chat(ts)

    def _request_retried(self, data: dict[str, Any], turn: int, ts: int) -> None:
        """The attempt's stream broke: its span fails, and the resend gets its own, from when it goes out."""
        failed = self._chat
        if failed is None:
            return
        _error(failed, data)
        if data.get("fault"):
            failed.set_attribute("agentfsm.stream.fault", str(data["fault"]))
        self._close_chat(ts)
        delay = data.get("delay_s")
        start = ts + int(float(delay) * 1e9) if isinstance(delay, int | float) else ts
        model, max_tokens = self._request
        self._open_chat(model, max_tokens, turn, start, int(data.get("attempt") or 1))
        self._chat_from_retry = True

    # --- tools ---------------------------------------------------------------------------------------

    def _tool_started(self, data: dict[str, Any], ts: int) -> _ToolSpan:
        name, call_id = str(data.get("tool")), str(data.get("tool_use_id"))
        if call_id in self._tools:  # opened already, by a decision about its input (a rewrite)
            return self._tools[call_id]
        tool = self._conv.agent.tool_map.get(name)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            **_COMMON,
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.type": "function",
            CONVERSATION_ID: self._conv.id,
        }
        if tool is not None and tool.description:
            attributes["gen_ai.tool.description"] = tool.description
        span = self._tracer.start_span(
            f"execute_tool {name}", context=self._run_ctx, kind=SpanKind.INTERNAL, attributes=attributes, start_time=ts
        )
        if self._content and span.is_recording():
            reply = self._conv.reply
            arguments = next((b.get("input") for b in (reply.content if reply else []) if b.get("id") == call_id), None)
            self._set_content(span, {"gen_ai.tool.call.arguments": arguments})
        return self._tools.setdefault(call_id, _ToolSpan(span))

    def _tool_finished(self, data: dict[str, Any], ts: int, run: Span) -> None:
        entry = self._tools.get(str(data.get("tool_use_id")))
        if entry is None:  # settled without running here (committed before a restart): no span
            run.add_event("tool.finished", _flat(data), timestamp=ts)
            return
        entry.finished, entry.error = True, bool(data.get("is_error"))
        if entry.end_ns is None:
            entry.end_ns = ts
        if data.get("duration_ms") is not None:
            entry.span.set_attribute("agentfsm.tool.duration_ms", data["duration_ms"])

    def _end_tools(self, error: BaseException | None = None, ts: int | None = None, *, every: bool = False) -> None:
        """End the tool spans whose calls finished, with their results (on the conversation by now);
        ``every``: the ones still running too, failed by ``error``."""
        if not self._tools:
            return
        results = self._sent_results() if self._content else {}
        for call_id, entry in list(self._tools.items()):
            if not entry.finished and not every:
                continue
            span = entry.span
            if not entry.finished:
                self._fail(span, error)
            elif entry.error:
                span.set_attribute(ERROR_TYPE, "tool_error")
                span.set_status(Status(StatusCode.ERROR))
            else:
                span.set_status(Status(StatusCode.OK))
            content = results.get(call_id)
            if content is not None and span.is_recording():
                self._set_content(span, {"gen_ai.tool.call.result": content, "anthropic.tool_result.content": content})
            span.end(end_time=entry.end_ns if entry.finished else ts)
            del self._tools[call_id]

    def _sent_results(self) -> dict[str, list[Any]]:
        """The tool results as the history holds them (the user message that answers the calls), by call id."""
        messages = self._conv.messages
        last = messages[-1].get("content") if messages else None
        found: dict[str, list[Any]] = {}
        for block in last if isinstance(last, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                content = block.get("content")
                found[str(block.get("tool_use_id"))] = (
                    content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
                )
        return found

    # --- content ---------------------------------------------------------------------------------------

    def _set_content(self, span: Span, values: Mapping[str, Any]) -> None:
        """Set content attributes as JSON, scrubbed, each within the byte limit: the oldest input messages go
        first; whatever still does not fit is left out; either way the span says ``anthropic.content.truncated``."""
        truncated = False
        for key, value in values.items():
            if value is None or value == []:
                continue
            value = redact(value, self._secrets)
            text = _json(value)
            if _size(text) > self._limit and key == "gen_ai.input.messages":
                messages = list(value)
                while len(messages) > 1 and _size(text) > self._limit:
                    messages.pop(0)
                    text = _json(messages)
                truncated = True
            if _size(text) > self._limit:
                truncated = True
                continue
            span.set_attribute(key, text)
        if truncated:
            span.set_attribute("anthropic.content.truncated", True)


# --- attribute helpers ---------------------------------------------------------------------------------


def _error(span: Span, data: Mapping[str, Any]) -> None:
    span.set_attribute(ERROR_TYPE, str(data.get("error_type") or "error"))
    if isinstance(data.get("status_code"), int):
        span.set_attribute("http.response.status_code", data["status_code"])
    span.set_status(Status(StatusCode.ERROR, str(data.get("message") or "")))


def _usage_attributes(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """The SDK's usage attributes: input tokens count the cache reads and writes too."""
    if not usage:
        return {}

    def tokens(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    read, write = tokens("cache_read_input_tokens"), tokens("cache_creation_input_tokens")
    return {
        "gen_ai.usage.input_tokens": tokens("input_tokens") + read + write,
        "gen_ai.usage.output_tokens": tokens("output_tokens"),
        "gen_ai.usage.cache_read.input_tokens": read,
        "gen_ai.usage.cache_write.input_tokens": write,
    }


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Event data as span attributes: nested dicts flattened with dots, lists of one scalar type kept,
    other values as JSON; None left out."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if value is None:
            continue
        if isinstance(value, str | bool | int | float):
            out[name] = value
        elif isinstance(value, Mapping):
            out.update(_flat(value, f"{name}."))
        elif (
            isinstance(value, list | tuple)
            and value
            and len({type(v) for v in value}) == 1
            and (isinstance(value[0], str | bool | int | float))
        ):
            out[name] = list(value)
        else:
            out[name] = _json(value)
    return out


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _part(block: Mapping[str, Any]) -> dict[str, Any]:
    """One content block as a part of the GenAI conventions' message schema."""
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "content": block.get("text", "")}
    if kind == "thinking":
        return {"type": "reasoning", "content": block.get("thinking", "")}
    if kind in ("tool_use", "server_tool_use"):
        return {"type": "tool_call", "id": block.get("id"), "name": block.get("name"), "arguments": block.get("input")}
    if kind == "tool_result":
        content = block.get("content")
        return {"type": "tool_call_response", "id": block.get("tool_use_id"), "response": content}
    return {"type": str(kind)}


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, str):
        parts = [{"type": "text", "content": content}]
    else:
        parts = [_part(b) for b in content or [] if isinstance(b, Mapping)]
    return {"role": message.get("role"), "parts": parts}


def _system_parts(system: Any) -> list[dict[str, Any]] | None:
    if isinstance(system, str):
        return [{"type": "text", "content": system}]
    if isinstance(system, list):
        return [_part(b) for b in system if isinstance(b, Mapping)]
    return None
