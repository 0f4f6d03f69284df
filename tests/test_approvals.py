"""Approval on a tool (issue 22 item 3): ``@tool(needs_approval=...)`` stops the run before the call runs.

The real ``anthropic`` client talks to the simulator (its HTTP transport). Every driver: a reply calling a tool
that needs approval waits in ``awaiting_tool_approval`` with the calls awaiting approval listed, none of them run;
``resume(approve=..., deny=...)`` runs the approved ones, answers the denied ones ``is_error`` with the reason, and
carries on; the calls of the same reply that need no approval run once, before the wait. A decision is taken
once, must decide every call, and (slow) holds across processes with a SQLite store, a crash included.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentfsm import (
    Agent,
    AlreadyDecidedError,
    ApprovalDecisionError,
    ConfigurationError,
    Conversation,
    InvalidTransitionError,
    MemoryStore,
    RunResult,
    SQLiteStore,
    Tool,
    ToolCall,
    tool,
)
from agentfsm.cli.runs import decide_run
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.testing import DRIVERS, capture_events, client_for, drive

MODEL = "claude-haiku-4-5"
RAN: Counter[str] = Counter()


@tool(needs_approval=True)
def delete_file(path: str) -> str:
    """Delete a file."""
    RAN[f"delete {path}"] += 1
    return f"deleted {path}"


@tool
def list_dir(path: str) -> str:
    """List a folder."""
    RAN[f"list {path}"] += 1
    return "old.log new.log"


@tool(needs_approval=lambda call: call.input["amount"] > 100)
def refund(order: str, amount: int) -> str:
    """Refund an order."""
    RAN[f"refund {order}"] += 1
    return f"refunded {amount} on {order}"


class Cleaner(Agent):
    model = MODEL
    tools = [list_dir, delete_file, refund]


@pytest.fixture(autouse=True)
def _forget() -> None:
    RAN.clear()


def three_calls() -> Simulator:
    """One reply: a call needing no approval, then two needing one; then the answer."""
    calls = [("list_dir", {"path": "/tmp"}), ("delete_file", {"path": "/tmp/old.log"}), ("delete_file", {"path": "/"})]
    return Simulator([r.tool_uses(calls), r.text("Cleaned up as you decided.")])


def resume(agent: Agent, waiting: RunResult, driver: str, **decision: Any) -> RunResult:
    """Decide ``waiting`` and carry it on the way ``driver`` runs (``resume``/``aresume``/``load(...).stream()``)."""
    if driver == "run":
        return agent.resume(waiting, **decision)
    if driver == "arun":
        return asyncio.run(agent.aresume(waiting, **decision))
    if driver == "stream":
        return list(agent.load(waiting, **decision).stream())[-1].result  # type: ignore[attr-defined,no-any-return]

    async def astream() -> RunResult:
        events = [e async for e in agent.load(waiting, **decision, asynchronous=True).astream()]
        return events[-1].result  # type: ignore[attr-defined,no-any-return]

    return asyncio.run(astream())


def results_sent(sim: Simulator, n: int = 1) -> list[tuple[str, bool]]:
    """The tool results request ``n`` sent: (content, is_error) in order."""
    last = sim.requests[n].messages[-1]
    assert last["role"] == "user" and all(b["type"] == "tool_result" for b in last["content"])
    return [(b["content"], bool(b.get("is_error"))) for b in last["content"]]


# --- waiting, then deciding ------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_call_needing_approval_waits_before_it_runs_and_runs_once_approved(driver: str) -> None:
    sim = Simulator([r.tool_use("delete_file", {"path": "/tmp/old.log"}), r.text("Deleted it.")])
    agent = Cleaner(client=client_for(sim, driver), logger=None)
    waiting = drive(agent, "Delete /tmp/old.log", driver)
    assert (waiting.final_state, waiting.waiting) == ("waiting", "awaiting_tool_approval")
    (call,) = waiting.pending_tool_calls
    assert (call.name, call.input) == ("delete_file", {"path": "/tmp/old.log"})
    assert Counter() == RAN and len(sim.requests) == 1  # nothing ran, nothing more was sent
    assert waiting.path == ["requesting", "tool_use", "awaiting_tool_approval"]

    done = resume(agent, waiting, driver, approve=[call.id])
    assert (done.final_state, done.text) == ("done", "Deleted it.")
    assert Counter({"delete /tmp/old.log": 1}) == RAN
    assert results_sent(sim) == [("deleted /tmp/old.log", False)]
    assert done.path == ["requesting", "tool_use", "awaiting_tool_approval", "requesting", "end_turn", "done"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_denied_call_never_runs_and_the_model_reads_the_reason(driver: str) -> None:
    sim = Simulator([r.tool_use("delete_file", {"path": "/"}), r.text("I will not delete it.")])
    agent = Cleaner(client=client_for(sim, driver), logger=None)
    waiting = drive(agent, "Delete everything", driver)
    (call,) = waiting.pending_tool_calls
    with capture_events() as events:
        done = resume(agent, waiting, driver, deny={call.id: "never the root folder"})
    assert done.final_state == "done" and Counter() == RAN
    assert results_sent(sim) == [("never the root folder", True)]
    (denied,) = [e for e in events if e.event == "tool.denied"]
    assert denied.data == {
        "tool": "delete_file",
        "tool_use_id": call.id,
        "by": "approval",
        "reason": "never the root folder",
    }
    assert "tool.started" not in [e.event for e in events]


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_mixed_reply_runs_the_call_needing_no_approval_once_before_the_wait_and_answers_all_in_order(
    driver: str,
) -> None:
    sim = three_calls()
    agent = Cleaner(client=client_for(sim, driver), logger=None)
    store = MemoryStore()
    waiting = drive(agent, "Clean up /tmp", driver, store=store)
    assert Counter({"list /tmp": 1}) == RAN  # ran before the wait: its result waits in the tool ledger
    keep, root = waiting.pending_tool_calls  # only the calls awaiting approval
    assert (keep.input, root.input) == ({"path": "/tmp/old.log"}, {"path": "/"})
    stored = store.load(waiting.conversation_id)
    assert stored.pending_decision is not None
    assert stored.pending_decision.triggers == ["run_tools"] and stored.pending_decision.why == "a call needs approval"
    assert [c.id for c in stored.pending_decision.tool_calls] == [keep.id, root.id]
    assert stored.reply is not None
    assert list(stored.tool_results) == [stored.reply.content[0]["id"]]  # list_dir's result, committed

    done = resume(agent, waiting, driver, store=store, approve=[keep.id], deny={root.id: "not the root"})
    assert done.final_state == "done"
    assert Counter({"list /tmp": 1, "delete /tmp/old.log": 1}) == RAN  # none ran twice
    assert results_sent(sim) == [("old.log new.log", False), ("deleted /tmp/old.log", False), ("not the root", True)]
    assert store.load(done.conversation_id).tool_results == {}  # answered in the history from now on


def test_approve_true_approves_every_call_not_denied_and_a_resume_by_id_with_a_store_decides_it() -> None:
    sim = three_calls()
    agent, store = Cleaner(client=sim.client(), logger=None), MemoryStore()
    waiting = agent.run("Clean up /tmp", store=store)
    root = waiting.pending_tool_calls[1]
    done = agent.resume(waiting.conversation_id, store=store, approve=True, deny=[root.id])
    assert done.final_state == "done"
    assert Counter({"list /tmp": 1, "delete /tmp/old.log": 1}) == RAN
    assert results_sent(sim)[2] == ("A person denied this tool call; it was not run.", True)


def test_the_decision_is_the_trigger_run_tools_with_its_input_as_the_command_line_gives_it() -> None:
    sim = three_calls()
    store = MemoryStore()
    waiting = Cleaner(client=sim.client(), logger=None).run("Clean up /tmp", store=store)
    keep, root = waiting.pending_tool_calls
    done = decide_run(
        store,
        waiting.conversation_id,
        "run_tools",
        {"approve": [keep.id], "deny": {root.id: "no"}},
        agent_spec="test_approvals:Cleaner",
        client=sim.client(),
    )
    assert done.final_state == "done" and Counter({"list /tmp": 1, "delete /tmp/old.log": 1}) == RAN
    assert results_sent(sim)[1:] == [("deleted /tmp/old.log", False), ("no", True)]


def test_a_callable_needs_approval_asks_per_call() -> None:
    sim = Simulator(
        [
            r.tool_use("refund", {"order": "A-1", "amount": 20}),  # small: runs at once
            r.tool_use("refund", {"order": "B-2", "amount": 500}),  # large: waits
            r.text("Refunded both."),
        ]
    )
    agent = Cleaner(client=sim.client(), logger=None)
    waiting = agent.run("Refund A-1 and B-2")
    assert Counter({"refund A-1": 1}) == RAN
    assert [c.input for c in waiting.pending_tool_calls] == [{"order": "B-2", "amount": 500}]
    assert agent.resume(waiting, approve=True).final_state == "done"
    assert Counter({"refund A-1": 1, "refund B-2": 1}) == RAN


def test_a_needs_approval_function_that_raises_counts_as_needing_approval() -> None:
    def broken(call: ToolCall) -> bool:
        raise KeyError("amount")

    def act(order: str) -> str:
        return f"done {order}"

    risky = Tool(act, name="risky", description="Risky.", needs_approval=broken)
    sim = Simulator([r.tool_use("risky", {"order": "A"}), r.text("ok")])
    waiting = Agent(client=sim.client(), model=MODEL, tools=[risky], logger=None).run("go")
    assert waiting.waiting == "awaiting_tool_approval"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("yes", "needs_approval must be True, False or a function"),
        (3, "needs_approval must be True, False or a function"),
        (ToolCall, "needs_approval must be True, False or a function"),
    ],
)
def test_needs_approval_of_the_wrong_kind_is_refused_where_the_tool_is_made(value: Any, says: str) -> None:
    def rm(path: str) -> str:
        """Remove a file."""
        return path

    with pytest.raises(ConfigurationError, match=says):
        tool(needs_approval=value)(rm)


def test_an_async_needs_approval_is_refused_it_is_asked_like_a_guard() -> None:
    async def ask(call: ToolCall) -> bool:
        return True

    with pytest.raises(ConfigurationError, match="not async"):

        @tool(needs_approval=ask)
        def rm(path: str) -> str:
            """Remove."""
            return path


# --- a decision is whole, and taken once ---------------------------------------------------------------------


def test_a_call_neither_approved_nor_denied_is_an_error_listing_them_and_the_run_still_waits() -> None:
    sim = three_calls()
    agent, store = Cleaner(client=sim.client(), logger=None), MemoryStore()
    waiting = agent.run("Clean up /tmp", store=store)
    keep, root = waiting.pending_tool_calls
    with pytest.raises(ApprovalDecisionError, match=rf"no decision for '{root.id}'") as info:
        agent.resume(waiting.conversation_id, store=store, approve=[keep.id])
    assert [c.id for c in info.value.pending] == [keep.id, root.id]
    assert f"{root.id} (delete_file)" in str(info.value)
    with pytest.raises(ApprovalDecisionError, match="the run is not waiting on 'toolu_nope'"):
        agent.resume(waiting.conversation_id, store=store, approve=True, deny={"toolu_nope": "x"})
    with pytest.raises(ApprovalDecisionError, match="is both approved and denied"):
        agent.resume(waiting.conversation_id, store=store, approve=[keep.id, root.id], deny=[root.id])
    with pytest.raises(ApprovalDecisionError, match="the decision of an approval wait is input="):
        agent.resume(waiting.conversation_id, store=store, trigger="run_tools", input="yes")
    with pytest.raises(ConfigurationError, match="give them without trigger= and input="):
        agent.resume(waiting.conversation_id, store=store, trigger="run_tools", input={}, approve=True)
    with pytest.raises(ConfigurationError, match="maps each tool_use id to the reason"):
        agent.resume(waiting.conversation_id, store=store, deny={root.id: 3})  # type: ignore[dict-item]
    assert Counter({"list /tmp": 1}) == RAN and len(sim.requests) == 1  # nothing ran, nothing was sent
    assert store.load(waiting.conversation_id).waiting == "awaiting_tool_approval"
    # Asked again with no decision, it waits on (a new wait: the same calls).
    again = agent.resume(waiting.conversation_id, store=store)
    assert again.waiting == "awaiting_tool_approval" and again.pending_tool_calls == [keep, root]
    assert agent.resume(waiting.conversation_id, store=store, approve=True).final_state == "done"
    assert Counter({"list /tmp": 1, "delete /tmp/old.log": 1, "delete /": 1}) == RAN


def test_a_decision_is_taken_once_with_or_without_a_store() -> None:
    sim = Simulator([r.tool_use("delete_file", {"path": "/tmp/a"}), r.text("Deleted.")] * 2)
    agent = Cleaner(client=sim.client(), logger=None)
    waiting = agent.run("Delete /tmp/a")
    assert agent.resume(waiting, approve=True).final_state == "done"
    with pytest.raises(AlreadyDecidedError, match="decided already"):
        agent.resume(waiting, approve=True)  # a double click
    store = MemoryStore()
    stored = agent.run("Delete /tmp/a", store=store)
    assert agent.resume(stored, store=store, approve=True).final_state == "done"
    with pytest.raises(AlreadyDecidedError, match="the store holds the conversation past that wait"):
        agent.resume(stored, store=store, deny=[stored.pending_tool_calls[0].id])
    with pytest.raises(InvalidTransitionError, match="is not waiting"):
        agent.resume(stored.conversation_id, store=store, approve=True)
    assert Counter({"delete /tmp/a": 2}) == RAN  # once per run


def test_a_hook_cannot_run_a_call_needing_approval_by_choosing_run_tools() -> None:
    class Hasty(Cleaner):
        def on_tool_use(self, conv: Conversation) -> str:
            return "run_tools"

    sim = Simulator([r.tool_use("delete_file", {"path": "/"}), r.text("x")])
    with pytest.raises(InvalidTransitionError, match=r"'run_tools' from 'tool_use' would run calls that need approval"):
        Hasty(client=sim.client(), logger=None).run("Delete everything")
    assert Counter() == RAN


def test_the_calls_waiting_for_approval_are_a_span_each_once_decided() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sim = three_calls()
    agent = Cleaner(client=sim.client(), logger=None, tracer_provider=provider)
    waiting = agent.run("Clean up /tmp")
    keep, root = waiting.pending_tool_calls
    agent.resume(waiting, approve=[keep.id], deny={root.id: "no"})
    spans = {
        s.attributes["gen_ai.tool.call.id"]: dict(s.attributes or {})
        for s in exporter.get_finished_spans()
        if s.name.startswith("execute_tool") and s.attributes
    }
    assert spans[root.id]["agentfsm.tool.decision"] == "denied"
    assert spans[root.id]["agentfsm.tool.denied_by"] == "approval"
    assert "agentfsm.tool.decision" not in spans[keep.id]


# --- across processes, with a SQLite store (slow: a process of its own decides) --------------------------------

AGENT_MODULE = '''
import os
from agentfsm import Agent, tool

def ran(what):
    with open(os.environ["RAN_FILE"], "a") as f:
        f.write(what + "\\n")

@tool(needs_approval=True)
def delete_file(path: str) -> str:
    """Delete a file."""
    ran("delete " + path)
    if os.environ.get("CRASH_IN") == path:
        os._exit(3)  # the process dies with the call's effect had: the ledger has it started, not committed
    return "deleted " + path

@tool
def list_dir(path: str) -> str:
    """List a folder."""
    ran("list " + path)
    return "old.log new.log"

class Cleaner(Agent):
    model = "claude-haiku-4-5"
    tools = [list_dir, delete_file]
'''

DECIDER = """
import json, sys
from agentfsm import SQLiteStore
from agentfsm.sim import Simulator, replies as r
from cleaner import Cleaner

