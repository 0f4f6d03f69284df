"""Waiting states, async hooks and actions, fail-safe added states, and actions that cannot corrupt a run.

Every run goes through the real ``anthropic`` client to the simulator (in process, or served on a
loopback socket to other processes), and every request it receives is checked against the wire
rules by the suite-wide fixture — so "caught before sending" is checked twice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import scenario as sc
import waits_worker as ww
from waits_worker import ApprovalAgent, alast, last

from agentfsm import (
    Agent,
    ConfigurationError,
    Conversation,
    InvalidActionError,
    InvalidTransitionError,
    MemoryStore,
    Policy,
    RunResult,
    ToolResult,
    Transition,
    Wait,
    actions,
    guard,
    tool,
)
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.base import PendingDecision, read_snapshot
from agentfsm.testing import DRIVERS, client_for, drive
from agentfsm.tools.calls import ToolCall

MODES = DRIVERS
ID = "toolu_01"


@pytest.fixture(autouse=True)
def tool_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "tool.log"
    monkeypatch.setenv("WAITS_TOOL_LOG", str(log))
    return log


def ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def script(*, then: str = "Done.") -> Simulator:
    return Simulator([r.tool_use("delete_file", {"path": "/tmp/old.log"}, id=ID), r.text(then)])


def make(agent_cls: type[Agent], sim: Simulator, mode: str, **kwargs: Any) -> Any:
    return agent_cls(client=client_for(sim, mode), logger=None, **kwargs)


def go(agent: Agent, mode: str, prompt: str = "Delete /tmp/old.log", **kwargs: Any) -> RunResult:
    return drive(agent, prompt, mode, **kwargs)


def carry_on(agent: Agent, mode: str, conversation: str | RunResult, **kwargs: Any) -> RunResult:
    if mode == "run":
        return agent.resume(conversation, **kwargs)
    if mode == "arun":
        return asyncio.run(agent.aresume(conversation, **kwargs))
    if mode == "stream":
        return last(agent.load(conversation, **kwargs).stream())
    return asyncio.run(alast(agent.load(conversation, asynchronous=True, **kwargs).astream()))


# --- wait, then approve / refuse / an invalid trigger --------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_run_stops_waiting_and_an_approval_carries_it_on(mode: str, tool_log: Path) -> None:
    sim, store = script(then="Deleted it."), MemoryStore()
    agent = make(ApprovalAgent, sim, mode)
    first = go(agent, mode, store=store)
    assert first.final_state == "waiting" and first.waiting == "awaiting_approval" and not first.ok
    assert [(c.id, c.name, c.input) for c in first.pending_tool_calls] == [
        (ID, "delete_file", {"path": "/tmp/old.log"})
    ]
    assert first.path == ["requesting", "tool_use", "awaiting_approval"]
    assert ran(tool_log) == [] and len(sim.requests) == 1  # nothing ran, nothing more was asked
    waiting = [e for e in first.events if e.event == "run.waiting"]
    assert waiting and waiting[0].data["triggers"] == ["approve", "refuse"]
    assert store.load(first.conversation_id).waiting == "awaiting_approval"
    assert store.acquire(first.conversation_id, "someone-else", 5)  # a waiting run holds no lease
    store.release(first.conversation_id, "someone-else")

    second = carry_on(agent, mode, first.conversation_id, store=store, trigger="approve")
    assert second.final_state == "done" and second.waiting is None and second.pending_tool_calls == []
    assert second.text == "Deleted it." and ran(tool_log) == ["/tmp/old.log"]
    assert second.path == ["requesting", "tool_use", "awaiting_approval", "requesting", "end_turn", "done"]
    answer = sim.requests[1].messages[-1]["content"]
    assert [(b["tool_use_id"], b["content"], b.get("is_error")) for b in answer] == [(ID, "deleted /tmp/old.log", None)]
    assert [e.data["trigger"] for e in second.events if e.event == "wait.decided"] == ["approve"]


@pytest.mark.parametrize("mode", MODES)
def test_a_refusal_answers_every_call_with_the_reason_given(mode: str, tool_log: Path) -> None:
    sim, store = script(then="Understood."), MemoryStore()
    agent = make(ApprovalAgent, sim, mode)
    first = go(agent, mode, store=store)
    second = carry_on(agent, mode, first.conversation_id, store=store, trigger="refuse", input={"reason": "not today"})
    assert second.final_state == "done" and ran(tool_log) == []
    block = sim.requests[1].messages[-1]["content"][0]
    assert (block["tool_use_id"], block["content"], block["is_error"]) == (ID, "not today", True)

    sim = script()  # no reason given: the default one
    agent = make(ApprovalAgent, sim, mode)
    carry_on(agent, mode, go(agent, mode), trigger="refuse")
    assert sim.requests[1].messages[-1]["content"][0]["content"] == actions.DEFAULT_REFUSAL


@pytest.mark.parametrize("mode", MODES)
def test_a_trigger_that_does_not_leave_the_wait_is_a_clear_error_and_changes_nothing(mode: str) -> None:
    sim, store = script(), MemoryStore()
    agent = make(ApprovalAgent, sim, mode)
    first = go(agent, mode, store=store)
    before = store.load(first.conversation_id)
    with pytest.raises(
        InvalidTransitionError, match=r"'run_tools' does not leave .*'awaiting_approval'.*approve, refuse"
    ):
        carry_on(agent, mode, first.conversation_id, store=store, trigger="run_tools")
    assert store.load(first.conversation_id) == before and len(sim.requests) == 1
    assert store.acquire(first.conversation_id, "someone-else", 5)  # and it left no lease behind
    store.release(first.conversation_id, "someone-else")
    assert carry_on(agent, mode, first.conversation_id, store=store, trigger="approve").final_state == "done"


def test_without_a_store_the_waiting_result_itself_is_resumed(tool_log: Path) -> None:
    sim = script()
    agent = make(ApprovalAgent, sim, "run")
    first = agent.run("Delete /tmp/old.log")
    assert first.snapshot is not None and first.snapshot.waiting == "awaiting_approval"
    json.loads(first.model_dump_json())  # still plain data
    second = agent.resume(first, trigger="approve")
    assert second.final_state == "done" and ran(tool_log) == ["/tmp/old.log"]
    assert second.conversation_id == first.conversation_id
    assert first.final_state == "waiting" and first.messages == [{"role": "user", "content": "Delete /tmp/old.log"}]

    with pytest.raises(ConfigurationError, match="is done, not waiting"):
        agent.resume(second, trigger="approve")
    with pytest.raises(ConfigurationError, match="needs store= to find conversation"):
        agent.resume(first.conversation_id, trigger="approve")


def test_resuming_what_is_not_waiting_with_a_trigger_is_a_clear_error() -> None:
    sim, store = script(), MemoryStore()
    agent = make(ApprovalAgent, sim, "run")
    done = agent.resume(agent.run("Delete it", store=store).conversation_id, store=store, trigger="approve")
    with pytest.raises(InvalidTransitionError, match=r"is not waiting \(finished, at state 'done'\)"):
        agent.resume(done.conversation_id, store=store, trigger="approve")


def test_input_must_be_json() -> None:
    sim = script()
    agent = make(ApprovalAgent, sim, "run")
    with pytest.raises(ConfigurationError, match="input must be JSON"):
        agent.resume(agent.run("Delete it"), trigger="refuse", input={"when": object()})


def test_the_graph_draws_waiting_states_apart() -> None:
    mermaid = ApprovalAgent.graph()
    assert "classDef waiting" in mermaid and "    class awaiting_tool_approval,awaiting_approval waiting" in mermaid
    # The base table's one wait is the approval of a tool call (issue 22): drawn so on every graph.
    assert "    class awaiting_tool_approval waiting" in Agent.graph()
    dot = ApprovalAgent.graph(format="dot")
    assert '"awaiting_approval" [shape="octagon"' in dot
    assert Agent.graph(format="dot").count('shape="octagon"') == 1
    sim = script()
    waiting = make(ApprovalAgent, sim, "run").run("Delete it")
    drawn = waiting.graph()
    assert "class awaiting_approval current" in drawn
    assert "class awaiting_tool_approval,awaiting_approval waiting" in drawn
    assert 'title: "ApprovalAgent (awaiting_approval)"' in drawn


# --- input: stored, and seen by the hook and the action ---------------------------------------------------


SEEN: list[Any] = []


def record_input_then_refuse(conv: Conversation) -> None:
    SEEN.append(conv.input)
    actions.refuse_tool_calls(conv)


class RecordingAgent(ApprovalAgent):
    transitions = [Transition("awaiting_approval", "refuse_noted", "requesting", action=record_input_then_refuse)]


def test_input_reaches_the_action_and_is_stored_with_the_conversation() -> None:
    SEEN.clear()
    sim, store = script(), MemoryStore()
    agent = make(RecordingAgent, sim, "run")
    first = agent.run("Delete it", store=store)
    assert store.load(first.conversation_id).input is None
    given = {"reason": "the file is still in use", "by": "ops@example.com", "ticket": 42}
    agent.resume(first.conversation_id, store=store, trigger="refuse_noted", input=given)
    assert [given] == SEEN
    stored = store.load(first.conversation_id)
    assert stored.input == given and stored.decision is None and stored.waiting is None
    assert sim.requests[1].messages[-1]["content"][0]["content"] == "the file is still in use"


def test_a_crash_while_approved_tools_run_keeps_the_decision_and_input(tool_log: Path) -> None:
    """The decision is saved with the tool calls it started: a resume with no trigger carries it out."""
    crash = {"on": True}

    class Crashing(ApprovalAgent):
        pass

    def explode(path: str) -> str:
        if crash["on"]:
            raise KeyboardInterrupt  # the process dies while the approved tool runs
        return f"deleted {path}"

    deleting = tool(name="delete_file", description="Delete a file.")(explode)
    sim, store = script(then="Handled."), MemoryStore()
    agent = Crashing(client=sim.client(), logger=None, tools=[ww.read_file, deleting])
    first = agent.run("Delete it", store=store)
    with pytest.raises(KeyboardInterrupt):
        agent.resume(first.conversation_id, store=store, trigger="approve", input={"by": "ops"})
    stored = store.load(first.conversation_id)
    assert (stored.state, stored.waiting, stored.decision, stored.input) == (
        "awaiting_approval",
        None,
        "approve",
        {"by": "ops"},
    )
    assert stored.tools_started == [ID]
    crash["on"] = False
    with pytest.raises(InvalidTransitionError, match="carrying out 'approve' already"):
        agent.resume(first.conversation_id, store=store, trigger="refuse")
    done = agent.resume(first.conversation_id, store=store)
    assert done.final_state == "done"
    block = sim.requests[1].messages[-1]["content"][0]
    assert block["is_error"] and "was running when the agent process stopped" in block["content"]


# --- hooks: deciding on the spot, async, or Wait ------------------------------------------------------------


class DecidingAgent(ApprovalAgent):
    """A wait with a hook: reads are approved on the spot, anything else waits."""

    def on_awaiting_approval(self, conv: Conversation) -> str | None:
        if conv.input == {"ok": True}:
            return "approve"
        return None


def test_a_run_stepped_into_a_wait_holds_no_lease() -> None:
    sim, store = script(), MemoryStore()
    conv = make(ApprovalAgent, sim, "run").start("Delete it", store=store)
    while conv.step() is not None:
        pass
    assert conv.waiting == "awaiting_approval" and conv.pending is None
    assert store.acquire(conv.id, "another-worker", 5)  # step() keeps the lease between steps, but not into a wait


def test_a_wait_state_hook_may_decide_on_the_spot_or_wait_and_is_asked_again_on_resume(tool_log: Path) -> None:
    sim, store = script(), MemoryStore()
    agent = make(DecidingAgent, sim, "run")
    first = agent.run("Delete it", store=store)
    assert first.final_state == "waiting"
    again = agent.resume(first.conversation_id, store=store)  # no trigger: the hook is asked again, and waits
    assert again.final_state == "waiting" and len(sim.requests) == 1
    done = agent.resume(first.conversation_id, store=store, input={"ok": True})  # the hook decides with the input
    assert done.final_state == "done" and ran(tool_log) == ["/tmp/old.log"]


class ApprovalService:
    """An external approval service, as seen from the agent: a call to it must be awaited."""

    def __init__(self) -> None:
        self.decisions: dict[str, str] = {}
        self.asked: list[str] = []
        self.arrived = asyncio.Event()

    async def decision(self, call_id: str, *, wait: float) -> str | None:
        self.asked.append(call_id)
        try:
            await asyncio.wait_for(self.arrived.wait(), wait)
        except TimeoutError:
            return None
        return self.decisions.get(call_id)


class AsyncApprovalAgent(ApprovalAgent):
    def __init__(self, *args: Any, service: ApprovalService, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service = service

    async def on_awaiting_approval(self, conv: Conversation) -> str | type[Wait]:
        call = conv.pending_tool_calls[0]
        decision = await self.service.decision(call.id, wait=0.2)
        return decision or Wait  # no answer yet: stop here, saved, and ask again on resume


@pytest.mark.parametrize("mode", ["arun", "astream"])
def test_an_async_hook_is_awaited_while_an_external_service_decides(mode: str, tool_log: Path) -> None:
    sim = script()
    service = ApprovalService()
    agent = make(AsyncApprovalAgent, sim, mode, service=service)

    async def reviewer() -> None:
        while not service.asked:  # answers once the hook has asked (and is awaiting the answer)
            await asyncio.sleep(0.001)
        service.decisions[ID] = "approve"
        service.arrived.set()

    async def both() -> RunResult:
        task = asyncio.create_task(reviewer())
        if mode == "arun":
            result = await agent.arun("Delete it")
        else:
            result = await alast(agent.astream("Delete it"))
        await task
        return result

    result = asyncio.run(both())
    assert result.final_state == "done" and ran(tool_log) == ["/tmp/old.log"] and service.asked == [ID]


def test_an_async_hook_that_gets_no_answer_waits_and_is_awaited_again_on_aresume(tool_log: Path) -> None:
    sim, store, service = script(), MemoryStore(), ApprovalService()
    agent = make(AsyncApprovalAgent, sim, "arun", service=service)
    first = asyncio.run(agent.arun("Delete it", store=store))
    assert first.final_state == "waiting" and service.asked == [ID] and ran(tool_log) == []
    service.decisions[ID] = "refuse"
    service.arrived.set()
    second = asyncio.run(agent.aresume(first.conversation_id, store=store))
    assert second.final_state == "done" and service.asked == [ID, ID] and ran(tool_log) == []
    assert sim.requests[1].messages[-1]["content"][0]["is_error"] is True


def test_an_async_hook_under_run_is_a_clear_configuration_error_before_anything_is_sent() -> None:
    sim = script()
    agent = make(AsyncApprovalAgent, sim, "run", service=ApprovalService())
    with pytest.raises(ConfigurationError, match=r"async hooks or actions \(on_awaiting_approval\).*arun\(\)"):
        agent.run("Delete it")
    with pytest.raises(ConfigurationError, match="on_awaiting_approval"):
        list(agent.stream("Delete it"))
    assert sim.requests == []


def test_a_sync_hook_returning_a_coroutine_is_a_clear_error() -> None:
    class Sneaky(ApprovalAgent):
        def on_awaiting_approval(self, conv: Conversation) -> Any:
            async def later() -> str:
                return "approve"

            return later()

    sim = script()
    with pytest.raises(ConfigurationError, match="returned an awaitable: declare it `async def on_awaiting_approval"):
        make(Sneaky, sim, "run").run("Delete it")


async def confirm_by_mail(conv: Conversation) -> None:
    await asyncio.sleep(0)  # e.g. tell someone, then answer
    actions.refuse_tool_calls(conv)


class AsyncActionAgent(ApprovalAgent):
    transitions = [Transition("awaiting_approval", "mail", "requesting", action=confirm_by_mail)]


@pytest.mark.parametrize("mode", ["arun", "astream"])
def test_an_async_action_is_awaited(mode: str) -> None:
    sim = script()
    agent = make(AsyncActionAgent, sim, mode)
    result = carry_on(agent, mode, go(agent, mode), trigger="mail")
    assert result.final_state == "done" and sim.requests[1].messages[-1]["content"][0]["is_error"] is True
    with pytest.raises(ConfigurationError, match="confirm_by_mail"):
        make(AsyncActionAgent, script(), "run").run("Delete it")


HUNG: list[str] = []


async def half_then_hang(conv: Conversation) -> None:
    actions.keep_reply(conv)  # half of an answer ...
    HUNG.append(conv.id)
    await asyncio.sleep(60)  # ... then the task is cancelled here


class HangingAgent(ApprovalAgent):
    transitions = [Transition("awaiting_approval", "hang", "requesting", action=half_then_hang)]


def test_cancelling_an_async_action_puts_the_history_back() -> None:
    sim, store = script(), MemoryStore()
    agent = make(HangingAgent, sim, "arun")
    first = asyncio.run(agent.arun("Delete it", store=store))
    conv = agent.load(first.conversation_id, store=store, trigger="hang", asynchronous=True)

    async def cancel_soon() -> None:
        task = asyncio.create_task(conv.arun())
        while conv.id not in HUNG:  # cancelled once the action has changed the history, not after some time
            assert not task.done(), task
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_soon())
    assert conv.messages == first.messages and not conv.reply_kept and conv.state == "awaiting_approval"
    assert store.acquire(first.conversation_id, "another-worker", 5)  # the lease was given back too
    store.release(first.conversation_id, "another-worker")
    done = asyncio.run(agent.aresume(first.conversation_id, store=store, trigger="refuse"))
    assert done.final_state == "done" and len(sim.requests) == 2


class OnTheSpot(ApprovalAgent):
    """A hook of an ordinary state that stops the run where it is."""

    def on_tool_use(self, conv: Conversation) -> str | None:
        return Wait() if any(c.name == "read_file" for c in conv.pending_tool_calls) else None


def test_a_hook_may_return_wait_to_stop_on_the_spot() -> None:
    sim = Simulator([r.tool_use("read_file", {"path": "a.txt"}, id=ID), r.text("Read.")])
    store = MemoryStore()
    agent = make(OnTheSpot, sim, "run")
    first = agent.run("Read a.txt", store=store)
    assert (first.final_state, first.waiting, first.path) == ("waiting", "tool_use", ["requesting", "tool_use"])
    with pytest.raises(InvalidTransitionError, match="the triggers that can: run_tools, no_tool_calls"):
        agent.resume(first.conversation_id, store=store, trigger="approve")
    done = agent.resume(first.conversation_id, store=store, trigger="run_tools")
    assert done.final_state == "done" and sim.requests[1].messages[-1]["content"][0]["content"] == "(contents of a.txt)"


class EveryToolWaits(Agent):
    """A base state declared a Wait: every tool call waits for a decision."""

    model = "claude-haiku-4-5"
    tools = [ww.read_file]
    states = [Wait("tool_use")]


def test_a_base_state_declared_a_wait_makes_every_run_stop_there() -> None:
    sim = Simulator([r.tool_use("read_file", {"path": "a.txt"}, id=ID), r.text("Read.")])
    agent = make(EveryToolWaits, sim, "run")
    first = agent.run("Read a.txt")
    assert (first.final_state, first.waiting) == ("waiting", "tool_use")
    assert "class tool_use,awaiting_tool_approval waiting" in EveryToolWaits.graph()
    assert agent.resume(first, trigger="run_tools").final_state == "done"


# --- what a waiting run waits for, stored with it ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_waiting_run_stores_what_it_waits_for_and_a_decision_clears_it(mode: str) -> None:
    """``Snapshot.pending_decision``: written as the run stops, so the state, its triggers and the calls can be
    shown without the agent's code; gone once the run goes on."""
    sim, store = script(), MemoryStore()
    agent = make(ApprovalAgent, sim, mode)
    first = go(agent, mode, store=store)
    expected = PendingDecision(
        state="awaiting_approval",
        triggers=["approve", "refuse"],
        tool_calls=[ToolCall(id=ID, name="delete_file", input={"path": "/tmp/old.log"})],
        why="a dangerous tool was called",
    )
    assert store.load(first.conversation_id).pending_decision == expected
    assert first.snapshot is not None and first.snapshot.pending_decision == expected  # no store needed
    done = carry_on(agent, mode, first.conversation_id, store=store, trigger="approve")
    assert done.final_state == "done" and store.load(first.conversation_id).pending_decision is None


