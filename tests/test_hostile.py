"""Hostile replies: whatever bytes come back, the run ends in a state of the table, the history stays
valid, and no secret leaks.

Every test drives the real ``anthropic`` client (sync and async, plain and streamed where it applies)
against ``hostile_server.HostileServer``: a minimal fake API written for these tests, which sends the
bytes a test scripts (malformed JSON, broken SSE, dropped sockets) and checks every request it gets
against the wire rules and the API's request schema. One section per item of the hardening issue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from hostile_server import (
    HostileServer,
    Response,
    call,
    dropped,
    json_body,
    message,
    raw,
    reply,
    sse,
    stream_events,
    text,
)
from pydantic import ValidationError

from agentfsm import Agent, Policy, RunResult, Transition, actions, tool
from agentfsm.cli import main
from agentfsm.errors import ConfigurationError, CorruptSnapshotError, IncompatibleAgentError
from agentfsm.machine.streaming import ResultEvent
from agentfsm.redaction import redact, redact_error
from agentfsm.stores.base import Store
from agentfsm.stores.memory import MemoryStore
from agentfsm.stores.sqlite import SQLiteStore
from agentfsm.testing import FakeClock, drive, use_clock
from agentfsm.wire.api import RequestFailure, reply_from
from agentfsm.wire.messages import ABANDONED_CALL, validate_history

KEY = "sk-ant-api03-" + "HostileKeyDoNotLeak7x" * 3 + "-ZZ"
TOKEN = "corp-gw-token.Zr81VeryPrivateBearerValue.41"  # not shaped like an Anthropic key
MODEL = "claude-haiku-4-5"
DRIVERS = ["run", "arun", "stream", "astream"]
PLAIN = ["run", "arun"]
STREAMED = ["stream", "astream"]
Q = [{"role": "user", "content": "Q"}]

ran_with: list[Any] = []


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    ran_with.append(key)
    return f"value of {key}"


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    ran_with.clear()
    yield
    ran_with.clear()


@pytest.fixture
def serve() -> Iterator[Callable[..., HostileServer]]:
    """Start hostile servers; at the end, every request each one got must have kept the wire rules."""
    servers: list[HostileServer] = []
    with contextlib.ExitStack() as stack:

        def make(script: Any = ()) -> HostileServer:
            server = stack.enter_context(HostileServer(script))
            servers.append(server)
            return server

        yield make
    for server in servers:
        assert server.problems == [], server.problems


def client(server: HostileServer, asynchronous: bool, **kw: Any) -> Any:
    kw.setdefault("api_key", KEY)
    kw.setdefault("max_retries", 0)
    kind = anthropic.AsyncAnthropic if asynchronous else anthropic.Anthropic
    return kind(base_url=server.url, **kw)


def agent_for(server: HostileServer, driver: str, cls: type[Agent] = Agent, **kw: Any) -> Agent:
    kw.setdefault("tools", [lookup])
    kw.setdefault("logger", None)
    made = cls(client=client(server, driver.startswith("a"), **kw.pop("client_kw", {})), model=MODEL, **kw)
    return made


def leaked(text: str, secret: str = KEY) -> bool:
    """Any 8 consecutive characters of the secret's head (past a shared prefix like sk-ant-api03-)."""
    start = 13 if secret.startswith("sk-ant-api03-") else 0
    return any(secret[i : i + 8] in text for i in range(start, min(len(secret) - 8, start + 24) + 1))


def everything(result: RunResult) -> str:
    return json.dumps([e.model_dump() for e in result.events]) + (result.error.message if result.error else "")


# --- 1. malformed 200 replies end in failed ------------------------------------------------------------------

