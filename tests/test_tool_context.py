"""ToolContext: a stable key per tool call (issue 25, item 1).

The key is ``sha256("agentfsm.tool_call.v1" NUL conversation_id NUL tool_use_id)``: the same for a call on every
driver, across a resume from a store and in a custom executor; different for another call or conversation.
``attempt`` is 1 on a call's first run and 2 when the ledger says it started before (an idempotent tool run again).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentfsm import Agent, DefaultExecutor, SQLiteStore, Tool, ToolCall, ToolContext, ToolResult, tool
from agentfsm.engines.core import perform_tools
from agentfsm.errors import ConfigurationError
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.testing import DRIVERS, client_for, drive
from agentfsm.tools.calls import idempotency_key
from agentfsm.tools.mcp.tool import request_meta

SEEN: list[ToolContext] = []


@tool
def charge(amount: int, ctx: ToolContext) -> str:
    """Charge a card."""
    SEEN.append(ctx)
    return f"charged {amount}"


@tool
async def refund(amount: int, ctx: ToolContext) -> str:
    """Refund a charge."""
    await asyncio.sleep(0)
    SEEN.append(ctx)
    return f"refunded {amount}"


def _key(conversation_id: str, tool_use_id: str) -> str:
    return hashlib.sha256(f"agentfsm.tool_call.v1\0{conversation_id}\0{tool_use_id}".encode()).hexdigest()


@pytest.fixture(autouse=True)
def _clear() -> None:
    SEEN.clear()


def _script() -> Simulator:
    return Simulator(
        [
            r.message(
                [
                    r.tool_use_block("charge", {"amount": 5}, id="toolu_a"),
                    r.tool_use_block("refund", {"amount": 2}, id="toolu_b"),
                ],
                "tool_use",
            ),
            r.text("Done."),
        ]
    )


def test_the_parameter_is_not_in_the_schema_sent_to_the_model() -> None:
    assert charge.context_param == "ctx"
    assert charge.input_schema == {
        "type": "object",
        "properties": {"amount": {"type": "integer"}},
        "required": ["amount"],
        "additionalProperties": False,
    }
    sim = Simulator([r.text("Hi.")])
    Agent(client=sim.client(), tools=[charge]).run("hi")
    (sent,) = sim.requests
    assert sent.body["tools"][0]["input_schema"] == charge.input_schema
    assert charge.validate({"amount": 1}) == {"amount": 1}  # the context is the executor's to add


def test_the_model_cannot_send_the_context_as_input() -> None:
    with pytest.raises(Exception, match="ctx"):
        charge.validate({"amount": 1, "ctx": {"idempotency_key": "x"}})


def test_two_context_parameters_are_refused() -> None:
    def twice(a: ToolContext, b: ToolContext) -> str:
        """Two contexts."""
        return ""

    with pytest.raises(ConfigurationError, match="one ToolContext parameter"):
        Tool(twice)


@pytest.mark.parametrize("driver", DRIVERS)
def test_every_driver_gives_sync_and_async_tools_the_same_key(driver: str) -> None:
    sim = _script()
    agent = Agent(client=client_for(sim, driver), tools=[charge, refund])
    result = drive(agent, "pay", driver, conversation_id="conv_drivers")
    assert result.final_state == "done"
    by_id = {c.tool_use_id: c for c in SEEN}
    assert set(by_id) == {"toolu_a", "toolu_b"}
    for call_id, ctx in by_id.items():
        assert ctx == ToolContext(
            idempotency_key=_key("conv_drivers", call_id),
            conversation_id="conv_drivers",
            tool_use_id=call_id,
            attempt=1,
        )
    assert by_id["toolu_a"].idempotency_key != by_id["toolu_b"].idempotency_key  # another call, another key


def test_another_conversation_gets_other_keys() -> None:
    keys = []
    for conversation_id in ("conv_one", "conv_two"):
        SEEN.clear()
        Agent(client=_script().client(), tools=[charge, refund]).run("pay", conversation_id=conversation_id)
        keys.append({c.tool_use_id: c.idempotency_key for c in SEEN})
    assert keys[0]["toolu_a"] != keys[1]["toolu_a"] and keys[0]["toolu_b"] != keys[1]["toolu_b"]
    assert keys[0]["toolu_a"] == idempotency_key("conv_one", "toolu_a")


CRASH = {"on": True}


@tool(idempotent=True)
def send_mail(to: str, ctx: ToolContext) -> str:
    """Send an e-mail (the mail API deduplicates on the key)."""
    SEEN.append(ctx)
    if CRASH["on"]:
        raise KeyboardInterrupt  # the worker dies while the call runs
    return f"sent to {to}"


@tool
def wire_money(to: str, ctx: ToolContext) -> str:
    """Wire money (not idempotent: never run twice)."""
    SEEN.append(ctx)
    raise KeyboardInterrupt


def test_the_key_is_stable_across_a_resume_from_sqlite_and_attempt_counts(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    sim = Simulator([r.tool_use("send_mail", {"to": "ana"}, id="toolu_mail"), r.text("Sent.")])
    CRASH["on"] = True
    with pytest.raises(KeyboardInterrupt):
        Agent(client=sim.client(), tools=[send_mail]).run("mail ana", store=store, conversation_id="conv_mail")
    CRASH["on"] = False
    # a new Agent (another worker) resumes it from the store: the call runs again, with the same key
    result = Agent(client=sim.client(), tools=[send_mail]).resume("conv_mail", store=store)
    assert result.final_state == "done"
    first, second = SEEN
    assert first.idempotency_key == second.idempotency_key == _key("conv_mail", "toolu_mail")
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.model_copy(update={"attempt": 2}) == second


def test_a_call_in_doubt_of_a_tool_that_is_not_idempotent_is_not_run_again(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    sim = Simulator([r.tool_use("wire_money", {"to": "bo"}, id="toolu_wire"), r.text("Unsure.")])
    with pytest.raises(KeyboardInterrupt):
        Agent(client=sim.client(), tools=[wire_money]).run("pay bo", store=store, conversation_id="conv_wire")
    result = Agent(client=sim.client(), tools=[wire_money]).resume("conv_wire", store=store)
    assert result.final_state == "done"
    assert [c.attempt for c in SEEN] == [1]  # answered "interrupted", not run at attempt 2


class Recording(DefaultExecutor):
    """A custom executor: sees each call's context before running it."""

    def __init__(self) -> None:
        super().__init__()
        self.contexts: list[ToolContext | None] = []

    def execute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
        self.contexts.extend(call.context for call in calls)
        return super().execute(calls, tools, timeout)


