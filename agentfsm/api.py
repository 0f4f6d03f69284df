"""The boundary with the Messages API: one request out, one ``Reply`` or ``RequestFailure`` back.

Replies are read from the raw JSON body (``with_raw_response``), not from the
SDK's typed objects, so content blocks this version does not know — and
fields the SDK would drop or default — are carried into the history exactly
as the API sent them.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import anthropic
from pydantic import BaseModel, ConfigDict

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


class RequestFailure(BaseModel):
    """A request that produced no reply: an HTTP error after the SDK's retries, or a transport fault."""

    type: str
    message: str
    status_code: int | None = None

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
    resource: Any = client.beta.messages if betas else client.messages
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
    try:
        raw = resource.with_raw_response.create(**kwargs)
        body = raw.http_response.json()
    except Exception as exc:  # every failure of the request is data for the machine, not a crash
        return failure_from(exc)
    if not isinstance(body, dict):
        return RequestFailure(type="invalid_response", message=f"expected a JSON object, got {body!r:.200}")
    return Reply.model_validate(body)


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
