"""One test (at least) per row of SPEC.md §1, through the real anthropic client against the simulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any, Literal

import pytest

from agentfsm import Agent, Conversation, Policy, RunResult, tool
from agentfsm.errors import ConfigurationError
from agentfsm.machine.streaming import ResultEvent, StreamEvent, TransitionEvent
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.testing import DRIVERS, client_for, drive, shown_text
from agentfsm.wire.caching import unmarked

CALLS: list[dict[str, Any]] = []


@tool
def get_weather(location: str, unit: Literal["c", "f"] = "c") -> str:
    """Get the current weather for a city."""
    CALLS.append({"location": location, "unit": unit})
    return f"31°{unit.upper()} and humid in {location}"


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


DOC = "".join(f"Section {i}: the quick brown fox jumps over the lazy dog, again.  \n\n" for i in range(40))


DRIVER = "run"


@pytest.fixture(autouse=True, params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs under each driver: the same states must be reached either way."""
    global DRIVER
    DRIVER = request.param
    yield DRIVER
    DRIVER = "run"


class Driven:
    """An agent whose ``run`` goes through the driver under test (and checks what a stream showed)."""

    def __init__(self, sim: Simulator, kw: dict[str, Any]) -> None:
        self.driver = DRIVER
        self.agent = Agent(client=client_for(sim, DRIVER, max_retries=kw.pop("max_retries", 0)), **kw)

    def run(self, prompt: Any) -> RunResult:
        events: list[StreamEvent] = []
        result = drive(self.agent, prompt, self.driver, stream_events=events)
        if not events:  # run, arun
            return result
        assert not any(isinstance(e, ResultEvent) for e in events[:-1])
        transitions = [(e.source, e.dest, e.trigger) for e in events if isinstance(e, TransitionEvent)]
        assert transitions == [(s.source, s.dest, s.trigger) for s in result.trace]
        shown = shown_text(events)
        assert shown.endswith(result.text), (shown, result.text)
        return result

    def start(self, prompt: Any) -> Conversation:
        return self.agent.start(prompt, asynchronous=self.driver.startswith("a"))


def agent(sim: Simulator, **kw: Any) -> Driven:
    kw.setdefault("model", "claude-haiku-4-5")
    kw.setdefault("tools", [get_weather])
    return Driven(sim, kw)


def events(result: Any, name: str) -> list[dict[str, Any]]:
    return [e.data for e in result.events if e.event == name]


# --- end_turn -------------------------------------------------------------------------------


def test_end_turn_finishes_done() -> None:
    sim = Simulator([r.text("Hello there.")])
    result = agent(sim).run("Hi")
    assert result.final_state == "done"
    assert result.stop_reason == "end_turn"
    assert result.text == "Hello there."
    assert result.path == ["requesting", "end_turn", "done"]
    assert result.messages == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello there."}]},
    ]
    assert not result.truncated and not result.refused and result.error is None


def test_empty_end_turn_after_tool_results_gets_a_new_user_nudge() -> None:
    sim = Simulator([r.tool_use("get_weather", {"location": "Hanoi"}), r.empty_end_turn(), r.text("It is 31°C.")])
    result = agent(sim).run("Weather in Hanoi?")
    assert result.final_state == "done" and result.text == "It is 31°C."
    third = sim.requests[2].messages
    # the empty reply is never sent back; the nudge is a new user message after the tool results
    assert [m["role"] for m in third] == ["user", "assistant", "user", "user"]
    assert third[2]["content"][0]["type"] == "tool_result"
    assert unmarked(third)[3]["content"] == Policy().nudge_prompt
    assert len(events(result, "empty.nudged")) == 1
    assert events(result, "reply.discarded")[0]["reason"].startswith("empty reply")


def test_empty_end_turn_nudges_are_bounded() -> None:
    sim = Simulator([r.tool_use("get_weather", {"location": "Hanoi"}), r.empty_end_turn(), r.empty_end_turn()])
    result = agent(sim, policy=Policy(max_empty_retries=1)).run("Weather?")
    assert result.final_state == "done" and result.reason == "empty_reply" and result.text == ""
    assert len(sim.requests) == 3
    assert result.messages[-1]["role"] == "user"  # no empty assistant message kept


def test_empty_end_turn_without_tool_results_is_just_done() -> None:
    sim = Simulator([r.empty_end_turn()])
    result = agent(sim).run("Say nothing")
    assert result.final_state == "done" and result.text == "" and len(sim.requests) == 1


# --- max_tokens -------------------------------------------------------------------------------


