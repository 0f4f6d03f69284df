"""The simulator's data: what a request looked like and what the script answers with.

A script is a list of replies (or functions that build one from the request).
``ScriptedReply`` holds raw content blocks exactly as the API sends them, so
anything the real API can return (including block types this project does not
model) can be scripted. ``ErrorReply`` is an HTTP error answer.
``RecordedReply`` is an exchange recorded from the real API, replayed as is.
``BatchOutcome`` answers a request inside a Message Batch with ``expired`` or
``canceled``, or with a results line written as given (see ``agentfsm.sim.batches``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, model_validator

Fault = Literal["drop", "error_event", "no_message_delta"]
"""A failure injected into a reply; see ``ScriptedReply.fault``."""


class ScriptError(ValueError):
    """A script item cannot answer the request (for example ``writer`` got a conversation it did not write).

    The simulator answers such a request with HTTP 400 ``invalid_request_error``
    carrying this message, so the client fails clearly instead of retrying.
    """


class SimRequest(BaseModel):
    """One HTTP request the simulator received, as parsed from the wire.

    ``status`` and ``error`` are filled in once the request has been answered
    (observers see them still ``None``).
    """

    n: int = Field(description="1-based position of this request among all requests to this simulator")
    method: str = "POST"
    path: str = "/v1/messages"
    query: str = ""
    headers: dict[str, str] = Field(default_factory=dict, description="lower-cased header names")
    body: dict[str, Any] = Field(default_factory=dict, description="the parsed JSON body ({} if it did not parse)")
    raw_body: bytes = b""
    status: int | None = None
    error: str | None = Field(default=None, description="the error message if the simulator answered with an error")
    batch_id: str | None = Field(
        default=None, description="the Message Batch this request came in; None for a plain Messages request"
    )
    thread_held: int | None = Field(
        default=None,
        description="a request on a message thread: how many of ``body['messages']`` the server's thread held "
        "(0 for a create; ``body`` is the full history the model sees); None without a thread or when the "
        "thread was not found (``body`` is then as sent)",
    )

    @property
    def model(self) -> str:
        value = self.body.get("model")
        return value if isinstance(value, str) else ""

    @property
    def messages(self) -> list[dict[str, Any]]:
        value = self.body.get("messages")
        return [m for m in value if isinstance(m, dict)] if isinstance(value, list) else []

    @property
    def sent_messages(self) -> list[dict[str, Any]]:
        """The messages this request carried on the wire: on a thread, only those the server did not hold."""
        return self.messages[self.thread_held or 0 :]

    @property
    def max_tokens(self) -> int | None:
        value = self.body.get("max_tokens")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def tools(self) -> list[dict[str, Any]]:
        value = self.body.get("tools")
        return [t for t in value if isinstance(t, dict)] if isinstance(value, list) else []

    @property
    def system(self) -> str | list[dict[str, Any]] | None:
        value = self.body.get("system")
        if isinstance(value, str | list):
            return value
        return None

    @property
    def betas(self) -> frozenset[str]:
        """The names in the ``anthropic-beta`` header."""
        return frozenset(b.strip() for b in self.headers.get("anthropic-beta", "").split(",") if b.strip())

    @property
    def is_compaction(self) -> bool:
        """A compaction request: it sends the ``compaction`` parameter and is answered with one compaction block."""
        return isinstance(self.body.get("compaction"), dict)

    @property
    def last_message(self) -> dict[str, Any] | None:
        messages = self.messages
        return messages[-1] if messages else None


class FallbackHop(BaseModel):
    """How a reply was served by a server-side fallback model (see ``replies.served_by_fallback``)."""

    model_config = ConfigDict(frozen=True)

    to: str | None = Field(default=None, description="the serving model; default: the request's first entry")
    category: str | None = "cyber"
    declined: list[dict[str, Any]] = Field(default_factory=list, description="the declining model's partial output")


class ScriptedReply(BaseModel):
    """A model reply: the content blocks and stop reason of one Message.

    ``id`` fields left ``None`` in ``tool_use`` / ``server_tool_use`` blocks (and
    ``tool_use_id`` left ``None`` in server tool results) are filled with fresh,
    deterministic ids each time the reply is served.
    """

    model_config = ConfigDict(frozen=True)

    content: list[dict[str, Any]]
    stop_reason: str | None
    stop_sequence: str | None = None
    stop_details: dict[str, Any] | None = None
    usage: dict[str, Any] | None = Field(default=None, description="merged over the computed usage")
    model: str | None = Field(default=None, description="default: echo the request's model")
    fault: Fault | None = Field(
        default=None,
        description=(
            "streamed: drop = connection cut after some deltas; error_event = SSE error event mid-stream; "
            "no_message_delta = clean end before message_delta. Not streamed: drop = connection closed "
            "without a response; error_event = HTTP 529; no_message_delta = stop_reason null"
        ),
    )
    credit_token: bool = Field(
        default=False,
        description="a refusal that carries a fallback credit token (minted when the request has the fallback-credit "
        "beta, as the API does)",
    )
    fallback: FallbackHop | None = Field(
        default=None, description="served by a server-side fallback model (the request must send `fallbacks`)"
    )
    truncated_input_json: str | None = Field(
        default=None,
        description=(
            "the final block is a tool_use cut off by max_tokens: streamed, this partial JSON is sent as "
            "input_json_delta chunks and the block gets no content_block_stop"
        ),
    )


class ErrorReply(BaseModel):
    """An HTTP error answer in the API's error shape."""

    model_config = ConfigDict(frozen=True)

    status: int
    error_type: str
    message: str
    headers: dict[str, str] = Field(default_factory=dict)
    #: ``error.details.error_code`` (``storage_not_ready``, ``ramp_limit_exceeded``, ...); None sends no details.
    error_code: str | None = None


