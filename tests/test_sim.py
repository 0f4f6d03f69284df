"""The simulator driven through the real ``anthropic`` client: builders, script, errors, faults, observers, ids."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, cast

import anthropic
import httpx2
import pytest
import realtraffic
from sdk_errors import assert_dropped

from agentfsm import Agent
from agentfsm.sim import ErrorReply, ScriptedReply, ScriptError, SimRequest, Simulator, count_tokens
from agentfsm.sim import replies as r
from agentfsm.sim.lineup import KNOWN_MODELS, sdk_lineup

MODEL = "claude-haiku-4-5"
USER: list[Any] = [{"role": "user", "content": "What is the weather in Hanoi?"}]


# These tests send invalid requests on purpose: keep wire-rule checkers registered elsewhere out.
pytestmark = pytest.mark.usefixtures("no_foreign_observers")


def first_text(message: Any) -> str:
    """The text of a reply's first block (typed loosely: the SDK's content union has no common ``text``)."""
    return str(message.content[0].text)


# --- helpers: one reply through each client path -----------------------------------------------


def _create(sim: Simulator, **kw: Any) -> anthropic.types.Message:
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 200, "messages": USER, **kw}
    message: anthropic.types.Message = sim.client(max_retries=0).messages.create(**params)
    return message


def _stream(sim: Simulator, **kw: Any) -> anthropic.types.Message:
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 200, "messages": USER, **kw}
    with sim.client(max_retries=0).messages.stream(**params) as stream:
        return stream.get_final_message()


def _acreate(sim: Simulator, **kw: Any) -> anthropic.types.Message:
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 200, "messages": USER, **kw}

    async def go() -> anthropic.types.Message:
        message: anthropic.types.Message = await sim.async_client(max_retries=0).messages.create(**params)
        return message

    return asyncio.run(go())


def _astream(sim: Simulator, **kw: Any) -> anthropic.types.Message:
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 200, "messages": USER, **kw}

    async def go() -> anthropic.types.Message:
        async with sim.async_client(max_retries=0).messages.stream(**params) as stream:
            return await stream.get_final_message()

    return asyncio.run(go())


PATHS: dict[str, Callable[..., anthropic.types.Message]] = {
    "json": _create,
    "stream": _stream,
    "async_json": _acreate,
    "async_stream": _astream,
}


def _blocks(message: anthropic.types.Message) -> list[dict[str, Any]]:
    out = []
    for block in message.content:
        data = block.to_dict(exclude_none=True)
        data.pop("parsed_output", None)
        out.append(data)
    return out


def _raw_events(sim: Simulator, **kw: Any) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 200, "messages": USER, **kw}
    stream = sim.client(max_retries=0).messages.create(stream=True, **params)
    return [event.to_dict() for event in stream]


# --- every builder, through every client path --------------------------------------------------

CITED = {
    "type": "text",
    "text": "It is 31°C.",
    "citations": [
        {
            "type": "web_search_result_location",
            "cited_text": "Hanoi: 31°C, humid",
            "url": "https://example.com/hanoi",
            "title": "Hanoi weather",
            "encrypted_index": "EpABCkYIBxgCKkA=",
        }
    ],
}

BUILDERS: dict[str, Callable[[], ScriptedReply]] = {
    "text": lambda: r.text("It is 31°C and humid in Hanoi today."),
    "max_tokens": lambda: r.max_tokens("The history of Hanoi begins in the third cent"),
    "stop_sequence": lambda: r.stop_sequence("Answer: 42", "</answer>"),
    "tool_use": lambda: r.tool_use("get_weather", {"location": "Hanoi", "unit": "c"}, text="Let me check."),
    "tool_uses": lambda: r.tool_uses([("get_weather", {"location": "Hanoi"}), ("get_time", {"tz": "Asia/Bangkok"})]),
    "pause_turn": lambda: r.pause_turn(query="Hanoi weather", text="I'll search.", completed_searches=2),
    "server_search": lambda: r.server_search("Hanoi weather", "It is 31°C in Hanoi."),
    "refusal": lambda: r.refusal(category="bio", explanation="Refused.", text="I can't help"),
    "refusal_empty": lambda: r.refusal(),
    "empty_end_turn": r.empty_end_turn,
    "context_window_exceeded": lambda: r.context_window_exceeded("A very long answer that hit the window"),
    "unknown": lambda: r.unknown("compaction"),
    "unknown_null": lambda: r.unknown(None, text="no stop reason"),
    "thinking": lambda: r.message(
        [r.thinking_block("The user wants weather."), r.redacted_thinking_block(), r.text_block("31°C.")], "end_turn"
    ),
    "explicit_tool_id": lambda: r.tool_use("f", {}, id="toolu_01Explicit00000000000000"),
    "citations": lambda: r.message([*r.server_search("q", "x").content[:2], CITED], "end_turn"),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", BUILDERS)
def test_every_builder_same_message_on_every_path(name: str, path: str) -> None:
    reply = BUILDERS[name]()
    reference = _create(Simulator([reply]))
    got = PATHS[path](Simulator([reply]))  # a fresh simulator makes the same ids
    assert got.id == reference.id and got.id.startswith("msg_01") and len(got.id) == 28
    assert _blocks(got) == _blocks(reference)
    assert (got.stop_reason, got.stop_sequence, got.stop_details) == (
        reply.stop_reason,
        reply.stop_sequence,
        reference.stop_details,
    )
    assert got.usage.to_dict() == reference.usage.to_dict()
    assert got.model == MODEL and got.role == "assistant" and got.type == "message"


def test_builder_shapes() -> None:
    text = _create(Simulator([r.text("hi")]))
    assert _blocks(text) == [{"type": "text", "text": "hi"}] and text.stop_reason == "end_turn"

    stop = _create(Simulator([r.stop_sequence("x", "END")]))
    assert (stop.stop_reason, stop.stop_sequence) == ("stop_sequence", "END")

    calls = _create(Simulator([r.tool_uses([("a", {"x": 1}), ("b", {"y": [1, 2]})], text="Two calls.")]))
    assert [b.type for b in calls.content] == ["text", "tool_use", "tool_use"]
    ids = [b.id for b in calls.content if b.type == "tool_use"]
    assert len(set(ids)) == 2 and all(i.startswith("toolu_01") and len(i) == 30 for i in ids)

    refusal = _create(Simulator([r.refusal(category="cyber", explanation="Nope.")]))
    assert refusal.stop_reason == "refusal" and refusal.content == []
    assert refusal.stop_details is not None
    assert refusal.stop_details.to_dict() == {"type": "refusal", "category": "cyber", "explanation": "Nope."}

    assert _create(Simulator([r.empty_end_turn()])).content == []
    assert _create(Simulator([r.unknown(None)])).stop_reason is None
    assert str(_create(Simulator([r.unknown("brand_new_reason")])).stop_reason) == "brand_new_reason"
    assert _create(Simulator([r.context_window_exceeded("x")])).stop_reason == "model_context_window_exceeded"
    thinking = _create(
        Simulator([r.message([r.thinking_block("hm", signature="sig"), r.text_block("ok")], "end_turn")])
    )
    assert _blocks(thinking)[0] == {"type": "thinking", "thinking": "hm", "signature": "sig"}


def test_pause_turn_shape() -> None:
    message = _create(Simulator([r.pause_turn(query="q", completed_searches=3)]))
    kinds = [b.type for b in message.content]
    assert message.stop_reason == "pause_turn"
    assert kinds == ["server_tool_use", "web_search_tool_result"] * 3 + ["text", "server_tool_use"]
    calls = [b for b in message.content if b.type == "server_tool_use"]
    results = [b for b in message.content if b.type == "web_search_tool_result"]
    assert all(c.id.startswith("srvtoolu_01") and len(c.id) == 33 for c in calls)
    assert [res.tool_use_id for res in results] == [c.id for c in calls[:3]]  # the last call has no result
    first = cast(Any, results[0].content)[0].to_dict()
    assert set(first) == {"type", "title", "url", "encrypted_content", "page_age"}
    assert message.usage.server_tool_use is not None and message.usage.server_tool_use.web_search_requests == 3


def test_truncated_tool_use_json_and_stream() -> None:
    reply = r.truncated_tool_use("make_file", '{"filename": "taxes.txt", "lines": ["# TAX GUIDE', text="Sure.")
    plain = _create(Simulator([reply]))
    assert plain.stop_reason == "max_tokens" and plain.usage.output_tokens == 200
    assert plain.content[-1].type == "tool_use" and plain.content[-1].input == {}  # what the real API sends

    streamed = _stream(Simulator([reply]))
    assert streamed.stop_reason == "max_tokens" and streamed.content[-1].type == "tool_use"
    assert streamed.content[-1].input == {"filename": "taxes.txt", "lines": []}  # the SDK parses partial JSON

    events = _raw_events(Simulator([reply]))
    stops = [e["index"] for e in events if e["type"] == "content_block_stop"]
    assert stops == [0]  # the text block stops; the cut tool_use (index 1) never does
    sent = "".join(e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta" and e["index"] == 1)
    assert sent == '{"filename": "taxes.txt", "lines": ["# TAX GUIDE'


def test_raw_stream_event_sequence() -> None:
    events = _raw_events(Simulator([r.tool_use("get_weather", {"location": "Hanoi"}, text="Checking the weather.")]))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    start = events[0]["message"]
    assert start["stop_reason"] is None and start["content"] == [] and start["usage"]["output_tokens"] == 1
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 2
    tool_start = next(e for e in events if e["type"] == "content_block_start" and e["index"] == 1)
    assert tool_start["content_block"]["input"] == {}
    json_pieces = [e["delta"]["partial_json"] for e in events if e.get("delta", {}).get("type") == "input_json_delta"]
    assert json_pieces[0] == "" and "".join(json_pieces) == '{"location": "Hanoi"}'
    text_pieces = [e["delta"]["text"] for e in events if e.get("delta", {}).get("type") == "text_delta"]
    assert len(text_pieces) > 1 and "".join(text_pieces) == "Checking the weather."
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_sse_framing_like_the_real_api() -> None:
    sim = Simulator([r.text("Xin chào, Hà Nội! " * 3)])
    http = httpx2.Client(transport=httpx2.MockTransport(sim.handle))
    body = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": USER}
    response = http.post("https://api.anthropic.com/v1/messages", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_011C")
    frames = response.text.split("\n\n")
    assert frames[-1] == "" and all(f.startswith("event: ") for f in frames[:-1])
    names = [f.split("\n")[0].removeprefix("event: ") for f in frames[:-1]]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert frames[2] == 'event: ping\ndata: {"type": "ping"}'
    datas = [f.split("\n")[1].removeprefix("data: ") for f in frames[:-1]]
    assert any(d.endswith(" }") for d in datas)  # compact JSON padded before the closing brace
    assert "à" in response.text and "\\u00e0" not in response.text  # raw UTF-8, not \\u escapes
    assert all(json.loads(d) for d in datas)


def test_json_body_like_the_real_api() -> None:
    sim = Simulator([r.text("hi")])
    http = httpx2.Client(transport=httpx2.MockTransport(sim.handle))
    response = http.post(
        "https://api.anthropic.com/v1/messages", json={"model": MODEL, "max_tokens": 5, "messages": USER}
    )
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == [
        "model",
        "id",
        "type",
        "role",
        "content",
        "stop_reason",
        "stop_sequence",
        "stop_details",
        "usage",
    ]
    assert list(body["usage"]) == [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "cache_creation",
        "output_tokens",
        "service_tier",
        "inference_geo",
    ]
    assert response.headers["request-id"].startswith("req_011C")


# --- tokens and usage ----------------------------------------------------------------------------


def test_count_tokens() -> None:
    assert count_tokens("") == 0
    assert count_tokens("a") == 1
    assert count_tokens("abcd") == 1
    assert count_tokens("abcde") == 2
    assert count_tokens("x" * 400) == 100


def test_usage_counts_system_messages_tools_and_output() -> None:
    tools = [{"name": "get_weather", "description": "d", "input_schema": {"type": "object", "properties": {}}}]
    base = _create(Simulator([r.text("x" * 40)]))
    bigger = _create(Simulator([r.text("x" * 40)]), system="s" * 400, tools=tools)
    assert base.usage.input_tokens == count_tokens(USER[0]["content"])
    assert bigger.usage.input_tokens == base.usage.input_tokens + 100 + count_tokens(json.dumps(tools))
    assert base.usage.output_tokens == 10
    assert _create(Simulator([r.max_tokens("cut")]), max_tokens=77).usage.output_tokens == 77
    assert _create(Simulator([r.text("y" * 4000)]), max_tokens=7).usage.output_tokens == 7
    override = _create(Simulator([r.message([r.text_block("x")], "end_turn", usage={"cache_read_input_tokens": 9})]))
    assert override.usage.cache_read_input_tokens == 9


# --- script semantics ----------------------------------------------------------------------------


def test_script_exhausted_is_a_clear_400() -> None:
    sim = Simulator([r.text("one"), r.text("two")])
    assert first_text(_create(sim)) == "one"
    assert first_text(_create(sim)) == "two"
    with pytest.raises(anthropic.BadRequestError) as info:
        sim.client().messages.create(model=MODEL, max_tokens=10, messages=USER)  # default retries: 400 is final
    # What the simulator promises is the API's error body; how the SDK words its exception is the SDK's.
    why = "simulator script exhausted: 2 replies were scripted and request #3 has none"
    assert info.value.status_code == 400
    assert info.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": why},
        "request_id": info.value.request_id,
    }
    assert why in str(info.value)
    assert len(sim.requests) == 3 and sim.replies_served == 2
    assert sim.requests[-1].status == 400
    assert sim.requests[-1].error == why


def test_callable_items_and_single_callable_script() -> None:
    seen: list[int] = []

    def echo(request: SimRequest) -> ScriptedReply:
        seen.append(request.n)
        return r.text(f"you said {request.messages[-1]['content']}")

    sim = Simulator([echo, r.text("fixed")])
    assert first_text(_create(sim)) == "you said What is the weather in Hanoi?"
    assert first_text(_create(sim)) == "fixed"
    assert seen == [1]

    forever = Simulator(echo)
    for _ in range(5):
        _create(forever)
    assert forever.replies_served == 5 and seen == [1, 1, 2, 3, 4, 5]


def test_script_errors_answer_400_and_do_not_consume() -> None:
    calls = 0

    def picky(request: SimRequest) -> ScriptedReply:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ScriptError("picky: not this conversation")
        if calls == 2:
            raise KeyError("boom")
        return r.text("finally")

    sim = Simulator([picky])
    with pytest.raises(anthropic.BadRequestError, match="picky: not this conversation"):
        _create(sim)
    with pytest.raises(anthropic.BadRequestError, match="simulator script item raised KeyError"):
        _create(sim)
    assert first_text(_create(sim)) == "finally"
    assert sim.replies_served == 1


def test_script_items_are_checked_up_front() -> None:
    with pytest.raises(TypeError, match="pass a list of replies"):
        Simulator(r.text("hi"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="script item 1 is a str"):
        Simulator([r.text("hi"), "hello"])  # type: ignore[list-item]


def test_request_recording() -> None:
    sim = Simulator([r.text("a"), r.text("b")])
    tools = [{"name": "t", "description": "d", "input_schema": {"type": "object"}}]
    _create(sim, system="be brief", tools=tools)
    _stream(sim)
    first, second = sim.requests
    assert (first.n, second.n) == (1, 2)
    assert first.path == "/v1/messages" and first.method == "POST" and first.query == ""
    assert first.model == MODEL and first.max_tokens == 200 and first.system == "be brief"
    assert first.tools == tools and first.messages == USER and first.last_message == USER[-1]
    assert first.stream is False and second.stream is True
    assert first.headers["authorization"].startswith("Bearer sk-ant-sim-")
    assert "anthropic-version" in first.headers
    assert json.loads(first.raw_body) == first.body
    assert first.status == 200 and first.error is None


def test_beta_endpoint() -> None:
    sim = Simulator([r.text("beta ok")])
    message = sim.client().beta.messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert first_text(message) == "beta ok"
    assert sim.requests[0].path == "/v1/messages"  # SDK 2.12 keeps beta=true as a qualifier, not in the URL
    http = httpx2.Client(transport=httpx2.MockTransport(sim.handle))
    sim.script.append(r.text("beta query ok"))
    body = {"model": MODEL, "max_tokens": 5, "messages": USER}
    response = http.post("https://api.anthropic.com/v1/messages?beta=true", json=body)
    assert response.status_code == 200 and sim.requests[1].query == "beta=true"


def test_other_paths_are_404() -> None:
    sim = Simulator([r.text("unused")])
    with pytest.raises(anthropic.NotFoundError) as info:
        sim.client(max_retries=0).models.list()
    assert info.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "Not Found"},
        "request_id": info.value.request_id,
    }
    assert sim.replies_served == 0 and sim.requests[0].method == "GET"


def test_ids_fresh_per_serve_and_deterministic_per_instance() -> None:
    reply = r.tool_use("f", {"a": 1})
    sim = Simulator([reply, reply, reply])
    ids = [cast(Any, _create(sim).content[0]).id for _ in range(3)]
    assert len(set(ids)) == 3
    again = Simulator([reply, reply, reply])
    assert [cast(Any, _create(again).content[0]).id for _ in range(3)] == ids
    assert reply.content[0]["id"] is None  # the script item itself is never mutated
    explicit = _create(Simulator([r.tool_use("f", {}, id="toolu_mine")]))
    assert cast(Any, explicit.content[0]).id == "toolu_mine"


def test_model_override() -> None:
    reply = r.message([r.text_block("x")], "end_turn", model="claude-haiku-4-5-20251001")
    assert _create(Simulator([reply])).model == "claude-haiku-4-5-20251001"


# --- errors ---------------------------------------------------------------------------------------

ERRORS: list[tuple[Callable[[], ErrorReply], type[anthropic.APIStatusError], int, str]] = [
    (r.rate_limited, anthropic.RateLimitError, 429, "rate_limit_error"),
    (r.server_error, anthropic.InternalServerError, 500, "api_error"),
    (r.overloaded, anthropic.OverloadedError, 529, "overloaded_error"),
    (r.prefill_not_supported, anthropic.BadRequestError, 400, "invalid_request_error"),
    (r.prompt_too_long, anthropic.BadRequestError, 400, "invalid_request_error"),
    (r.authentication_error, anthropic.AuthenticationError, 401, "authentication_error"),
    (lambda: r.http_error(409, "conflict_error", "busy"), anthropic.ConflictError, 409, "conflict_error"),
]


@pytest.mark.parametrize("path", ["json", "stream", "async_json", "async_stream"])
@pytest.mark.parametrize(("builder", "exc_type", "status", "error_type"), ERRORS)
def test_error_builders(
    builder: Callable[[], ErrorReply],
    exc_type: type[anthropic.APIStatusError],
    status: int,
    error_type: str,
    path: str,
) -> None:
    reply = builder()
    sim = Simulator([reply])
    with pytest.raises(exc_type) as info:
        PATHS[path](sim)
    err = info.value
    assert err.status_code == status
    assert err.body == {
        "type": "error",
        "error": {"type": error_type, "message": reply.message},
        "request_id": err.request_id,
    }
    assert err.request_id is not None and err.request_id.startswith("req_011C")
    assert err.response.headers["x-should-retry"] == ("true" if status in (409, 429, 500, 529) else "false")
    assert ("retry-after-ms" in err.response.headers) == (status in (409, 429, 500, 529))


def test_error_messages_are_the_apis() -> None:
    assert r.prefill_not_supported().message == (
        "This model does not support assistant message prefill. The conversation must end with a user message."
    )
    assert r.prompt_too_long().message == "prompt is too long: 210000 tokens > 200000 maximum"
    assert r.http_error(503, "api_error", "x", retry_after_ms=250).headers == {"retry-after-ms": "250"}
    assert r.http_error(400, "invalid_request_error", "x").headers == {}


def test_retryable_errors_are_retried_instantly_by_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)  # the SDK's wait before a retry, recorded, not slept
    sim = Simulator([r.rate_limited(), r.overloaded(), r.text("third time lucky")])
    message = sim.client(max_retries=2).messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert first_text(message) == "third time lucky"
    assert waits == [0.001, 0.001]  # retry-after-ms: 1, not the SDK's 0.5 s+ backoff
    assert [q.status for q in sim.requests] == [429, 529, 200]
    assert [q.headers["x-stainless-retry-count"] for q in sim.requests] == ["0", "1", "2"]


# --- stream faults --------------------------------------------------------------------------------

CUT = "peer closed connection without sending complete message body (incomplete chunked read)"
LONG = "The quick brown fox jumps over the lazy dog, again and again, until the stream is cut. " * 2


def test_fault_drop() -> None:
    # Streamed: the connection is cut mid-body, after some text has already arrived; the SDK does not retry.
    sim = Simulator([r.with_fault(r.text(LONG), "drop")])
    received: list[str] = []
    client = sim.client(max_retries=0)
    with (
        pytest.raises(Exception) as info,  # which class depends on the SDK: assert_dropped
        client.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream,
    ):
        received.extend(stream.text_stream)
    assert_dropped(info.value, CUT)
    assert received and LONG.startswith("".join(received)) and "".join(received) != LONG
    assert sim.requests[0].status == 200

    # Async streamed: the same.
    async def astream() -> None:
        client = Simulator([r.with_fault(r.text(LONG), "drop")]).async_client(max_retries=0)
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream:
            await stream.get_final_message()

    with pytest.raises(Exception) as ainfo:
        asyncio.run(astream())
    assert_dropped(ainfo.value, CUT)

    # Not streamed: no response at all (the SDK wraps it in anthropic.APIConnectionError).
    sim = Simulator([r.with_fault(r.text("x"), "drop")])
    with pytest.raises(anthropic.APIConnectionError) as info:
        _create(sim)
    assert_dropped(info.value, "Server disconnected without sending a response")
    assert sim.requests[0].status is None

    # ...and, being a connection error, the SDK retries it: the next reply answers.
    sim = Simulator([r.with_fault(r.text("x"), "drop"), r.text("retried")])
    retried = sim.client(max_retries=1).messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert first_text(retried) == "retried"


def test_fault_error_event() -> None:
    # Streamed: an SSE `error` event on HTTP 200. The SDK raises a generic anthropic.APIStatusError (status 200,
    # not OverloadedError) carrying the event body; it does not retry it.
    sim = Simulator([r.with_fault(r.text(LONG), "error_event"), r.text("never reached")])
    with pytest.raises(anthropic.APIStatusError) as info:
        _stream(sim)
    assert type(info.value) is anthropic.APIStatusError and info.value.status_code == 200
    assert info.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert sim.replies_served == 1

    with pytest.raises(anthropic.APIStatusError) as ainfo:
        _astream(Simulator([r.with_fault(r.text(LONG), "error_event")]))
    assert ainfo.value.body == info.value.body

    # Not streamed: HTTP 529 -> anthropic.OverloadedError (a status the SDK retries; _create asks for none).
    sim = Simulator([r.with_fault(r.text("x"), "error_event")])
    with pytest.raises(anthropic.OverloadedError) as oinfo:
        _create(sim)
    assert oinfo.value.status_code == 529 and len(sim.requests) == 1
    assert isinstance(oinfo.value.body, dict) and oinfo.value.body["error"]["type"] == "overloaded_error"


def test_fault_no_message_delta() -> None:
    # Streamed: the stream ends cleanly after the content blocks. The SDK raises nothing; the final message
    # has stop_reason None (a dropped stream, not a finished turn).
    reply = r.with_fault(r.tool_use("f", {"a": 1}, text="Calling."), "no_message_delta")
    for path in ("stream", "async_stream"):
        message = PATHS[path](Simulator([reply]))
        assert message.stop_reason is None and [b.type for b in message.content] == ["text", "tool_use"]
        assert cast(Any, message.content[1]).input == {"a": 1}
    events = _raw_events(Simulator([reply]))
    assert [e["type"] for e in events][-1] == "content_block_stop"

    # Not streamed: a JSON body whose stop_reason is null.
    message = _create(Simulator([reply]))
    assert message.stop_reason is None and message.stop_sequence is None


# --- observers --------------------------------------------------------------------------------------


def test_observers_see_every_request_of_every_simulator() -> None:
    seen: list[tuple[int, str, int | None]] = []

    def observer(request: SimRequest) -> None:
        seen.append((request.n, request.model, request.status))

    Simulator.observers.append(observer)
    first = Simulator([r.text("a")])
    second = Simulator([r.text("b")])
    _create(first)
    _stream(second)
    with pytest.raises(anthropic.BadRequestError):
        _create(first, messages=[])  # invalid requests are observed too
    assert seen == [(1, MODEL, None), (1, MODEL, None), (2, MODEL, None)]  # observed before being answered


def test_observer_exception_reaches_the_caller() -> None:
    def checker(request: SimRequest) -> None:
        raise AssertionError("wire rule broken")

    Simulator.observers.append(checker)
    with pytest.raises(anthropic.APIConnectionError) as info:
        _create(Simulator([r.text("a")]))
    assert isinstance(info.value.__cause__, AssertionError)


# --- model names: the API's 404 for a name it does not know ----------------------------------------------


def _not_found_body(exc: anthropic.APIStatusError) -> dict[str, Any]:
    body = json.loads(exc.response.text)
    assert body.pop("request_id").startswith("req_011C")  # a real-looking id, as the API sends one
    return cast(dict[str, Any], body)


@pytest.mark.parametrize("stream", [False, True])
def test_an_unknown_model_is_the_apis_404_and_uses_no_script_item(stream: bool) -> None:
    sim = Simulator([r.text("served")])
    client = sim.client(max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as caught:
        if stream:
            with client.messages.stream(model="claude-sonet-4-5", max_tokens=50, messages=USER) as s:
                s.get_final_message()
        else:
            client.messages.create(model="claude-sonet-4-5", max_tokens=50, messages=USER)
    assert caught.value.status_code == 404 and caught.value.response.headers["content-type"] == "application/json"
    assert _not_found_body(caught.value) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model: claude-sonet-4-5"},
    }
    assert (sim.requests[0].status, sim.requests[0].error) == (404, "model: claude-sonet-4-5")
    assert sim.replies_served == 0 and first_text(_create(sim)) == "served"  # the script item is still there


def test_the_404_is_the_body_the_real_api_sent_for_a_misspelt_model() -> None:
    record = realtraffic.by_name("pyd__test_model_name_suggestion_anthropic___0.json")
    assert record.status_code == 404 and record.request is not None
    sim = Simulator([r.text("never served")])
    response = sim.client(max_retries=0).messages.with_raw_response
    with pytest.raises(anthropic.NotFoundError) as caught:
        response.create(**{k: record.request[k] for k in ("model", "max_tokens", "messages")})
    recorded = dict(record.response or {})
    recorded.pop("request_id")
    assert _not_found_body(caught.value) == recorded


def test_a_request_the_api_would_reject_is_still_a_400_first() -> None:
    # validation comes before the model is looked up: a bad body with a bad name is the 400
    sim = Simulator([r.text("never served")])
    with pytest.raises(anthropic.BadRequestError, match="messages: at least one message is required"):
        sim.client(max_retries=0).messages.create(model="claude-nope", max_tokens=5, messages=[])


@pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")  # the SDK's, on old names
def test_the_default_set_is_the_sdks_lineup_and_older_ids() -> None:
    lineup = sdk_lineup()
    assert "claude-sonnet-5-5" in lineup and set(lineup) <= KNOWN_MODELS
    assert {"claude-sonnet-4-5-20250929", "claude-3-5-haiku-20241022"} <= KNOWN_MODELS
    sim = Simulator(lambda request: r.text(request.model))
    for model in [*lineup, "claude-sonnet-4-5-20250929"]:
        assert first_text(_create(sim, model=model)) == model
    assert {"claude-future-9", "claude-sonnet-5-5-typo", "claude-sonnet", ""}.isdisjoint(KNOWN_MODELS)


def test_models_replaces_or_widens_the_known_set() -> None:
    only = Simulator(lambda request: r.text("ok"), models=["my-fine-tune"])
    assert first_text(_create(only, model="my-fine-tune")) == "ok"
    with pytest.raises(anthropic.NotFoundError, match=f"model: {MODEL}"):
        _create(only)  # replaced, not added to
    wider = Simulator(lambda request: r.text("ok"), models=[*KNOWN_MODELS, "my-fine-tune"])
    assert first_text(_create(wider, model="my-fine-tune")) == first_text(_create(wider)) == "ok"
    one = Simulator(lambda request: r.text("ok"), models="my-fine-tune")  # one name, not its letters
    with pytest.raises(anthropic.NotFoundError):
        _create(one, model="m")
    anything = Simulator(lambda request: r.text("ok"), models=lambda name: name.startswith("ft:"))
    assert first_text(_create(anything, model="ft:abc")) == "ok"
    with pytest.raises(anthropic.NotFoundError):
        _create(anything)


def test_an_agent_with_a_misspelt_model_fails_with_the_404() -> None:
    sim = Simulator([r.text("never served")])
    result = Agent(client=sim.client(max_retries=0), model="claude-sonet-5-5", logger=None).run("Hi")
    assert (result.final_state, result.reason) == ("failed", "api_error")
    assert result.error is not None and result.error.status_code == 404
    assert result.error.type == "not_found_error" and "model: claude-sonet-5-5" in result.error.message
    assert result.messages == [{"role": "user", "content": "Hi"}] and sim.replies_served == 0


def test_a_batched_request_for_an_unknown_model_is_errored_like_the_api() -> None:
    sim = Simulator([r.text("one"), r.text("two")])
    client = sim.client(max_retries=0)
    requests: list[Any] = [
        {"custom_id": f"req-{i}", "params": {"model": model, "max_tokens": 50, "messages": USER}}
        for i, model in enumerate([MODEL, "claude-sonet-4-5", MODEL])
    ]
    batch = client.messages.batches.create(requests=requests)  # accepted: batch params are checked later
    ended = client.messages.batches.retrieve(batch.id)
    counts = ended.request_counts
    assert (ended.processing_status, counts.succeeded, counts.errored) == ("ended", 2, 1)
    found = {line.custom_id: line.result for line in client.messages.batches.results(batch.id)}
    errored = found["req-1"].to_dict()
    assert errored["type"] == "errored" and errored["error"]["type"] == "error"
    assert errored["error"]["error"] == {"type": "not_found_error", "message": "model: claude-sonet-4-5"}
    texts = [found[f"req-{i}"].to_dict()["message"]["content"][0]["text"] for i in (0, 2)]
    assert sorted(texts) == ["one", "two"] and sim.replies_served == 2  # the errored request took no reply