MALFORMED: dict[str, object] = {
    "stop_reason a number": message([text("hi")], 5),
    "stop_reason a list": message([text("hi")], ["end_turn"]),
    "stop_reason an object": message([text("hi")], {"v": KEY}),
    "content a string": message(KEY),  # type: ignore[arg-type]
    "content null": message(None),  # type: ignore[arg-type]
    "content with a string in it": message([text("a"), KEY]),
    "content with a number in it": message([1]),
    "a block with no type": message([{"text": KEY}]),
    "text that is a number": message([{"type": "text", "text": 7}]),
    "usage counts as strings": message([text("hi")], usage={"input_tokens": "12", "output_tokens": "3"}),
    "usage a list": message([text("hi")], usage=[1]),
    "tool_use without id": message([{"type": "tool_use", "name": "lookup", "input": {}}], "tool_use"),
    "tool_use without name": message([{"type": "tool_use", "id": "toolu_1", "input": {}}], "tool_use"),
    "tool_use id a number": message([{"type": "tool_use", "id": 1, "name": "lookup", "input": {}}], "tool_use"),
    "tool_use input a string": message([{"type": "tool_use", "id": "t", "name": "lookup", "input": KEY}], "tool_use"),
    "tool_use input a list": message([call("lookup", [1], "toolu_1")], "tool_use"),  # type: ignore[arg-type]
    "not a message": {"hello": "world", "k": KEY},
    "an error object with status 200": {"type": "error", "error": {"type": "overloaded_error", "message": KEY}},
    "a JSON list": [1, 2, KEY],
    "a JSON string": KEY,
}


@pytest.mark.slow  # every malformed reply under every driver
@pytest.mark.parametrize("driver", PLAIN)
@pytest.mark.parametrize("case", [*MALFORMED, "not JSON"])
def test_a_malformed_reply_ends_the_run_in_failed(case: str, driver: str, serve: Any) -> None:
    answer = raw(f"<html>{KEY}</html>", content_type="text/html") if case == "not JSON" else json_body(MALFORMED[case])
    server = serve([answer])
    result = drive(agent_for(server, driver), "Q", driver)
    assert (result.final_state, result.reason) == ("failed", "api_error")
    assert result.error is not None and result.error.type == "invalid_response", result.error
    assert result.messages == Q and ran_with == [] and len(server.requests) == 1
    assert not leaked(everything(result)), result.error.message
    events = [e.event for e in result.events]
    assert "request.failed" in events and "response.received" not in events


def _streamed(mutate: Callable[[list[tuple[str, Any]]], None], body: dict[str, Any] | None = None) -> Response:
    events = stream_events(body or message([text("hi"), call("lookup", {"key": "k"}, "toolu_1")], "tool_use"))
    mutate(events)
    return sse(events)


def _set(index: int, value: Any) -> Callable[[list[tuple[str, Any]]], None]:
    def mutate(events: list[tuple[str, Any]]) -> None:
        events[index] = (events[index][0], value)

    return mutate


def _json_input(events: list[tuple[str, Any]], *parts: str) -> None:
    """The tool_use block (index 1) gets its input as these partial_json pieces."""
    for at, part in zip((5, 6), parts, strict=True):
        delta = {"type": "input_json_delta", "partial_json": part}
        events[at] = ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": delta})


