"""The Agent class: configuration, input validation, subclassing the table, executors, events, secrets."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anthropic
import pytest
import structlog

from agentfsm import (
    EVENT_NAMES,
    Agent,
    Conversation,
    InvalidHistoryError,
    InvalidTransitionError,
    MissingAPIKeyError,
    Policy,
    Tool,
    ToolCall,
    ToolResult,
    Transition,
    actions,
    guard,
    tool,
)
from agentfsm.errors import ConfigurationError
from agentfsm.machine import core
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r

ROOT = Path(__file__).resolve().parent.parent


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def delete_file(path: str) -> str:
    """Delete a file (dangerous)."""
    return f"deleted {path}"


class Calculator(Agent):
    model = "claude-haiku-4-5"
    system = "You add numbers."
    tools = [add]
    policy = Policy(max_tokens=512, max_turns=7)


# --- configuration ---------------------------------------------------------------------------------


def test_class_attributes_reach_the_request() -> None:
    sim = Simulator([r.tool_use("add", {"a": 2, "b": 3}), r.text("5")])
    result = Calculator(client=sim.client()).run("2+3?")
    body = sim.requests[0].body
    assert body["model"] == "claude-haiku-4-5" and body["system"] == "You add numbers." and body["max_tokens"] == 512
    assert body["tools"] == [add.to_param()]
    assert sim.requests[1].messages[-1]["content"][0]["content"] == "5"
    assert result.text == "5"


def test_constructor_arguments_override_class_attributes_and_work_without_subclassing() -> None:
    sim = Simulator([r.text("hi")])
    a = Agent(
        client=sim.client(),
        model="claude-haiku-4-5",
        system="Be brief.",
        tools=[add, {"type": "web_search_20250305", "name": "web_search"}],
        policy=Policy(max_tokens=99),
        request_params={"temperature": 0.2},
    )
    a.run("hello")
    body = sim.requests[0].body
    assert body["model"] == "claude-haiku-4-5" and body["system"] == "Be brief." and body["max_tokens"] == 99
    assert body["temperature"] == 0.2
    assert body["tools"][1] == {"type": "web_search_20250305", "name": "web_search"}  # server tools pass through
    sim2 = Simulator([r.text("hi")])
    Calculator(client=sim2.client(), model="claude-haiku-4-5").run("x")
    assert sim2.requests[0].model == "claude-haiku-4-5" and sim2.requests[0].body["system"] == "You add numbers."


def test_reserved_request_params_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match="max_tokens"):
        Agent(client=Simulator([]).client(), request_params={"max_tokens": 5})


def test_policy_ladder_must_climb() -> None:
    with pytest.raises(ValueError, match="climb"):
        Policy(max_tokens=4096, max_tokens_ladder=[2048])


def test_missing_api_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(MissingAPIKeyError, match="ANTHROPIC_API_KEY"):
        Agent().run("hi")


def test_without_client_one_is_made_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = Simulator([r.text("from env")])
    with sim.serve() as base_url:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env-key-000000")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", base_url)
        result = Agent(model="claude-haiku-4-5").run("hi")
    assert result.text == "from env"
    assert sim.requests[0].headers.get("authorization") == "Bearer sk-ant-env-key-000000"


# --- run() input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "match"),
    [
        ([], "non-empty list"),
        ("   ", "empty"),
        ([{"role": "system", "content": "x"}], "role must be"),
        ([{"role": "assistant", "content": "x"}], "first message"),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "assistant", "content": "c"},
            ],
            "two assistant",
        ),
        ([{"role": "user", "content": []}], "empty list"),
        ([{"role": "user", "content": [{"text": "no type"}]}], "'type'"),
        ([{"role": "user", "content": 5}], "string or a list"),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "add", "input": {}}]},
            ],
            "no tool_result",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "add", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2", "content": "x"}]},
            ],
            "t1",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"}]},
            ],
            "thinking",
        ),
    ],
)
def test_invalid_history_is_a_value_error_before_any_request(history: Any, match: str) -> None:
    sim = Simulator([r.text("never")])
    with pytest.raises(ValueError, match=match) as info:
        Calculator(client=sim.client()).run(history)
    assert isinstance(info.value, InvalidHistoryError)
    assert sim.requests == []


@pytest.mark.parametrize("prompt", [b"bytes are not text", 42, None, {"role": "user", "content": "a dict"}])
def test_a_prompt_of_the_wrong_type_names_the_type_before_any_request(prompt: Any) -> None:
    sim = Simulator([r.text("never")])
    with pytest.raises(ValueError, match="string or a non-empty list of message dicts") as info:
        Calculator(client=sim.client()).run(prompt)
    assert type(prompt).__name__ in str(info.value)
    assert sim.requests == []


def test_resuming_an_unknown_conversation_is_a_clear_error() -> None:
    from agentfsm import MemoryStore
    from agentfsm.errors import UnknownConversationError

    sim = Simulator([r.text("never")])
    with pytest.raises(UnknownConversationError, match="no conversation 'nope' in the store") as info:
        Calculator(client=sim.client()).resume("nope", store=MemoryStore())
    assert isinstance(info.value, KeyError) and sim.requests == []


def test_a_full_history_with_tool_results_is_accepted() -> None:
    history = [
        {"role": "user", "content": "2+3?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 2, "b": 3}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "5"}]},
    ]
    sim = Simulator([r.text("It is 5.")])
    result = Calculator(client=sim.client()).run(history)
    assert sim.requests[0].messages == history
    assert result.messages[:3] == history and result.text == "It is 5."
    assert len(history) == 3  # the caller's list is not modified


def test_a_caller_prefill_is_continued_and_merged() -> None:
    sim = Simulator([r.text('"answer": 42}')])
    history = [{"role": "user", "content": "JSON please"}, {"role": "assistant", "content": "{"}]
    result = Calculator(client=sim.client()).run(history)
    assert sim.requests[0].messages[-1] == {"role": "assistant", "content": [{"type": "text", "text": "{"}]}
    assert result.text == '{"answer": 42}'
    assert result.messages[-1] == {"role": "assistant", "content": [{"type": "text", "text": '{"answer": 42}'}]}


def test_result_is_json_serialisable() -> None:
    sim = Simulator([r.tool_use("add", {"a": 1, "b": 1}), r.text("2")])
    result = Calculator(client=sim.client()).run("1+1")
    data = json.loads(result.model_dump_json())
    assert data["final_state"] == "done" and data["messages"] == result.messages
    assert json.loads(json.dumps(result.messages)) == result.messages


# --- subclassing the table ---------------------------------------------------------------------------


@guard("a dangerous tool was called")
def wants_approval(conv: Conversation) -> bool:
    reply = conv.require_reply()
    return any(b.get("type") == "tool_use" and b.get("name") == "delete_file" for b in reply.content)


def deny_all(conv: Conversation) -> None:
    from agentfsm.machine.actions import keep_reply

    keep_reply(conv)
    calls = [b for b in conv.require_reply().content if b.get("type") == "tool_use"]
    conv.messages.append(
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": c["id"], "content": "denied by the operator", "is_error": True}
                for c in calls
            ],
        }
    )


class ApprovalAgent(Calculator):
    tools = [add, delete_file]
    states = ["awaiting_approval"]
    transitions = [
        Transition("tool_use", "ask_approval", "awaiting_approval", (wants_approval,)),
        Transition("awaiting_approval", "approve", "requesting", action=actions.answer_tool_calls, runs_tools=True),
        Transition("awaiting_approval", "deny", "requesting", action=deny_all),
    ]

    def __init__(self, *args: Any, approve: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.approve = approve

    def on_awaiting_approval(self, conv: Conversation) -> str:
        return "approve" if self.approve else "deny"


def test_a_subclass_adds_a_state_between_tool_use_and_the_next_request() -> None:
    table = ApprovalAgent.table()
    assert "awaiting_approval" in table.states
    assert table.outgoing("tool_use")[0].trigger == "ask_approval"  # a subclass's transitions come first
    assert "awaiting_approval" not in Calculator.table().states  # the parent is untouched
    assert Agent.table() is not ApprovalAgent.table()

    sim = Simulator([r.tool_use("delete_file", {"path": "/etc"}), r.text("Could not delete.")])
    result = ApprovalAgent(client=sim.client(), approve=False).run("Delete /etc")
    assert result.path == ["requesting", "tool_use", "awaiting_approval", "requesting", "end_turn", "done"]
    assert sim.requests[1].messages[-1]["content"][0]["content"] == "denied by the operator"

    sim = Simulator([r.tool_use("delete_file", {"path": "/tmp/x"}), r.text("Deleted.")])
    result = ApprovalAgent(client=sim.client(), approve=True).run("Delete /tmp/x")
    assert sim.requests[1].messages[-1]["content"][0]["content"] == "deleted /tmp/x"

    sim = Simulator([r.tool_use("add", {"a": 1, "b": 2}), r.text("3")])
    result = ApprovalAgent(client=sim.client(), approve=False).run("1+2")
    assert "awaiting_approval" not in result.path  # safe tools skip the gate


def test_a_hook_choosing_a_trigger_that_cannot_fire_is_a_clear_error() -> None:
    class Bad(Calculator):
        def on_end_turn(self, conv: Conversation) -> str:
            return "no_such_trigger"

    sim = Simulator([r.text("x")])
    conv = Bad(client=sim.client()).start("q")
    conv.step()
    with pytest.raises(InvalidTransitionError, match="no_such_trigger"):
        conv.step()
    assert conv.messages == [{"role": "user", "content": "q"}] and conv.state == "end_turn"


def test_a_hook_can_continue_after_a_stop_sequence() -> None:
    from agentfsm.machine import guards

    class Continuing(Calculator):
        transitions = [
            Transition(
                "stop_sequence", "continue_text", "requesting", (guards.continuations_left,), actions.continue_text
            )
        ]

    sim = Simulator([r.stop_sequence("Step 1.", "###"), r.text(" Step 2.")])
    result = Continuing(client=sim.client(), policy=Policy(continuation="prefill")).run("Steps")
    assert result.text == "Step 1. Step 2." and result.final_state == "done"


# --- executors ---------------------------------------------------------------------------------------


class RecordingExecutor:
    """A custom executor: answers every call itself."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def execute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
        self.batches.append([c.name for c in calls])
        return [ToolResult(tool_use_id=c.id, content=f"remote:{c.name}:{json.dumps(c.input)}") for c in calls]

    async def aexecute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
        return self.execute(calls, tools, timeout)


