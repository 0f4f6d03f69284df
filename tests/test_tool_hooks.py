"""Hooks around every tool call (issue 22 item 4): ``Agent.before_tool`` and ``Agent.after_tool``.

The real ``anthropic`` client talks to the simulator (its HTTP transport), under every driver. ``before_tool``
may deny a call (answered ``is_error`` with the reason; the function never runs) or rewrite its input
(validated first; an invalid rewrite is an ``is_error`` result saying so); ``after_tool`` may replace a result.
Sync hooks under every driver, ``async def`` ones under the async drivers (the sync ones refuse them before any
request). Each decision is an event and an attribute of the call's span; a hook that fails fails closed; a call
needing approval is decided by a person first. The durable engines and the batch runner are held to the same
path by ``test_parity.py`` (scenarios ``tool_hooks`` and ``async_tool_hooks``).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentfsm import (
    Agent,
    ConfigurationError,
    Conversation,
    Deny,
    MemoryStore,
    Rewrite,
    ToolCall,
    ToolResult,
    tool,
)
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.testing import DRIVERS, capture_events, client_for, drive

MODEL = "claude-haiku-4-5"
RAN: list[tuple[str, dict[str, Any]]] = []
PHONE = re.compile(r"\b\d{3}-\d{4}\b")


@tool
def lookup_customer(name: str, fields: list[str] | None = None) -> str:
    """Look a customer up."""
    RAN.append(("lookup_customer", {"name": name, "fields": fields}))
    return f"{name}: phone 555-0142, plan gold"


@tool
def delete_account(name: str) -> str:
    """Delete a customer's account."""
    RAN.append(("delete_account", {"name": name}))
    return f"deleted {name}"


@tool(needs_approval=True)
def refund(order: str) -> str:
    """Refund an order (a person approves it first)."""
    RAN.append(("refund", {"order": order}))
    return f"refunded {order}"


ALLOWED = {"lookup_customer", "refund"}


class Guarded(Agent):
    """An allow-list before every call, a rewrite of one input, and phone numbers redacted from every result."""

    model = MODEL
    tools = [lookup_customer, delete_account, refund]

    def before_tool(self, call: ToolCall, conv: Conversation) -> Deny | Rewrite | None:
        assert isinstance(conv, Conversation) and conv.messages[0]["role"] == "user"  # the face hooks get
        if call.name not in ALLOWED:
            return Deny(f"{call.name} is not allowed for this assistant")
        if call.input.get("name") == "everyone":
            return Rewrite(input={"name": "everyone", "fields": 42})  # not valid: fields is a list of strings
        if call.name == "lookup_customer" and call.input.get("fields") is None:
            return Rewrite(input={**call.input, "fields": ["plan"]})
        return None

    def after_tool(self, call: ToolCall, result: ToolResult, conv: Conversation) -> ToolResult | None:
        if isinstance(result.content, str) and PHONE.search(result.content):
            return ToolResult(tool_use_id="anything", content=PHONE.sub("[phone]", result.content))
        return None


class AsyncGuarded(Guarded):
    async def before_tool(self, call: ToolCall, conv: Conversation) -> Deny | Rewrite | None:
        await asyncio.sleep(0)  # a policy service, say
        return Guarded.before_tool(self, call, conv)

    async def after_tool(self, call: ToolCall, result: ToolResult, conv: Conversation) -> ToolResult | None:
        await asyncio.sleep(0)
        return Guarded.after_tool(self, call, result, conv)


def script() -> Simulator:
    calls = [
        ("lookup_customer", {"name": "Ana"}),  # rewritten (fields added), its result redacted
        ("delete_account", {"name": "Ana"}),  # denied by the allow-list
        ("lookup_customer", {"name": "everyone"}),  # rewritten to an input that does not validate
    ]
    return Simulator([r.tool_uses(calls), r.text("Ana is on the gold plan.")])


@pytest.fixture(autouse=True)
def _forget() -> None:
    RAN.clear()


def results_sent(sim: Simulator) -> list[tuple[str, bool]]:
    last = sim.requests[1].messages[-1]
    return [(b["content"], bool(b.get("is_error"))) for b in last["content"]]