STREAMED_MALFORMED: dict[str, Response] = {
    "stop_reason a number": _streamed(
        _set(-2, {"type": "message_delta", "delta": {"stop_reason": 5}, "usage": {"output_tokens": 1}})
    ),
    "message_start content a string": _streamed(
        _set(0, {"type": "message_start", "message": {"type": "message", "role": "assistant", "content": KEY}})
    ),
    "message_start message a list": _streamed(_set(0, {"type": "message_start", "message": [KEY]})),
    "a block that is a string": _streamed(
        _set(1, {"type": "content_block_start", "index": 0, "content_block": KEY})
    ),
    "a delta index that is not a number": _streamed(
        _set(2, {"type": "content_block_delta", "index": "0", "delta": {"type": "text_delta", "text": "x"}})
    ),
    "data that is not JSON": _streamed(_set(2, '{"type": "content_block_delta", "index": 0, "del')),
    "data that is a JSON list": _streamed(_set(2, [KEY])),
    "usage counts as strings": _streamed(
        _set(-2, {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": "5"}})
    ),
    "tool_use without id": _streamed(
        _set(4, {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "name": "lookup"}})
    ),
    "tool_use input JSON a list": _streamed(lambda ev: _json_input(ev, "[1", ",2]")),
}  # fmt: skip


@pytest.mark.parametrize("driver", STREAMED)
@pytest.mark.parametrize("case", list(STREAMED_MALFORMED))
def test_a_malformed_stream_ends_the_run_in_failed(case: str, driver: str, serve: Any) -> None:
    server = serve([STREAMED_MALFORMED[case]])
    result = drive(agent_for(server, driver, policy=Policy(stream_retries=2, stream_retry_backoff=0)), "Q", driver)
    assert (result.final_state, result.reason) == ("failed", "api_error")
    assert result.error is not None and result.error.type == "invalid_response", result.error
    assert result.messages == Q and ran_with == []
    assert len(server.requests) == 1, "a malformed reply is not a broken connection: it is not sent again"
    assert not leaked(everything(result)), result.error.message


@pytest.mark.parametrize("driver", ["run", "astream"])
def test_a_malformed_reply_after_tools_keeps_the_history_and_the_store_resumes(
    driver: str, serve: Any, tmp_path: Path
) -> None:
    server = serve(
        [
            reply(message([call("lookup", {"key": "a"}, "toolu_a")], "tool_use")),
            json_body(message([text("hi")], {"stop": "now"})),
            reply(message([text("carried on")])),
        ]
    )
    store = SQLiteStore(tmp_path / "runs.db")
    agent = agent_for(server, driver)
    result = drive(agent, "Q", driver, store=store, conversation_id="c1")
    assert result.final_state == "failed" and result.error is not None and result.error.type == "invalid_response"
    assert [m["role"] for m in result.messages] == ["user", "assistant", "user"] and ran_with == ["a"]
    assert validate_history(result.messages) == result.messages
    stored = store.load("c1")  # the row reads back, valid
    assert stored.state == "failed" and stored.error == result.error
    again = agent.resume("c1", store=store) if driver == "run" else asyncio.run(agent.aresume("c1", store=store))
    assert again.final_state == "failed" and again.messages == result.messages and len(server.requests) == 2
    carried = drive(agent_for(server, driver), result.messages, driver)  # the history goes on as it is
    assert carried.final_state == "done" and carried.text == "carried on", carried.error


def test_reply_from_checks_shapes_only_and_passes_the_rest_through() -> None:
    body = message(
        [
            text("hi"),
            {"type": "a_block_from_the_future", "payload": {"x": [1, None]}},
            call("lookup", {"key": "k"}, "toolu_1"),
        ],
        "a_new_stop_reason",
        usage={"input_tokens": 3, "output_tokens": None, "new_count": "many"},
        container={"id": "c"},
        something_new=[1, "two"],
    )
    parsed = reply_from(json.loads(json.dumps(body)))
    assert not isinstance(parsed, RequestFailure)
    assert parsed.model_dump(mode="json", exclude_unset=True) == body  # byte-for-byte what was sent
    for bad in (None, [], "x", {"content": []} | {"type": "completion"}, message([text("a")], role="user")):
        failure = reply_from(bad)
        assert isinstance(failure, RequestFailure) and failure.type == "invalid_response"


# --- 2. a client tool_use under any stop reason never breaks the wire ----------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_max_tokens_after_complete_calls_runs_and_answers_them(driver: str, serve: Any) -> None:
    cut = message([text("Checking."), call("lookup", {"key": "a"}, "toolu_a"), text("and meanwhile I was cu")])
    cut["stop_reason"] = "max_tokens"
    server = serve([reply(cut), reply(message([text("a is value of a")]))])
    result = drive(agent_for(server, driver), "Q", driver)
    assert result.final_state == "done" and result.text == "a is value of a" and ran_with == ["a"]
    assert result.path == ["requesting", "max_tokens", "requesting", "end_turn", "done"]
    sent = server.requests[1]["messages"]
    assert sent[1] == {"role": "assistant", "content": cut["content"]}  # the cut text kept, as sent
    assert [b["tool_use_id"] for b in sent[2]["content"]] == ["toolu_a"] and sent[2]["content"][0][
        "type"
    ] == "tool_result"


@pytest.mark.parametrize("driver", DRIVERS)
def test_pause_turn_with_a_client_call_runs_and_answers_it(driver: str, serve: Any) -> None:
    paused = message(
        [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            call("lookup", {"key": "b"}, "toolu_b"),
        ],
        "pause_turn",
    )
    server = serve([reply(paused), reply(message([text("found b")]))])
    agent = agent_for(server, driver, tools=[lookup, {"type": "web_search_20250305", "name": "web_search"}])
    result = drive(agent, "Q", driver)
    assert result.final_state == "done" and result.text == "found b" and ran_with == ["b"]
    sent = server.requests[1]["messages"]
    assert sent[1]["content"] == paused["content"] and sent[2]["content"][0]["tool_use_id"] == "toolu_b"


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_paused_server_compaction_with_a_client_call_runs_and_answers_it(driver: str, serve: Any) -> None:
    paused = message(
        [{"type": "compaction", "content": "Earlier: the user asked."}, call("lookup", {"key": "d"}, "toolu_d")]
    )
    paused["stop_reason"] = "compaction"
    server = serve([reply(paused), reply(message([text("found d")]))])
    pause_edit = {"edits": [{"type": "compact_20260112", "pause_after_compaction": True}]}
    agent = agent_for(server, driver, request_params={"context_management": pause_edit})
    result = drive(agent, "Q", driver)
    assert result.final_state == "done" and result.text == "found d" and ran_with == ["d"]
    assert [s.trigger for s in result.trace][:2] == ["compaction", "run_tools"]
    sent = server.requests[1]["messages"]
    assert sent[1]["content"] == paused["content"] and sent[2]["content"][0]["tool_use_id"] == "toolu_d"


ENDING = {
    "end_turn": ("done", {}),
    "stop_sequence": ("done", {"stop_sequence": "END"}),
    "a_stop_reason_from_the_future": ("done", {}),
    "refusal": ("refused", {"stop_details": {"type": "refusal", "category": None, "explanation": "no"}}),
    "model_context_window_exceeded": ("truncated", {}),
}


@pytest.mark.slow  # every terminal stop reason under every driver
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("stop", list(ENDING))
def test_a_call_in_a_final_reply_is_not_run_and_the_history_can_be_carried_on(
    stop: str, driver: str, serve: Any
) -> None:
    final_state, extra = ENDING[stop]
    ending = message([text("Let me look."), call("lookup", {"key": "c"}, "toolu_c")], stop, **extra)
    server = serve([reply(ending), reply(message([text("Sure.")]))])
    result = drive(agent_for(server, driver), "Q", driver)
    assert result.final_state == final_state and ran_with == []  # the turn is over: the call is not run
    assert result.messages == [*Q, {"role": "assistant", "content": ending["content"]}]  # as the API sent it
    # a new client per event loop: an async client's pooled connections belong to the loop that made them
    carried = drive(agent_for(server, driver), [*result.messages, {"role": "user", "content": "And now?"}], driver)
    assert carried.final_state == "done" and ran_with == []
    sent = server.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user", "user"]
    answered = sent[2]["content"]
    assert answered == [{"type": "tool_result", "tool_use_id": "toolu_c", "content": ABANDONED_CALL, "is_error": True}]
    assert sent[3] == {"role": "user", "content": "And now?"}


def test_a_next_message_that_answers_only_some_calls_is_still_an_error() -> None:
    history = [
        *Q,
        {"role": "assistant", "content": [call("lookup", {}, "t1"), call("lookup", {}, "t2")]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]},
    ]
    with pytest.raises(ValueError, match="t2"):
        Agent(client=anthropic.Anthropic(api_key=KEY, base_url="http://127.0.0.1:9")).run(history)


