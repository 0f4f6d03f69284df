"""The engine-neutral workflow body (``agentfsm.engines.core``) on an engine kept in a list, in process.

``ListEngine`` is the least a durable engine does: it records each step's output, and a workflow run
again replays the recorded outputs in order (checking each step's name, as DBOS and Temporal check
theirs) before running new steps live. A "crash" is an exception from inside a step (a tool, or the
model) that ends the run with the step unrecorded. That is enough to pin the core's semantics without
processes: a crash mid-tool answers a non-idempotent call "interrupted" and re-runs an idempotent one;
replay decides budgets from recorded times; broken streams are resent after ``retry_delay``; replayed
events are kept on the result but not logged; a plan the core cannot carry out ends the run.
The engines themselves are tested across processes in ``test_engines.py`` and ``test_engines_kill.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import scenario as sc

from agentfsm import Agent, Policy, Tool
from agentfsm.engines import core
from agentfsm.engines.core import (
    DurableConversation,
    RequestRecord,
    StartInput,
    ToolsRecord,
    perform_request,
    perform_tools,
    result_from_json,
    result_to_json,
    run_conversation,
)
from agentfsm.machine.plan import SendRequest
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.tools.calls import ToolCall
from agentfsm.wire import models


class Crash(BaseException):
    """The process died here (a BaseException, so nothing on the way catches it)."""


class ListEngine:
    """A durable engine in a list: ``entries`` is its store, one ``Steps`` per execution of the workflow."""

    def __init__(self, step_seconds: float = 0.0) -> None:
        self.entries: list[tuple[str, Any]] = []
        self.step_seconds = step_seconds  # the wall time each live step records, if set (0: the real clock)

    def steps(self, *, stream: bool = False) -> Steps:
        return Steps(self, stream=stream)


class Steps:
    def __init__(self, engine: ListEngine, *, stream: bool) -> None:
        self.engine = engine
        self.next = 0
        self.token = uuid.uuid4().hex
        self.stream = stream

    @property
    def replaying(self) -> bool:
        return self.next < len(self.engine.entries)

    async def _step(self, name: str, body: Callable[[], Awaitable[Any]]) -> Any:
        entries = self.engine.entries
        if self.next < len(entries):
            recorded, output = entries[self.next]
            assert recorded == name, f"step {self.next} replayed as {name!r}, recorded as {recorded!r}"
        else:
            output = await body()
            entries.append((name, output))
        self.next += 1
        return output

    def _timed(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.engine.step_seconds:
            start = self.engine.step_seconds * len(self.engine.entries)
            data.update(started_at=start, ended_at=start + self.engine.step_seconds)
        return data

    async def request(self, conv: DurableConversation, plan: SendRequest, attempt: int, delay: float) -> RequestRecord:
        async def body() -> dict[str, Any]:
            async def show(delta: str) -> None:
                pass

            on_delta = show if self.stream else None
            return self._timed(
                (
                    await perform_request(conv.agent, plan.params, plan.timeout, 0, betas=plan.betas, on_delta=on_delta)
                ).to_json()
            )

        return RequestRecord.from_json(await self._step("request", body))

    async def tools(self, conv: DurableConversation, calls: list[ToolCall]) -> ToolsRecord:
        async def mark() -> str:
            return self.token

        earlier = await self._step("tools.started", mark) != self.token

        async def body() -> dict[str, Any]:
            return self._timed((await perform_tools(conv.agent, calls, earlier_attempt=earlier)).to_json())

        return ToolsRecord.from_json(await self._step("tools", body))

    async def end(self, conv: DurableConversation) -> None:
        return None


class Logged:
    """A logger that keeps what it was given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _log(self, event: str, **data: Any) -> None:
        self.events.append((event, data))

    debug = info = warning = error = _log


RAN: list[str] = []
CRASH_IN: set[str] = set()


def count(label: str) -> str:
    """Count one call of the given label."""
    RAN.append(label)
    if label in CRASH_IN:
        CRASH_IN.discard(label)
        raise Crash
    return f"counted {label}"


