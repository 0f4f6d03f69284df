"""A commit per call, and reconciling the calls in doubt (issue 25, items 2 and 3), in process.

A reply calls ``lookup`` (quick) and ``pay`` (a payment). The worker "dies" inside ``pay``
(``KeyboardInterrupt`` raised in the tool, as test_tool_context.py does) only once the store has
saved ``lookup``'s result: each call's result is committed as soon as it finished. A new agent
(another worker) resumes the conversation from the same SQLite store. ``lookup`` ran once and its
result is the one committed; ``pay`` is in doubt, and what happens to it depends on its tool:
no ``reconcile`` — answered "interrupted"; a check that answers a result — the effect happened,
that result is sent; None — it did not, the call runs now (attempt 2, the same key); raises or runs
past the tool timeout — "interrupted". Each outcome is a ``tool.reconciled`` event.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from agentfsm import Agent, Policy, SQLiteStore, ToolCall, ToolContext, ToolResult, tool
from agentfsm.engines.core import perform_tools
from agentfsm.errors import ConfigurationError
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.base import Snapshot
from agentfsm.testing import capture_events
from agentfsm.tools.calls import idempotency_key
from agentfsm.tools.executor import DefaultExecutor
from agentfsm.tools.reconcile import check_all

CONV = "conv_pay"
INTERRUPTED = "was running when the agent process stopped"
RAN: list[str] = []
ASKED: list[ToolContext] = []


class SignallingStore(SQLiteStore):
    """A SQLite store that says when a save has committed ``toolu_look``'s result (the sibling may die then)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lookup_committed = threading.Event()

    def save(self, snapshot: Snapshot) -> None:
        super().save(snapshot)
        if "toolu_look" in snapshot.tool_results:
            self.lookup_committed.set()


STORE: dict[str, SignallingStore] = {}


@tool
def lookup(q: str) -> str:
    """Look something up (quick)."""
    RAN.append("lookup")
    return f"found {q}"


def _pay_body(amount: int, ctx: ToolContext) -> str:
    RAN.append(f"pay#{ctx.attempt}")
    if ctx.attempt == 1:  # the first worker dies in here, once its sibling's result is committed
        assert STORE["s"].lookup_committed.wait(10), "lookup's result was never committed on its own"
        raise KeyboardInterrupt
    return f"paid {amount}"


def _pay(reconcile: Callable[[ToolContext], Any] | None) -> Any:
    @tool(name="pay", reconcile=reconcile)
    def pay(amount: int, ctx: ToolContext) -> str:
        """Pay an amount (not idempotent)."""
        return _pay_body(amount, ctx)

    return pay


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()
    ASKED.clear()


def _sim() -> Simulator:
    return Simulator(
        [
            r.message(
                [
                    r.tool_use_block("lookup", {"q": "ana"}, id="toolu_look"),
                    r.tool_use_block("pay", {"amount": 5}, id="toolu_pay"),
                ],
                "tool_use",
            ),
            r.text("Done."),
        ]
    )