def test_cut_tool_use_is_retried_on_the_next_rung_and_never_run() -> None:
    sim = Simulator(
        [
            r.truncated_tool_use("get_weather", '{"location": "Ha'),
            r.tool_use("get_weather", {"location": "Hanoi"}),
            r.text("Done."),
        ]
    )
    result = agent(sim, policy=Policy(max_tokens=1024, max_tokens_ladder=[4096, 16384])).run("Weather?")
    assert result.final_state == "done"
    assert CALLS == [{"location": "Hanoi", "unit": "c"}]  # the cut call never ran
    first, second = sim.requests[0].body, sim.requests[1].body
    assert (first["max_tokens"], second["max_tokens"]) == (1024, 4096)
    assert unmarked(first["messages"]) == unmarked(second["messages"])  # the same request, more room
    assert events(result, "ladder.climbed") == [{"from_max_tokens": 1024, "to_max_tokens": 4096}]
    # the cut reply is in no request and not in the history
    for req in sim.requests:
        for m in req.messages:
            assert "input" not in json.dumps(m) or '"location": "Hanoi"' in json.dumps(m)
    assert result.path[:4] == ["requesting", "max_tokens", "requesting", "tool_use"]


def test_ladder_exhausted_fails_with_history_kept() -> None:
    sim = Simulator([r.truncated_tool_use("get_weather", '{"loc')] * 3)
    result = agent(sim, policy=Policy(max_tokens=100, max_tokens_ladder=[200, 300])).run("Weather?")
    assert result.final_state == "failed"
    assert result.error is not None and result.error.type == "max_tokens_ladder_exhausted"
    assert "max_tokens=300" in result.error.message
    assert [q.max_tokens for q in sim.requests] == [100, 200, 300]
    assert result.messages == [{"role": "user", "content": "Weather?"}]
    assert CALLS == []


def test_high_rung_passes_an_explicit_timeout_instead_of_tripping_the_sdk() -> None:
    # The SDK refuses non-streaming requests above ~21k max_tokens unless a timeout is explicit.
    sim = Simulator([r.truncated_tool_use("get_weather", '{"loc'), r.text("ok")])
    result = agent(sim, policy=Policy(max_tokens=16000, max_tokens_ladder=[32000])).run("Weather?")
    assert result.final_state == "done", result.error
    assert sim.requests[1].max_tokens == 32000


@pytest.mark.parametrize("strategy", ["auto", "prefill"])
def test_text_continuation_by_prefill_is_seamless(strategy: Literal["auto", "prefill"]) -> None:
    sim = Simulator([r.writer(DOC)] * 20)
    policy = Policy(max_tokens=60, max_continuations=19, continuation=strategy)
    result = agent(sim, policy=policy).run("Write the document.")
    assert result.final_state == "done"
    assert result.text == DOC  # no lost, no duplicated characters at any seam
    assert len(sim.requests) > 5
    # prefill: one assistant turn, merged; every continuation request ends in that turn, stripped
    assert result.messages == [
        {"role": "user", "content": "Write the document."},
        {"role": "assistant", "content": [{"type": "text", "text": DOC}]},
    ]
    for req in sim.requests[1:]:
        assert req.messages[-1]["role"] == "assistant"
    assert len(events(result, "continuation.requested")) == len(sim.requests) - 1