def check_guarded_run(sim: Simulator, events: list[Any]) -> None:
    (ana, delete, everyone) = results_sent(sim)
    assert ana == ("Ana: phone [phone], plan gold", False)
    assert delete == ("delete_account is not allowed for this assistant", True)
    assert everyone[1] and "rewrote its input for tool 'lookup_customer'" in everyone[0]
    assert "'fields': input should be a valid list (got 42)" in everyone[0]
    assert RAN == [("lookup_customer", {"name": "Ana", "fields": ["plan"]})]  # only the one allowed and valid
    # The history keeps the calls as the model made them.
    sent = [b["input"] for b in sim.requests[1].messages[1]["content"] if b["type"] == "tool_use"]
    assert sent == [{"name": "Ana"}, {"name": "Ana"}, {"name": "everyone"}]
    decided = [(e.event, e.data.get("tool_use_id"), e.data.get("valid"), e.data.get("by")) for e in events]
    ids = [b["id"] for b in sim.requests[1].messages[1]["content"]]
    assert [d for d in decided if d[0] in ("tool.denied", "tool.rewritten", "tool.result_replaced")] == [
        ("tool.rewritten", ids[0], True, None),
        ("tool.denied", ids[1], None, "before_tool"),
        ("tool.rewritten", ids[2], False, None),
        ("tool.result_replaced", ids[0], None, None),
    ]
    assert [e.data["tool_use_id"] for e in events if e.event == "tool.started"] == [ids[0]]
    assert [e.data["tool_use_id"] for e in events if e.event == "tool.finished"] == ids


