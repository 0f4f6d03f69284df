"""``agent.fork``: a stored run's history after a step, exactly, as a new conversation ready to run.

Through the real client on the simulator, on SQLite (and once on PostgreSQL), with a run that used tools, a
wait, a compaction and a continuation (tests/debugging_runs.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from debugging_runs import RAN, STEPS, agent, lookup, model, record, steps, store_at

from agentfsm import Agent, ConfigurationError, Transition, UnknownConversationError, Wait
from agentfsm.cli import main
from agentfsm.debugging import fork_snapshot, history_after
from agentfsm.errors import ForkError
from agentfsm.machine import actions
from agentfsm.machine.state import ForkedFrom
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.base import Snapshot, read_snapshot
from agentfsm.stores.sqlite import SQLiteStore
from agentfsm.wire.caching import unmarked

pytestmark = pytest.mark.beyond_schema  # the recorded run compacts (the compaction parameter)


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
def recorded(store: SQLiteStore, sim: Simulator) -> Snapshot:
    record(store, sim)
    return store.load("orig")


def _json(messages: list[dict[str, Any]]) -> str:
    return json.dumps(messages, ensure_ascii=False)


def test_the_recorded_run_has_every_kind_of_step(recorded: Snapshot) -> None:
    assert steps(recorded) == STEPS  # type: ignore[arg-type]  # a Snapshot's trace reads as a result's
    assert len(recorded.replaced_messages) == 3  # the compaction replaced the first three messages


def test_at_every_step_the_forks_history_is_the_originals_prefix_byte_for_byte(
    store: SQLiteStore, sim: Simulator, recorded: Snapshot
) -> None:
    transcript = [*recorded.replaced_messages, *recorded.messages]
    compacted_at = STEPS.index("compaction --compacted--> requesting") + 1
    payer = agent(sim)
    cut: list[int] = []
    for at in range(len(STEPS) + 1):
        payer.fork("orig", store=store, at=at, new_id=f"fork-{at}")
        fork = store.load(f"fork-{at}")
        size = recorded.trace[max(at, 1) - 1].history_size
        assert size is not None
        offset = len(recorded.replaced_messages) if at >= compacted_at else 0
        count, nblocks, _ = size  # no text of this run grew over steps: a message is cut at a block, if at all
        want = transcript[: offset + count]
        if isinstance(want[-1]["content"], list) and nblocks < len(want[-1]["content"]):
            cut.append(at)  # after the compaction, the pay call joined its message later
            want = [*want[:-1], {**want[-1], "content": want[-1]["content"][:nblocks]}]
        assert _json([*fork.replaced_messages, *fork.messages]) == _json(want), at
        assert fork.replaced_messages == transcript[:offset]
        assert fork.forked_from == ForkedFrom(conversation_id="orig", step=at)
        assert (list(fork.trace), fork.usage.total_tokens, fork.cost_usd, fork.counters.turns) == ([], 0, 0.0, 0)
    assert cut == [5, 6, 7]
    assert len(sim.requests) == 5  # forking sent nothing


def test_the_forks_first_request_is_the_one_the_original_sent_from_that_step(
    store: SQLiteStore, sim: Simulator, recorded: Snapshot
) -> None:
    sent = [unmarked(q.messages) for q in sim.requests]  # the original's five requests
    payer = agent(sim)
    # Step 2 answered lookup: the original then asked for a compaction (request 2) with exactly this history.
    conv = payer.fork("orig", store=store, at=2, new_id="f2")
    assert conv.state == "requesting"
    conv.run()
    assert _json(unmarked(sim.requests[5].messages)) == _json(sent[1])
    # Step 8 answered pay, after the compaction: request 4 (the text cut at max_tokens) went from there.
    before = len(sim.requests)
    result = payer.fork("orig", store=store, at=8, new_id="f8").run()
    assert _json(unmarked(sim.requests[before].messages)) == _json(sent[3])
    assert result.final_state == "done" and result.text == "Part one, part two."
    assert result.replaced_messages == recorded.replaced_messages  # the transcript carries on
    assert RAN == [("lookup", "a")]  # the fork at 2 ran its own tool round live (f8 had none)


def test_a_fork_waits_where_the_original_waited_and_can_be_decided_otherwise(
    store: SQLiteStore, sim: Simulator, recorded: Snapshot
) -> None:
    """Step 7 is the wait: its reply (the pay call) is not in the history, so the fork asks for it again and
    waits again; the fork can then be decided as the original was not."""
    payer = agent(sim)
    waiting = payer.fork("orig", store=store, at=7, new_id="f7").run()
    assert waiting.final_state == "waiting" and [c.name for c in waiting.pending_tool_calls] == ["pay"]
    denied = payer.resume("f7", store=store, deny={waiting.pending_tool_calls[0].id: "not today"})
    assert denied.final_state == "done" and RAN == []  # pay was denied, not run
    assert store.load("orig").finished and store.load("orig").revision == recorded.revision  # untouched


def test_a_fork_is_ready_and_sends_nothing_until_run_or_resumed(
    store: SQLiteStore, sim: Simulator, recorded: Snapshot
) -> None:
    payer = agent(sim)
    conv = payer.fork("orig", store=store, at=11, new_id="later")
    assert len(sim.requests) == 5 and conv.id == "later" and conv.state == "requesting"
    result = payer.resume("later", store=store)  # another process can carry it on, as any stored run
    assert result.final_state == "done" and result.text == " part two."  # prompt-mode text stitched before it
    assert store.load("later").forked_from == ForkedFrom(conversation_id="orig", step=11)


def test_a_fork_runs_under_its_overrides(store: SQLiteStore, sim: Simulator, recorded: Snapshot) -> None:
    from agentfsm import Policy

    payer = agent(sim)
    conv = payer.fork(
        "orig",
        store=store,
        at=8,
        model="claude-opus-4-6",
        system="Be brief.",
        policy=Policy(continuation="prompt", max_tokens=2048),
    )
    assert conv.id.startswith("orig-fork-") and payer.model == "claude-sonnet-4-6"  # the agent is unchanged
    conv.run()
    body = sim.requests[5].body
    assert (body["model"], body["system"], body["max_tokens"]) == ("claude-opus-4-6", "Be brief.", 2048)
    assert store.load(conv.id).model == "claude-opus-4-6"


def test_an_edit_changes_the_forks_history_and_one_that_breaks_the_wire_rules_is_refused(
    store: SQLiteStore, sim: Simulator, recorded: Snapshot
) -> None:
    payer = agent(sim)

    def ask_more(messages: list[dict[str, Any]]) -> None:
        messages.append({"role": "user", "content": "And once more?"})

    result = payer.fork("orig", store=store, at=13, new_id="more", edit=ask_more).run()
    assert unmarked(sim.requests[5].messages)[-1] == {"role": "user", "content": "And once more?"}
    assert result.final_state == "done"

    def drop_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [*messages[:-1], {"role": "user", "content": "never mind the results"}]

    with pytest.raises(ForkError, match=r"edited history is not one the API accepts: .*no tool_result") as caught:
        payer.fork("orig", store=store, at=2, new_id="broken", edit=drop_results)
    assert isinstance(caught.value, ValueError) and "orig" in str(caught.value)
    with pytest.raises(KeyError):
        store.load("broken")  # nothing saved


def test_bad_forks_are_clear_errors_and_save_nothing(store: SQLiteStore, sim: Simulator, recorded: Snapshot) -> None:
    payer = agent(sim)
    with pytest.raises(ForkError, match=r"at=14 is not a step of its trace: give 0 \(its prompt\) to 13"):
        payer.fork("orig", store=store, at=14)
    with pytest.raises(ForkError, match="at=-1"):
        payer.fork("orig", store=store, at=-1)
    with pytest.raises(UnknownConversationError):
        payer.fork("nope", store=store, at=1)
    payer.fork("orig", store=store, at=1, new_id="taken")
    with pytest.raises(ConfigurationError, match="'taken' is already in the store"):
        payer.fork("orig", store=store, at=2, new_id="taken")
    assert store.load("taken").forked_from == ForkedFrom(conversation_id="orig", step=1)
    # a trace recorded before agentfsm kept the history's sizes cannot be cut exactly
    old = recorded.model_copy(update={"trace": [s.model_copy(update={"history_size": None}) for s in recorded.trace]})
    with pytest.raises(ForkError, match="recorded before agentfsm kept the history's size"):
        history_after(old, 3)
    assert {s.conversation_id for s in store.list()} == {"orig", "taken"}


def test_a_row_written_before_forks_still_loads() -> None:
    sim = Simulator([r.text("Hi.")])
    result = Agent(client=sim.client(), model="claude-haiku-4-5", logger=None).run("Q", conversation_id="old")
    data = json.loads(result.model_dump_json())
    row = {"conversation_id": "old", "agent": "agentfsm.agent:Agent", "model": data["model"], "max_tokens": 1024}
    row["messages"] = data["messages"]
    snap = read_snapshot("old", json.dumps(row))
    assert snap.forked_from is None


class Reviewed(Agent):
    """Keeps a reply's tool calls in the history and waits for a review before running them."""

    model = "claude-haiku-4-5"
    tools = [lookup]
    states = [Wait("reviewing")]
    transitions = [
        Transition("tool_use", "review", "reviewing", action=actions.keep_reply),
        Transition("reviewing", "run_tools", "requesting", action=actions.answer_tool_calls, runs_tools=True),
    ]

    def on_tool_use(self, conv: Any) -> str:
        return "review"