# --- 3. duplicate tool_use ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_two_calls_with_one_id_fail_the_run_before_any_tool_runs(driver: str, serve: Any) -> None:
    twins = message([call("lookup", {"key": "a"}, "toolu_x"), call("lookup", {"key": "b"}, "toolu_x")], "tool_use")
    server = serve([reply(twins), reply(message([text("never")]))])
    result = drive(agent_for(server, driver), "Q", driver)
    assert (result.final_state, result.reason) == ("failed", "api_error")
    assert result.error is not None and result.error.type == "protocol_error" and "same id" in result.error.message
    assert ran_with == [] and result.messages == Q and len(server.requests) == 1


# --- 4. a streamed block that never closed ------------------------------------------------------------------


@pytest.mark.parametrize("driver", STREAMED)
def test_a_streamed_call_that_never_closed_is_retried_and_never_run_with_empty_input(driver: str, serve: Any) -> None:
    calling = message([text("Let me look."), call("lookup", {"key": "a"}, "toolu_a")], "tool_use")
    server = serve([reply(calling, unclosed=[1]), reply(calling), reply(message([text("done")]))])
    policy = Policy(stream_retries=1, stream_retry_backoff=0)
    result = drive(agent_for(server, driver, policy=policy), "Q", driver)
    assert result.final_state == "done" and ran_with == ["a"] and len(server.requests) == 3
    retried = [e.data for e in result.events if e.event == "request.retried"]
    assert (
        len(retried) == 1
        and retried[0]["error_type"] == "incomplete_stream"
        and "never closed" in retried[0]["message"]
    )