@pytest.mark.parametrize(
    ("agent", "driver"),
    [*((Guarded, d) for d in DRIVERS), (AsyncGuarded, "arun"), (AsyncGuarded, "astream")],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_hooks_deny_rewrite_and_replace_sync_under_every_driver_and_async_under_the_async_ones(
    agent: type[Agent], driver: str
) -> None:
    sim = script()
    with capture_events() as events:
        result = drive(agent(client=client_for(sim, driver), logger=None), "Tell me about Ana", driver)
    assert result.final_state == "done"
    check_guarded_run(sim, events)


@pytest.mark.parametrize("driver", ["run", "stream"])
def test_an_async_hook_under_a_sync_driver_is_refused_before_any_request(driver: str) -> None:
    sim = script()
    with pytest.raises(ConfigurationError, match=r"async hooks or actions \(before_tool, after_tool\).*arun\(\)"):
        drive(AsyncGuarded(client=client_for(sim, driver), logger=None), "Tell me about Ana", driver)
    assert sim.requests == [] and RAN == []


# --- a hook that fails fails closed -------------------------------------------------------------------------


class Broken(Agent):
    model = MODEL
    tools = [lookup_customer]

    def before_tool(self, call: ToolCall, conv: Conversation) -> Any:
        if call.input["name"] == "raise":
            raise RuntimeError("policy service down")
        return "yes" if call.input["name"] == "wrong" else None

    def after_tool(self, call: ToolCall, result: ToolResult, conv: Conversation) -> Any:
        if call.input["name"] == "Bo":
            raise ValueError("redactor crashed")
        return {"not": "a ToolResult"}


def test_a_hook_that_raises_or_answers_nonsense_never_lets_a_call_or_a_result_through() -> None:
    names = ["raise", "wrong", "Bo", "Cy"]
    sim = Simulator([r.tool_uses([("lookup_customer", {"name": n}) for n in names]), r.text("ok")])
    with capture_events() as events:
        result = Broken(client=sim.client(), logger=None).run("Look them up")
    assert result.final_state == "done"
    raised, wrong, bo, cy = results_sent(sim)
    assert raised == ("The call was not run: the agent's check before it failed (RuntimeError).", True)
    assert wrong == ("The call was not run: the agent's check before it failed (TypeError).", True)
    assert bo == ("The result was withheld: the agent's check after the call failed (ValueError).", True)
    assert cy == ("The result was withheld: the agent's check after the call failed (TypeError).", True)
    assert sorted(i["name"] for _, i in RAN) == ["Bo", "Cy"]  # the two the before-check let through (concurrently)
    finished = {e.data["tool_use_id"]: e for e in events if e.event == "tool.finished"}
    ids = [b["id"] for b in sim.requests[1].messages[1]["content"]]
    assert "policy service down" in finished[ids[0]].data["traceback"]  # for the developer, not the model
    assert "redactor crashed" in finished[ids[2]].data["traceback"]
    assert all(finished[i].level == "warning" for i in ids)
    denied = [e.data for e in events if e.event == "tool.denied"]
    assert [d["reason"] for d in denied] == [
        "RuntimeError: policy service down",
        "TypeError: before_tool returned str 'yes': return None, Deny(reason) or Rewrite(input={...})",
    ]


def test_deny_and_rewrite_check_what_they_are_given() -> None:
    with pytest.raises(ConfigurationError, match="Deny needs a reason"):
        Deny("  ")
    with pytest.raises(ConfigurationError, match=r"Rewrite\(input=...\) takes the call's new input as a dict"):
        Rewrite(input=["a"])  # type: ignore[arg-type]


# --- approval first, then before_tool; the ledger's results are not asked about again ------------------------


class Audited(Agent):
    model = MODEL
    tools = [lookup_customer, refund]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.asked: Counter[str] = Counter()

    def before_tool(self, call: ToolCall, conv: Conversation) -> Deny | None:
        self.asked[call.name] += 1
        return Deny("refunds are paused") if call.input.get("order") == "B-2" else None


def test_a_person_decides_first_then_before_tool_and_a_call_is_asked_about_once() -> None:
    calls = [("lookup_customer", {"name": "Ana"}), ("refund", {"order": "A-1"}), ("refund", {"order": "B-2"}),
             ("refund", {"order": "C-3"})]  # fmt: skip
    sim = Simulator([r.tool_uses(calls), r.text("Done.")])
    agent, store = Audited(client=sim.client(), logger=None), MemoryStore()
    waiting = agent.run("Refund Ana's orders", store=store)
    assert agent.asked == Counter({"lookup_customer": 1})  # ran before the wait; the refunds wait for a person
    a1, b2, c3 = waiting.pending_tool_calls
    with capture_events() as events:
        done = agent.resume(waiting.conversation_id, store=store, approve=[a1.id, b2.id], deny={c3.id: "no"})
    assert done.final_state == "done"
    # Denied by the person: never reaches before_tool. Approved: asked; B-2 denied by the hook.
    assert agent.asked == Counter({"lookup_customer": 1, "refund": 2})
    assert [name for name, _ in RAN] == ["lookup_customer", "refund"]
    assert [c for c, _ in results_sent(sim)] == [
        "Ana: phone 555-0142, plan gold",
        "refunded A-1",
        "refunds are paused",
        "no",
    ]
    by = [(e.data["tool_use_id"], e.data["by"]) for e in events if e.event == "tool.denied"]
    assert by == [(c3.id, "approval"), (b2.id, "before_tool")]


def test_each_decision_is_an_attribute_of_the_calls_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sim = script()
    Guarded(client=sim.client(), logger=None, tracer_provider=provider).run("Tell me about Ana")
    ids = [b["id"] for b in sim.requests[1].messages[1]["content"]]
    spans = {
        s.attributes["gen_ai.tool.call.id"]: s
        for s in exporter.get_finished_spans()
        if s.name.startswith("execute_tool") and s.attributes
    }
    assert set(spans) == set(ids)  # one span per call, the ones that never ran included
    ana, delete, everyone = (dict(spans[i].attributes or {}) for i in ids)
    assert ana["agentfsm.tool.decision"] == "rewritten" and ana["agentfsm.tool.result_replaced"] is True
    assert delete["agentfsm.tool.decision"] == "denied" and delete["agentfsm.tool.denied_by"] == "before_tool"
    assert everyone["agentfsm.tool.decision"] == "rewrite_invalid"
    assert spans[ids[1]].status.status_code.name == "ERROR" and spans[ids[0]].status.status_code.name == "OK"


def test_an_agent_without_hooks_asks_nothing_and_runs_as_before() -> None:
    assert Agent.tool_hooks() == ((False, False), (False, False))
    assert Guarded.tool_hooks() == ((True, False), (True, False))
    assert AsyncGuarded.tool_hooks() == ((True, True), (True, True))
    assert AsyncGuarded.async_parts() == ("before_tool", "after_tool")