def test_a_fork_whose_history_ends_in_unanswered_calls_starts_with_them_pending_and_they_run_live(
    store: SQLiteStore,
) -> None:
    sim = Simulator([r.tool_use("lookup", {"q": "z"}), r.text("Found z.")])
    reviewed = Reviewed(client=sim.client(max_retries=0), logger=None)
    waiting = reviewed.run("Find z.", store=store, conversation_id="rev")
    assert waiting.waiting == "reviewing" and waiting.messages[-1]["content"][0]["type"] == "tool_use"
    conv = reviewed.fork("rev", store=store, at=2, new_id="rev-fork")
    assert conv.state == "tool_use" and [c.name for c in conv.pending_tool_calls] == ["lookup"]
    again = conv.run()  # the calls pending go through the agent's table as a reply's do: here, to the review
    assert again.waiting == "reviewing" and RAN == [] and len(sim.requests) == 1
    result = reviewed.resume("rev-fork", store=store, trigger="run_tools")
    assert RAN == [("lookup", "z")] and result.final_state == "done" and result.text == "Found z."
    assert len(sim.requests) == 2  # the pending calls ran with no request sent again
    assert unmarked(sim.requests[1].messages)[1:] == result.messages[1:3]


def test_fork_snapshot_needs_no_agent_code(recorded: Snapshot) -> None:
    """What ``agentfsm runs fork`` does: a stored row alone makes the fork (the parent's model unless given)."""
    snap = fork_snapshot(recorded, 12, new_id="bare")
    assert (snap.agent, snap.model, snap.state, snap.graph) == (
        recorded.agent,
        recorded.model,
        "requesting",
        recorded.graph,
    )
    assert snap.messages[-1]["role"] == "user" and snap.pending_kind is None
    for junk in ([], "Hello", [None], [{"role": "user", "content": [1]}]):
        with pytest.raises(ForkError, match="the edited history is not one the API accepts: invalid message history"):
            fork_snapshot(recorded, 13, new_id="bare", edit=lambda m, junk=junk: junk)  # type: ignore[misc]


