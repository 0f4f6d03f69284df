"""The boundary with the Messages API: one request out, one ``Reply`` or ``RequestFailure`` back.

Four ways to send, one shape of answer: ``send`` / ``asend`` (plain JSON,
sync and async) and ``StreamCall`` (streamed, iterated sync or async for its
text deltas).

Replies are read from the raw JSON body (``with_raw_response``), not from the
SDK's typed objects, so content blocks this version does not know — and
fields the SDK would drop or default — are carried into the history exactly
as the API sent them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import anthropic
from pydantic import BaseModel, ConfigDict, ValidationError

from agentfsm.errors import MissingAPIKeyError
from agentfsm.wire.api_errors import classify
from agentfsm.wire.sse import (
    SURROGATE_ESCAPE,
    MalformedStreamError,
    ReplyAssembler,
    StreamError,
    parse_sse,
    without_lone_surrogates,
)

#: Above this, the SDK refuses a non-streaming request unless a timeout is given
#: (it expects such a request to take more than 10 minutes: 3600 s x tokens / 128k).
NONSTREAMING_TOKEN_LIMIT = 21_333

#: The HTTP status of each API error type, where only the type is known (a batch result's error, a
#: recorded error body whose status was not kept).
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_PREFILL_REJECTION_MARKERS = ("prefill", "must end with a user message")


class Reply(BaseModel):
    """One assistant reply, as the API sent it."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    model: str | None = None
    content: list[dict[str, Any]] = []
    stop_reason: str | None = None
    stop_sequence: str | None = None
    stop_details: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None

    @property
    def container_id(self) -> str | None:
        """The id of the code-execution container the reply ran in (``container.id``), if any."""
        container = (self.model_extra or {}).get("container")
        if isinstance(container, dict) and isinstance(container.get("id"), str):
            return str(container["id"])
        return None


class RequestFailure(BaseModel):
    """A request that produced no reply: an HTTP error after the SDK's retries, or a transport fault."""

    type: str
    message: str
    status_code: int | None = None
    #: Set when a stream broke after it opened ("dropped", "error_event", "incomplete"): the SDK
    #: does not retry those, so the driver does, per ``Policy.stream_retries``.
    fault: str | None = None
    #: The body's ``error.details.error_code``, when it has one (``storage_not_ready``, ``ramp_limit_exceeded``, ...).
    error_code: str | None = None
    #: Seconds the API asked to wait before a retry (``retry-after-ms`` / ``retry-after``), when it said.
    retry_after: float | None = None

    @property
    def kind(self) -> str:
        """What kind of failure this is (``agentfsm.wire.api_errors``): ``overloaded``, ``rate_limited``, ..."""
        return classify(self.type, self.status_code, self.error_code)

    @property
    def rejects_prefill(self) -> bool:
        """The API's answer to an assistant prefill on a model that does not accept one."""
        lowered = self.message.lower()
        return self.status_code == 400 and any(m in lowered for m in _PREFILL_REJECTION_MARKERS)


#: Usage counts the machine adds up: each must be a non-negative integer (or null) when present.
USAGE_COUNTS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def reply_from_text(text: str) -> Reply | RequestFailure:
    """``reply_from`` for the raw text of a 200 body (which may not be JSON at all)."""
    try:
        body = json.loads(text)
    except ValueError:
        return RequestFailure(
            type="invalid_response", message=f"the reply body is not JSON ({len(text)} characters of something else)"
        )
    # A lone surrogate can only arrive as a JSON escape: one scan of the text spares walking the body.
    return _reply(body, may_hold_surrogates=SURROGATE_ESCAPE.search(text) is not None)


def reply_from(body: object) -> Reply | RequestFailure:
    """A 200 body (decoded JSON) as a ``Reply``, or a ``RequestFailure`` saying what is wrong with it.

    Checked here, once, for every way a reply arrives (plain, streamed, batched): the shapes
    the machine relies on — ``stop_reason`` a string or null, ``content`` a list of objects each
    with a string ``type``, a ``text`` block's text a string, a client ``tool_use`` block's
    ``id`` and ``name`` strings and ``input`` an object, the usage counts non-negative integers,
    ``stop_sequence`` a string or null, ``stop_details`` an object or null — and nothing more:
    block types and fields this version does not know pass through untouched.

    A body that breaks one of those (or is not a message at all, or is an ``error`` object sent
    with status 200) is ``RequestFailure(type="invalid_response")``; a message whose client
    ``tool_use`` blocks share an id (two results could not be told apart) is
    ``RequestFailure(type="protocol_error")``. The message says what was wrong, never the values.
    A lone UTF-16 surrogate in any string (JSON can carry one as an escape; no request can) becomes
    U+FFFD, so the history stays sendable and storable.
    """
    return _reply(body, may_hold_surrogates=True)


