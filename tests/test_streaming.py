"""Streaming and async drivers: stream faults, retries, what the caller is shown, cancellation, concurrency.

The state-table rows themselves run under every driver in ``test_stop_reasons.py``.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from agentfsm import Agent, Policy, RunResult, tool
from agentfsm.machine.streaming import (
    ResultEvent,
    RetryEvent,
    RewindEvent,
    StreamEvent,
    TextEvent,
    ToolCallEvent,
    TransitionEvent,
)
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.testing import drive, shown_text

FAST = Policy(stream_retry_backoff=0.0)


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


def sync_agent(sim: Simulator, **kw: Any) -> Agent:
    kw.setdefault("policy", FAST)
    return Agent(client=sim.client(max_retries=0), model="claude-haiku-4-5", tools=[lookup], logger=None, **kw)


def async_agent(sim: Simulator, **kw: Any) -> Agent:
    kw.setdefault("policy", FAST)
    return Agent(client=sim.async_client(max_retries=0), model="claude-haiku-4-5", tools=[lookup], logger=None, **kw)


def collect(agent: Agent, prompt: str, *, asynchronous: bool) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    drive(agent, prompt, "astream" if asynchronous else "stream", stream_events=events)
    return events


#: What a caller that appends text and honours rewinds ends up showing.
screen = shown_text


def result_of(events: list[StreamEvent]) -> RunResult:
    final = events[-1]
    assert isinstance(final, ResultEvent)
    return final.result


both = pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])


# --- what the caller sees ------------------------------------------------------------------------


@both
def test_text_arrives_in_deltas_and_events_in_order(asynchronous: bool) -> None:
    sim = Simulator([r.tool_use("lookup", {"key": "a"}, text="Checking."), r.text("The value is A, as you can see.")])
    agent = async_agent(sim) if asynchronous else sync_agent(sim)
    events = collect(agent, "What is a?", asynchronous=asynchronous)
    texts = [e for e in events if isinstance(e, TextEvent)]
    assert len(texts) > 2  # deltas, not one lump
    kinds = [e.type for e in events]
    assert kinds[-1] == "result"
    # tool start/finish sit between the transition into tool_use and the one out of it
    into = next(i for i, e in enumerate(events) if isinstance(e, TransitionEvent) and e.dest == "tool_use")
    out = next(i for i, e in enumerate(events) if isinstance(e, TransitionEvent) and e.source == "tool_use")
    tools = [e for e in events[into:out] if isinstance(e, ToolCallEvent)]
    assert [(t.phase, t.tool) for t in tools] == [("started", "lookup"), ("finished", "lookup")]
    assert tools[1].is_error is False
    assert screen(events) == "Checking.The value is A, as you can see."
    assert result_of(events).text == "The value is A, as you can see."


@both
def test_a_continuation_keeps_streaming_across_the_seam(asynchronous: bool) -> None:
    doc = "".join(f"Line {i}: a sentence that runs on,   then stops.\n" for i in range(30))
    sim = Simulator([r.writer(doc)] * 30)
    policy = Policy(max_tokens=40, max_continuations=29, stream_retry_backoff=0)
    agent = async_agent(sim, policy=policy) if asynchronous else sync_agent(sim, policy=policy)
    events = collect(agent, "Write.", asynchronous=asynchronous)
    assert not any(isinstance(e, RewindEvent) for e in events)
    assert screen(events) == doc == result_of(events).text
    seams = [e for e in events if isinstance(e, TransitionEvent) and e.trigger == "continue_text"]
    assert len(seams) > 5


def test_a_prompt_continuation_that_repeats_itself_is_not_shown_twice() -> None:
    first = "The history of computing begins with the abacus and"
    repeat = "begins with the abacus and then moves on to mechanical calculators."
    sim = Simulator([r.max_tokens(first), r.text(repeat)])
    events = collect(sync_agent(sim, policy=Policy(continuation="prompt")), "Go", asynchronous=False)
    expected = "The history of computing begins with the abacus and then moves on to mechanical calculators."
    assert result_of(events).text == expected
    assert screen(events) == expected
    assert not any(isinstance(e, RewindEvent) for e in events)


# --- stream faults ----------------------------------------------------------------------------------


@both
@pytest.mark.parametrize("fault", ["drop", "error_event", "no_message_delta"])
def test_a_broken_stream_is_retried_and_text_is_not_shown_twice(asynchronous: bool, fault: Any) -> None:
    answer = "A long answer that starts streaming, then the connection breaks somewhere in the middle."
    sim = Simulator([r.with_fault(r.text(answer), fault), r.text(answer)])
    agent = async_agent(sim) if asynchronous else sync_agent(sim)
    events = collect(agent, "Q", asynchronous=asynchronous)
    result = result_of(events)
    assert result.final_state == "done" and result.text == answer
    assert len(sim.requests) == 2 and sim.requests[0].body == sim.requests[1].body
    retries = [e for e in events if isinstance(e, RetryEvent)]
    assert len(retries) == 1 and retries[0].attempt == 1
    assert screen(events) == answer  # what was shown before the break is not shown again
    assert not any(isinstance(e, RewindEvent) for e in events)
    retried = [e for e in result.events if e.event == "request.retried"]
    assert retried[0].data["fault"] in ("dropped", "error_event", "incomplete")
    assert result.path == ["requesting", "end_turn", "done"]  # a fault is not a stop reason


@both
def test_a_retry_that_says_something_else_rewinds_what_was_shown(asynchronous: bool) -> None:
    sim = Simulator([r.with_fault(r.text("The answer is forty-two, because of the way"), "drop"), r.text("It is 42.")])
    agent = async_agent(sim) if asynchronous else sync_agent(sim)
    events = collect(agent, "Q", asynchronous=asynchronous)
    assert any(isinstance(e, RewindEvent) for e in events)
    assert screen(events) == "It is 42." == result_of(events).text


@both
def test_stream_retries_run_out_and_the_run_fails_with_history_kept(asynchronous: bool) -> None:
    broken = r.with_fault(r.text("never finishes properly"), "drop")
    sim = Simulator([r.tool_use("lookup", {"key": "k"}), broken, broken, broken])
    policy = Policy(stream_retries=2, stream_retry_backoff=0)
    agent = async_agent(sim, policy=policy) if asynchronous else sync_agent(sim, policy=policy)
    events = collect(agent, "Q", asynchronous=asynchronous)
    result = result_of(events)
    assert result.final_state == "failed" and result.error is not None
    assert len(sim.requests) == 4  # the tool turn, then the broken request sent 1 + 2 times
    assert [m["role"] for m in result.messages] == ["user", "assistant", "user"]
    assert len([e for e in events if isinstance(e, RetryEvent)]) == 2


def test_a_stream_that_ends_without_stop_reason_is_not_a_finished_turn() -> None:
    sim = Simulator([r.with_fault(r.tool_use("lookup", {"key": "k"}), "no_message_delta"), r.text("done")])
    events = collect(sync_agent(sim, policy=Policy(stream_retries=0)), "Q", asynchronous=False)
    result = result_of(events)
    assert result.final_state == "failed" and result.error is not None
    assert result.error.type == "incomplete_stream"
    assert result.messages == [{"role": "user", "content": "Q"}]  # the half reply never entered the history


def test_retry_backoff_doubles_up_to_its_cap() -> None:
    broken = r.with_fault(r.text("x"), "error_event")
    sim = Simulator([broken] * 4)
    policy = Policy(stream_retries=3, stream_retry_backoff=0.001, stream_retry_max_backoff=0.003)
    events = collect(sync_agent(sim, policy=policy), "Q", asynchronous=False)
    assert [e.delay_s for e in events if isinstance(e, RetryEvent)] == [0.001, 0.002, 0.003]


def test_a_streamed_cut_tool_call_is_never_run() -> None:
    calls: list[str] = []

    @tool
    def record(key: str) -> str:
        """Record a key."""
        calls.append(key)
        return "ok"

    sim = Simulator(
        [r.truncated_tool_use("record", '{"key": "half'), r.tool_use("record", {"key": "whole"}), r.text(".")]
    )
    agent = Agent(client=sim.client(max_retries=0), model="claude-haiku-4-5", tools=[record], logger=None)
    assert result_of(list(agent.stream("Q"))).final_state == "done"
    assert calls == ["whole"]
    assert [q.max_tokens for q in sim.requests] == [1024, 4096, 4096]
    assert sim.requests[0].stream and sim.requests[1].stream


# --- cancellation -------------------------------------------------------------------------------------


def test_cancelling_arun_raises_and_leaves_a_consistent_conversation() -> None:
    started = asyncio.Event()

    @tool
    async def wait_forever(key: str) -> str:
        """Never returns."""
        started.set()
        await asyncio.sleep(3600)
        return "unreachable"

    sim = Simulator([r.tool_use("wait_forever", {"key": "k"}), r.text("never")])
    agent = Agent(client=sim.async_client(max_retries=0), model="claude-haiku-4-5", tools=[wait_forever], logger=None)
    conv = agent.start("Q", asynchronous=True)

    async def go() -> None:
        task = asyncio.create_task(conv.arun())
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert conv.state == "tool_use" and not conv.finished
    assert [m["role"] for m in conv.messages] == ["user"]  # the reply is not half-appended
    assert len(sim.requests) == 1


@both
def test_a_timeout_around_astream_raises_timeout_error(asynchronous: bool) -> None:
    gate = asyncio.Event()

    @tool
    async def stall(key: str) -> str:
        """Stall."""
        await gate.wait()
        return "late"

    sim = Simulator([r.tool_use("stall", {"key": "k"}), r.text("never")])
    agent = Agent(client=sim.async_client(max_retries=0), model="claude-haiku-4-5", tools=[stall], logger=None)
    conv = agent.start("Q", asynchronous=True)

    async def go() -> None:
        if asynchronous:
            async with asyncio.timeout(0.2):
                async for _ in conv.astream():
                    pass
        else:
            await asyncio.wait_for(conv.arun(), 0.2)

    with pytest.raises(TimeoutError):
        asyncio.run(go())
    assert conv.state == "tool_use" and conv.messages == [{"role": "user", "content": "Q"}]


def test_a_cancelled_conversation_can_be_resumed() -> None:
    gate = asyncio.Event()
    runs = 0

    @tool(idempotent=True)  # run again after the cancel (a tool that is not idempotent is answered "interrupted")
    async def flaky(key: str) -> str:
        """Blocks the first time."""
        nonlocal runs
        runs += 1
        if runs == 1:
            await gate.wait()
        return "ok"

    sim = Simulator([r.tool_use("flaky", {"key": "k"}), r.text("finished")])
    agent = Agent(client=sim.async_client(max_retries=0), model="claude-haiku-4-5", tools=[flaky], logger=None)
    conv = agent.start("Q", asynchronous=True)

    async def go() -> RunResult:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(conv.arun(), 0.1)
        return await conv.arun()  # picks up in tool_use and runs the idempotent tool again

    result = asyncio.run(go())
    assert result.final_state == "done" and result.text == "finished" and runs == 2


# --- many conversations ----------------------------------------------------------------------------------


def test_many_concurrent_conversations_share_one_machine() -> None:
    sim = Simulator(lambda req: r.tool_use("lookup", {"key": "k"}) if len(req.messages) == 1 else r.text("ok"))
    agent = Agent(client=sim.async_client(max_retries=0), model="claude-haiku-4-5", tools=[lookup], logger=None)
    machine = Agent.table().machine
    models_before = len(machine.models)

    # A hundred at once show it as well as thousands (the scale is benchmarks/bench.py's): ~3 s, not ~10.
    async def go() -> list[RunResult]:
        return await asyncio.gather(*(agent.arun(f"q{i}") for i in range(100)))

    results = asyncio.run(go())
    assert all(res.final_state == "done" and res.text == "ok" for res in results)
    assert len(sim.requests) == 200
    assert len(machine.models) == models_before  # no conversation was added to the machine
    gc.collect()