def test_runs_fork_on_the_command_line(
    tmp_path: Path, store: SQLiteStore, sim: Simulator, recorded: Snapshot, capsys: pytest.CaptureFixture[str]
) -> None:
    where = str(tmp_path / "runs.db")
    code = main(
        ["runs", "fork", "orig", "--at", "8", "--model", "claude-opus-4-6", "--new-id", "cli", "--store", where]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "forked orig at step 8 as cli" in out and "agent.resume('cli', store=...)" in out
    fork = store.load("cli")
    assert fork.model == "claude-opus-4-6" and fork.forked_from == ForkedFrom(conversation_id="orig", step=8)
    assert main(["runs", "list", "--store", where]) == 0
    listed = capsys.readouterr().out
    assert "orig@8" in listed.splitlines()[[line.split()[0] for line in listed.splitlines()].index("cli")]
    assert main(["runs", "show", "cli", "--store", where]) == 0
    assert "forked from  : orig at step 8" in capsys.readouterr().out
    assert main(["runs", "fork", "orig", "--at", "99", "--store", where]) == 1
    assert "at=99 is not a step of its trace" in capsys.readouterr().err
    result = agent(sim).resume("cli", store=store)
    assert result.final_state == "done" and sim.requests[-1].body["model"] == "claude-opus-4-6"


@pytest.mark.slow
def test_fork_on_postgresql(postgres_database: str) -> None:
    from agentfsm.stores.postgres import PostgresStore

    store = PostgresStore(postgres_database)
    try:
        sim = Simulator(model)
        original = record(store, sim)
        payer = agent(sim)
        conv = payer.fork("orig", store=store, at=8, new_id="pg-fork")
        fork = store.load("pg-fork")
        assert _json([*fork.replaced_messages, *fork.messages]) == _json(original.transcript[:5])
        assert fork.forked_from == ForkedFrom(conversation_id="orig", step=8)
        assert conv.run().text == "Part one, part two."
        listed = {s.conversation_id: s.forked_from for s in store.list()}
        assert listed == {"orig": None, "pg-fork": ForkedFrom(conversation_id="orig", step=8)}
    finally:
        store.close()


def test_the_inspector_links_a_fork_to_its_parent_at_the_step(
    tmp_path: Path, store: SQLiteStore, sim: Simulator, recorded: Snapshot
) -> None:
    import http.client
    import threading

    from agentfsm.observe.ui import UIServer, open_source

    agent(sim).fork("orig", store=store, at=8, new_id="child")
    server = UIServer(open_source(f"sqlite:///{tmp_path / 'runs.db'}"), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        pages = {}
        for run in ("child", "orig"):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            conn.request("GET", f"/runs/{run}")
            response = conn.getresponse()
            assert response.status == 200
            pages[run] = response.read().decode()
            conn.close()
    finally:
        server.shutdown()
        server.close()
        thread.join(10)
    assert (
        '<dt>forked from</dt><dd><a class="forked-from" href="/runs/orig?step=8">orig</a> at step 8</dd>'
        in pages["child"]
    )
    assert "forked from" not in pages["orig"]