def test_the_stored_triggers_are_those_whose_guards_pass() -> None:
    """A hook's ``Wait`` in a base state: the triggers recorded are the ones ``resume`` takes, as its error lists."""
    sim, store = Simulator([r.tool_use("read_file", {"path": "a.txt"}, id=ID), r.text("Read.")]), MemoryStore()
    first = make(OnTheSpot, sim, "run").run("Read a.txt", store=store)
    decision = store.load(first.conversation_id).pending_decision
    assert decision is not None and (decision.state, decision.triggers) == ("tool_use", ["run_tools", "no_tool_calls"])
    assert decision.why is None  # requesting --tool_use--> tool_use has no guard to say why

    class GuardedApproval(ApprovalAgent):
        transitions = [Transition("awaiting_approval", "escalate", "failed", (guard("never")(lambda c: False),))]

    sim, store = script(), MemoryStore()
    agent = make(GuardedApproval, sim, "run")
    first = agent.run("Delete it", store=store)
    decision = store.load(first.conversation_id).pending_decision
    assert decision is not None and decision.triggers == ["approve", "refuse"]  # escalate's guard does not pass
    with pytest.raises(InvalidTransitionError, match=r"cannot leave .* the triggers that can: approve, refuse"):
        agent.resume(first.conversation_id, store=store, trigger="escalate")


