"""The simulator rejects what the real Messages API rejects, with the API's 400 messages, before using the script."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import anthropic
import httpx2
import pytest

from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.sim.validation import default_prefill_unsupported

MODEL = "claude-haiku-4-5"  # accepts prefill
NO_PREFILL = "claude-opus-4-7"


# These tests send invalid requests on purpose: keep wire-rule checkers registered elsewhere out.
pytestmark = pytest.mark.usefixtures("no_foreign_observers")


def first_text(message: Any) -> str:
    """The text of a reply's first block (typed loosely: the SDK's content union has no common ``text``)."""
    return str(message.content[0].text)


def user(content: Any) -> Any:
    return {"role": "user", "content": content}


def assistant(content: Any) -> Any:
    return {"role": "assistant", "content": content}


def tool_use(tool_id: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": "get_weather", "input": {"location": "Hanoi"}}


def tool_result(tool_id: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_id, "content": "31°C"}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


THINKING = {"type": "thinking", "thinking": "hmm", "signature": "c2ln"}
PAUSED = [
    text("Searching."),
    {"type": "server_tool_use", "id": "srvtoolu_01A", "name": "web_search", "input": {"query": "q"}},
]

TOOL_USE_MISSING = (
    "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_02. "
    "Each `tool_use` block must have a corresponding `tool_result` block in the next message."
)


def unexpected(where: str, tool_id: str) -> str:
    return (
        f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: {tool_id}. "
        "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
    )


INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "empty messages": ({"messages": []}, "messages: at least one message is required"),
    "first message assistant": (
        {"messages": [assistant("Hi"), user("Hello")]},
        'messages: first message must use the "user" role',
    ),
    "consecutive assistants": (
        {"messages": [user("a"), assistant("b"), assistant("c")]},
        'messages: roles must alternate between "user" and "assistant", but found multiple "assistant" roles in a row',
    ),
    "max_tokens above the model's cap": (
        {"max_tokens": 64001, "timeout": 30},
        "max_tokens: 64001 > 64000, which is the maximum allowed number of output tokens for claude-haiku-4-5",
    ),
    "max_tokens zero": ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
    "empty content in the middle": (
        {"messages": [user("a"), assistant([]), user("b")]},
        "messages.1: all messages must have non-empty content except for the optional final assistant message",
    ),
    "empty text block sent back": (
        {"messages": [user("a"), assistant([text("")]), user("b")]},
        "messages: text content blocks must be non-empty",
    ),
    "whitespace-only text block": (
        {"messages": [user([text("  \n")])]},
        "messages: text content blocks must contain non-whitespace text",
    ),
    "prefill ends in whitespace (blocks)": (
        {"messages": [user("a"), assistant([text("The answer is ")])]},
        "messages: final assistant content cannot end with trailing whitespace",
    ),
    "prefill ends in whitespace (string)": (
        {"messages": [user("a"), assistant("The answer is\n")]},
        "messages: final assistant content cannot end with trailing whitespace",
    ),
    "final block thinking": (
        {"messages": [user("a"), assistant([THINKING])]},
        "messages.1: The final block in an assistant message cannot be `thinking`.",
    ),
    "final block redacted_thinking": (
        {"messages": [user("a"), assistant([{"type": "redacted_thinking", "data": "xx"}])]},
        "messages.1: The final block in an assistant message cannot be `redacted_thinking`.",
    ),
    "prefill on a model without prefill": (
        {"model": NO_PREFILL, "messages": [user("a"), assistant("The answer is")]},
        "This model does not support assistant message prefill. The conversation must end with a user message.",
    ),
    "tool_use without tool_result": (
        {
            "messages": [
                user("a"),
                assistant([tool_use("toolu_01"), tool_use("toolu_02")]),
                user([tool_result("toolu_01")]),
            ]
        },
        TOOL_USE_MISSING,
    ),
    "tool_use answered by text only": (
        {"messages": [user("a"), assistant([tool_use("toolu_02")]), user("what now?")]},
        TOOL_USE_MISSING,
    ),
    "tool_result for an unknown id": (
        {
            "messages": [
                user("a"),
                assistant([tool_use("toolu_01")]),
                user([tool_result("toolu_01"), tool_result("toolu_09")]),
            ]
        },
        unexpected("messages.2.content.1", "toolu_09"),
    ),
    "tool_result not after an assistant": (
        {"messages": [user([tool_result("toolu_07")])]},
        unexpected("messages.0.content.0", "toolu_07"),
    ),
    "tool_result two turns late": (
        {
            "messages": [
                user("a"),
                assistant([tool_use("toolu_01")]),
                user([tool_result("toolu_01")]),
                assistant("ok"),
                user([tool_result("toolu_01")]),
            ]
        },
        unexpected("messages.4.content.0", "toolu_01"),
    ),
}


def _params(change: dict[str, Any]) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 100, "messages": [user("Hello")], **change}


@pytest.mark.parametrize("case", INVALID)
def test_rejected_like_the_api(case: str) -> None:
    change, message = INVALID[case]
    sim = Simulator([r.text("the scripted reply")])
    client = sim.client()  # default retries: a 400 is never retried
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(**_params(change))
    assert info.value.status_code == 400
    assert info.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": message},
        "request_id": info.value.request_id,
    }
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(sim.requests) == 1 and sim.requests[0].status == 400 and sim.requests[0].error == message
    assert sim.replies_served == 0  # the script was not consulted
    ok = client.messages.create(model=MODEL, max_tokens=10, messages=[user("Hello")])
    assert first_text(ok) == "the scripted reply"


@pytest.mark.parametrize("case", ["prefill on a model without prefill", "tool_use without tool_result"])
def test_rejected_when_streamed_and_async(case: str) -> None:
    change, message = INVALID[case]
    sim = Simulator([r.text("unused")])
    with (
        pytest.raises(anthropic.BadRequestError, match="invalid_request_error"),
        sim.client().messages.stream(**_params(change)) as stream,
    ):
        stream.get_final_message()

    async def go() -> None:
        await sim.async_client().messages.create(**_params(change))

    with pytest.raises(anthropic.BadRequestError) as info:
        asyncio.run(go())
    assert cast(Any, info.value.body)["error"]["message"] == message
    assert sim.replies_served == 0


VALID: dict[str, dict[str, Any]] = {
    "prefill on a model that allows it": {"messages": [user("a"), assistant("The answer is")]},
    "empty final assistant": {"messages": [user("a"), assistant("")]},
    "consecutive user messages (merged by the API)": {"messages": [user("a"), user("b")]},
    "tool results then a nudge in a second user message": {
        "messages": [
            user("a"),
            assistant([tool_use("toolu_01"), tool_use("toolu_02")]),
            user([tool_result("toolu_02"), tool_result("toolu_01")]),
            user("Please continue."),
        ]
    },
    "tool results then text in the same message": {
        "messages": [user("a"), assistant([tool_use("toolu_01")]), user([tool_result("toolu_01"), text("more")])]
    },
    "pause_turn resume on a model without prefill": {"model": NO_PREFILL, "messages": [user("a"), assistant(PAUSED)]},
    "thinking before text in the final assistant": {"messages": [user("a"), assistant([THINKING, text("So")])]},
    "trailing whitespace in an earlier assistant message": {
        "messages": [user("a"), assistant("chunk one "), user("Continue.")]
    },
    "max_tokens at the cap": {"max_tokens": 64000, "timeout": 30},
    "system as blocks": {"system": [text("be brief")]},
}


@pytest.mark.parametrize("case", VALID)
def test_accepted_like_the_api(case: str) -> None:
    sim = Simulator([r.text("fine")])
    message = sim.client(max_retries=0).messages.create(**_params(VALID[case]))
    assert first_text(message) == "fine"
    assert sim.requests[0].status == 200


def test_pause_turn_sent_back_unchanged_is_accepted_on_a_no_prefill_model() -> None:
    sim = Simulator([r.pause_turn(query="Hanoi weather"), r.text("It is 31°C.")])
    client = sim.client(max_retries=0)
    messages: list[Any] = [user("Weather in Hanoi?")]
    paused = client.messages.create(model=NO_PREFILL, max_tokens=100, messages=messages)
    assert paused.stop_reason == "pause_turn"
    messages.append(assistant([b.to_dict() for b in paused.content]))
    done = client.messages.create(model=NO_PREFILL, max_tokens=100, messages=messages)
    assert done.stop_reason == "end_turn"


@pytest.mark.parametrize(
    ("model", "rejects"),
    [
        ("claude-opus-4-6", True),
        ("claude-sonnet-4-6", True),
        ("claude-sonnet-4-6-20260217", True),
        ("claude-opus-4-7", True),
        ("claude-opus-4-8", True),
        ("claude-opus-5", True),
        ("claude-sonnet-5-5", True),
        ("claude-haiku-5-20270101", True),
        ("claude-sonnet-4-5", False),
        ("claude-sonnet-4-5-20250929", False),
        ("claude-haiku-4-5", False),
        ("claude-opus-4-5-20251101", False),
        ("claude-opus-4-1", False),
        ("claude-3-5-haiku-20241022", False),
    ],
)
def test_default_prefill_policy(model: str, rejects: bool) -> None:
    assert default_prefill_unsupported(model) is rejects


def test_prefill_policy_is_configurable() -> None:
    prefill = [user("a"), assistant("The answer is")]
    allow_all = Simulator([r.text("ok")], prefill_unsupported=[])
    assert allow_all.client().messages.create(model=NO_PREFILL, max_tokens=5, messages=prefill).content
    by_prefix = Simulator([r.text("ok")], prefill_unsupported=["claude-haiku"])
    with pytest.raises(anthropic.BadRequestError, match="does not support assistant message prefill"):
        by_prefix.client().messages.create(model=MODEL, max_tokens=5, messages=prefill)
    by_predicate = Simulator([r.text("ok")], prefill_unsupported=lambda model: model == "m1")
    with pytest.raises(anthropic.BadRequestError, match="does not support assistant message prefill"):
        by_predicate.client().messages.create(model="m1", max_tokens=5, messages=prefill)


def test_model_max_tokens_is_configurable() -> None:
    sim = Simulator([r.text("ok")], model_max_tokens=8192)
    with pytest.raises(anthropic.BadRequestError, match=r"max_tokens: 8193 > 8192, which is the maximum allowed"):
        sim.client().messages.create(model=MODEL, max_tokens=8193, messages=[user("a")])


def _post(sim: Simulator, content: bytes) -> httpx2.Response:
    http = httpx2.Client(transport=httpx2.MockTransport(sim.handle))
    return http.post(
        "https://api.anthropic.com/v1/messages", content=content, headers={"content-type": "application/json"}
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"model": "m", "messages": [{"role": "user", "content": "a"}]}', "max_tokens: Field required"),
        (b'{"max_tokens": 5, "messages": []}', "model: Field required"),
        (b'{"model": "m", "max_tokens": 5}', "messages: Field required"),
        (b'{"model": "m", "max_tokens": "5", "messages": []}', "max_tokens: Input should be a valid integer"),
        (
            b'{"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "a"}]}',
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        (b"[1, 2]", "There was an issue with the request body: expected a JSON object"),
    ],
)
def test_malformed_bodies(raw: bytes, message: str) -> None:
    sim = Simulator([r.text("unused")])
    response = _post(sim, raw)
    assert response.status_code == 400
    assert response.json()["error"] == {"type": "invalid_request_error", "message": message}
    assert response.json()["request_id"] == response.headers["request-id"]


def test_bad_json() -> None:
    sim = Simulator([r.text("unused")])
    response = _post(sim, b'{"model": ')
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("There was an issue with the request body: invalid JSON")
    assert sim.requests[0].body == {} and sim.requests[0].raw_body == b'{"model": '
    assert sim.replies_served == 0