db, cid, decision = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sim = Simulator([r.text("Cleaned up as you decided.")])
with SQLiteStore(db) as store:
    result = Cleaner(client=sim.client(), logger=None).resume(cid, store=store, **decision)
sent = [[b["content"], bool(b.get("is_error"))] for b in sim.requests[0].messages[-1]["content"]]
print(json.dumps({"final_state": result.final_state, "results": sent}))
"""


def decide_elsewhere(tmp_path: Path, db: Path, cid: str, decision: dict[str, Any], **env: str) -> Any:
    done = subprocess.run(
        [sys.executable, str(tmp_path / "decider.py"), str(db), cid, json.dumps(decision)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(tmp_path), "RAN_FILE": str(tmp_path / "ran.txt"), **env},
    )
    return done


@pytest.mark.slow
def test_approvals_across_processes_with_a_sqlite_store_run_each_call_once_a_crash_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cleaner.py").write_text(textwrap.dedent(AGENT_MODULE))
    (tmp_path / "decider.py").write_text(DECIDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("RAN_FILE", str(tmp_path / "ran.txt"))
    from cleaner import Cleaner as Remote  # type: ignore[import-not-found]

    db = tmp_path / "runs.db"
    ran = lambda: Counter((tmp_path / "ran.txt").read_text().splitlines())  # noqa: E731

    # 1. This process: the reply's call needing no approval runs, then the run waits, stored.
    calls = [("list_dir", {"path": "/tmp"}), ("delete_file", {"path": "/tmp/a"}), ("delete_file", {"path": "/"})]
    sim = Simulator([r.tool_uses(calls)])
    with SQLiteStore(db) as store:
        waiting = Remote(client=sim.client(), logger=None).run("Clean up", store=store, conversation_id="clean-1")
    keep, root = waiting.pending_tool_calls
    assert ran() == Counter({"list /tmp": 1})

    # 2. Another process decides: the approved call runs there, the denied one never; the first is not run again.
    done = decide_elsewhere(tmp_path, db, "clean-1", {"approve": [keep.id], "deny": {root.id: "not the root"}})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "final_state": "done",
        "results": [["old.log new.log", False], ["deleted /tmp/a", False], ["not the root", True]],
    }
    assert ran() == Counter({"list /tmp": 1, "delete /tmp/a": 1})

    # 3. The same decision again, from a third process: refused, nothing runs.
    again = decide_elsewhere(tmp_path, db, "clean-1", {"approve": True})
    assert again.returncode != 0 and "is not waiting" in again.stderr
    assert ran() == Counter({"list /tmp": 1, "delete /tmp/a": 1})

    # 4. A decider that dies inside the approved call: resumed by id in a fourth, the call is answered as
    #    interrupted (it may have had its effect), never run twice; nor is the call that ran before the wait.
    sim = Simulator([r.tool_uses([("list_dir", {"path": "/var"}), ("delete_file", {"path": "/var/b"})])])
    with SQLiteStore(db) as store:
        second = Remote(client=sim.client(), logger=None).run("Clean up /var", store=store, conversation_id="clean-2")
    (gated,) = second.pending_tool_calls
    crashed = decide_elsewhere(tmp_path, db, "clean-2", {"approve": True}, CRASH_IN="/var/b")
    assert crashed.returncode == 3
    carried = decide_elsewhere(tmp_path, db, "clean-2", {})
    assert carried.returncode == 0, carried.stderr
    outcome = json.loads(carried.stdout)
    assert outcome["final_state"] == "done"
    assert outcome["results"][0] == ["old.log new.log", False]
    assert outcome["results"][1][1] is True and "was running when the agent process stopped" in outcome["results"][1][0]
    assert ran() == Counter({"list /tmp": 1, "delete /tmp/a": 1, "list /var": 1, "delete /var/b": 1})
    with SQLiteStore(db) as store:
        answered = store.load("clean-2").messages[-2]["content"]
    assert [b["tool_use_id"] for b in answered] == [second.messages and b["tool_use_id"] for b in answered]
    assert answered[-1]["tool_use_id"] == gated.id
