"""Tool calls and their results: the wire-level values around one call.

:class:`ToolCall` is one ``tool_use`` block from the model and :class:`ToolResult`
one ``tool_result`` block going back. :func:`to_tool_result` turns whatever a
tool returned into a result the API accepts; :func:`for_history` makes every
result (whichever executor made it) safe to send and keep — cut to the policy's
limit, the client's credentials and anything shaped like an Anthropic key redacted (``agentfsm.redaction``).
:func:`traceback_of` keeps the traceback of a tool that raised, for the developer:
on the result and its ``tool.finished`` event, never in what the model reads.
:class:`ToolContext` is what a tool that asks for it learns about its call: above all a key that stays the same
for the call wherever and however often it runs (``idempotency_key``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import traceback
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, SupportsIndex, TypeGuard

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from agentfsm.errors import ToolCallError, ToolReturnError
from agentfsm.redaction import redact_text
from agentfsm.tools.limits import cut_content

# Content block types the API accepts inside a tool_result's ``content`` list.
# A list of dicts whose "type" is not one of these is data, not content blocks
# (e.g. ``[{"type": "bug", ...}]``), and is sent as JSON text instead.
TOOL_RESULT_BLOCK_TYPES = frozenset({"text", "image", "document", "search_result", "tool_reference", "browser_state"})


#: Prefixed to what the key is a hash of: a new derivation would get a new prefix, never collide with this one.
_KEY_PREFIX = "agentfsm.tool_call.v1"


def idempotency_key(conversation_id: str, tool_use_id: str) -> str:
    """The key of one tool call: ``sha256("agentfsm.tool_call.v1" NUL conversation_id NUL tool_use_id)`` in hex.

    64 characters of ``[0-9a-f]``, a valid idempotency key for payment and e-mail APIs (Stripe takes up to 255).
    It depends on nothing else: the same call has the same key on a resume, on another worker, in an engine's
    retry and in a copy of the history, and no two calls share one (the API makes every ``tool_use`` id unique
    in a conversation).
    """
    data = "\0".join((_KEY_PREFIX, conversation_id, tool_use_id)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


class ToolContext(BaseModel):
    """What a tool learns about the call it is running for: declare a parameter of this type to receive it
    (it is not part of the tool's input schema; the model never sees it).

    ``idempotency_key`` is the one to hand to an API that deduplicates (``idempotency_key(conversation_id,
    tool_use_id)``): a call that runs again — an idempotent tool re-run after a crash, an engine retrying the
    step — runs with the same key. ``attempt`` is 1 the first time the call runs and n when the ledger knows it
    was handed to a tool n-1 times before (docs/03-tools.md, "A key per call").
    """

    model_config = ConfigDict(frozen=True)

    idempotency_key: str
    conversation_id: str
    tool_use_id: str
    attempt: int = 1

    @classmethod
    def of(cls, conversation_id: str, tool_use_id: str, attempt: int = 1) -> ToolContext:
        """The context of call ``tool_use_id`` of conversation ``conversation_id`` (its key derived)."""
        return cls(
            idempotency_key=idempotency_key(conversation_id, tool_use_id),
            conversation_id=conversation_id,
            tool_use_id=tool_use_id,
            attempt=attempt,
        )


class ToolCall(BaseModel):
    """One client ``tool_use`` block from the model. ``input`` is raw: anything the model sent.

    ``context`` is the call's :class:`ToolContext`, set when the conversation hands it to the executor
    (None on a call read from a reply): not a field, so it is neither stored nor sent nor compared.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    input: Any = Field(default_factory=dict)
    _context: ToolContext | None = PrivateAttr(default=None)

    @property
    def context(self) -> ToolContext | None:
        """The call's context, when a conversation is running it (see :meth:`with_context`)."""
        return self._context

    def with_context(self, context: ToolContext | None) -> ToolCall:
        """A copy of this call carrying ``context``."""
        call = self.model_copy()
        call._context = context
        return call

    def __eq__(self, other: object) -> bool:
        """Calls are equal when their fields are (the context is not one)."""
        if not isinstance(other, ToolCall):
            return NotImplemented
        return (self.id, self.name, self.input) == (other.id, other.name, other.input)

    def __hash__(self) -> int:
        return hash((self.id, self.name))

    @classmethod
    def from_block(cls, block: Mapping[str, Any] | BaseModel) -> ToolCall:
        """Read a ``tool_use`` block (a dict, or an SDK ``ToolUseBlock``)."""
        data: Mapping[str, Any] = block.model_dump() if isinstance(block, BaseModel) else block
        kind = data.get("type", "tool_use")
        if kind != "tool_use":
            raise ValueError(f"not a client tool_use block: type {kind!r}")
        return cls.model_validate({key: data[key] for key in ("id", "name", "input") if key in data})


class ToolResult(BaseModel):
    """One ``tool_result`` block going back to the model; ``duration_ms`` and ``traceback`` are for events
    only (``to_block`` leaves them out).

    ``traceback`` is set when the tool raised (``DefaultExecutor`` sets it): the formatted traceback from
    the tool's own frame down, for the developer. The model reads only ``content`` (the exception's type
    and message): a traceback would cost it tokens and show it the machine's paths.
    """

    tool_use_id: str
    content: str | list[dict[str, Any]]
    is_error: bool = False
    duration_ms: float | None = None
    traceback: str | None = None

    def to_block(self) -> dict[str, Any]:
        """The wire block; ``is_error`` is present only when true."""
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": self.tool_use_id, "content": self.content}
        if self.is_error:
            block["is_error"] = True
        return block


class ToolResults(list[ToolResult]):
    """``conv.tool_results``: a list that takes ``ToolResult`` models only, and says so at once."""

    @staticmethod
    def checked(value: object) -> ToolResult:
        if not isinstance(value, ToolResult):
            raise TypeError(
                f"conv.tool_results holds agentfsm.ToolResult models, got {type(value).__name__} {value!r:.80}: "
                "pass ToolResult(tool_use_id=call.id, content='...', is_error=False); to answer tool calls "
                "from outside, use actions.answer_with({tool_use_id: content})"
            )
        return value

    @classmethod
    def of(cls, values: object) -> ToolResults:
        if isinstance(values, str | bytes | dict) or not isinstance(values, Iterable):
            raise TypeError(
                f"conv.tool_results takes a list of agentfsm.ToolResult, got {type(values).__name__}: pass "
                "[ToolResult(tool_use_id=call.id, content='...')], or answer with actions.answer_with(...)"
            )
        return cls(cls.checked(v) for v in values)

    def append(self, value: ToolResult) -> None:
        super().append(self.checked(value))

    def insert(self, index: SupportsIndex, value: ToolResult) -> None:
        super().insert(index, self.checked(value))

    def extend(self, values: Iterable[ToolResult]) -> None:
        super().extend(ToolResults.of(values))

    def __iadd__(self, values: Iterable[ToolResult]) -> ToolResults:  # type: ignore[override,misc]
        self.extend(values)
        return self

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, ToolResults.of(value) if isinstance(index, slice) else self.checked(value))


