"""``agent.rerun``: a stored conversation again, under new settings, its tool calls answered from the recording.

Through the real client on the simulator, on SQLite (and once on PostgreSQL); the recorded run has tools, a
wait, a compaction and a continuation (tests/debugging_runs.py). ``RAN`` counts every tool call that really ran.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from debugging_runs import RAN, STEPS, agent, lookup, model, record, store_at

from agentfsm import Agent, ConfigurationError, Policy
from agentfsm.cli import main
from agentfsm.debugging import Comparison
from agentfsm.debugging.recording import REFUSED, RecordedExecutor, Recording
from agentfsm.errors import RecordingMismatchError
from agentfsm.machine.state import ForkedFrom
from agentfsm.result import RunResult
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.sqlite import SQLiteStore
from agentfsm.testing import DRIVERS, client_for, drive
from agentfsm.tools.executor import shared_executor
from agentfsm.wire.caching import unmarked

pytestmark = pytest.mark.beyond_schema  # the recorded run compacts (the compaction parameter)
NO_COMPACTION = Policy(continuation="prompt")


@pytest.fixture(autouse=True)
def no_calls_yet() -> Iterator[None]:
    RAN.clear()
    yield
    RAN.clear()


@pytest.fixture
def sim() -> Simulator:
    return Simulator(model)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    made = store_at(tmp_path)
    yield made
    made.close()


@pytest.fixture
def original(store: SQLiteStore, sim: Simulator) -> RunResult:
    return record(store, sim)


def results_sent(result: RunResult) -> list[object]:
    return [
        b["content"]
        for m in result.transcript
        for b in m["content"]
        if isinstance(b, dict) and b.get("type") == "tool_result"
    ]


def test_a_rerun_answers_every_call_from_the_recording_and_runs_no_tool(
    store: SQLiteStore, sim: Simulator, original: RunResult
) -> None:
    payer = agent(sim)
    before = store.load("orig")
    rerun = payer.rerun("orig", store=store, model="claude-sonnet-4-6", new_id="again")
    # it stops at the wait, as the original did (a person decides a wait); carried on, the recording answers pay
    assert rerun.result.final_state == "waiting" and rerun.result.waiting == "awaiting_tool_approval"
    rerun = rerun.resume(approve=True)
    assert RAN == []  # neither lookup nor pay ran
    result, comparison = rerun.result, rerun.comparison
    assert result.final_state == "done" and result.text == original.text == "Part one, part two."
    assert results_sent(result) == results_sent(original) == ["found a (1)", "paid 5"]
    assert [f"{s.source} --{s.trigger}--> {s.dest}" for s in result.trace] == STEPS
    assert comparison.same_path and comparison.same_text and comparison.diverged_at is None
    assert (comparison.replayed_calls, comparison.live_calls, comparison.refused_calls) == (2, 0, 0)
    assert comparison.original.path == ["requesting", *(s.split("--> ")[1] for s in STEPS)]
    assert comparison.rerun.path == comparison.original.path
    assert store.load("again").forked_from == ForkedFrom(conversation_id="orig", step=0)
    assert store.load("orig") == before  # the original is not touched


def test_a_rerun_on_another_model_diverges_and_the_comparison_says_where_and_what_each_cost(
    store: SQLiteStore, sim: Simulator, original: RunResult
) -> None:
    rerun = agent(sim).rerun("orig", store=store, model="claude-opus-4-6")
    c = rerun.comparison
    assert isinstance(c, Comparison) and RAN == []
    assert c.diverged_at == 1  # opus answers at once: step 1 goes to end_turn, not tool_use
    assert c.original.steps[0] == "requesting --tool_use--> tool_use"
    assert c.rerun.steps == ["requesting --end_turn--> end_turn", "end_turn --finish--> done"]
    assert c.rerun.path == ["requesting", "end_turn", "done"]
    assert (c.original.text, c.rerun.text) == ("Part one, part two.", "I know without looking.")
    assert (c.original.model, c.rerun.model) == ("claude-sonnet-4-6", "claude-opus-4-6")
    assert c.original.cost_usd == original.cost_usd and c.rerun.cost_usd == rerun.result.cost_usd
    assert c.rerun.cost_usd is not None and c.rerun.cost_usd > 0 and not c.same_text
    table = c.table()
    assert "paths: diverge at step 1: requesting --tool_use--> tool_use  vs  requesting --end_turn--> end_turn" in table
    assert "claude-opus-4-6" in table and "'I know without looking.'" in table
    assert Comparison.model_validate_json(c.model_dump_json()) == c


@pytest.mark.parametrize("tools", ["recorded", "refuse"])
def test_a_call_the_recording_has_no_result_for_is_refused_and_nothing_runs(
    store: SQLiteStore, sim: Simulator, original: RunResult, tools: str
) -> None:
    rerun = agent(sim).rerun("orig", store=store, model="claude-haiku-4-5", tools=tools, policy=NO_COMPACTION)  # type: ignore[arg-type]
    assert RAN == [] and rerun.result.final_state == "done"
    assert rerun.result.text == f"The lookup said: {REFUSED}"
    assert rerun.result.messages[2]["content"][0]["is_error"] is True
    assert (rerun.comparison.replayed_calls, rerun.comparison.refused_calls) == (0, 1)


def test_a_call_the_recording_has_no_result_for_runs_live_with_tools_live(
    store: SQLiteStore, sim: Simulator, original: RunResult
) -> None:
    rerun = agent(sim).rerun("orig", store=store, model="claude-haiku-4-5", tools="live", policy=NO_COMPACTION)
    assert RAN == [("lookup", "b")]  # the one call with no recorded result, and only it
    assert rerun.result.text == "The lookup said: found b (1)" and rerun.comparison.live_calls == 1


def test_a_call_the_recording_has_no_result_for_stops_the_rerun_with_tools_fail(
    store: SQLiteStore, sim: Simulator, original: RunResult
) -> None:
    with pytest.raises(
        RecordingMismatchError, match=r"""called lookup\(\{"q":"b"\}\), which run 'orig' has no"""
    ) as got:
        agent(sim).rerun("orig", store=store, model="claude-haiku-4-5", tools="fail", new_id="strict")
    assert RAN == [] and got.value.conversation_id == "strict"
    kept = store.load("strict")  # kept at the call, for a look
    assert kept.state == "tool_use" and kept.forked_from == ForkedFrom(conversation_id="orig", step=0)


def test_identical_calls_are_answered_in_the_order_they_were_recorded(store: SQLiteStore) -> None:
    script = [r.tool_use("lookup", {"q": "a"}), r.tool_use("lookup", {"q": "a"}), r.text("Twice.")]
    first = Agent(client=Simulator(script).client(), model="claude-haiku-4-5", tools=[lookup], logger=None)
    original = first.run("Twice.", store=store, conversation_id="twice")
    assert results_sent(original) == ["found a (1)", "found a (2)"]
    RAN.clear()
    sim = Simulator(script)
    again = Agent(client=sim.client(), model="claude-haiku-4-5", tools=[lookup], logger=None)
    rerun = again.rerun("twice", store=store)
    assert RAN == [] and results_sent(rerun.result) == ["found a (1)", "found a (2)"]
    assert rerun.comparison.same_path and rerun.comparison.replayed_calls == 2


def test_a_rerun_from_a_fork_point_starts_there_and_answers_only_the_calls_after_it(
    store: SQLiteStore, sim: Simulator, original: RunResult
) -> None:
    rerun = agent(sim).rerun("orig", store=store, at=7).resume(approve=True)
    sent = [unmarked(q.messages) for q in sim.requests]
    assert sent[-3][0]["content"][0]["type"] == "compaction"  # it went on from the compacted history
    assert RAN == [] and rerun.result.text == "Part one, part two."
    c = rerun.comparison
    # step 7 is the wait: the reply it waits on (the pay call) is asked for again, so both go on from step 5
    assert c.at == 5 and c.same_path and c.original.steps == c.rerun.steps == STEPS[5:]
    assert c.replayed_calls == 1  # pay; lookup was answered before step 7


def test_bad_reruns_are_clear_errors(store: SQLiteStore, sim: Simulator, original: RunResult) -> None:
    with pytest.raises(ConfigurationError, match="tools='sometimes': give one of 'recorded', 'live', 'refuse', 'fail'"):
        agent(sim).rerun("orig", store=store, tools="sometimes")  # type: ignore[arg-type]
    assert [s.conversation_id for s in store.list()] == ["orig"]


def test_runs_rerun_on_the_command_line(
    tmp_path: Path, store: SQLiteStore, original: RunResult, capsys: pytest.CaptureFixture[str]
) -> None:
    where = str(tmp_path / "runs.db")
    args = ["runs", "rerun", "orig", "--agent", "debugging_runs:Payer", "--sim", "debugging_runs:model"]
    assert main([*args, "--model", "claude-opus-4-6", "--new-id", "cli", "--store", where]) == 0
    out = capsys.readouterr().out
    assert "paths: diverge at step 1: requesting --tool_use--> tool_use  vs  requesting --end_turn--> end_turn" in out
    assert "tool calls: 0 from the recording, 0 live, 0 refused" in out
    assert main([*args, "--json", "--store", where]) == 3  # it stops at the wait: not done
    shown = json.loads(capsys.readouterr().out)
    assert shown["diverged_at"] == 8 and shown["rerun"]["final_state"] == "waiting" and RAN == []
    assert main(["runs", "list", "--store", where]) == 0
    assert "orig@0" in capsys.readouterr().out


@pytest.mark.slow
def test_rerun_on_postgresql(postgres_database: str) -> None:
    from agentfsm.stores.postgres import PostgresStore

    store = PostgresStore(postgres_database)
    try:
        sim = Simulator(model)
        original = record(store, sim)
        rerun = agent(sim).rerun("orig", store=store, new_id="pg-rerun").resume(approve=True)
        assert RAN == [] and rerun.result.text == original.text and rerun.comparison.same_path
        assert rerun.comparison.replayed_calls == 2
        assert {s.conversation_id: s.forked_from for s in store.list()}["pg-rerun"] == ForkedFrom(
            conversation_id="orig", step=0
        )
    finally:
        store.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_recorded_executor_answers_under_every_driver(store: SQLiteStore, driver: str) -> None:
    """A rerun runs synchronously; its executor is an executor like any, which every driver reaches."""
    script = [r.tool_use("lookup", {"q": "a"}), r.text("Found.")]
    Agent(client=Simulator(script).client(), model="claude-haiku-4-5", tools=[lookup], logger=None).run(
        "Find a.", store=store, conversation_id="rec"
    )
    RAN.clear()
    snap = store.load("rec")
    executor = RecordedExecutor(
        Recording(snap.messages), shared_executor(), "fail", original_id="rec", conversation_id="replay"
    )
    sim = Simulator(script)
    agent = Agent(
        client=client_for(sim, driver), model="claude-haiku-4-5", tools=[lookup], executor=executor, logger=None
    )
    result = drive(agent, "Find a.", driver)
    assert RAN == [] and result.text == "Found." and results_sent(result) == ["found a (1)"]
    assert [c.name for c in executor.replayed] == ["lookup"] and executor.ran_live == []
