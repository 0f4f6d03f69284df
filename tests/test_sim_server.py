"""The simulator on a real loopback socket: the same answers as in-process, JSON and SSE, faults included."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import anthropic
import httpx2
import pytest
from sdk_errors import assert_dropped

from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.sim.server import SimHTTPServer

MODEL = "claude-haiku-4-5"
USER: list[Any] = [{"role": "user", "content": "What is the weather in Hanoi?"}]


# These tests send invalid requests on purpose: keep wire-rule checkers registered elsewhere out.
pytestmark = pytest.mark.usefixtures("no_foreign_observers")


def first_text(message: Any) -> str:
    """The text of a reply's first block (typed loosely: the SDK's content union has no common ``text``)."""
    return str(message.content[0].text)


def test_json_and_sse_over_the_socket_match_in_process() -> None:
    script = [r.tool_use("get_weather", {"location": "Hanoi"}, text="Checking."), r.pause_turn(completed_searches=2)]
    reference = Simulator(list(script)).client(max_retries=0)
    expected = [reference.messages.create(model=MODEL, max_tokens=100, messages=USER) for _ in script]

    plain_sim, stream_sim = Simulator(list(script)), Simulator(list(script))
    with plain_sim.serve() as plain_url, stream_sim.serve() as stream_url:
        assert plain_url.startswith("http://127.0.0.1:") and not plain_url.endswith(":0") and plain_url != stream_url
        client = anthropic.Anthropic(base_url=plain_url, api_key="x", max_retries=0)
        plain = [client.messages.create(model=MODEL, max_tokens=100, messages=USER) for _ in script]
        client = anthropic.Anthropic(base_url=stream_url, api_key="x", max_retries=0)
        streamed = []
        for _ in script:
            with client.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream:
                streamed.append(stream.get_final_message())
    for want, got in zip(expected, plain, strict=True):
        assert got.to_dict() == want.to_dict()
    for want, got in zip(expected, streamed, strict=True):
        assert got.id == want.id and got.usage.to_dict() == want.usage.to_dict()
        assert [b.to_dict(exclude_none=True) for b in got.content] == [
            b.to_dict(exclude_none=True) for b in want.content
        ]
        assert (got.stop_reason, got.stop_details) == (want.stop_reason, want.stop_details)
    assert [q.stream for q in plain_sim.requests + stream_sim.requests] == [False, False, True, True]
    assert plain_sim.requests[0].headers["authorization"] == "Bearer x"


def test_raw_http_over_the_socket() -> None:
    sim = Simulator([r.text("hello")])
    with sim.serve() as base_url:
        body = {"model": MODEL, "max_tokens": 5, "stream": True, "messages": USER}
        response = httpx2.post(f"{base_url}/v1/messages", json=body)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.text.startswith("event: message_start\ndata: {")
        assert (
            response.text.endswith("}\n\n") and '\n\nevent: message_stop\ndata: {"type":"message_stop"' in response.text
        )
        missing = httpx2.get(f"{base_url}/v1/models")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
        bad = httpx2.post(f"{base_url}/v1/messages", content=b"{nope", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and "invalid JSON" in bad.json()["error"]["message"]


def test_async_client_over_the_socket() -> None:
    sim = Simulator([r.text("one"), r.text("two")])

    async def go(base_url: str) -> list[str]:
        client = anthropic.AsyncAnthropic(base_url=base_url, api_key="x", max_retries=0)
        first = await client.messages.create(model=MODEL, max_tokens=5, messages=USER)
        async with client.messages.stream(model=MODEL, max_tokens=5, messages=USER) as stream:
            second = await stream.get_final_message()
        return [first_text(first), first_text(second)]

    with sim.serve() as base_url:
        assert asyncio.run(go(base_url)) == ["one", "two"]


def test_errors_and_retries_over_the_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = Simulator([r.overloaded(), r.text("after retry"), r.authentication_error()])
    with sim.serve() as base_url:
        client = anthropic.Anthropic(base_url=base_url, api_key="x", max_retries=1)
        waits: list[float] = []
        monkeypatch.setattr(time, "sleep", waits.append)  # the SDK's wait before its retry, recorded
        message = client.messages.create(model=MODEL, max_tokens=5, messages=USER)
        monkeypatch.undo()
        assert first_text(message) == "after retry"
        assert waits == [0.001]  # the header's retry-after-ms: 1 crossed the socket
        with pytest.raises(anthropic.AuthenticationError) as info:
            client.messages.create(model=MODEL, max_tokens=5, messages=USER)
        assert info.value.request_id == info.value.response.headers["request-id"]


def test_faults_over_the_socket() -> None:
    long = "Every word of this reply is streamed in small pieces until the connection is cut. " * 2
    sim = Simulator(
        [
            r.with_fault(r.text(long), "drop"),
            r.with_fault(r.text(long), "error_event"),
            r.with_fault(r.text(long), "no_message_delta"),
            r.with_fault(r.text("x"), "drop"),
            r.text("the connection still works"),
        ]
    )
    with sim.serve() as base_url:
        client = anthropic.Anthropic(base_url=base_url, api_key="x", max_retries=0)
        # A cut chunked body: a connection error caused by the transport's RemoteProtocolError.
        with (
            pytest.raises(Exception) as info,  # which class depends on the SDK: assert_dropped
            client.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream,
        ):
            stream.get_final_message()
        assert_dropped(info.value, "incomplete chunked read")
        with (
            pytest.raises(anthropic.APIStatusError) as error_event,
            client.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream,
        ):
            stream.get_final_message()
        overloaded = {"type": "overloaded_error", "message": "Overloaded"}
        assert error_event.value.body == {"type": "error", "error": overloaded}
        with client.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream:
            assert stream.get_final_message().stop_reason is None
        # Not streamed: the socket closes without a response -> APIConnectionError.
        with pytest.raises(anthropic.APIConnectionError):
            client.messages.create(model=MODEL, max_tokens=5, messages=USER)
        assert client.messages.create(model=MODEL, max_tokens=5, messages=USER).content


def test_keep_alive_and_no_nagle_stall() -> None:
    # Keep-alive: the client's 21 requests share one connection. Nagle: the handler turns it off on every
    # connection it accepts (with it on, each request stalls ~40 ms on delayed ACKs; a timing assertion
    # would catch that too, but flakes on a busy machine, so the setting itself is checked).
    sim = Simulator(lambda request: r.text("pong"))
    server = SimHTTPServer(("127.0.0.1", 0), sim.respond)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)
        for _ in range(21):
            client.messages.create(model=MODEL, max_tokens=5, messages=USER)
        client.close()
    finally:
        server.shutdown()
        server.server_close()
    assert len(sim.requests) == 21
    assert server.connections == 1
    assert server.RequestHandlerClass.disable_nagle_algorithm is True  # type: ignore[attr-defined]


def test_observer_error_on_the_socket_is_a_400() -> None:
    def checker(request: SimRequest) -> None:
        raise AssertionError("wire rule broken")

    Simulator.observers.append(checker)
    sim = Simulator([r.text("x")])
    with sim.serve() as base_url:
        client = anthropic.Anthropic(base_url=base_url, api_key="x", max_retries=0)
        with pytest.raises(anthropic.BadRequestError, match="simulator error: AssertionError: wire rule broken"):
            client.messages.create(model=MODEL, max_tokens=5, messages=USER)


def test_serve_forever_blocks_until_shut_down() -> None:
    sim = Simulator([r.text("served forever")])
    ready: list[str] = []
    started = threading.Event()

    def on_ready(url: str) -> None:
        ready.append(url)
        started.set()

    stop = threading.Event()
    thread = threading.Thread(
        target=sim.serve_forever, args=("127.0.0.1", 0), kwargs={"on_ready": on_ready, "stop": stop}, daemon=True
    )
    thread.start()
    assert started.wait(5)
    client = anthropic.Anthropic(base_url=ready[0], api_key="x", max_retries=0)
    message = client.messages.create(model=MODEL, max_tokens=5, messages=USER)
    assert first_text(message) == "served forever"
    assert thread.is_alive()
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_server_class_flags() -> None:
    server = SimHTTPServer(("127.0.0.1", 0), Simulator([]).respond)
    try:
        handler: Any = server.RequestHandlerClass
        assert handler.disable_nagle_algorithm is True
        assert handler.protocol_version == "HTTP/1.1"
        assert server.daemon_threads is True
    finally:
        server.server_close()