def _reply(body: object, *, may_hold_surrogates: bool) -> Reply | RequestFailure:
    problem = _reply_problem(body)
    if problem is not None:
        kind, message = problem
        return RequestFailure(type=kind, message=message)
    assert isinstance(body, dict)
    if may_hold_surrogates:
        body = without_lone_surrogates(body)
    try:
        return Reply.model_validate(body)
    except ValidationError as exc:  # every shape Reply declares is checked above; this is a safety net
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the body"
        return RequestFailure(type="invalid_response", message=f"the reply is not a message: {where}: {first['msg']}")


def _kind(value: object) -> str:
    """How JSON would name ``value``'s type (never the value: it may quote a credential)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _reply_problem(body: object) -> tuple[str, str] | None:
    if not isinstance(body, dict):
        return "invalid_response", f"the reply body is {_kind(body)}, not a message object"
    if body.get("type") == "error":
        error = body.get("error")
        error = error if isinstance(error, dict) else {}
        kind, said = error.get("type"), error.get("message")
        detail = f"{kind if isinstance(kind, str) else 'unknown'}: {said if isinstance(said, str) else '(no message)'}"
        return "invalid_response", f"status 200 with an error object instead of a message ({detail})"
    if "type" in body and body["type"] != "message":
        return "invalid_response", f"the reply's type is {_shown(body['type'])}, not 'message'"
    if "content" not in body:
        return "invalid_response", "the reply has no 'content': it is not a message"
    content = body["content"]
    if not isinstance(content, list):
        return "invalid_response", f"the reply's content is {_kind(content)}, not a list of content blocks"
    ids: set[str] = set()
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            return "invalid_response", f"content[{i}] is {_kind(block)}, not a content block object"
        kind = block.get("type")
        if not isinstance(kind, str):
            return "invalid_response", f"content[{i}] has no string 'type' (it is {_kind(kind)})"
        if kind == "text" and "text" in block and not isinstance(block["text"], str):
            return "invalid_response", f"content[{i}] is a text block whose text is {_kind(block['text'])}"
        if kind == "tool_use":
            for field in ("id", "name"):
                if not isinstance(block.get(field), str) or not block[field]:
                    got = "missing" if field not in block else _kind(block[field])
                    return "invalid_response", f"content[{i}] is a tool_use block whose {field!r} is {got}"
            if not isinstance(block.get("input"), dict):
                got = "missing" if "input" not in block else _kind(block["input"])
                return "invalid_response", f"content[{i}] is a tool_use block whose 'input' is {got}, not an object"
            if block["id"] in ids:
                return "protocol_error", (
                    f"the reply holds two client tool_use blocks with the same id (content[{i}] repeats an earlier "
                    "one): their results could not be told apart, so no tool was run"
                )
            ids.add(block["id"])
    for field in ("stop_reason", "stop_sequence", "id", "model", "role"):
        if body.get(field) is not None and not isinstance(body[field], str):
            return "invalid_response", f"the reply's {field} is {_kind(body[field])}, not a string or null"
    if body.get("role") not in (None, "assistant"):
        return "invalid_response", "the reply's role is not 'assistant'"
    if body.get("stop_details") is not None and not isinstance(body["stop_details"], dict):
        return "invalid_response", f"the reply's stop_details is {_kind(body['stop_details'])}, not an object or null"
    usage = body.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            return "invalid_response", f"the reply's usage is {_kind(usage)}, not an object"
        for field in USAGE_COUNTS:
            count = usage.get(field)
            if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
                shown = "a negative number" if isinstance(count, int | float) and count < 0 else _kind(count)
                return "invalid_response", f"the reply's usage.{field} is {shown}, not a non-negative integer"
    return None


def _shown(value: object) -> str:
    """A short type name from the API (e.g. ``'completion'``) quoted, anything else described by its kind."""
    if isinstance(value, str) and len(value) <= 40 and value.replace("_", "").isalnum():
        return repr(value)
    return _kind(value)


def request_timeout(max_tokens: int, configured: float | None, long_timeout: float) -> float | None:
    """The ``timeout`` to pass for a request, or None to keep the client's.

    High rungs of the max_tokens ladder exceed what the SDK allows without
    streaming unless a timeout is explicit.
    """
    if configured is not None:
        return configured
    if max_tokens > NONSTREAMING_TOKEN_LIMIT:
        return long_timeout
    return None


def send(
    client: anthropic.Anthropic,
    params: Mapping[str, Any],
    *,
    betas: Sequence[str] = (),
    timeout: float | None = None,
) -> Reply | RequestFailure:
    """Send one non-streaming request; never raises for API or transport errors."""
    resource, kwargs = _prepare(client, params, betas, timeout)
    try:
        raw = resource.with_raw_response.create(**kwargs)
        text = raw.http_response.text
    except Exception as exc:  # every failure of the request is data for the machine, not a crash
        return failure_from(exc)
    return reply_from_text(text)


async def asend(
    client: anthropic.AsyncAnthropic,
    params: Mapping[str, Any],
    *,
    betas: Sequence[str] = (),
    timeout: float | None = None,
) -> Reply | RequestFailure:
    """``send`` for an ``AsyncAnthropic`` client."""
    resource, kwargs = _prepare(client, params, betas, timeout)
    try:
        raw = await resource.with_raw_response.create(**kwargs)
        text = raw.http_response.text
    except Exception as exc:
        return failure_from(exc)
    return reply_from_text(text)


class StreamCall:
    """One streamed request: iterate it for text deltas as they arrive; ``outcome`` is set when it ends.

    Never raises for API or transport errors: a stream that drops, carries an
    ``error`` event, ends before its stop_reason, or leaves a content block open
    becomes a ``RequestFailure`` with ``fault`` set, which the driver may retry; a
    malformed event or reply is ``invalid_response`` (not retried, like a malformed
    JSON body).
    """

    def __init__(
        self,
        client: anthropic.Anthropic | anthropic.AsyncAnthropic,
        params: Mapping[str, Any],
        *,
        betas: Sequence[str] = (),
        timeout: float | None = None,
    ) -> None:
        self._resource, self._kwargs = _prepare(client, params, betas, timeout)
        self._kwargs["stream"] = True
        self.outcome: Reply | RequestFailure | None = None
        self._opened = False

    def __iter__(self) -> Iterator[str]:
        assembler = ReplyAssembler()
        try:
            with self._resource.with_streaming_response.create(**self._kwargs) as response:
                self._opened = True
                if not _is_event_stream(response.headers):
                    self.outcome = _not_a_stream(response.headers, response.text())
                    return
                for event, data in parse_sse(response.iter_lines()):
                    text = assembler.feed(event, data)
                    if text:
                        yield text
        except Exception as exc:
            self.outcome = self._failure(exc)
            return
        self.outcome = self._finish(assembler)

    async def __aiter__(self) -> AsyncIterator[str]:
        assembler = ReplyAssembler()
        try:
            async with self._resource.with_streaming_response.create(**self._kwargs) as response:
                self._opened = True
                if not _is_event_stream(response.headers):
                    self.outcome = _not_a_stream(response.headers, await response.text())
                    return
                async for event, data in _aparse(response.iter_lines()):
                    text = assembler.feed(event, data)
                    if text:
                        yield text
        except Exception as exc:
            self.outcome = self._failure(exc)
            return
        self.outcome = self._finish(assembler)

    def _failure(self, exc: Exception) -> RequestFailure:
        if isinstance(exc, StreamError):
            return RequestFailure(type=exc.error_type, message=str(exc), fault="error_event")
        if isinstance(exc, MalformedStreamError):  # the server's bytes, not the connection: not retried
            return RequestFailure(type="invalid_response", message=f"malformed stream: {exc}")
        failure = failure_from(exc)
        if self._opened:  # the SDK retries failures before the stream opens, never after
            failure = failure.model_copy(update={"fault": "dropped"})
        return failure

    @staticmethod
    def _finish(assembler: ReplyAssembler) -> Reply | RequestFailure:
        if not assembler.stopped:
            return RequestFailure(
                type="incomplete_stream",
                message="the stream ended before message_delta: the reply has no stop_reason",
                fault="incomplete",
            )
        unclosed = assembler.unclosed()
        if unclosed is not None:
            return RequestFailure(type="incomplete_stream", message=unclosed, fault="incomplete")
        return _reply(assembler.body(), may_hold_surrogates=False)  # the assembler replaced them as events came


def _is_event_stream(headers: Mapping[str, str]) -> bool:
    return str(headers.get("content-type", "")).lower().startswith("text/event-stream")


def _not_a_stream(headers: Mapping[str, str], text: str) -> RequestFailure:
    """A 200 answer to a streamed request that is not an event stream: malformed, whatever it holds."""
    kind = str(headers.get("content-type", "")).split(";")[0].strip() or "no content type"
    return RequestFailure(
        type="invalid_response",
        message=f"a streamed request was answered with {kind} ({len(text)} characters), not an event stream",
    )


async def _aparse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    buffered: list[str] = []
    async for line in lines:
        buffered.append(line)
        if not line:
            for item in parse_sse(buffered):
                yield item
            buffered = []
    for item in parse_sse(buffered):
        yield item


def _prepare(
    client: anthropic.Anthropic | anthropic.AsyncAnthropic,
    params: Mapping[str, Any],
    betas: Sequence[str],
    timeout: float | None,
) -> tuple[Any, dict[str, Any]]:
    """The SDK resource a request goes through (beta when betas are set) and its keyword arguments."""
    resource: Any = client.beta.messages if betas else client.messages
    return resource, _create_kwargs(resource, params, betas, timeout)


def _create_kwargs(
    resource: Any, params: Mapping[str, Any], betas: Sequence[str], timeout: float | None
) -> dict[str, Any]:
    known = _parameters_of(resource)
    kwargs: dict[str, Any] = {k: v for k, v in params.items() if k in known}
    unknown = {k: v for k, v in params.items() if k not in known}
    if unknown:
        # Parameters this SDK version has no argument for still reach the API, in the body.
        kwargs["extra_body"] = unknown
    if betas:
        kwargs["betas"] = list(betas)
    if timeout is not None:
        kwargs["timeout"] = timeout
    return kwargs


_CREATE_PARAMETERS: dict[type, frozenset[str]] = {}


def _parameters_of(resource: Any) -> frozenset[str]:
    """The keyword arguments the installed SDK's ``create`` accepts (looked up once per resource class)."""
    kind = type(resource)
    known = _CREATE_PARAMETERS.get(kind)
    if known is None:
        known = _CREATE_PARAMETERS[kind] = frozenset(inspect.signature(kind.create).parameters) - {"self"}
    return known