class RecordedReply(BaseModel):
    """An exchange recorded from the real API, served as it was recorded (see ``agentfsm.sim.recorded``).

    ``body`` is the recorded JSON body (a Message or an error), ``sse`` the
    recorded event stream; at least one is set. A streaming request gets
    ``sse`` byte for byte, a non-streaming one gets ``body`` (or the Message
    folded from ``sse`` when only the stream was recorded).
    """

    model_config = ConfigDict(frozen=True)

    status: int = 200
    body: dict[str, Any] | None = None
    sse: str | None = None
    source: str = Field(default="", description="where the recording came from (a file name), for messages")

    @model_validator(mode="after")
    def _has_an_answer(self) -> RecordedReply:
        if self.body is None and self.sse is None:
            raise ValueError("a RecordedReply needs the recorded JSON body or the recorded SSE text")
        return self


class BatchOutcome(BaseModel):
    """A request inside a Message Batch that is not answered by the script's reply.

    ``expired`` or ``canceled``: it is never processed, and its result says so. ``line``: its line in
    the results file is ``line``, exactly as given (``{custom_id}`` in it becomes the request's
    ``custom_id``) — not JSON, JSON that is not an object, a result of any shape — to test a reader
    against a damaged results file; the batch's ``request_counts`` count it as ``succeeded`` (the
    API did the work; the line was damaged on the way).

    Only a request that came in a batch can be answered so (``SimRequest.batch_id`` is set); a
    plain Messages request answered with one gets HTTP 400 naming the mistake.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["expired", "canceled", "line"]
    line: str | None = None

    @model_validator(mode="after")
    def _one_line(self) -> BatchOutcome:
        if (self.kind == "line") != (self.line is not None):
            raise ValueError("BatchOutcome: give line=... exactly when kind is 'line'")
        if self.line is not None and ("\n" in self.line or "\r" in self.line):
            raise ValueError("BatchOutcome: line is one line of the results file: no line break in it")
        return self


Reply: TypeAlias = ScriptedReply | ErrorReply | RecordedReply | BatchOutcome
ReplyFn: TypeAlias = Callable[[SimRequest], Reply]
ScriptItem: TypeAlias = ScriptedReply | ErrorReply | RecordedReply | BatchOutcome | ReplyFn
Script: TypeAlias = Sequence[ScriptItem] | ReplyFn