def error_result(call: ToolCall, err: ToolCallError) -> ToolResult:
    """The ``is_error`` result for a call that failed; its text is ``str(err)``."""
    return ToolResult(tool_use_id=call.id, content=str(err), is_error=True)


#: The most characters of a traceback kept on a result (its head and its end, where the error is).
MAX_TRACEBACK_CHARS = 10_000
_TRACEBACK_HEAD = 2_000
#: The executor's own frames (this package) stand above the tool's: a traceback starts below them.
_TOOLS_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def traceback_of(exc: BaseException) -> str:
    """The traceback of an exception a tool raised, as Python prints it, trimmed to the tool's frames.

    It starts at the tool's own function (the executor's frames above it say nothing about the bug) and
    goes down to where the exception was raised, with any chained exceptions; a longer one than
    ``MAX_TRACEBACK_CHARS`` keeps its first lines (the tool's file and line) and its end (the error).
    Credentials are redacted later, with every other field (``for_history``, the event log).
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and _in_tools_package(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:  # an exception that cannot be formatted must not crash the run
        return f"{type(exc).__name__} (its traceback could not be formatted)\n"
    if len(text) <= MAX_TRACEBACK_CHARS:
        return text
    cut = f"\n[... {len(text) - MAX_TRACEBACK_CHARS:,} characters of the traceback cut by agentfsm ...]\n"
    tail = MAX_TRACEBACK_CHARS - _TRACEBACK_HEAD
    return text[:_TRACEBACK_HEAD] + cut + text[-tail:]


def _in_tools_package(filename: str) -> bool:
    return os.path.dirname(os.path.abspath(filename)) == _TOOLS_PACKAGE


def to_tool_result(call: ToolCall, value: object, tool_name: str) -> ToolResult:
    """Turn what a tool returned into a result the API accepts.

    ``str`` as is; a list of tool_result content blocks as is; a pydantic model as
    its JSON; ``None`` as ``""``; other values as JSON (values the ``json`` module
    cannot encode natively, such as datetimes, dataclasses or models inside a
    list, are encoded the way pydantic encodes them). Anything that cannot be
    encoded becomes an ``is_error`` result carrying a :class:`ToolReturnError`.
    """
    content: str | list[dict[str, Any]]
    try:
        if isinstance(value, str):
            content = value
        elif value is None:
            content = ""
        elif isinstance(value, BaseModel):
            content = value.model_dump_json()
        elif _is_content_blocks(value):
            content = value
        else:
            content = json.dumps(value, ensure_ascii=False, default=pydantic_core.to_jsonable_python)
    except Exception:
        return error_result(call, ToolReturnError(tool_name, value))
    return ToolResult(tool_use_id=call.id, content=content)


def for_history(result: ToolResult, *, limit: int | None, secrets: Sequence[str] = ()) -> ToolResult:
    """``result`` as it may enter the history and be sent: every result passes here, whatever made it.

    A custom executor's list content that is not valid content blocks becomes JSON text (as
    ``to_tool_result`` does); characters that cannot be sent (lone surrogates, which would fail
    the request's UTF-8 encoding) become U+FFFD; the client's credentials, and anything shaped like an
    Anthropic key (``sk-ant-…``, another account's included), become ``[REDACTED]`` (the model must not
    read them, nor a store keep them: what is stored is what is sent); and the text is cut to ``limit``
    characters with a marker (``agentfsm.tools.limits``). Idempotent, and the same object when nothing changes.
    """
    content: str | list[dict[str, Any]] = result.content
    if isinstance(content, list) and content and not _is_content_blocks(content):
        try:
            content = json.dumps(content, ensure_ascii=False, default=pydantic_core.to_jsonable_python)
        except Exception:
            content = f"the tool returned content blocks that cannot be sent (a list of {len(content)} items)"
    clean = tuple(s for s in secrets if s)
    content = _scrub(content, clean)
    content = cut_content(content, limit)
    tb = result.traceback
    if tb is not None and (clean or "sk-ant-" in tb):  # kept on the result (and in a store): no credentials
        tb = redact_text(tb, clean)
    if content is result.content and tb is result.traceback:
        return result
    return result.model_copy(update={"content": content, "traceback": tb})


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """``value`` with lone surrogates replaced and ``secrets`` and key-shaped text redacted in every string; the
    same object if clean."""
    if isinstance(value, str):
        if _SURROGATE.search(value):  # a valid pair becomes its character, a lone one U+FFFD
            value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return redact_text(value, secrets) if secrets or "sk-ant-" in value else value
    if isinstance(value, list):
        items = [_scrub(v, secrets) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, dict):
        fields = {k: _scrub(v, secrets) for k, v in value.items()}
        return value if all(fields[k] is v for k, v in value.items()) else fields
    return value


def _is_content_blocks(value: object) -> TypeGuard[list[dict[str, Any]]]:
    """A non-empty list of blocks the API accepts in a tool_result; anything else is data, sent as JSON."""
    return isinstance(value, list) and len(value) > 0 and all(_is_content_block(b) for b in value)


def _is_content_block(block: object) -> bool:
    """The fields the API requires of each block type are there (a text block with no text is rejected)."""
    if not isinstance(block, dict) or block.get("type") not in TOOL_RESULT_BLOCK_TYPES:
        return False
    kind = block["type"]
    if kind == "text":
        text = block.get("text")
        return isinstance(text, str) and bool(text.strip())
    if kind in ("image", "document"):
        return isinstance(block.get("source"), dict)
    if kind == "search_result":
        return (
            isinstance(block.get("source"), str)
            and isinstance(block.get("title"), str)
            and isinstance(block.get("content"), list)
        )
    return True
