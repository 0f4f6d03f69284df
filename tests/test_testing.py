"""``agentfsm.testing``: golden traces with a readable diff, every driver, every event, a clock that does not wait."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from agentfsm import Agent, Policy, tool
from agentfsm.clock import SYSTEM, current
from agentfsm.errors import ConfigurationError
from agentfsm.machine.streaming import ResultEvent, RewindEvent, StreamEvent, TextEvent
from agentfsm.observe.replay import replay_one
from agentfsm.result import TraceStep
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.memory import MemoryStore
from agentfsm.testing import (
    DRIVERS,
    FakeClock,
    assert_trace,
    capture_events,
    client_for,
    drive,
    shown_text,
    use_clock,
)

MODEL = "claude-haiku-4-5"

PATH = ["requesting", "max_tokens", "requesting", "end_turn", "done"]


def run() -> object:
    sim = Simulator([r.max_tokens("Part one,"), r.text(" part two.")])
    return Agent(client=sim.client(), model="claude-haiku-4-5", logger=None).run("Write")


def test_a_matching_trace_passes_for_results_conversations_replays_and_lists() -> None:
    result = run()
    assert_trace(result, PATH)
    assert_trace(result.trace, PATH)  # type: ignore[attr-defined]
    assert_trace(replay_one(result.events), PATH)  # type: ignore[attr-defined]
    sim = Simulator([r.text("hi")])
    conv = Agent(client=sim.client(), logger=None).start("hello")
    assert_trace(conv, [])  # nothing happened yet
    conv.step()
    assert_trace(conv, ["requesting", "end_turn"])


def test_a_different_trace_fails_with_a_step_by_step_diff() -> None:
    with pytest.raises(AssertionError) as err:
        assert_trace(run(), ["requesting", "end_turn", "done"])
    message = str(err.value)
    assert message.startswith("the run's path differs from the expected one from step 1 on (expected 3 states, got 5)")
    assert "  expected: requesting → end_turn → done" in message
    assert "  actual:   requesting → max_tokens → requesting → end_turn → done" in message
    lines = message.splitlines()
    # the aligned diff: the two extra states are marked "+", with the transition that reached each
    plus = [line for line in lines if line.startswith("  + ")]
    assert len(plus) == 2 and "max_tokens" in plus[0] and "via max_tokens (turn 1)" in plus[0]
    assert "via continue_text (turn 1)" in plus[1]
    assert any(line.startswith("       4  done") and "via finish (turn 2)" in line for line in lines)


def test_a_changed_state_is_marked_as_differing() -> None:
    with pytest.raises(AssertionError) as err:
        assert_trace(run(), [*PATH[:-1], "truncated"])
    changed = [line for line in str(err.value).splitlines() if line.startswith("  ~ ")]
    assert len(changed) == 1 and "truncated" in changed[0] and "done" in changed[0]


def test_missing_states_are_marked() -> None:
    with pytest.raises(AssertionError) as err:
        assert_trace(run(), [*PATH, "requesting"])
    assert any(line.startswith("  -    5  requesting") for line in str(err.value).splitlines())


def test_wrong_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError, match="list of state names"):
        assert_trace(run(), "requesting")
    with pytest.raises(TypeError, match="RunResult, Conversation, ReplayedRun or list of TraceStep"):
        assert_trace(42, PATH)
    assert_trace([TraceStep(source="a", dest="b", trigger="t", turn=0)], ["a", "b"])


# --- every driver -----------------------------------------------------------------------------------------


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"31°C in {city}"


def weather(driver: str, *script: Any) -> tuple[Simulator, Agent]:
    sim = Simulator(list(script) or [r.tool_use("get_weather", {"city": "Hanoi"}), r.text("It is 31°C in Hanoi.")])
    return sim, Agent(client=client_for(sim, driver), model=MODEL, tools=[get_weather], logger=None)


def test_drivers_are_the_four_ways_to_run() -> None:
    assert DRIVERS == ("run", "arun", "stream", "astream")


@pytest.mark.parametrize("driver", DRIVERS)
def test_drive_runs_the_agent_through_the_driver(driver: str) -> None:
    sim, agent = weather(driver)
    store = MemoryStore()
    result = drive(agent, "Weather in Hanoi?", driver, conversation_id="conv_w", store=store)
    assert result.final_state == "done" and result.text == "It is 31°C in Hanoi."
    assert_trace(result, ["requesting", "tool_use", "requesting", "end_turn", "done"])
    assert result.conversation_id == "conv_w" and store.load("conv_w").state == "done"  # kw reached the driver
    assert [q.stream for q in sim.requests] == [driver.endswith("stream")] * 2  # and it was that driver


@pytest.mark.parametrize("driver", ["stream", "astream"])
def test_drive_hands_back_what_a_stream_showed(driver: str) -> None:
    # The first stream breaks after some text; its resend says something else: the shown text is rewound.
    _sim, agent = weather(driver, r.with_fault(r.text("Hello there, friend."), "drop"), r.text("Hi."))
    agent.policy = Policy(stream_retry_backoff=0)
    events: list[StreamEvent] = []
    result = drive(agent, "Greet me.", driver, stream_events=events)
    assert isinstance(events[-1], ResultEvent) and events[-1].result is result
    assert any(isinstance(e, RewindEvent) for e in events) and any(isinstance(e, TextEvent) for e in events)
    assert shown_text(events) == result.text == "Hi."


def test_drive_and_client_for_refuse_a_driver_they_do_not_know() -> None:
    sim, agent = weather("run")
    with pytest.raises(ConfigurationError, match="run, arun, stream, astream; got 'walk'"):
        drive(agent, "Weather?", "walk")
    with pytest.raises(ConfigurationError, match="got 'Run'"):
        client_for(sim, "Run")
    assert sim.requests == []


# --- capture_events -----------------------------------------------------------------------------------------


def test_capture_events_sees_every_run_in_the_block_logging_off_and_resumed_runs_too() -> None:
    _sim, agent = weather("run")
    store = MemoryStore()
    before = agent.run("Weather in Hanoi?")  # not captured: before the block
    _sim2, agent2 = weather("run")
    with capture_events() as events:
        result = drive(agent2, "Weather in Hanoi?", "run", conversation_id="conv_c", store=store)
        resumed = agent2.resume("conv_c", store=store)  # finished already: its resume is an event too
    after = agent.run("Weather in Hanoi?")  # not captured: after the block
    mine = [e for e in events if e.conversation_id == "conv_c"]
    assert mine == events  # nothing from the runs outside the block
    assert [e.event for e in events][: len(result.events)] == [e.event for e in result.events]
    assert [e.model_dump() for e in events[: len(result.events)]] == [e.model_dump() for e in result.events]
    assert events[len(result.events)].event == "run.resumed" and resumed.final_state == "done"
    assert before.events and after.events and before.conversation_id not in {e.conversation_id for e in events}


def test_capture_events_sees_runs_in_other_threads_and_nests() -> None:
    results = []
    with capture_events() as outer:
        with capture_events() as inner:
            _, agent = weather("arun")
            worker = threading.Thread(target=lambda: results.append(asyncio.run(agent.arun("Weather?"))))
            worker.start()
            worker.join(30)
        _, agent = weather("run")
        last = agent.run("Weather?")
    assert [e.conversation_id for e in inner] == [results[0].conversation_id] * len(results[0].events)
    assert [e.conversation_id for e in outer] == [
        *[results[0].conversation_id] * len(results[0].events),
        *[last.conversation_id] * len(last.events),
    ]


def test_capture_events_stops_when_the_block_raises() -> None:
    _, agent = weather("run")
    with pytest.raises(RuntimeError), capture_events() as events:
        raise RuntimeError("the test failed")
    agent.run("Weather?")
    assert events == []


def test_captured_events_are_redacted() -> None:
    key = "sk-ant-api03-" + "CaptureKeyDoNotLeak7x" * 3 + "-ZZ"
    sim = Simulator([r.tool_use("get_weather", {"city": key}), r.text("Done.")])
    agent = Agent(client=sim.client(api_key=key), model=MODEL, tools=[get_weather], logger=None)
    with capture_events() as events:
        agent.run("Weather?")
    dumped = str([e.model_dump() for e in events])
    assert events and "CaptureKeyDoNotLeak7x" not in dumped


# --- FakeClock and use_clock --------------------------------------------------------------------------------


def test_a_fake_clock_moves_only_when_told_or_slept_on() -> None:
    clock = FakeClock(start=100.0)
    assert clock.now() == clock() == 100.0
    clock.advance(2.5)
    clock.sleep(0.5)
    asyncio.run(clock.asleep(1.0))
    assert clock.now() == 104.0 and clock.slept == [0.5, 1.0]
    with pytest.raises(ConfigurationError, match="does not go back"):
        clock.advance(-1)


def test_use_clock_is_for_the_conversations_started_inside_it_to_their_end() -> None:
    clock = FakeClock()

    @tool
    def slow(city: str) -> str:
        """Take two seconds on the fake clock."""
        clock.advance(2)
        return "31°C"

    sim = Simulator([r.tool_use("slow", {"city": "Hanoi"}), r.text("31°C.")])
    agent = Agent(client=sim.client(), model=MODEL, tools=[slow], logger=None)
    with use_clock(clock) as used:
        assert used is clock and current() is clock
        conv = agent.start("Weather?")
    assert current() is SYSTEM
    result = conv.run()  # run outside the block: it keeps the clock it started with
    finished = [e for e in result.events if e.event == "run.finished"]
    assert finished[0].data["latency_ms"] == 2000.0 and conv.elapsed_s == 2.0
    outside = Agent(client=Simulator([r.text("hi")]).client(), model=MODEL, logger=None).start("hi")
    clock.advance(60)
    assert outside.elapsed_s < 60  # started outside: on the real clock