@pytest.fixture(autouse=True)
def fresh() -> None:
    RAN.clear()
    CRASH_IN.clear()


def agent(sim: Simulator, *, idempotent: bool = False, policy: Policy = sc.POLICY, logger: Any = None) -> Agent:
    return Agent(
        client=sim.async_client(max_retries=0),
        tools=[Tool(count, idempotent=idempotent), sc.WEB_SEARCH],
        policy=policy,
        logger=logger,
    )


def start(prompt: str = sc.PROMPT, stream: bool = False) -> StartInput:
    return StartInput(agent="tests:ScenarioAgent", messages=[{"role": "user", "content": prompt}],
                      conversation_id="conv_core", stream=stream)  # fmt: skip


def run(a: Agent, engine: ListEngine, *, stream: bool = False) -> Any:
    return asyncio.run(run_conversation(a, start(stream=stream), engine.steps(stream=stream)))


def plain() -> Any:
    return asyncio.run(agent(Simulator(sc.model)).arun(sc.PROMPT, conversation_id="conv_core"))


def test_an_uninterrupted_workflow_is_agent_arun() -> None:
    expected = plain()
    RAN.clear()
    engine = ListEngine()
    result = run(agent(Simulator(sc.model)), engine)
    assert result.messages == expected.messages and result.trace == expected.trace and result.text == expected.text
    assert [e.event for e in result.events] == [e.event for e in expected.events]
    assert RAN == ["a", "b", "c"] or sorted(RAN) == ["a", "b", "c"]
    names = [name for name, _ in engine.entries]
    assert names.count("request") == expected.turns and names.count("tools") == 2  # the only durable steps
    assert result_from_json(result_to_json(result)).model_dump() == result.model_dump()  # events included


@pytest.mark.parametrize("idempotent", [False, True])
def test_a_crash_in_a_tool_then_replay(idempotent: bool) -> None:
    expected = plain()
    RAN.clear()
    engine = ListEngine()
    sim = Simulator(sc.model)
    first, second = Logged(), Logged()
    CRASH_IN.add("a")
    with pytest.raises(Crash):
        run(agent(sim, idempotent=idempotent, logger=first), engine)
    assert RAN == ["a"] and [n for n, _ in engine.entries][-1] == "tools.started"
    requests_before = len(sim.requests)
    result = run(agent(sim, idempotent=idempotent, logger=second), engine)
    assert len(sim.requests) == requests_before + expected.turns - 2  # the two recorded replies are not resent
    final = result.messages
    at = next(
        i
        for i, m in enumerate(final)
        if isinstance(m["content"], list) and m["content"][0].get("type") == "tool_result"
    )
    a_result = final[at]["content"][0]
    if idempotent:  # run again: the history is the uninterrupted one
        assert RAN.count("a") == 2 and final == expected.messages
    else:  # answered "interrupted", never run twice
        assert RAN.count("a") == 1 and a_result["is_error"] is True and sc.INTERRUPTED in a_result["content"]
        assert "tool.interrupted" in [e.event for e in result.events]
        assert [m for i, m in enumerate(final) if i != at] == [m for i, m in enumerate(expected.messages) if i != at]
    assert RAN.count("b") == RAN.count("c") == 1
    # The replay logged nothing the first execution had logged: no request or reply is logged twice.
    replies = [d.get("turn") for e, d in first.events + second.events if e == "response.received"]
    assert sorted(replies) == sorted(set(replies)) and len(replies) == expected.usage.requests
    assert [e for e, _ in second.events].count("run.started") == 0
    assert [e.event for e in result.events].count("run.started") == 1  # the result keeps every event


def test_replay_decides_the_wall_budget_from_recorded_times() -> None:
    """Each step records 10 s: the budget of 25 s is spent after three steps, in the run and in its replay."""
    policy = sc.POLICY.model_copy(update={"max_wall_seconds": 25})
    engine = ListEngine(step_seconds=10)
    result = run(agent(Simulator(sc.model), policy=policy), engine)
    assert (result.final_state, result.reason) == ("truncated", "max_wall_seconds")
    recorded = list(engine.entries)
    again = run(agent(Simulator(sc.model), policy=policy), engine)  # everything replays, nothing runs
    assert engine.entries == recorded
    assert again.messages == result.messages and again.trace == result.trace and again.reason == "max_wall_seconds"