def test_a_custom_executor_replaces_the_default() -> None:
    ex = RecordingExecutor()
    sim = Simulator([r.tool_use("add", {"a": 1, "b": 2}), r.text("3")])
    Calculator(client=sim.client(), executor=ex).run("1+2")
    assert ex.batches == [["add"]]
    assert sim.requests[1].messages[-1]["content"][0]["content"] == 'remote:add:{"a": 1, "b": 2}'


def test_an_executor_that_drops_a_call_still_yields_a_valid_answer() -> None:
    class Forgetful(RecordingExecutor):
        def execute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
            return []

    sim = Simulator([r.tool_use("add", {"a": 1, "b": 2}), r.text("?")])
    result = Calculator(client=sim.client(), executor=Forgetful()).run("1+2")
    block = sim.requests[1].messages[-1]["content"][0]
    assert block["is_error"] is True and "no result" in block["content"]
    assert result.final_state == "done"


# --- events --------------------------------------------------------------------------------------------


def test_every_event_name_is_declared_and_listed_in_the_guide() -> None:
    guide = (ROOT / "docs" / "08-seeing-a-run.md").read_text()  # test_docs.py checks the table's order too
    for name in EVENT_NAMES:
        assert f"| `{name}` |" in guide, f"event {name} is not in the event table of docs/08-seeing-a-run.md"
    sim = Simulator([r.tool_use("add", {"a": 1, "b": 2}), r.text("3")])
    result = Calculator(client=sim.client()).run("1+2")
    assert {e.event for e in result.events} <= set(EVENT_NAMES)
    names = [e.event for e in result.events]
    assert names[0] == "run.started" and names[-1] == "run.finished"
    for e in result.events:
        assert e.conversation_id == result.conversation_id
    received = [e for e in result.events if e.event == "response.received"]
    assert all(e.data["latency_ms"] >= 0 and "usage" in e.data and e.data["stop_reason"] for e in received)
    transitions = [
        (e.data["source"], e.data["dest"], e.data["trigger"]) for e in result.events if e.event == "transition"
    ]
    assert transitions == [(s.source, s.dest, s.trigger) for s in result.trace]