def test_text_continuation_by_prompt_keeps_roles_alternating() -> None:
    sim = Simulator([r.writer(DOC)] * 20)
    result = agent(sim, policy=Policy(max_tokens=60, max_continuations=19, continuation="prompt")).run("Write.")
    assert result.final_state == "done" and result.text == DOC
    roles = [m["role"] for m in result.messages]
    assert roles == ["user", "assistant"] * (len(roles) // 2)
    assert all(m["content"] == Policy().continuation_prompt for m in result.messages[2::2])


def test_auto_falls_back_to_prompt_when_the_model_rejects_prefill_and_remembers() -> None:
    """The safety net: the model's request rules (agentfsm.wire.models) say claude-haiku-4-5 takes a prefill, and
    this server refuses it: one 400, prompts for the rest of the run, and the agent remembers the model."""
    sim = Simulator([r.writer(DOC)] * 40, prefill_unsupported=["claude-haiku-4-5"])
    a = agent(sim, policy=Policy(max_tokens=80, max_continuations=19))
    result = a.run("Write.")
    assert result.final_state == "done" and result.text == DOC
    rejected = [q for q in sim.requests if q.messages[-1]["role"] == "assistant"]
    assert len(rejected) == 1  # one prefill attempt, answered 400, then prompts
    assert len(events(result, "continuation.fallback")) == 1
    assert [s.source for s in result.trace if s.trigger == "prefill_rejected"] + [
        s.dest for s in result.trace if s.trigger == "prefill_rejected"
    ] == ["requesting", "requesting"]
    before = len(sim.requests)
    second = a.run("Write.")
    assert second.text == DOC
    assert all(q.messages[-1]["role"] == "user" for q in sim.requests[before:])  # remembered: no prefill tried


def test_auto_on_a_model_that_refuses_prefill_prompts_from_the_start() -> None:
    sim = Simulator([r.writer(DOC)] * 40)
    result = agent(sim, model="claude-sonnet-5-5", policy=Policy(max_tokens=80, max_continuations=19)).run("Write.")
    assert result.final_state == "done" and result.text == DOC
    assert all(q.messages[-1]["role"] == "user" for q in sim.requests)  # never a prefill, never a 400
    assert not events(result, "continuation.fallback") and not events(result, "request.failed")


def test_prefill_strategy_on_a_model_without_prefill_fails_clearly() -> None:
    sim = Simulator([r.writer(DOC)] * 5)
    with pytest.raises(ConfigurationError, match=r"continuation=.prefill.*auto"):
        Agent(client=sim.client(), model="claude-sonnet-5-5", policy=Policy(continuation="prefill"), logger=None)
    assert sim.requests == []  # said before any request


def test_continuations_are_bounded_then_truncated() -> None:
    sim = Simulator([r.writer(DOC)] * 10)
    result = agent(sim, policy=Policy(max_tokens=50, max_continuations=2)).run("Write.")
    assert result.final_state == "truncated" and result.truncated
    assert result.reason == "max_continuations"
    assert len(sim.requests) == 3
    assert DOC.startswith(result.text) and len(result.text) > 100


def test_prefill_seam_keeps_whitespace_the_model_did_not_regenerate() -> None:
    # The text is cut right after a space; the API rejects the space in a prefill, and this model
    # continues without regenerating it: the space must survive the seam.
    sim = Simulator([r.max_tokens("Hello "), r.text("world.")])
    result = agent(sim, policy=Policy(continuation="prefill")).run("Greet")
    assert sim.requests[1].messages[-1]["content"] == [{"type": "text", "text": "Hello"}]
    assert result.text == "Hello world."


def test_max_tokens_cut_in_thinking_climbs_the_ladder() -> None:
    sim = Simulator([r.message([r.thinking_block("Let me think about")], "max_tokens"), r.text("Answer.")])
    result = agent(sim).run("Think")
    assert result.final_state == "done" and result.text == "Answer."
    assert [q.max_tokens for q in sim.requests] == [1024, 4096]


# --- stop_sequence ------------------------------------------------------------------------------


def test_stop_sequence_finishes_done_with_the_sequence() -> None:
    sim = Simulator([r.stop_sequence("1, 2, 3", "END")])
    result = agent(sim, request_params={"stop_sequences": ["END"]}).run("Count")
    assert result.final_state == "done" and result.stop_reason == "stop_sequence"
    assert result.stop_sequence == "END" and result.text == "1, 2, 3"
    assert sim.requests[0].body["stop_sequences"] == ["END"]


# --- tool_use ----------------------------------------------------------------------------------


def test_tool_use_runs_every_call_and_answers_with_only_tool_results_in_order() -> None:
    sim = Simulator(
        [
            r.tool_uses([("get_weather", {"location": "Hanoi"}), ("get_weather", {"location": "Hue", "unit": "f"})]),
            r.text("Both are hot."),
        ]
    )
    result = agent(sim).run("Weather in Hanoi and Hue?")
    assert result.final_state == "done"
    call_ids = [b["id"] for b in result.messages[1]["content"] if b["type"] == "tool_use"]
    answer = sim.requests[1].messages[-1]
    assert answer["role"] == "user"
    assert [b["type"] for b in answer["content"]] == ["tool_result", "tool_result"]
    assert [b["tool_use_id"] for b in answer["content"]] == call_ids
    assert answer["content"][0]["content"] == "31°C and humid in Hanoi"
    assert answer["content"][1]["content"] == "31°F and humid in Hue"
    assert sim.requests[0].body["tools"][0]["name"] == "get_weather"
    finished = events(result, "tool.finished")
    assert [e["is_error"] for e in finished] == [False, False]
    assert all(e["duration_ms"] is not None for e in finished)


def test_tool_failures_become_is_error_results_the_model_can_read() -> None:
    @tool
    def boom(x: int) -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    sim = Simulator(
        [
            r.tool_uses(
                [
                    ("nope", {}),
                    ("get_weather", {"location": "Hanoi", "unit": "kelvin"}),
                    ("get_weather", {}),
                    ("boom", {"x": 1}),
                ]
            ),
            r.text("Sorry."),
        ]
    )
    result = agent(sim, tools=[get_weather, boom]).run("Go")
    blocks = sim.requests[1].messages[-1]["content"]
    assert all(b["is_error"] is True for b in blocks)
    texts = [b["content"] for b in blocks]
    assert "unknown tool 'nope'" in texts[0] and "'get_weather'" in texts[0]
    assert "'unit'" in texts[1] and "kelvin" in texts[1]
    assert "'location'" in texts[2] and "required" in texts[2]
    assert "RuntimeError" in texts[3] and "disk on fire" in texts[3]
    assert CALLS == [] and result.final_state == "done"


def test_tool_timeout_becomes_an_error_result() -> None:
    import time

    @tool
    def slow() -> str:
        """Takes too long."""
        time.sleep(0.5)
        return "late"

    sim = Simulator([r.tool_use("slow", {}), r.text("ok")])
    result = agent(sim, tools=[slow], policy=Policy(tool_timeout=0.05)).run("Go")
    block = sim.requests[1].messages[-1]["content"][0]
    assert block["is_error"] is True and "did not finish within 0.05 s" in block["content"]
    assert result.final_state == "done"


def test_async_tools_run_concurrently() -> None:
    import asyncio
    import time

    spans: list[tuple[float, float]] = []

    @tool
    async def nap(seconds: float) -> str:
        """Sleep a while."""
        began = time.monotonic()
        await asyncio.sleep(seconds)
        spans.append((began, time.monotonic()))
        return "rested"

    sim = Simulator([r.tool_uses([("nap", {"seconds": 0.2})] * 3), r.text("ok")])
    result = agent(sim, tools=[nap]).run("Go")
    # concurrent, not one after another: every nap began before the first one ended
    assert len(spans) == 3 and max(b for b, _ in spans) < min(e for _, e in spans)
    assert [b["content"] for b in sim.requests[1].messages[-1]["content"]] == ["rested"] * 3
    assert result.final_state == "done"


def test_tool_use_without_client_calls_fails_instead_of_sending_an_empty_message() -> None:
    sim = Simulator([r.message([r.text_block("I will call a tool")], "tool_use")])
    result = agent(sim).run("Go")
    assert result.final_state == "failed" and result.error is not None
    assert result.error.type == "protocol_error" and len(sim.requests) == 1


# --- pause_turn --------------------------------------------------------------------------------


def test_pause_turn_is_sent_back_unchanged_with_no_extra_user_text() -> None:
    sim = Simulator([r.pause_turn(query="Hanoi news", completed_searches=2), r.text("Here is the news.")])
    a = agent(sim, tools=[{"type": "web_search_20250305", "name": "web_search"}])
    conv = a.start("Today's news in Hanoi?")

    async def drive() -> tuple[list[dict[str, Any]], RunResult]:
        await conv.astep()  # requesting -> pause_turn
        assert conv.state == "pause_turn"
        return conv.require_reply().content, await conv.arun()

    if a.driver.startswith("a"):
        paused, result = asyncio.run(drive())
    else:
        conv.step()
        assert conv.state == "pause_turn"
        paused = conv.require_reply().content
        result = conv.run()
    resumed = sim.requests[1]
    assert resumed.messages[-1] == {"role": "assistant", "content": paused}  # byte for byte
    assert unmarked(resumed.messages[:-1]) == unmarked(sim.requests[0].messages)  # no new user text
    assert resumed.body["tools"] == sim.requests[0].body["tools"]
    assert result.final_state == "done"
    # the resumed reply continues the same assistant turn
    assert [m["role"] for m in result.messages] == ["user", "assistant"]
    assert result.messages[1]["content"][: len(paused)] == paused
    assert result.text.endswith("Here is the news.")


def test_pause_resumes_are_bounded_then_truncated() -> None:
    sim = Simulator([r.pause_turn()] * 3)
    result = agent(sim, policy=Policy(max_pause_resumes=2)).run("News?")
    assert result.final_state == "truncated" and result.reason == "max_pause_resumes"
    assert len(sim.requests) == 3


# --- refusal -----------------------------------------------------------------------------------


def test_refusal_is_refused_with_stop_details() -> None:
    sim = Simulator([r.refusal(category="cyber", explanation="Malware request.")])
    result = agent(sim).run("Write malware")
    assert result.final_state == "refused" and result.refused
    assert result.stop_details == {"type": "refusal", "category": "cyber", "explanation": "Malware request."}
    assert len(sim.requests) == 1


def test_refusal_retries_once_on_the_fallback_model() -> None:
    sim = Simulator([r.refusal(), r.text("Here you go.")])
    result = agent(sim, policy=Policy(fallback_model="claude-sonnet-4-6")).run("Q")
    assert result.final_state == "done" and result.text == "Here you go."
    assert [q.model for q in sim.requests] == ["claude-haiku-4-5", "claude-sonnet-4-6"]
    assert unmarked(sim.requests[0].messages) == unmarked(sim.requests[1].messages)
    assert result.model == "claude-sonnet-4-6"
    assert len(events(result, "refusal.fallback")) == 1


def test_refusal_on_the_fallback_model_is_final() -> None:
    sim = Simulator([r.refusal(), r.refusal()])
    result = agent(sim, policy=Policy(fallback_model="claude-sonnet-4-6")).run("Q")
    assert result.final_state == "refused" and len(sim.requests) == 2


# --- model_context_window_exceeded, unknown -------------------------------------------------------


def test_context_window_exceeded_is_truncated_with_its_own_reason() -> None:
    sim = Simulator([r.context_window_exceeded("Partial answer")])
    result = agent(sim).run("Q")
    assert result.final_state == "truncated" and result.reason == "model_context_window_exceeded"
    assert result.text == "Partial answer" and len(sim.requests) == 1


@pytest.mark.parametrize("raw", ["context_full_2027", "brand_new_reason", None])
def test_unknown_or_null_stop_reason_finishes_with_a_warning(raw: str | None) -> None:
    sim = Simulator([r.unknown(raw, text="Something.")])
    result = agent(sim).run("Q")
    assert result.final_state == "done" and result.reason == "unknown_stop_reason"
    assert result.stop_reason == raw and result.text == "Something."
    warning = [e for e in result.events if e.event == "stop_reason.unknown"]
    assert warning and warning[0].level == "warning" and warning[0].data["raw_stop_reason"] == raw
    assert len(sim.requests) == 1


# --- errors and bounds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status"),
    [(r.server_error(), 500), (r.rate_limited(), 429), (r.overloaded(), 529), (r.prompt_too_long(), 400)],
)
def test_api_errors_fail_with_the_error_and_history_kept(reply: Any, status: int) -> None:
    sim = Simulator([r.tool_use("get_weather", {"location": "Hanoi"}), reply, reply, reply])
    result = agent(sim, max_retries=2).run("Q")
    assert result.final_state == "failed" and result.reason == "api_error"
    assert result.error is not None and result.error.status_code == status
    assert [m["role"] for m in result.messages] == ["user", "assistant", "user"]  # nothing lost
    retries = 3 if status != 400 else 1  # the SDK's own retries (2) happen before the machine sees it
    assert len(sim.requests) == 1 + retries


