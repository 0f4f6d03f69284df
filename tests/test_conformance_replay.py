"""Replaying recorded exchanges in the simulator, and the suite's request-schema check, on small inline recordings.

These need no corpus: the recordings are written here in the corpus's format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import pytest
import realtraffic

from agentfsm import Agent
from agentfsm.sim import Recording, Simulator
from agentfsm.sim import replies as r
from agentfsm.sim.accumulate import StreamFormatError, accumulate, decode
from agentfsm.sim.recorded import frames

MESSAGE: dict[str, Any] = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "text", "text": "Let me check.", "citations": None},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"city": "Hà Nội"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 30, "service_tier": "standard"},
}


def frame(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


START = (
    '{"type":"message_start","message":{"id":"msg_01UdjYBBipA9omjYhicnevgq","type":"message","role":"assistant",'
    '"model":"claude-3-7-sonnet-20250219","content":[],"stop_reason":null,"stop_sequence":null,'
    '"usage":{"input_tokens":450,"output_tokens":1}}          }'
)
TOOL = '{"type":"tool_use","id":"toolu_01EKqbqmZrGRXy18eN7m9kvY","name":"save","input":{}}'
#: Padded JSON, a ping, and a tool call cut by max_tokens (no content_block_stop), as real streams send.
SSE = (
    frame("message_start", START)
    + frame(
        "content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""} }'
    )
    + frame("ping", '{"type": "ping"}')
    + frame(
        "content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Saving."}}'
    )
    + frame("content_block_stop", '{"type":"content_block_stop","index":0 }')
    + frame("content_block_start", '{"type":"content_block_start","index":1,"content_block":' + TOOL + "}")
    + frame(
        "content_block_delta",
        '{"type":"content_block_delta","index":1,'
        '"delta":{"type":"input_json_delta","partial_json":"{\\"file\\": \\"ta"}}',
    )
    + frame(
        "message_delta",
        '{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},'
        '"usage":{"output_tokens":124}   }',
    )
    + 'event: message_stop\ndata: {"type":"message_stop" }'  # no final blank line, as some recordings end
)

RATE_LIMITED = {
    "type": "error",
    "error": {"type": "rate_limit_error", "message": "This request would exceed your organization's rate limit."},
    "request_id": "req_011CYK5mje9HkutJtmfPzzNC",
}

ASK: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


def test_a_json_recording_is_served_as_recorded_to_a_plain_request() -> None:
    sim = Simulator([r.recorded({"response": MESSAGE, "status_code": 200})])
    raw = sim.client(max_retries=0).messages.with_raw_response.create(**ASK)
    assert raw.http_response.status_code == 200 and raw.http_response.json() == MESSAGE


def test_a_json_recording_is_framed_as_sse_for_a_streaming_request() -> None:
    sim = Simulator([r.recorded({"response": MESSAGE})])
    with sim.client(max_retries=0).messages.stream(**ASK) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.id == MESSAGE["id"]
    assert [b.to_dict(exclude_none=True) for b in final.content] == [
        {"type": "text", "text": "Let me check."},
        MESSAGE["content"][1],
    ]


def test_an_sse_recording_is_served_byte_for_byte_and_folded_for_a_plain_request() -> None:
    sim = Simulator([r.recorded({"sse": SSE, "status_code": 200})] * 2)
    client = sim.client(max_retries=0)
    with client.messages.with_streaming_response.create(stream=True, **ASK) as response:
        assert b"".join(response.iter_bytes()) == SSE.encode()
    folded = client.messages.with_raw_response.create(**ASK).http_response.json()
    assert folded["stop_reason"] == "max_tokens" and folded["usage"]["output_tokens"] == 124
    assert folded["content"] == [
        {"type": "text", "text": "Saving."},
        {"type": "tool_use", "id": "toolu_01EKqbqmZrGRXy18eN7m9kvY", "name": "save", "input": {}},  # cut: {}
    ]


def test_frames_split_per_event_and_join_to_the_recorded_text() -> None:
    chunks = frames(SSE)
    assert b"".join(chunks) == SSE.encode() and len(chunks) == SSE.count("event:")


def test_a_recorded_error_answers_with_its_status_and_body() -> None:
    sim = Simulator([r.recorded({"response": RATE_LIMITED, "status_code": 429})])
    with pytest.raises(anthropic.RateLimitError) as caught:
        sim.client(max_retries=0).messages.create(**ASK)
    assert caught.value.body == RATE_LIMITED and caught.value.request_id == RATE_LIMITED["request_id"]


def test_an_error_without_a_recorded_status_gets_its_type_s_status() -> None:
    recording = Recording.from_dict(
        {"response": {"type": "error", "error": {"type": "not_found_error", "message": "model: x"}}}
    )
    assert recording.status_code == 404 and recording.is_error and recording.message() is None


def test_an_agent_fails_on_a_recorded_error_with_the_recorded_status() -> None:
    sim = Simulator.from_recording({"response": RATE_LIMITED, "status_code": 429})
    result = Agent(client=sim.client(max_retries=0), logger=None).run("Hi")
    assert result.final_state == "failed" and result.error is not None and result.error.status_code == 429


def test_from_recording_replays_files_in_order_then_the_scripted_items(tmp_path: Path) -> None:
    path = tmp_path / "exchange.json"
    path.write_text(json.dumps({"request": ASK, "status_code": 200, "response": MESSAGE}))
    sim = Simulator.from_recording(path, then=[r.text("It is 31°C.")])
    result = Agent(client=sim.client(max_retries=0), logger=None).run("Weather?")
    assert result.path == ["requesting", "tool_use", "requesting", "end_turn", "done"]
    assert sim.requests[1].messages[1] == {"role": "assistant", "content": MESSAGE["content"]}
    assert Recording.load(path).request == ASK


def test_folding_appends_blocks_like_the_sdk_even_when_indexes_repeat() -> None:
    events = decode(
        frame("message_start", '{"type":"message_start","message":{"content":[],"stop_reason":null}}')
        + frame(
            "content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"a"}}'
        )
        + frame(
            "content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'
        )
        + frame(
            "content_block_delta", '{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"b"}}'
        )
        + frame(
            "message_delta", '{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}'
        )
    )
    assert accumulate(events)["content"] == [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]


@pytest.mark.parametrize(
    "text",
    [
        'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
        'event: message_start\ndata: {"type":"message_start","message":{}}\n\n'
        'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n',
    ],
    ids=["no-message-start", "error-event"],
)
def test_folding_refuses_what_is_not_a_whole_message_stream(text: str) -> None:
    with pytest.raises(StreamFormatError):
        accumulate(decode(text))


def test_the_schema_check_catches_a_request_outside_the_spec(request_schema_on_every_request: list[str]) -> None:
    if realtraffic.request_validators() is None:
        pytest.skip(realtraffic.SKIP_REASON)
    sim = Simulator([r.text("ok")])
    # a model that takes sampling parameters (agentfsm.wire.models), so the temperature goes out
    Agent(
        client=sim.client(max_retries=0), model="claude-sonnet-4-6", request_params={"temperature": 7}, logger=None
    ).run("Hi")
    assert len(request_schema_on_every_request) == 1 and "temperature" in request_schema_on_every_request[0]
    request_schema_on_every_request.clear()  # caught as it should be: not a failure of this test


def test_later_requests_name_the_container_a_reply_ran_in() -> None:
    container = {"id": "container_011CYVPF4iP8oD6Vsz1NhVih", "expires_at": "2026-02-25T20:07:37.475893Z"}
    sim = Simulator([r.recorded({"response": {**MESSAGE, "container": container}}), r.text("ok")] * 2)
    Agent(client=sim.client(max_retries=0), logger=None).run("Weather?")
    assert "container" not in sim.requests[0].body and sim.requests[1].body["container"] == container["id"]
    # A container object passed by the caller (beta: skills) keeps its fields and gains the id.
    skills = {"skills": [{"type": "anthropic", "skill_id": "pdf", "version": "latest"}]}
    client = sim.client(max_retries=0)
    Agent(client=client, betas=["skills-2025-10-02"], request_params={"container": skills}, logger=None).run("Weather?")
    assert sim.requests[2].body["container"] == skills
    assert sim.requests[3].body["container"] == {**skills, "id": container["id"]}