def test_a_row_written_before_pending_decision_loads_without_it() -> None:
    raw = (Path(__file__).parent / "data" / "snapshot_v1.json").read_text()
    snap = read_snapshot(json.loads(raw)["conversation_id"], raw)
    assert snap.pending_decision is None and "pending_decision" not in json.loads(raw)


# --- fail-safe added states: checked when the class is defined ---------------------------------------------


def approval_transitions() -> list[Transition]:
    return [
        Transition("tool_use", "ask", "awaiting_approval"),
        Transition("awaiting_approval", "approve", "requesting", action=actions.answer_tool_calls, runs_tools=True),
        Transition("awaiting_approval", "refuse", "requesting", action=actions.refuse_tool_calls),
    ]


def test_an_added_state_with_several_ways_out_and_no_hook_fails_at_class_creation() -> None:
    with pytest.raises(
        ConfigurationError, match=r"Forgetful: state 'awaiting_approval' has 2 ways out \(approve, refuse"
    ):

        class Forgetful(Agent):
            states = ["awaiting_approval"]
            transitions = [
                Transition("tool_use", "ask", "awaiting_approval"),
                Transition(
                    "awaiting_approval", "approve", "requesting", action=actions.answer_tool_calls, runs_tools=True
                ),
                Transition("awaiting_approval", "refuse", "requesting", action=actions.refuse_tool_calls),
            ]

    class WithHook(Agent):  # a hook, a Wait, or a single way out are each enough
        states = ["awaiting_approval"]
        transitions = approval_transitions()

        def on_awaiting_approval(self, conv: Conversation) -> str:
            return "refuse"

    class AsWait(Agent):
        states = [Wait("awaiting_approval")]
        transitions = approval_transitions()

    class OneWay(Agent):
        transitions = [
            Transition("tool_use", "ask", "checking", (guard("never")(lambda conv: False),)),
            Transition("checking", "go", "requesting", action=actions.refuse_tool_calls),
        ]

    assert WithHook.table().must_choose == {"awaiting_approval"}
    assert AsWait.table().waits == {"awaiting_approval", "awaiting_tool_approval"}
    assert OneWay.table().must_choose == frozenset()


