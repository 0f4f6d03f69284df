"""Builders for script items: one function per kind of answer the real API gives.

Replies hold raw content blocks as the API sends them. Tool ids left ``None``
are filled with fresh ``toolu_01…`` / ``srvtoolu_01…`` ids when served. Error
builders give the API's error types and messages; retryable ones carry
``retry-after-ms: 1`` so the SDK's built-in retries do not slow tests down.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentfsm.sim.model import (
    BatchOutcome,
    ErrorReply,
    FallbackHop,
    Fault,
    RecordedReply,
    Reply,
    ReplyFn,
    ScriptedReply,
    ScriptError,
    ScriptItem,
    SimRequest,
)
from agentfsm.sim.recorded import Recording, load
from agentfsm.sim.validation import PREFILL_NOT_SUPPORTED
from agentfsm.sim.wire import RETRY_NOW, is_retryable
from agentfsm.sim.writer import writer

__all__ = [
    "authentication_error",
    "batch_canceled",
    "batch_expired",
    "batch_result_line",
    "by_model",
    "compaction",
    "compaction_block",
    "context_window_exceeded",
    "empty_end_turn",
    "failed_compaction",
    "http_error",
    "max_tokens",
    "mcp_tool_call",
    "message",
    "overloaded",
    "pause_turn",
    "prefill_not_supported",
    "prompt_too_long",
    "ramp_limited",
    "rate_limited",
    "recorded",
    "redacted_thinking_block",
    "refusal",
    "served_by_fallback",
    "server_error",
    "server_search",
    "stop_sequence",
    "storage_not_ready",
    "text",
    "text_block",
    "thinking_block",
    "tool_use",
    "tool_use_block",
    "tool_uses",
    "truncated_tool_use",
    "unknown",
    "url_fetch_disabled",
    "with_compaction",
    "with_fault",
    "writer",
]

# --- content blocks -------------------------------------------------------------------------------


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(name: str, input: dict[str, Any], *, id: str | None = None) -> dict[str, Any]:
    """A client tool call; ``id=None`` gets a fresh ``toolu_01…`` id when served."""
    return {"type": "tool_use", "id": id, "name": name, "input": input}


def _signature(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return base64.b64encode(b"\x12\x8c\x01\n" + digest * 4).decode()


def thinking_block(thinking: str, signature: str | None = None) -> dict[str, Any]:
    """A thinking block; the default signature is an opaque base64 string derived from the text."""
    return {"type": "thinking", "thinking": thinking, "signature": signature or _signature(thinking)}


def redacted_thinking_block(data: str | None = None) -> dict[str, Any]:
    return {"type": "redacted_thinking", "data": data or _signature("redacted")}


def _lead(text: str | None) -> list[dict[str, Any]]:
    return [text_block(text)] if text else []


# --- replies --------------------------------------------------------------------------------------


def message(content: list[dict[str, Any]], stop_reason: str | None, **kw: Any) -> ScriptedReply:
    """Any reply, from raw content blocks (``kw``: stop_sequence, stop_details, usage, model, fault, …)."""
    return ScriptedReply(content=content, stop_reason=stop_reason, **kw)


def text(text: str, stop_reason: str | None = "end_turn") -> ScriptedReply:
    return ScriptedReply(content=[text_block(text)], stop_reason=stop_reason)


def max_tokens(text: str) -> ScriptedReply:
    """Text cut off by the request's ``max_tokens``."""
    return ScriptedReply(content=[text_block(text)], stop_reason="max_tokens")


def stop_sequence(text: str, sequence: str) -> ScriptedReply:
    """Text that stopped at one of the request's ``stop_sequences`` (the sequence itself is not in the text)."""
    return ScriptedReply(content=[text_block(text)], stop_reason="stop_sequence", stop_sequence=sequence)


def tool_use(name: str, input: dict[str, Any], *, id: str | None = None, text: str | None = None) -> ScriptedReply:
    """One client tool call, optionally after some text."""
    return ScriptedReply(content=[*_lead(text), tool_use_block(name, input, id=id)], stop_reason="tool_use")