@pytest.mark.parametrize("driver", STREAMED)
def test_an_unclosed_block_with_no_retry_left_fails_and_runs_nothing(driver: str, serve: Any) -> None:
    calling = message([call("lookup", {"key": "a"}, "toolu_a"), text("more")], "tool_use")
    server = serve([reply(calling, unclosed=[0])])
    result = drive(agent_for(server, driver, policy=Policy(stream_retries=0)), "Q", driver)
    assert result.final_state == "failed" and result.error is not None and result.error.type == "incomplete_stream"
    assert ran_with == [] and result.messages == Q


@pytest.mark.parametrize("driver", STREAMED)
def test_the_last_block_of_a_reply_cut_by_max_tokens_may_stay_open(driver: str, serve: Any) -> None:
    cut = message([text("Writing."), call("lookup", {"key": "a"}, "toolu_a")], "max_tokens")
    server = serve([reply(cut, unclosed=[1]), reply(message([text("done")]))])
    result = drive(agent_for(server, driver, policy=Policy(stream_retries=0)), "Q", driver)
    assert result.final_state == "done" and ran_with == []  # the cut call is not run: the ladder retries larger
    assert [e.event for e in result.events].count("ladder.climbed") == 1
    assert server.requests[1]["max_tokens"] == 4096


# --- 5. secrets ------------------------------------------------------------------------------------------


def _rows_and_files(tmp_path: Path) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in tmp_path.glob("runs.db*"))


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_token_of_any_shape_and_its_prefix_never_leak_from_an_error_body(
    driver: str, serve: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"type": "error", "error": {"type": "authentication_error", "message": f"bad token {TOKEN[:14]}…"}}
    server = serve([json_body(body, status=401)])
    store = SQLiteStore(tmp_path / "runs.db")
    agent = agent_for(server, driver, client_kw={"api_key": None, "auth_token": TOKEN})
    result = drive(agent, "Q", driver, store=store, conversation_id="c1")
    assert result.final_state == "failed" and result.error is not None and result.error.status_code == 401
    assert result.error.message == "bad token [REDACTED]…"
    assert not leaked(everything(result), TOKEN)
    store.close()
    assert not leaked(_rows_and_files(tmp_path), TOKEN)
    assert server.headers[0]["authorization"] == f"Bearer {TOKEN}"  # it did go where it belongs
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    assert main(["runs", "show", "c1", "--store", str(tmp_path / "runs.db")]) == 0
    assert "bad token [REDACTED]" in capsys.readouterr().out