def test_other_unsafe_tables_fail_at_class_creation() -> None:
    with pytest.raises(ConfigurationError, match="'requestin' is the dest of a transition but is not declared"):

        class Typo(Agent):
            transitions = [Transition("tool_use", "ask", "requestin")]

    with pytest.raises(ConfigurationError, match="Wait state 'stuck' has no way out"):

        class Stuck(Agent):
            states = [Wait("stuck")]
            transitions = [Transition("tool_use", "ask", "stuck")]

    async def later(conv: Conversation) -> bool:
        return True

    with pytest.raises(ConfigurationError, match=r"guard 'later' .* is async"):

        class AsyncGuard(Agent):
            transitions = [Transition("tool_use", "ask", "done", (later,))]  # type: ignore[arg-type]

    with pytest.raises(ConfigurationError, match="a Wait state needs a name"):

        class Nameless(Agent):
            states = [Wait()]

    class Escalated(Agent):  # a declared final state with no way out is fine
        states = ["escalated"]
        transitions = [Transition("refusal", "escalate", "escalated")]

    assert "escalated" in Escalated.table().terminal


def test_a_hook_that_returns_none_on_a_state_with_several_ways_out_is_an_error_not_a_choice() -> None:
    class Undecided(Agent):
        model = "claude-haiku-4-5"
        tools = [ww.delete_file]
        states = ["awaiting_approval"]
        transitions = approval_transitions()

        def on_awaiting_approval(self, conv: Conversation) -> str | None:
            return None  # forgot to decide: must not approve

    sim = script()
    with pytest.raises(InvalidTransitionError, match="returned None, but 'awaiting_approval' has several ways out"):
        make(Undecided, sim, "run").run("Delete it")
    assert len(sim.requests) == 1