def tool_uses(calls: list[tuple[str, dict[str, Any]]], *, text: str | None = None) -> ScriptedReply:
    """Several client tool calls in one reply (parallel tool use)."""
    blocks = [tool_use_block(name, input) for name, input in calls]
    return ScriptedReply(content=[*_lead(text), *blocks], stop_reason="tool_use")


def truncated_tool_use(name: str, partial_json: str, *, text: str | None = None) -> ScriptedReply:
    """A tool call cut off by ``max_tokens``.

    As the real API: not streamed, the block's ``input`` is ``{}``; streamed,
    ``partial_json`` arrives as input_json_delta pieces and the block never gets
    a content_block_stop.
    """
    return ScriptedReply(
        content=[*_lead(text), tool_use_block(name, {})],
        stop_reason="max_tokens",
        truncated_input_json=partial_json,
    )


_RESULT_SITES = (
    ("Overview and latest updates", "https://en.wikipedia.org/wiki/{slug}"),
    ("{query} - News and analysis", "https://www.reuters.com/search/news?query={slug}"),
    ("What to know about {query}", "https://apnews.com/hub/{slug}"),
)


def _search_results(query: str) -> list[dict[str, Any]]:
    slug = "_".join(query.split()) or "search"
    results = []
    for i, (title, url) in enumerate(_RESULT_SITES):
        results.append(
            {
                "type": "web_search_result",
                "title": title.format(query=query),
                "url": url.format(slug=slug),
                "encrypted_content": _signature(f"{query}:{i}") * 3,
                "page_age": None,
            }
        )
    return results


def _search_pair(query: str) -> list[dict[str, Any]]:
    call = {"type": "server_tool_use", "id": None, "name": "web_search", "input": {"query": query}}
    result = {"type": "web_search_tool_result", "tool_use_id": None, "content": _search_results(query)}
    return [call, result]


def pause_turn(*, query: str = "latest news", text: str | None = None, completed_searches: int = 1) -> ScriptedReply:
    """A web_search turn the server paused: finished searches, then one ``server_tool_use`` left without a result.

    Sent back unchanged as the last assistant message, it is a resume (accepted
    even by models that reject prefill).
    """
    blocks = _lead(text)
    for i in range(completed_searches):
        blocks += _search_pair(query if i == 0 else f"{query} ({i + 1})")
    blocks.append(text_block("Let me search for more details."))
    blocks.append(_search_pair(f"{query} ({completed_searches + 1})")[0])
    return ScriptedReply(content=blocks, stop_reason="pause_turn")


def server_search(query: str, answer: str) -> ScriptedReply:
    """A completed web_search turn: the search, its results, then the answer; end_turn."""
    return ScriptedReply(content=[*_search_pair(query), text_block(answer)], stop_reason="end_turn")


def mcp_tool_call(
    server_name: str,
    name: str,
    input: dict[str, Any],
    result: str | list[dict[str, Any]],
    *,
    is_error: bool = False,
    answer: str | None = "Done.",
) -> ScriptedReply:
    """A turn in which the API's MCP connector called a tool of ``server_name`` itself: the ``mcp_tool_use``
    block, its ``mcp_tool_result`` (``result``: text, or text blocks), then ``answer`` (None: none); end_turn.

    Both blocks are the server's work, kept verbatim in the history; the client runs nothing.
    """
    call = {"type": "mcp_tool_use", "id": None, "name": name, "server_name": server_name, "input": input}
    content = result if isinstance(result, str) else [dict(b) for b in result]
    outcome = {"type": "mcp_tool_result", "tool_use_id": None, "is_error": is_error, "content": content}
    blocks: list[dict[str, Any]] = [call, outcome]
    if answer is not None:
        blocks.append(text_block(answer))
    return ScriptedReply(content=blocks, stop_reason="end_turn")