def _crash_then_resume(
    tmp_path: Path,
    reconcile: Callable[[ToolContext], Any] | None,
    policy: Policy | None = None,
    *,
    aio: bool = False,
    kind: type[Agent] = Agent,
    looked_up: str = "found ana",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run until ``pay`` kills the worker, resume in a new agent; the tool results sent, and the events."""
    store = STORE["s"] = SignallingStore(tmp_path / "runs.db")
    sim = _sim()
    tools = [lookup, _pay(reconcile)]
    policy = policy or Policy()
    with pytest.raises(KeyboardInterrupt):
        kind(client=sim.client(), tools=tools, policy=policy).run("pay ana", store=store, conversation_id=CONV)
    assert RAN == ["lookup", "pay#1"]
    stored = store.load(CONV)
    assert set(stored.tool_results) == {"toolu_look"} and stored.tools_started == ["toolu_pay"]  # only pay in doubt
    again = kind(client=sim.async_client() if aio else sim.client(), tools=tools, policy=policy)
    with capture_events() as captured:
        if aio:
            result = asyncio.run(again.aresume(CONV, store=SQLiteStore(tmp_path / "runs.db")))
        else:
            result = again.resume(CONV, store=SQLiteStore(tmp_path / "runs.db"))
    assert result.final_state == "done"
    events = [{"event": e.event, **e.data} for e in captured]
    sent = {b["tool_use_id"]: b for b in result.messages[2]["content"]}
    assert sent["toolu_look"]["content"] == looked_up and not sent["toolu_look"].get("is_error")
    return sent, events


def _reconciled(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["tool_use_id"], e["outcome"]) for e in events if e["event"] == "tool.reconciled"]


def test_a_finished_call_is_committed_and_only_the_running_one_is_in_doubt(tmp_path: Path) -> None:
    sent, events = _crash_then_resume(tmp_path, None)
    assert RAN == ["lookup", "pay#1"]  # nothing ran again
    assert sent["toolu_pay"]["is_error"] and INTERRUPTED in sent["toolu_pay"]["content"]
    assert [e["tool_use_id"] for e in events if e["event"] == "tool.interrupted"] == ["toolu_pay"]
    assert _reconciled(events) == []  # no check: today's answer


def _happened(ctx: ToolContext) -> str:
    ASKED.append(ctx)
    return "charge ch_1 exists: paid 5"


def test_reconcile_says_it_happened_then_its_result_is_sent(tmp_path: Path) -> None:
    sent, events = _crash_then_resume(tmp_path, _happened)
    assert RAN == ["lookup", "pay#1"]  # not run again
    assert sent["toolu_pay"]["content"] == "charge ch_1 exists: paid 5" and not sent["toolu_pay"].get("is_error")
    assert _reconciled(events) == [("toolu_pay", "happened")]
    (ctx,) = ASKED
    assert ctx.idempotency_key == idempotency_key(CONV, "toolu_pay") and ctx.tool_use_id == "toolu_pay"


def _not_happened(ctx: ToolContext) -> None:
    ASKED.append(ctx)
    return None


def test_reconcile_says_it_did_not_happen_then_it_runs_once(tmp_path: Path) -> None:
    sent, events = _crash_then_resume(tmp_path, _not_happened)
    assert RAN == ["lookup", "pay#1", "pay#2"]  # run now, once, as attempt 2
    assert sent["toolu_pay"]["content"] == "paid 5"
    assert _reconciled(events) == [("toolu_pay", "not_happened")]
    assert [e["tool_use_id"] for e in events if e["event"] == "tool.started"] == ["toolu_pay"]
    assert ASKED[0].idempotency_key == idempotency_key(CONV, "toolu_pay")


async def _async_happened(ctx: ToolContext) -> ToolResult:
    await asyncio.sleep(0)
    ASKED.append(ctx)
    return ToolResult(tool_use_id="ignored", content=[{"type": "text", "text": "paid (async check)"}])


def test_an_async_check_on_an_async_resume(tmp_path: Path) -> None:
    sent, events = _crash_then_resume(tmp_path, _async_happened, aio=True)
    assert RAN == ["lookup", "pay#1"]
    assert sent["toolu_pay"]["content"] == [{"type": "text", "text": "paid (async check)"}]
    assert _reconciled(events) == [("toolu_pay", "happened")]


def _raises(ctx: ToolContext) -> None:
    raise RuntimeError("the payments API is down")


def test_a_check_that_raises_is_the_unknown_answer(tmp_path: Path) -> None:
    sent, events = _crash_then_resume(tmp_path, _raises)
    assert RAN == ["lookup", "pay#1"]
    assert sent["toolu_pay"]["is_error"] and INTERRUPTED in sent["toolu_pay"]["content"]
    (event,) = [e for e in events if e["event"] == "tool.reconciled"]
    assert event["outcome"] == "unknown" and "RuntimeError: the payments API is down" in event["reason"]


HANG = threading.Event()


def _hangs(ctx: ToolContext) -> None:
    HANG.wait(10)  # never set before the timeout: the check is given up on


def test_a_check_that_times_out_is_the_unknown_answer(tmp_path: Path) -> None:
    try:
        sent, events = _crash_then_resume(tmp_path, _hangs, Policy(tool_timeout=0.2))
    finally:
        HANG.set()  # let the abandoned check's thread end
    assert RAN == ["lookup", "pay#1"]
    assert sent["toolu_pay"]["is_error"]
    (event,) = [e for e in events if e["event"] == "tool.reconciled"]
    assert event["outcome"] == "unknown" and "tool timeout (0.2 s)" in event["reason"]


class Reviewing(Agent):
    """An after_tool hook that marks every result it saw."""

    def after_tool(self, call: ToolCall, result: ToolResult, conv: Any) -> ToolResult:
        return ToolResult(tool_use_id=call.id, content=f"reviewed: {result.content}")


def test_after_tool_reviews_a_result_committed_before_the_crash(tmp_path: Path) -> None:
    """The ledger keeps a result as the executor made it: on resume after_tool is asked about it (it never was:
    the worker died before the reply's calls all finished), as about the one reconciled."""
    sent, _ = _crash_then_resume(tmp_path, _happened, kind=Reviewing, looked_up="reviewed: found ana")
    assert RAN == ["lookup", "pay#1"]
    assert sent["toolu_pay"]["content"] == "reviewed: charge ch_1 exists: paid 5"


def test_reconcile_must_be_a_function() -> None:
    with pytest.raises(ConfigurationError, match="reconcile must be a function"):
        tool(reconcile=cast(Any, "yes"), description="Pay.")(_pay_body)


def test_check_values_as_a_tool_returns_them() -> None:
    def answer(value: Any) -> Callable[[ToolContext], Any]:
        return lambda ctx: value

    calls = [ToolCall(id=f"toolu_{i}", name="pay", input={"amount": 1}) for i in range(4)]
    values = [{"charge": "ch_1"}, None, "ok", ToolResult(tool_use_id="x", content="done", is_error=False)]
    checked = [check_all([c], {"pay": _pay(answer(v))}, 1.0)[0] for c, v in zip(calls, values, strict=True)]
    assert [c.outcome for c in checked] == ["happened", "not_happened", "happened", "happened"]
    assert checked[0].result is not None and checked[0].result.content == '{"charge": "ch_1"}'
    assert checked[3].result is not None and checked[3].result.tool_use_id == "toolu_3"


def test_an_engine_tool_step_run_again_reconciles_in_the_step() -> None:
    call = ToolCall(id="toolu_pay", name="pay", input={"amount": 5}).with_context(ToolContext.of(CONV, "toolu_pay"))
    agent = Agent(client=_sim().client(), tools=[_pay(_not_happened)])
    record = asyncio.run(perform_tools(agent, [call], earlier_attempt=True, attempt=3))
    assert RAN == ["pay#3"] and record.reconciled == {"toolu_pay": "not_happened"} and not record.interrupted
    happened = Agent(client=_sim().client(), tools=[_pay(_happened)])
    record = asyncio.run(perform_tools(happened, [call], earlier_attempt=True))
    assert RAN == ["pay#3"] and record.reconciled == {"toolu_pay": "happened"}
    assert record.results[0].content == "charge ch_1 exists: paid 5"


def test_the_executor_reports_each_result_as_it_finishes() -> None:
    gate = threading.Event()

    @tool
    def slow() -> str:
        """Waits until the quick one was reported."""
        assert gate.wait(10)
        return "slow"

    @tool
    def quick() -> str:
        """Returns at once."""
        return "quick"

    seen: list[str] = []

    def on_result(result: ToolResult) -> None:
        seen.append(result.tool_use_id)
        gate.set()  # the slow call may only finish once the quick one was reported

    calls = [ToolCall(id="s", name="slow"), ToolCall(id="q", name="quick")]
    with DefaultExecutor() as executor:
        results = executor.execute(calls, {"slow": slow, "quick": quick}, 5.0, on_result=on_result)
        assert [r.tool_use_id for r in results] == ["s", "q"] and seen == ["q", "s"]
        seen.clear()
        gate.clear()
        results = asyncio.run(executor.aexecute(calls, {"slow": slow, "quick": quick}, 5.0, on_result=on_result))
        assert [r.tool_use_id for r in results] == ["s", "q"] and seen == ["q", "s"]


def test_the_batch_runner_reconciles_a_call_in_doubt(tmp_path: Path) -> None:
    """The batch runner carries a crashed conversation on from the same store: the same ledger, the same check."""
    from agentfsm.batch import BatchRunner

    store = STORE["s"] = SignallingStore(tmp_path / "runs.db")
    sim = _sim()
    tools = [lookup, _pay(_not_happened)]
    with pytest.raises(KeyboardInterrupt):
        Agent(client=sim.client(), tools=tools).run("pay ana", store=store, conversation_id=CONV)
    runner = BatchRunner(
        Agent(client=sim.client(), tools=tools), store=SQLiteStore(tmp_path / "runs.db"), poll_interval=0
    )
    with capture_events() as captured:
        result = runner.run({CONV: "pay ana"})[CONV]
    assert result.final_state == "done" and RAN == ["lookup", "pay#1", "pay#2"]
    assert [(e.data["tool_use_id"], e.data["outcome"]) for e in captured if e.event == "tool.reconciled"] == [
        ("toolu_pay", "not_happened")
    ]
    assert [b["content"] for b in result.messages[2]["content"]] == ["found ana", "paid 5"]