def test_events_reach_structlog() -> None:
    sim = Simulator([r.text("hi")])
    with structlog.testing.capture_logs() as logs:
        result = Calculator(client=sim.client()).run("hi")
    assert [entry["event"] for entry in logs] == [e.event for e in result.events]
    assert all(entry["conversation_id"] == result.conversation_id for entry in logs)


def test_no_logger_means_no_structlog_output() -> None:
    sim = Simulator([r.text("hi")])
    with structlog.testing.capture_logs() as logs:
        result = Calculator(client=sim.client(), logger=None).run("hi")
    assert logs == [] and result.events


def test_the_api_key_never_reaches_an_event() -> None:
    key = "sk-ant-api03-SUPERSECRET-abcdefghijklmnop"
    sim = Simulator([r.tool_use("add", {"a": 1, "b": 2}), r.authentication_error()])
    with structlog.testing.capture_logs() as logs:
        result = Calculator(client=sim.client(api_key=key, max_retries=0)).run(f"my key is {key}, 1+2?")
    assert result.final_state == "failed"
    dumped = json.dumps([e.model_dump() for e in result.events]) + json.dumps(logs, default=str)
    assert "SUPERSECRET" not in dumped
    assert sim.requests[0].headers.get("authorization") == f"Bearer {key}"  # it did go where it belongs