# --- actions: the history cannot be corrupted ---------------------------------------------------------------


def forgets_the_results(conv: Conversation) -> None:
    actions.keep_reply(conv)  # ... and sends the model's tool call without its result


def answers_the_wrong_id(conv: Conversation) -> None:
    actions.keep_reply(conv)
    conv.messages.append(
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_zz", "content": "x"}]}
    )


def two_assistants(conv: Conversation) -> None:
    actions.keep_reply(conv)
    conv.messages.append({"role": "assistant", "content": "And another thing."})


def not_a_message(conv: Conversation) -> None:
    conv.messages.append("approve")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("action", "rule"),
    [
        (forgets_the_results, "every tool_use is answered by exactly one tool_result"),
        (answers_the_wrong_id, "every tool_use is answered by exactly one tool_result"),
        (two_assistants, "roles alternate user / assistant"),
        (not_a_message, "every message is a dict with role"),
    ],
)
@pytest.mark.parametrize("mode", ["run", "arun"])
def test_a_bad_custom_action_is_caught_before_sending_and_the_history_kept(action: Any, rule: str, mode: str) -> None:
    class Sloppy(ApprovalAgent):
        transitions = [Transition("awaiting_approval", "sloppy", "requesting", action=action)]

    sim, store = script(), MemoryStore()
    agent = make(Sloppy, sim, mode)
    first = go(agent, mode, store=store)
    with pytest.raises(
        InvalidActionError, match=rf"action .*{action.__name__} on awaiting_approval --sloppy--> requesting"
    ) as caught:
        carry_on(agent, mode, first.conversation_id, store=store, trigger="sloppy")
    assert rule in str(caught.value) and caught.value.problems and caught.value.action.endswith(action.__name__)
    assert len(sim.requests) == 1  # nothing was sent
    stored = store.load(first.conversation_id)
    assert stored.messages == first.messages and stored.state == "awaiting_approval"
    # the conversation is intact: a sound decision carries it on
    assert carry_on(agent, mode, first.conversation_id, store=store, trigger="refuse").final_state == "done"


