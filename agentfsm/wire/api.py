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
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import anthropic
from pydantic import BaseModel, ConfigDict

from agentfsm.wire.sse import ReplyAssembler, StreamError, parse_sse

#: Above this, the SDK refuses a non-streaming request unless a timeout is given
#: (it expects such a request to take more than 10 minutes: 3600 s x tokens / 128k).
NONSTREAMING_TOKEN_LIMIT = 21_333

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

    @property
    def rejects_prefill(self) -> bool:
        """The API's answer to an assistant prefill on a model that does not accept one."""
        lowered = self.message.lower()
        return self.status_code == 400 and any(m in lowered for m in _PREFILL_REJECTION_MARKERS)


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
        body = raw.http_response.json()
    except Exception as exc:  # every failure of the request is data for the machine, not a crash
        return failure_from(exc)
    return _reply_from(body)


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
        body = raw.http_response.json()
    except Exception as exc:
        return failure_from(exc)
    return _reply_from(body)


class StreamCall:
    """One streamed request: iterate it for text deltas as they arrive; ``outcome`` is set when it ends.

    Never raises for API or transport errors: a stream that drops, carries an
    ``error`` event, or ends before its stop_reason becomes a ``RequestFailure``
    with ``fault`` set, which the driver may retry.
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
        return _reply_from(assembler.body())


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


def _reply_from(body: object) -> Reply | RequestFailure:
    if not isinstance(body, dict):
        return RequestFailure(type="invalid_response", message=f"expected a JSON object, got {body!r:.200}")
    return Reply.model_validate(body)


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
        )
    return RequestFailure(type=type(exc).__name__, message=str(exc) or repr(exc))


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