def test_a_broken_stream_is_sent_again_as_its_own_step() -> None:
    """The resend is decided by the loop (``core.resend``) in the replayed code; each attempt is a recorded step."""
    sim = Simulator([r.with_fault(r.text("Hello there, friend."), "drop_mid_text"), r.text("Hello there, friend.")])
    engine = ListEngine()
    policy = Policy(stream_retry_backoff=0)
    result = run(Agent(client=sim.async_client(max_retries=0), policy=policy, logger=None), engine, stream=True)
    assert result.final_state == "done" and result.text == "Hello there, friend."
    assert [n for n, _ in engine.entries] == ["request", "request"]
    assert [e.event for e in result.events].count("request.retried") == 1
    again = run(Agent(client=Simulator([]).async_client(max_retries=0), policy=policy, logger=None), engine)
    assert again.messages == result.messages  # replayed from the record: no request at all


def test_a_waiting_state_ends_the_workflow_with_a_result_that_resumes() -> None:
    """A run that stops to wait for a decision comes back as its RunResult, not a hang; through the engine's
    JSON it keeps its snapshot, so the caller decides and carries it on in process."""
    import waits_worker as ww

    sim = Simulator([r.tool_use("delete_file", {"path": "/tmp/old.log"}, id="toolu_01"), r.text("Done.")])
    approval = ww.ApprovalAgent(client=sim.async_client(max_retries=0), logger=None)
    begin = StartInput(agent="waits_worker:ApprovalAgent", messages=[{"role": "user", "content": "Clean up."}],
                       conversation_id="conv_wait")  # fmt: skip
    waiting = asyncio.run(run_conversation(approval, begin, ListEngine().steps()))
    assert (waiting.final_state, waiting.waiting) == ("waiting", "awaiting_approval")
    assert [c.name for c in waiting.pending_tool_calls] == ["delete_file"]
    carried = result_from_json(result_to_json(waiting))
    assert carried.snapshot is not None and carried.waiting == "awaiting_approval"
    done = asyncio.run(approval.aresume(carried, trigger="approve"))
    assert done.final_state == "done" and done.text == "Done."


def test_the_learned_prefill_memory_is_not_consulted() -> None:
    """A replay must start as the first run did, whatever the worker learned from other conversations since:
    prefill or prompt is the model's request rules' alone (agentfsm.wire.models)."""
    a = Agent(client=Simulator([]).async_client(), model="claude-haiku-4-5", logger=None)
    models.remember_prefill_refused("claude-haiku-4-5", by=a)
    conv = DurableConversation(a, start(), ListEngine().steps())
    assert conv.runstate.continuation_mode == "prefill"
    assert a.start("hi", asynchronous=True).runstate.continuation_mode == "prompt"  # an ordinary run does use it
    sonnet = Agent(client=Simulator([]).async_client(), logger=None)  # the default model refuses prefill: prompts
    assert DurableConversation(sonnet, start(), ListEngine().steps()).runstate.continuation_mode == "prompt"


def test_agent_specs_and_rate_limits() -> None:
    assert core.agent_spec(Agent) == "agentfsm.agent:Agent"
    with pytest.raises(core.ConfigurationError, match="MODULE:CLASS"):
        core.agent_spec("NoModule")
    assert core.RateLimit.parse("50/60", 4) == core.RateLimit(50, 60.0, 4)
    with pytest.raises(core.ConfigurationError, match="REQUESTS/SECONDS"):
        core.RateLimit.parse("fast")
    registry = core.AgentRegistry()
    registry.add(Agent(client=Simulator([]).async_client(), logger=None), "alias:Agent")
    assert registry.get("alias:Agent") is registry.get("agentfsm.agent:Agent")
    with pytest.raises(core.ConfigurationError, match="does not serve"):
        registry.get("other:Agent")