def test_the_rejected_history_is_put_back_in_the_conversation_too() -> None:
    class Sloppy(ApprovalAgent):
        transitions = [Transition("awaiting_approval", "sloppy", "requesting", action=answers_the_wrong_id)]

    sim = script()
    conv = make(Sloppy, sim, "run").start("Delete it")
    conv.run()
    before = json.dumps(conv.messages)
    conv.decide("sloppy")
    with pytest.raises(InvalidActionError, match="tool_result ids \\['toolu_zz'\\]"):
        conv.run()
    assert json.dumps(conv.messages) == before and conv.state == "awaiting_approval" and not conv.reply_kept


def test_tool_results_take_tool_result_models_only() -> None:
    conv = make(ApprovalAgent, script(), "run").start("Delete it")
    with pytest.raises(TypeError, match=r"takes a list of agentfsm\.ToolResult, got dict"):
        conv.tool_results = {ID: "done"}  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"holds agentfsm\.ToolResult models, got str"):
        conv.tool_results.append("done")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got dict"):
        conv.tool_results = [{"tool_use_id": ID, "content": "x"}]  # type: ignore[list-item]
    conv.tool_results = [ToolResult(tool_use_id=ID, content="x")]
    conv.tool_results += [ToolResult(tool_use_id="toolu_02", content="y")]
    assert [t.tool_use_id for t in conv.tool_results] == [ID, "toolu_02"]
    with pytest.raises(TypeError, match=r"conv\.messages takes a list of message dicts"):
        conv.messages = "hello"  # type: ignore[assignment]