def test_a_real_loopback_http_server_works_too() -> None:
    sim = Simulator([r.tool_use("add", {"a": 20, "b": 22}), r.text("42")])
    with sim.serve() as base_url:
        client = anthropic.Anthropic(base_url=base_url, api_key="sk-ant-loopback-0000", max_retries=0)
        result = Calculator(client=client).run("20+22")
    assert result.text == "42" and result.final_state == "done"
    assert sim.requests[1].messages[-1]["content"][0]["content"] == "42"


def test_step_by_step_exposes_state_messages_and_pending() -> None:
    sim = Simulator([r.tool_use("add", {"a": 1, "b": 2}), r.text("3")])
    conv = Calculator(client=sim.client()).start("1+2")
    assert conv.state == "requesting" and sim.requests == []
    pending = conv.pending
    assert pending is not None and type(pending).__name__ == "SendRequest"
    assert conv.turns == 0  # looking at what is pending sends nothing and counts nothing
    step = conv.step()
    assert step is not None and (step.source, step.dest) == ("requesting", "tool_use")
    assert type(conv.pending).__name__ == "RunTools"
    conv.step()
    assert conv.state == "requesting" and conv.messages[-1]["content"][0]["type"] == "tool_result"
    result = conv.run()
    assert result.final_state == "done" and conv.step() is None


# --- the transitions Machine under the table ------------------------------------------------------


def test_the_table_runs_on_a_transitions_machine_with_every_row_of_it() -> None:
    import transitions

    table = Agent.table()
    machine = table.machine
    assert isinstance(machine, transitions.Machine)
    assert set(machine.states) == set(table.states)
    fired = {
        (t.source, name, t.dest)
        for name, event in machine.events.items()
        for leaving in event.transitions.values()
        for t in leaving
    }
    assert fired == {(t.source, t.trigger, t.dest) for t in table.transitions}


def test_the_machine_takes_the_transition_the_table_chose_among_those_sharing_a_trigger() -> None:
    """Two rows leave ``review`` on ``decide``; the machine takes the one ``fire`` was given, whatever
    the guards say now (they were checked when it was chosen), and records it."""
    from agentfsm import Transition, Wait
    from agentfsm.machine.actions import keep_reply

    def never(conv: Any) -> bool:
        return False

    class Reviewed(Agent):
        states = [Wait("review")]
        transitions = [
            Transition("tool_use", "ask", "review", action=keep_reply),
            Transition("review", "decide", "done", guards=(never,)),
            Transition("review", "decide", "refused"),
        ]

        def on_tool_use(self, conv: Any) -> str:
            return "ask"

    sim = Simulator([r.tool_use("lookup", {"key": "a"})])
    conv = Reviewed(client=sim.client(max_retries=0), model="claude-haiku-4-5", logger=None).start("Q")
    conv.run()
    assert conv.state == "review"
    first, second = Reviewed.table().outgoing("review")
    assert Reviewed.table().first_allowed(conv, "decide") is second  # the guard of the first fails
    core.fire(conv, first)  # chosen from outside the table's order: the machine takes exactly this one
    assert conv.state == "done"
    assert conv.trace[-1].trigger == "decide" and conv.trace[-1].dest == "done"


def test_firing_a_transition_that_does_not_leave_the_state_is_refused_and_changes_nothing() -> None:
    from agentfsm.errors import InvalidTransitionError

    sim = Simulator([r.text("Hi.")])
    conv = Agent(client=sim.client(max_retries=0), model="claude-haiku-4-5", logger=None).start("Q")
    leaving_end_turn = Agent.table().outgoing("end_turn")[0]
    with pytest.raises(InvalidTransitionError, match=f"no transition {leaving_end_turn.trigger!r} leaves 'requesting'"):
        core.fire(conv, leaving_end_turn)
    assert conv.state == "requesting" and conv.trace == []


def test_firing_a_transition_of_no_row_of_the_table_says_so_and_changes_nothing() -> None:
    from agentfsm import Transition
    from agentfsm.errors import InvalidTransitionError

    sim = Simulator([r.text("Hi.")])
    conv = Agent(client=sim.client(max_retries=0), model="claude-haiku-4-5", logger=None).start("Q")
    with pytest.raises(InvalidTransitionError, match="Agent's table has no transition 'teleport'"):
        core.fire(conv, Transition("requesting", "teleport", "done"))
    assert conv.state == "requesting" and conv.trace == []
    assert conv.run().final_state == "done"  # and the conversation carries on as if nothing happened