def test_dropped_connection_fails_the_request() -> None:
    sim = Simulator([r.with_fault(r.text("hi"), "drop")])
    result = agent(sim).run("Q")
    assert result.final_state == "failed" and result.error is not None
    assert result.messages == [{"role": "user", "content": "Q"}]


def test_max_turns_bounds_an_endless_tool_loop() -> None:
    sim = Simulator(lambda req: r.tool_use("get_weather", {"location": "Hanoi"}))
    result = agent(sim, policy=Policy(max_turns=5)).run("Q")
    assert result.final_state == "truncated" and result.reason == "max_turns"
    assert len(sim.requests) == 5 and result.turns == 5
    assert result.trace[-1].trigger == "out_of_turns"
    assert result.messages[-1]["content"][0]["type"] == "tool_result"  # history complete up to the bound


@pytest.mark.beyond_schema  # a block type no schema knows yet cannot validate against today's schema
def test_unknown_content_blocks_are_carried_through_unchanged() -> None:
    odd = {"type": "hologram_block", "payload": {"nested": [1, 2, {"x": None}]}, "extra": "kept"}
    sim = Simulator(
        [r.message([odd, r.tool_use_block("get_weather", {"location": "Hanoi"})], "tool_use"), r.text("ok")]
    )
    result = agent(sim).run("Q")
    assert result.messages[1]["content"][0] == odd
    assert sim.requests[1].messages[1]["content"][0] == odd


def test_usage_is_summed_over_every_request() -> None:
    sim = Simulator([r.tool_use("get_weather", {"location": "Hanoi"}), r.text("It is hot in Hanoi today.")])
    result = agent(sim).run("Weather?")
    assert result.usage.requests == 2
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    per_reply = [e["usage"] for e in events(result, "response.received")]
    assert result.usage.input_tokens == sum(u["input_tokens"] for u in per_reply)
    assert result.usage.output_tokens == sum(u["output_tokens"] for u in per_reply)