@pytest.mark.parametrize("driver", STREAMED)
def test_a_key_prefix_in_an_sse_error_event_is_redacted(driver: str, serve: Any) -> None:
    error = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": f"key {KEY[:30]} hot"}})
    server = serve([sse([error]), sse([error])])
    result = drive(agent_for(server, driver, policy=Policy(stream_retries=1, stream_retry_backoff=0)), "Q", driver)
    assert result.final_state == "failed" and result.error is not None and result.error.type == "overloaded_error"
    assert result.error.message == "key [REDACTED] hot" and not leaked(everything(result))
    assert [e.data["message"] for e in result.events if e.event == "request.retried"] == ["key [REDACTED] hot"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_short_key_is_redacted_as_a_word_in_an_error_and_nowhere_else(driver: str, serve: Any) -> None:
    good = serve(
        [reply(message([call("lookup", {"key": "x"}, "toolu_x")], "tool_use")), reply(message([text("x x-ray xx")]))]
    )
    result = drive(agent_for(good, driver, client_kw={"api_key": "x"}), "find x", driver)
    assert result.final_state == "done" and result.text == "x x-ray xx" and ran_with == ["x"]
    assert good.requests[1]["messages"][2]["content"][0]["content"] == "value of x"
    assert "[REDACTED]" not in json.dumps(result.messages) + everything(result)
    body = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key: x"}}
    bad = serve([json_body(body, status=401)])
    failed = drive(agent_for(bad, driver, client_kw={"api_key": "x"}), "Q", driver)
    assert failed.error is not None and failed.error.message == "invalid x-api-key: [REDACTED]"
    assert [e.data["message"] for e in failed.events if e.event == "request.failed"] == [
        "invalid x-api-key: [REDACTED]"
    ]


@pytest.mark.parametrize("driver", PLAIN)
def test_a_credential_header_is_a_secret_too(driver: str, serve: Any) -> None:
    gateway = "gw-" + "s3cr3tValue" * 3
    body = {"type": "error", "error": {"type": "permission_error", "message": f"gateway key {gateway[:12]} refused"}}
    server = serve([json_body(body, status=403)])
    agent = agent_for(server, driver, client_kw={"default_headers": {"X-Gateway-Key": gateway}})
    result = drive(agent, "Q", driver)
    assert result.error is not None and result.error.message == "gateway key [REDACTED] refused"
    assert server.headers[0]["x-gateway-key"] == gateway


def test_runs_show_scrubs_the_environments_credentials_from_the_conversation(
    serve: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve([reply(message([text("noted")]))])
    store = SQLiteStore(tmp_path / "runs.db")
    agent_for(server, "run").run(f"my token is {TOKEN}", store=store, conversation_id="c1")
    store.close()
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", TOKEN)
    for extra in ([], ["--json"]):
        assert main(["runs", "show", "c1", "--store", str(tmp_path / "runs.db"), *extra]) == 0
        out = capsys.readouterr().out
        assert "my token is [REDACTED]" in out and not leaked(out, TOKEN)


def test_redaction_rules() -> None:
    assert redact(f"a {KEY} b {KEY[:9]}c", [KEY]) == "a [REDACTED] b [REDACTED]c"
    assert redact(f"{TOKEN[:7]} {TOKEN[:8]}", [TOKEN]) == f"{TOKEN[:7]} [REDACTED]"  # 8 characters or more
    assert redact({"k": ["x marks x"]}, ["x"]) == {"k": ["x marks x"]}  # a short key: never in plain text
    assert redact_error("key: x, x-ray, 'x' (x)", ["x"]) == "key: [REDACTED], x-ray, '[REDACTED]' ([REDACTED])"
    assert redact_error("x", ["x"]) == "[REDACTED]"


# --- 6. every loop is bounded, stream resends included ----------------------------------------------------


def _always_drop(request: dict[str, Any]) -> Response:
    return dropped(message([text("never " * 50)]))(request)


@pytest.mark.parametrize("driver", STREAMED)
@pytest.mark.parametrize("max_turns", [1, 3])
def test_max_turns_counts_every_resend(max_turns: int, driver: str, serve: Any) -> None:
    server = serve(_always_drop)
    policy = Policy(max_turns=max_turns, stream_retries=200, stream_retry_backoff=0)
    result = drive(agent_for(server, driver, policy=policy), "Q", driver)
    assert len(server.requests) == max_turns == result.turns
    assert result.final_state == "failed" and result.error is not None
    assert result.error.message.endswith(f"(not sent again: Policy.max_turns={max_turns} requests were sent)")
    assert [e.event for e in result.events].count("request.sent") == max_turns


@pytest.mark.parametrize("driver", STREAMED)
def test_the_wall_budget_is_checked_before_each_resend(driver: str, serve: Any) -> None:
    """On a fake clock (the wall time a conversation reads, the backoff it sleeps), so the count is exact:
    sent at 0, 0.25 and 0.5 s; a third wait of 0.25 s would end past 0.6 s, so it is not taken."""
    server = serve(_always_drop)
    policy = Policy(max_wall_seconds=0.6, stream_retries=100, stream_retry_backoff=0.25, stream_retry_max_backoff=0.25)
    with use_clock(FakeClock()) as clock:
        result = drive(agent_for(server, driver, policy=policy), "Q", driver)
    assert len(server.requests) == 3 and clock.slept == [0.25, 0.25] and clock.now() == 0.5
    assert result.final_state == "failed" and result.error is not None
    assert result.error.message.endswith(
        "(not sent again: Policy.max_wall_seconds=0.6 would pass during the 0.25 s wait)"
    ), result.error.message
    assert [e.data["delay_s"] for e in result.events if e.event == "request.retried"] == [0.25, 0.25]


FLOATS = [
    "stream_retry_backoff",
    "stream_retry_max_backoff",
    "lease_seconds",
    "tool_timeout",
    "request_timeout",
    "long_request_timeout",
    "max_wall_seconds",
    "max_cost_usd",
]


@pytest.mark.parametrize("field", FLOATS)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_policy_rejects_infinite_and_nan_numbers(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match="finite number"):
        Policy(**{field: value})


# --- 7. a client of the wrong kind is an error, never a new client ------------------------------------------


def test_a_client_of_the_wrong_kind_raises_before_any_request(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server, decoy = serve([reply(message([text("hi")]))]), serve([reply(message([text("decoy")]))])
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)  # the environment names a working API: it must not be used
    monkeypatch.setenv("ANTHROPIC_BASE_URL", decoy.url)
    sync_agent = agent_for(server, "run")
    async_agent = agent_for(server, "arun")
    with pytest.raises(ConfigurationError, match=r"AsyncAnthropic.*use run\(\) / stream\(\)"):
        asyncio.run(sync_agent.arun("Q"))
    with pytest.raises(ConfigurationError, match="AsyncAnthropic"):
        sync_agent.astream("Q")
    with pytest.raises(ConfigurationError, match=r"use arun\(\) / astream\(\)"):
        async_agent.run("Q")
    with pytest.raises(ConfigurationError, match=r"use arun\(\) / astream\(\)"):
        async_agent.stream("Q")
    conv = async_agent.start("Q")  # undecided: the async client it was given; run() then refuses
    with pytest.raises(ConfigurationError):
        conv.run()
    assert server.requests == [] and decoy.requests == []
    assert asyncio.run(conv.arun()).text == "hi"  # and the right driver works


# --- 8. stores ----------------------------------------------------------------------------------------------


class ReviewAgent(Agent):
    """Adds a state: every finished turn is reviewed before done."""

    states = ["reviewing"]
    transitions = [
        Transition("end_turn", "review", "reviewing"),
        Transition("reviewing", "approve", "done", action=actions.keep_reply),
    ]


# PostgreSQL runs a server process: its runs are in the slow tier.
@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        made: Any = SQLiteStore(tmp_path / "runs.db")
    else:
        from agentfsm.stores.postgres import PostgresStore

        dsn = request.getfixturevalue("postgres_dsn")
        made = PostgresStore(dsn)
        with made._lock:
            made._connection().execute("DELETE FROM agentfsm_conversations")
            made._connection().execute("DELETE FROM agentfsm_leases")
    try:
        yield made
    finally:
        made.close()


def test_resuming_with_a_class_that_lacks_the_state_names_both_classes(serve: Any, store: Store) -> None:
    server = serve([reply(message([text("reviewed answer")]))])
    conv = agent_for(server, "run", cls=ReviewAgent).start("Q", store=store, conversation_id="c1")
    while conv.state != "reviewing":
        conv.step()
    conv.release()
    with pytest.raises(IncompatibleAgentError) as info:
        agent_for(server, "run").resume("c1", store=store)
    said = str(info.value)
    assert "test_hostile:ReviewAgent" in said and "agentfsm.agent:Agent" in said and "'reviewing'" in said
    assert agent_for(server, "run", cls=ReviewAgent).resume("c1", store=store).text == "reviewed answer"


def _rewrite(store: Store, cid: str, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(store.load(cid).model_dump_json())
    change(data)
    row = json.dumps(data)
    if isinstance(store, MemoryStore):
        store._rows[cid] = row
    elif isinstance(store, SQLiteStore):
        with store._write() as conn:
            conn.execute("UPDATE agentfsm_conversations SET snapshot = ? WHERE id = ?", (row, cid))
    else:
        with store._lock:  # type: ignore[attr-defined]
            store._connection().execute(  # type: ignore[attr-defined]
                "UPDATE agentfsm_conversations SET snapshot = %s WHERE id = %s", (row, cid)
            )


BROKEN_ROWS: dict[str, Callable[[dict[str, Any]], None]] = {
    "history starts with the assistant": lambda d: d["messages"].insert(0, {"role": "assistant", "content": "hi"}),
    "a result that answers no call": lambda d: d["messages"].__setitem__(
        0, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope", "content": "x"}]}
    ),
    "a block with no type": lambda d: d["messages"].__setitem__(0, {"role": "user", "content": [{"text": "x"}]}),
    "a call left unanswered mid-history": lambda d: d["messages"].__setitem__(
        1, {"role": "assistant", "content": [call("lookup", {}, "t1")]}
    ),
    "a reply that is not a message": lambda d: d.__setitem__("reply", {"content": "not blocks"}),
}


@pytest.mark.parametrize("broken", list(BROKEN_ROWS))
def test_a_stored_row_is_validated_on_load(broken: str, serve: Any, store: Store) -> None:
    server = serve([reply(message([text("fine")]))])
    agent = agent_for(server, "run")
    agent.run(
        [*Q, {"role": "assistant", "content": "A"}, {"role": "user", "content": "B"}], store=store, conversation_id="c1"
    )
    _rewrite(store, "c1", BROKEN_ROWS[broken])
    with pytest.raises(CorruptSnapshotError, match="is not valid"):
        store.load("c1")
    with pytest.raises(CorruptSnapshotError):
        agent.resume("c1", store=store)


@pytest.mark.parametrize("driver", ["run", "astream"])
def test_lone_surrogates_and_nul_in_a_reply_and_a_tool_input_are_stored_and_resumed(
    driver: str, serve: Any, store: Store
) -> None:
    odd = "a\ud800b\x00c\udfff"
    server = serve(
        [
            reply(message([text(f"say {odd}"), call("lookup", {"key": odd}, "toolu_s")], "tool_use")),
            reply(message([text(f"done {odd}")])),
        ]
    )
    agent = agent_for(server, driver)
    result = drive(agent, "Q", driver, store=store, conversation_id="c1")
    sendable = "a\ufffdb\x00c\ufffd"  # a lone surrogate cannot be sent (nor encoded): U+FFFD; NUL is kept
    assert result.final_state == "done" and result.text == f"done {sendable}"
    assert ran_with == [sendable]
    assert result.messages[1]["content"][0]["text"] == f"say {sendable}"
    assert server.requests[1]["messages"][1]["content"][1]["input"] == {"key": sendable}
    assert store.load("c1").messages == result.messages
    again = agent.resume("c1", store=store) if driver == "run" else asyncio.run(agent.aresume("c1", store=store))
    assert again.final_state == "done" and again.messages == result.messages


def test_a_streamed_lone_surrogate_is_shown_as_it_is_kept(serve: Any) -> None:
    server = serve([reply(message([text("odd \udbff end")]))])
    events = list(agent_for(server, "stream").stream("Q"))
    final = events[-1]
    assert isinstance(final, ResultEvent) and final.result.text == "odd \ufffd end"
    assert "".join(e.text for e in events if e.type == "text") == final.result.text


def test_a_callers_lone_surrogate_is_stored_as_it_is(serve: Any, store: Store) -> None:
    server = serve([reply(message([text("never")]))])
    result = agent_for(server, "run").run("bad \udc80 text", store=store, conversation_id="c1")
    assert result.final_state == "failed"  # no request can carry it; the run fails instead of raising
    assert store.load("c1").messages == [{"role": "user", "content": "bad \udc80 text"}]


# --- 9. cancelling arun mid-tool, without a store -------------------------------------------------------------


@pytest.mark.parametrize("idempotent", [False, True])
def test_cancelling_arun_mid_tool_never_runs_a_tool_twice_unless_idempotent(idempotent: bool, serve: Any) -> None:
    started = asyncio.Event()
    charges: list[int] = []

    @tool(idempotent=idempotent)
    async def charge(amount: int) -> str:
        """Charge a card."""
        charges.append(amount)
        if len(charges) == 1:
            started.set()
            await asyncio.sleep(3600)
        return "charged"

    server = serve(
        [reply(message([call("charge", {"amount": 5}, "toolu_c")], "tool_use")), reply(message([text("ok")]))]
    )
    conv = agent_for(server, "arun", tools=[charge]).start("Q", asynchronous=True)

    async def go() -> RunResult:
        task = asyncio.create_task(conv.arun())
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await conv.arun()  # the same conversation object, no store

    result = asyncio.run(go())
    assert result.final_state == "done" and result.text == "ok"
    answered = server.requests[1]["messages"][2]["content"][0]
    if idempotent:
        assert charges == [5, 5] and answered["content"] == "charged"
    else:
        assert charges == [5] and answered["is_error"] and "not run again" in answered["content"]
        assert [e.data["tool"] for e in result.events if e.event == "tool.interrupted"] == ["charge"]


# --- 11. the command line finds the recorded class: moved to test_untrusted_store.py -----------------------
#
# It imports nothing a stored row or an events file names (issue 21): a run is drawn on the graph stored with it,
# and `--agent MODULE:Class` names a class to draw on.


# --- the fake server itself ---------------------------------------------------------------------------------


def test_the_hostile_server_drops_a_body_midway(serve: Any) -> None:
    server = serve([dropped(message([text("x" * 400)]))])
    with pytest.raises(anthropic.APIConnectionError):
        anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0).messages.create(
            model=MODEL, max_tokens=10, messages=Q
        )