def failure_from(exc: BaseException) -> RequestFailure:
    """Describe an exception raised by the SDK (or its transport) as a RequestFailure."""
    if isinstance(exc, anthropic.APIStatusError):
        message = _error_message(exc.body) or str(exc)
        return RequestFailure(
            type=_error_type(exc.body) or type(exc).__name__,
            message=message,
            status_code=exc.status_code,
            error_code=_error_code(exc.body),
            retry_after=_retry_after(exc.response.headers),
        )
    return RequestFailure(type=type(exc).__name__, message=str(exc) or repr(exc))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait a response asked for, in seconds (``retry-after-ms``, else ``retry-after`` in seconds)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name, ""))
        except ValueError:
            continue
        if value >= 0 and value == value and value != float("inf"):
            return value * scale
    return None


def _error_code(body: object) -> str | None:
    """``error.details.error_code`` (read off the body: SDKs before 2.17 do not parse it)."""
    if isinstance(body, dict):
        err = body.get("error")
        details = err.get("details") if isinstance(err, dict) else None
        if isinstance(details, dict) and isinstance(details.get("error_code"), str):
            return str(details["error_code"])
    return None


def _error_type(body: object) -> str | None:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("type"), str):
            return str(err["type"])
    return None


def _error_message(body: object) -> str | None:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
    return None


_C = TypeVar("_C", anthropic.Anthropic, anthropic.AsyncAnthropic)


def client_from_environment(kind: type[_C]) -> _C:
    """An SDK client of ``kind`` made from the environment (``ANTHROPIC_API_KEY``, ...), or ``MissingAPIKeyError``."""
    try:
        client = kind()
    except anthropic.AnthropicError as exc:
        raise MissingAPIKeyError() from exc
    # The SDK defers a missing credential to the first request; report it now, clearly.
    if not (client.api_key or client.auth_token or getattr(client, "credentials", None)):
        raise MissingAPIKeyError()
    return client