class HandsOn(ApprovalAgent):
    transitions = [
        Transition(
            "awaiting_approval",
            "ran_by_hand",
            "requesting",
            action=actions.answer_with(lambda conv: conv.input["results"]),
        ),
    ]


def test_answer_with_sends_results_given_from_outside(tool_log: Path) -> None:
    sim, store = script(), MemoryStore()
    agent = make(HandsOn, sim, "run")
    first = agent.run("Delete it", store=store)
    with pytest.raises(InvalidActionError, match=r"no result for: \['toolu_01 \(delete_file\)'\]"):
        agent.resume(first.conversation_id, store=store, trigger="ran_by_hand", input={"results": {}})
    with pytest.raises(InvalidActionError, match="the result for 'toolu_01' is a int"):
        agent.resume(first.conversation_id, store=store, trigger="ran_by_hand", input={"results": {ID: 3}})
    assert len(sim.requests) == 1 and store.load(first.conversation_id).state == "awaiting_approval"
    done = agent.resume(
        first.conversation_id, store=store, trigger="ran_by_hand", input={"results": {ID: "removed it by hand"}}
    )
    assert done.final_state == "done" and ran(tool_log) == []
    block = sim.requests[1].messages[-1]["content"][0]
    assert (block["tool_use_id"], block["content"], block.get("is_error")) == (ID, "removed it by hand", None)


@guard("the reply is not empty")
def said_something(conv: Conversation) -> bool:
    return bool(conv.require_reply().content)


class ChatAgent(Agent):
    """A chat: after each answer, the run waits for the user's next message."""

    model = "claude-haiku-4-5"
    policy = Policy(max_turns=10)
    states = [Wait("awaiting_user")]
    transitions = [
        # keep the answer on the way in, so the waiting result shows it (text, messages)
        Transition("end_turn", "await_user", "awaiting_user", (said_something,), actions.keep_reply),
        Transition("awaiting_user", "reply", "requesting", action=actions.add_user_message(lambda c: c.input["text"])),
        Transition("awaiting_user", "bye", "done", action=actions.keep_reply),
    ]


@pytest.mark.parametrize("mode", MODES)
def test_add_user_message_carries_a_chat_across_waits(mode: str) -> None:
    sim, store = Simulator([r.text("Hello! How can I help?"), r.text("Paris.")]), MemoryStore()
    agent = make(ChatAgent, sim, mode)
    first = go(agent, mode, "Hi", store=store)
    assert (first.final_state, first.waiting, first.pending_tool_calls) == ("waiting", "awaiting_user", [])
    assert first.text == "Hello! How can I help?" and first.messages[-1]["role"] == "assistant"
    second = carry_on(
        agent, mode, first.conversation_id, store=store, trigger="reply", input={"text": "Capital of France?"}
    )
    assert second.final_state == "waiting" and second.text == "Paris."
    assert [m["role"] for m in sim.requests[1].messages] == ["user", "assistant", "user"]
    assert sim.requests[1].messages[-1]["content"][0]["text"] == "Capital of France?"
    assert store.load(first.conversation_id).input is None  # it was for the decision before this wait
    third = carry_on(agent, mode, first.conversation_id, store=store, trigger="bye")
    assert third.final_state == "done" and third.messages[-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Paris."}],
    }
    assert len(sim.requests) == 2