def test_a_custom_executor_sees_the_context_on_each_call() -> None:
    executor = Recording()
    with executor:
        Agent(client=_script().client(), tools=[charge, refund], executor=executor).run("pay", conversation_id="conv_x")
    assert [c and (c.tool_use_id, c.idempotency_key) for c in executor.contexts] == [
        ("toolu_a", _key("conv_x", "toolu_a")),
        ("toolu_b", _key("conv_x", "toolu_b")),
    ]
    assert sorted(c.idempotency_key for c in SEEN) == sorted(c.idempotency_key for c in executor.contexts if c)


def test_a_call_without_a_context_fails_clearly_and_with_one_runs() -> None:
    call = ToolCall(id="toolu_1", name="charge", input={"amount": 3})
    with DefaultExecutor() as executor:
        (failed,) = executor.execute([call], {"charge": charge}, 5.0)
        assert failed.is_error and "has no ToolContext" in str(failed.content)
        (ran,) = executor.execute([call.with_context(ToolContext.of("conv_y", call.id))], {"charge": charge}, 5.0)
    assert ran.content == "charged 3" and SEEN[:] == [ToolContext.of("conv_y", "toolu_1")]
    assert call.context is None and call == call.with_context(ToolContext.of("c", "d"))  # not a field
    assert "context" not in call.with_context(ToolContext.of("c", "d")).model_dump()


def test_an_engine_retry_keeps_the_key_and_counts_the_attempt() -> None:
    agent = Agent(client=Simulator([]).async_client(), tools=[send_mail])
    CRASH["on"] = False
    call = ToolCall(id="toolu_m", name="send_mail", input={"to": "ana"}).with_context(
        ToolContext.of("conv_e", "toolu_m")
    )
    first = asyncio.run(perform_tools(agent, [call], earlier_attempt=False))
    again = asyncio.run(perform_tools(agent, [call], earlier_attempt=True, attempt=3))
    assert [r.content for r in (*first.results, *again.results)] == ["sent to ana", "sent to ana"]
    assert [(c.idempotency_key, c.attempt) for c in SEEN] == [
        (_key("conv_e", "toolu_m"), 1),
        (_key("conv_e", "toolu_m"), 3),
    ]


def test_mcp_request_meta_carries_the_context() -> None:
    meta: dict[str, Any] = request_meta(ToolContext.of("conv_z", "toolu_z", 2))
    assert meta == {
        "agentfsm/idempotency_key": _key("conv_z", "toolu_z"),
        "agentfsm/conversation_id": "conv_z",
        "agentfsm/tool_use_id": "toolu_z",
        "agentfsm/attempt": 2,
    }