def refusal(
    *,
    category: str | None = "cyber",
    explanation: str = "This request was refused due to policy.",
    text: str = "",
    credit_token: bool = False,
) -> ScriptedReply:
    """A safety refusal; ``stop_details`` says why. Any partial text before the refusal goes in ``text``.

    ``credit_token=True``: ``stop_details`` also carries a ``fallback_credit_token`` (and
    ``fallback_has_prefill_claim``) when the request sent the fallback-credit beta, as the API does; the
    simulator redeems it on a retry (see ``agentfsm.sim.serverside``).
    """
    details = {"type": "refusal", "category": category, "explanation": explanation}
    return ScriptedReply(content=_lead(text), stop_reason="refusal", stop_details=details, credit_token=credit_token)


def compaction_block(
    summary: str | None,
    *,
    encrypted_content: str | None = None,
    signature: str | None = None,
    tool_changes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``compaction`` block as the API sends it: ``{"type", "content"}`` (``content`` None: a failed
    compaction), plus the newer fields when given (``encrypted_content``, ``signature``, ``tool_changes``)."""
    block: dict[str, Any] = {"type": "compaction", "content": summary}
    if encrypted_content is not None:
        block["encrypted_content"] = encrypted_content
    if signature is not None:
        block["signature"] = signature
    if tool_changes is not None:
        block["tool_changes"] = tool_changes
    return block


def compaction(summary: str | None = "Summary of the conversation so far.", **block: Any) -> ScriptedReply:
    """A reply holding one compaction block, ``stop_reason: "compaction"``: the answer to a compaction request,
    or a server-side compaction paused by ``pause_after_compaction``. ``block``: see ``compaction_block``.

    Its usage is a compaction pass (``usage.iterations``), with 0 in the top-level fields.
    """
    return ScriptedReply(content=[compaction_block(summary, **block)], stop_reason="compaction")


def failed_compaction() -> ScriptedReply:
    """A compaction that produced no summary: the block's ``content`` is null (the server treats it as a no-op)."""
    return compaction(None)


def with_compaction(
    reply: ScriptedReply, summary: str | None = "Summary of the conversation so far.", **block: Any
) -> ScriptedReply:
    """``reply`` after the server compacted on its own (a ``compact_20260112`` edit without a pause): the compaction
    block first, then the reply's content, under the reply's stop reason; usage has both iterations."""
    return reply.model_copy(update={"content": [compaction_block(summary, **block), *reply.content]})


def served_by_fallback(
    reply: ScriptedReply, *, to: str | None = None, category: str | None = "cyber", declined_text: str | None = None
) -> ScriptedReply:
    """``reply`` as a server-side fallback model serves it after the requested model declined.

    Served, it holds the declining model's partial output (``declined_text``), a ``fallback`` block
    (``from``: the requested model, ``to``: ``to`` or the request's first ``fallbacks`` entry), then
    ``reply``'s content; ``model`` names the serving model and ``usage.iterations`` ends in a
    ``fallback_message`` entry. The request must send ``fallbacks``.
    """
    hop = FallbackHop(to=to, category=category, declined=_lead(declined_text))
    return reply.model_copy(update={"fallback": hop})


def empty_end_turn() -> ScriptedReply:
    """No content at all, stop_reason end_turn (what models sometimes do right after tool results)."""
    return ScriptedReply(content=[], stop_reason="end_turn")


def context_window_exceeded(text: str) -> ScriptedReply:
    """Generation stopped at the context window before ``max_tokens``."""
    return ScriptedReply(content=[text_block(text)], stop_reason="model_context_window_exceeded")


def unknown(stop_reason: str | None, text: str = "Done.") -> ScriptedReply:
    """A reply with any raw stop_reason, including values no client knows and ``None``."""
    return ScriptedReply(content=[text_block(text)], stop_reason=stop_reason)


def recorded(source: str | Path | Mapping[str, Any] | Recording) -> RecordedReply:
    """A reply recorded from the real API, served as recorded: a path to a recording file, its JSON, or a Recording.

    A streaming request gets the recorded SSE byte for byte; a non-streaming one
    the recorded JSON body (folded from the SSE if only that was recorded).
    Error recordings answer with their recorded status and body.
    """
    return load(source).reply()


def with_fault(reply: ScriptedReply, fault: Fault) -> ScriptedReply:
    """``reply`` with a transport fault injected (see ``ScriptedReply.fault``)."""
    return reply.model_copy(update={"fault": fault})


# --- errors ---------------------------------------------------------------------------------------


def http_error(
    status: int, error_type: str, message: str, *, retry_after_ms: int | None = None, error_code: str | None = None
) -> ErrorReply:
    """Any HTTP error. Retryable statuses get ``retry-after-ms`` (default 1 ms) so SDK retries are instant.
    ``error_code`` is sent as ``error.details.error_code`` (the SDK raises its class for that code)."""
    headers: dict[str, str] = {}
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    elif is_retryable(status):
        headers.update(RETRY_NOW)
    return ErrorReply(status=status, error_type=error_type, message=message, headers=headers, error_code=error_code)


def rate_limited() -> ErrorReply:
    return http_error(
        429,
        "rate_limit_error",
        "This request would exceed your organization's rate limit of 50 requests per minute. For details, refer to: "
        "https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please "
        "reduce the prompt length or the maximum tokens requested, or try again later.",
    )


def server_error() -> ErrorReply:
    return http_error(500, "api_error", "Internal server error")


def overloaded() -> ErrorReply:
    return http_error(529, "overloaded_error", "Overloaded")


def storage_not_ready() -> ErrorReply:
    """503 ``storage_not_ready``: the workspace is still being connected to its storage (retry in a minute)."""
    return http_error(
        503,
        "api_error",
        "This workspace isn't ready yet: it's still being connected to its storage. Try again in a minute.",
        error_code="storage_not_ready",
    )


def ramp_limited() -> ErrorReply:
    """429 ``ramp_limit_exceeded``: usage is growing faster than the ramp limit allows (retry after retry-after)."""
    return http_error(
        429, "rate_limit_error", "The request would exceed a ramp limit.", error_code="ramp_limit_exceeded"
    )


def url_fetch_disabled() -> ErrorReply:
    """400 ``organization_url_fetch_disabled``: URL sources, ``web_fetch`` and ``mcp_servers`` are off."""
    return http_error(
        400,
        "invalid_request_error",
        "URL image and document sources, the web_fetch tool and mcp_servers are turned off for this organization.",
        error_code="organization_url_fetch_disabled",
    )


def by_model(replies: Mapping[str, ScriptItem], *, default: ScriptItem | None = None) -> ReplyFn:
    """A script item that answers by the request's model: ``replies[model]``, else ``default``; a model in
    neither is a script error (a 400). For a fallback chain: ``by_model({"claude-opus-4-8": overloaded(),
    "claude-sonnet-5-5": text("Hi.")})`` answers each hop's request from its own model's entry."""

    def answer(request: SimRequest) -> Reply:
        item = replies.get(request.model, default)
        if item is None:
            raise ScriptError(f"by_model has no reply for model {request.model!r} (and no default)")
        return item(request) if callable(item) else item

    return answer


def prefill_not_supported() -> ErrorReply:
    return http_error(400, "invalid_request_error", PREFILL_NOT_SUPPORTED)


def prompt_too_long() -> ErrorReply:
    return http_error(400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum")


def authentication_error() -> ErrorReply:
    return http_error(401, "authentication_error", "invalid x-api-key")


# --- Message Batches: requests that are never processed ------------------------------------------------


def batch_expired() -> BatchOutcome:
    """A request inside a Message Batch whose result is ``expired`` (the batch ran out of time before it)."""
    return BatchOutcome(kind="expired")


def batch_canceled() -> BatchOutcome:
    """A request inside a Message Batch whose result is ``canceled``."""
    return BatchOutcome(kind="canceled")


def batch_result_line(line: str) -> BatchOutcome:
    """A request inside a Message Batch whose line in the results file is ``line``, as given: not JSON, JSON
    that is not an object, a result of any shape. ``{custom_id}`` in it becomes the request's ``custom_id``."""
    return BatchOutcome(kind="line", line=line)