def test_add_user_message_refuses_to_leave_tool_calls_unanswered() -> None:
    class Chatty(ApprovalAgent):
        transitions = [Transition("awaiting_approval", "say", "requesting", action=actions.add_user_message("Why?"))]

    sim = script()
    agent = make(Chatty, sim, "run")
    with pytest.raises(
        InvalidActionError, match=r"add_user_message cannot follow a reply whose tool calls are unanswered \(toolu_01\)"
    ):
        agent.resume(agent.run("Delete it"), trigger="say")
    assert len(sim.requests) == 1


def test_actions_combine_without_keeping_the_reply_twice() -> None:
    """A transition into the wait may keep the reply already; answering it later does not duplicate it."""

    class KeepsFirst(ApprovalAgent):
        transitions = [
            Transition("tool_use", "ask_kept", "awaiting_approval", (ww.wants_approval,), actions.keep_reply)
        ]

    sim, store = script(), MemoryStore()
    agent = make(KeepsFirst, sim, "run")
    first = agent.run("Delete it", store=store)
    assert first.final_state == "waiting" and first.messages[-1]["role"] == "assistant"
    assert [c.id for c in first.pending_tool_calls] == [ID]  # kept, still unanswered
    done = agent.resume(first.conversation_id, store=store, trigger="approve")  # restored from the store
    assert [m["role"] for m in done.messages] == ["user", "assistant", "user", "assistant"]


# --- across processes: one runs to the wait and exits, another resumes ----------------------------------------


@pytest.fixture(scope="module")
def ctx() -> Any:
    return sc.forkserver()  # workers fork from a server with the SDK imported: milliseconds, not seconds


def _process(ctx: Any, tmp_path: Path, phase: str, *args: str) -> dict[str, Any]:
    """One worker process: it runs or resumes the conversation and exits."""
    out = tmp_path / f"{phase}.json"
    process = ctx.Process(target=ww.child, args=([phase, *args], str(tmp_path / "tool.log"), str(out)))
    process.start()
    process.join(120)
    code = sc.exit_code(process, out)
    assert code == 0 and out.exists(), f"the {phase} process exited with {code}"
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@pytest.fixture(params=["sqlite", "postgres"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "agentfsm.db")
    dsn: str = request.getfixturevalue("postgres_dsn")
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS agentfsm_conversations, agentfsm_leases")
    return "postgres", dsn


@pytest.mark.slow  # worker processes
@pytest.mark.parametrize(
    ("mode", "trigger", "given"),
    [
        ("run", "approve", None),
        ("stream", "refuse", {"reason": "no"}),
        ("arun", "refuse", None),
        ("astream", "approve", None),
    ],
)
def test_a_wait_survives_the_process_and_another_process_resumes_it(
    ctx: Any, shared_store: tuple[str, str], mode: str, trigger: str, given: Any, tmp_path: Path
) -> None:
    kind, where = shared_store
    sim = script(then="All handled.")
    with sim.serve() as url:
        first = _process(ctx, tmp_path, "start", mode, kind, where, url, "ticket-7")
        assert first["final_state"] == "waiting" and first["waiting"] == "awaiting_approval"
        assert [(c["id"], c["name"]) for c in first["pending"]] == [(ID, "delete_file")]
        extra = [trigger] + ([json.dumps(given)] if given is not None else [])
        second = _process(ctx, tmp_path, "resume", mode, kind, where, url, "ticket-7", *extra)
    assert second["final_state"] == "done" and second["text"] == "All handled."
    assert second["path"] == ["requesting", "tool_use", "awaiting_approval", "requesting", "end_turn", "done"]
    log = tmp_path / "tool.log"
    assert ran(log) == (["/tmp/old.log"] if trigger == "approve" else [])
    answer = sim.requests[1].messages[-1]["content"][0]
    if trigger == "refuse":
        assert answer["is_error"] and answer["content"] == (given["reason"] if given else actions.DEFAULT_REFUSAL)
    assert len(sim.requests) == 2


# --- streaming shows the run up to the wait ----------------------------------------------------------------


def test_a_streamed_run_shows_its_text_up_to_the_wait_and_ends_with_the_waiting_result() -> None:
    sim = Simulator(
        [r.tool_use("delete_file", {"path": "/tmp/old.log"}, id=ID, text="Let me delete it."), r.text("Gone.")]
    )
    agent = make(ApprovalAgent, sim, "stream")
    events = list(agent.stream("Delete it"))
    texts = "".join(e.text for e in events if e.type == "text")
    assert texts == "Let me delete it." and events[-1].type == "result"
    result = events[-1].result  # type: ignore[union-attr]
    assert result.final_state == "waiting"
    after: Iterator[Any] = agent.load(result, trigger="approve").stream()
    rest = list(after)
    assert "".join(e.text for e in rest if e.type == "text") == "Gone." and rest[-1].result.final_state == "done"
