"""A wait is decided once; a decision's input is JSON or it is refused; a conversation id is never empty.

Issue 21, items 2, 4 and the id part of 7. Every run goes through the real ``anthropic`` client over
HTTP to the simulator served on a loopback socket, and every request it receives is checked against
the wire rules by the suite-wide fixtures.

* A waiting ``RunResult`` names its wait (``Snapshot.wait_token``). Deciding it spends it at the
  decision's first save (the approved tools about to start, a transition, or waiting again), so a
  second ``resume``/``aresume``/``load(trigger=...)`` of it, or of a copy of it, raises
  ``AlreadyDecidedError`` and runs nothing: no tool, no request. That holds when the first decision
  failed midway (the API down): the decision was taken, and the run it returned carries it on. A
  decision refused before it is taken (a bad trigger, input that is not JSON, an action that raised and
  had the history put back) leaves the result waiting. With a store, the store is the fence.
* ``input`` is JSON or a ``ConfigurationError``: nested past 100 levels (checked without recursion, so
  100,000 levels is an error, not a ``RecursionError``), NaN and Infinity (which would be stored as null).
  Nothing is saved and no lease is left behind. What a live hook reads is the JSON a resumed one reads.
* An empty or blank conversation id is an ``InvalidConversationIdError`` (a ``ConfigurationError``)
  wherever an id is taken, before anything is stored, sent or enqueued.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
import waits_worker as ww
from test_waits import SEEN, RecordingAgent
from waits_worker import ApprovalAgent, alast, last

from agentfsm import (
    Agent,
    AlreadyDecidedError,
    ConfigurationError,
    Conversation,
    InvalidActionError,
    InvalidTransitionError,
    MemoryStore,
    RunResult,
    SQLiteStore,
    Transition,
    actions,
    tool,
)
from agentfsm.engines.core import result_from_json, result_to_json, start_input
from agentfsm.errors import InvalidConversationIdError
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.testing import DRIVERS

ID = "toolu_01"
KEY = "sk-ant-test-decisions-0000"


@pytest.fixture(autouse=True)
def tool_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "tool.log"
    monkeypatch.setenv("WAITS_TOOL_LOG", str(log))
    return log


def ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def script(*replies: Any) -> Simulator:
    """The model: it asks to delete a file, then answers (or what ``replies`` say)."""
    return Simulator(list(replies) or [r.tool_use("delete_file", {"path": "/tmp/old.log"}, id=ID), r.text("Done.")])


@contextmanager
def over_http(sim: Simulator) -> Iterator[Any]:
    """``client(asynchronous)``: a real client of that kind, talking HTTP to ``sim`` served on a loopback socket."""
    with sim.serve() as url:

        def client(asynchronous: bool = False) -> Any:
            if not asynchronous:
                return anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0)
            # No connection kept between requests: each asyncio.run below is a new event loop.
            fresh = anthropic.DefaultAsyncHttpxClient(limits=httpx2.Limits(max_keepalive_connections=0))
            return anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0, http_client=fresh)

        yield client


def first_run(agent: Agent, driver: str, **kw: Any) -> RunResult:
    if driver == "run":
        return agent.run("Delete /tmp/old.log", **kw)
    if driver == "arun":
        return asyncio.run(agent.arun("Delete /tmp/old.log", **kw))
    if driver == "stream":
        return last(agent.stream("Delete /tmp/old.log", **kw))
    return asyncio.run(alast(agent.astream("Delete /tmp/old.log", **kw)))


def decide(agent: Agent, how: str, conversation: Any, **kw: Any) -> RunResult:
    """One decision, by one of the ways there are to take it."""
    if how == "resume":
        return agent.resume(conversation, **kw)
    if how == "aresume":
        return asyncio.run(agent.aresume(conversation, **kw))
    if how == "stream":
        return last(agent.load(conversation, **kw).stream())
    if how == "astream":
        return asyncio.run(alast(agent.load(conversation, asynchronous=True, **kw).astream()))
    assert how == "decide"  # a conversation loaded plainly, then decided by hand
    conv = agent.load(conversation, asynchronous=False, store=kw.pop("store", None))
    conv.decide(kw.pop("trigger", None), **kw)
    return conv.run()


HOWS = ["resume", "aresume", "stream", "astream", "decide"]


def asynchronous(how: str) -> bool:
    return how in ("aresume", "astream")


# --- item 2: a waiting result is decided once --------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_waiting_result_is_decided_once_and_a_second_decision_runs_nothing(driver: str, tool_log: Path) -> None:
    """Without a store, resuming the same waiting result twice ran the approved tool twice."""
    sim = script(r.tool_use("delete_file", {"path": "/tmp/old.log"}, id=ID), r.text("Done."), r.text("Again."))
    with over_http(sim) as client:
        agent = ApprovalAgent(client=client(driver.startswith("a")), logger=None)
        waiting = first_run(agent, driver)
        assert waiting.final_state == "waiting" and waiting.snapshot is not None
        done = decide(agent, {"run": "resume", "arun": "aresume"}.get(driver, driver), waiting, trigger="approve")
        assert done.final_state == "done" and ran(tool_log) == ["/tmp/old.log"] and len(sim.requests) == 2
        for how in HOWS:  # every way to decide it again, each trigger: refused, and nothing runs
            for trigger in ("approve", "refuse", None):
                again = ApprovalAgent(client=client(asynchronous(how)), logger=None)
                with pytest.raises(AlreadyDecidedError, match=r"was decided already in this process") as caught:
                    decide(again, how, waiting, trigger=trigger)
                assert isinstance(caught.value, InvalidTransitionError)
                assert caught.value.conversation_id == waiting.conversation_id and caught.value.decided == "approve"
    assert ran(tool_log) == ["/tmp/old.log"] and len(sim.requests) == 2  # not a tool, not a request
    assert "use the RunResult" not in str(caught.value) and "Carry on from the RunResult" in str(caught.value)


def test_a_copy_of_a_waiting_result_is_the_same_wait(tool_log: Path) -> None:
    """A result read back from JSON (as an engine returns it) carries the wait's name: decided once, in this process."""
    sim = script()
    with over_http(sim) as client:
        agent = ApprovalAgent(client=client(True), logger=None)
        waiting = asyncio.run(agent.arun("Delete /tmp/old.log"))
        copy = result_from_json(json.loads(json.dumps(result_to_json(waiting))))
        another = result_from_json(result_to_json(waiting))
        assert copy.snapshot is not None and copy.snapshot.wait_token == waiting.snapshot.wait_token  # type: ignore[union-attr]
        done = asyncio.run(agent.aresume(copy, trigger="approve"))
        assert done.final_state == "done"
        for result in (waiting, another, copy):
            with pytest.raises(AlreadyDecidedError):
                asyncio.run(agent.aresume(result, trigger="approve"))
    assert ran(tool_log) == ["/tmp/old.log"] and len(sim.requests) == 2


def test_a_decision_that_fails_midway_is_still_taken_and_its_result_carries_it_on(tool_log: Path) -> None:
    """The API is down after the approved tool ran: the decision stands (resuming again would run the tool again);
    the failed run it returned keeps the tool's result, and carrying that on does not run the tool again."""
    sim = script(r.tool_use("delete_file", {"path": "/tmp/old.log"}, id=ID), r.overloaded(), r.text("Deleted it."))
    with over_http(sim) as client:
        agent = ApprovalAgent(client=client(), logger=None)
        waiting = agent.run("Delete /tmp/old.log")
        failed = agent.resume(waiting, trigger="approve")
        assert failed.final_state == "failed" and failed.error is not None and ran(tool_log) == ["/tmp/old.log"]
        with pytest.raises(AlreadyDecidedError, match=r"if it failed midway .*agent\.run\(result\.messages\)"):
            agent.resume(waiting, trigger="approve")
        assert len(sim.requests) == 2  # the refusal sent nothing
        done = agent.run(failed.messages)
    assert done.final_state == "done" and done.text == "Deleted it." and ran(tool_log) == ["/tmp/old.log"]
    answer = sim.requests[2].messages[-1]["content"][0]
    assert (answer["type"], answer["tool_use_id"], answer["content"]) == ("tool_result", ID, "deleted /tmp/old.log")


def test_an_interrupted_decision_is_taken_once_its_tools_started(tool_log: Path) -> None:
    """The process is interrupted while the approved tool runs: the decision stands (the tool may have had its
    effect), so the result is spent; a conversation held by hand carries it on, answering the call interrupted."""
    crash = {"on": True}

    def explode(path: str) -> str:
        if crash["on"]:
            raise KeyboardInterrupt
        return f"deleted {path}"

    deleting = tool(name="delete_file", description="Delete a file.")(explode)
    sim = script(r.tool_use("delete_file", {"path": "/tmp/old.log"}, id=ID), r.text("Handled."))
    with over_http(sim) as client:
        agent = ApprovalAgent(client=client(), logger=None, tools=[ww.read_file, deleting])
        waiting = agent.run("Delete /tmp/old.log")
        conv = agent.load(waiting, trigger="approve")
        with pytest.raises(KeyboardInterrupt):
            conv.run()
        crash["on"] = False
        with pytest.raises(AlreadyDecidedError):
            agent.resume(waiting, trigger="approve")
        done = conv.run()  # the conversation that took the decision carries it out
    assert done.final_state == "done" and len(sim.requests) == 2
    block = sim.requests[1].messages[-1]["content"][0]
    assert block["is_error"] and "was running when the agent process stopped" in block["content"]


class HandsOn(ApprovalAgent):
    """``ran_by_hand`` answers the calls with results given as input (an action that can refuse bad input)."""

    transitions = [
        Transition(
            "awaiting_approval", "ran_by_hand", "requesting", action=actions.answer_with(lambda c: c.input["results"])
        )
    ]


@pytest.mark.parametrize("how", HOWS)
def test_a_decision_refused_before_it_is_taken_leaves_the_result_waiting(how: str, tool_log: Path) -> None:
    """A trigger that cannot leave, input that is not JSON, an action that raised (history put back): nothing of the
    decision happened, so the same result can still be decided, once."""
    sim = script()
    with over_http(sim) as client:
        agent = HandsOn(client=client(asynchronous(how)), logger=None)
        waiting = first_run(agent, "arun" if asynchronous(how) else "run")
        with pytest.raises(InvalidTransitionError, match="'run_tools' does not leave"):
            decide(agent, how, waiting, trigger="run_tools")
        with pytest.raises(ConfigurationError, match="NaN and Infinity are not"):
            decide(agent, how, waiting, trigger="refuse", input={"reason": math.nan})
        with pytest.raises(InvalidActionError, match=r"no result for: \['toolu_01 \(delete_file\)'\]"):
            decide(agent, how, waiting, trigger="ran_by_hand", input={"results": {}})
        assert len(sim.requests) == 1 and ran(tool_log) == []
        done = decide(agent, how, waiting, trigger="ran_by_hand", input={"results": {ID: "removed by hand"}})
        assert done.final_state == "done" and len(sim.requests) == 2
        with pytest.raises(AlreadyDecidedError):
            decide(agent, how, waiting, trigger="approve")
    assert ran(tool_log) == [] and len(sim.requests) == 2


def test_two_resumes_of_one_result_at_once_run_the_tool_once(tool_log: Path) -> None:
    """Two tasks resume the same waiting result together: one decides, the other is refused before anything runs."""
    sim = script()
    with over_http(sim) as client:
        agent = ApprovalAgent(client=client(True), logger=None)
        waiting = asyncio.run(agent.arun("Delete /tmp/old.log"))

        async def both() -> list[Any]:
            return await asyncio.gather(
                agent.aresume(waiting, trigger="approve"),
                agent.aresume(waiting, trigger="approve"),
                return_exceptions=True,
            )

        outcomes = asyncio.run(both())
    results = [o for o in outcomes if isinstance(o, RunResult)]
    refused = [o for o in outcomes if isinstance(o, AlreadyDecidedError)]
    assert len(results) == 1 and results[0].final_state == "done" and len(refused) == 1, outcomes
    assert refused[0].how in ("held", "spent")  # refused while the other decides, or once its tools started
    assert ran(tool_log) == ["/tmp/old.log"] and len(sim.requests) == 2


def test_a_decision_given_up_unrun_leaves_the_result_waiting(tool_log: Path) -> None:
    """``load(result, trigger=...)`` holds the decision while its conversation lives; dropped unrun, nothing
    happened, and the result can be decided."""
    sim = script()
    with over_http(sim) as client:
        agent = ApprovalAgent(client=client(), logger=None)
        waiting = agent.run("Delete /tmp/old.log")
        held = agent.load(waiting, trigger="refuse")
        with pytest.raises(AlreadyDecidedError, match="being decided right now"):
            agent.resume(waiting, trigger="approve")
        del held
        gc.collect()
        done = agent.resume(waiting, trigger="approve")
    assert done.final_state == "done" and ran(tool_log) == ["/tmp/old.log"]


class AskedAgain(ApprovalAgent):
    """The waiting state's hook decides when the input says so, and waits on otherwise."""

    def on_awaiting_approval(self, conv: Conversation) -> str | None:
        return "approve" if conv.input == {"ok": True} else None


def test_asking_the_hook_again_decides_the_wait_and_the_next_wait_is_a_new_one(tool_log: Path) -> None:
    sim = script()
    with over_http(sim) as client:
        agent = AskedAgain(client=client(), logger=None)
        first = agent.run("Delete /tmp/old.log")
        second = agent.resume(first)  # no trigger: the hook is asked again, and waits on
        assert second.final_state == "waiting" and second.snapshot is not None and first.snapshot is not None
        assert second.snapshot.wait_token != first.snapshot.wait_token
        with pytest.raises(AlreadyDecidedError, match="its hook was asked again"):
            agent.resume(first, input={"ok": True})
        done = agent.resume(second, input={"ok": True})
    assert done.final_state == "done" and ran(tool_log) == ["/tmp/old.log"] and len(sim.requests) == 2


def test_the_conversation_that_stopped_to_wait_is_the_same_wait(tool_log: Path) -> None:
    sim = script()
    with over_http(sim) as client:
        agent = ApprovalAgent(client=client(), logger=None)
        conv = agent.start("Delete /tmp/old.log")
        waiting = conv.run()
        assert agent.resume(waiting, trigger="approve").final_state == "done"
        with pytest.raises(AlreadyDecidedError):
            conv.decide("approve")
    assert ran(tool_log) == ["/tmp/old.log"] and len(sim.requests) == 2


@pytest.mark.parametrize("how", HOWS)
def test_with_a_store_a_waiting_result_the_store_moved_past_is_refused(how: str, tool_log: Path) -> None:
    """The store is the fence, across processes: a fresh agent (another process, as far as it can tell) given the
    waiting result after it was decided is refused, with the store's row untouched."""
    sim = script()
    store = MemoryStore()
    with over_http(sim) as client:
        agent = ApprovalAgent(client=client(asynchronous(how)), logger=None)
        waiting = first_run(agent, "arun" if asynchronous(how) else "run", store=store)
        done = decide(agent, how, waiting, store=store, trigger="approve")
        assert done.final_state == "done"
        row = store.load(waiting.conversation_id)
        for trigger in ("approve", None):
            with pytest.raises(
                AlreadyDecidedError, match=r"store holds the conversation past that wait \(now finished"
            ):
                decide(
                    ApprovalAgent(client=client(asynchronous(how)), logger=None),
                    how,
                    waiting,
                    store=store,
                    trigger=trigger,
                )
        assert store.load(waiting.conversation_id) == row
        with pytest.raises(AlreadyDecidedError) as caught:  # and this process remembers: a copy without the store
            decide(ApprovalAgent(client=client(asynchronous(how)), logger=None), how, waiting, trigger="approve")
        assert caught.value.how == "spent"
    assert ran(tool_log) == ["/tmp/old.log"] and len(sim.requests) == 2


def test_with_a_store_a_result_is_refused_once_its_run_waits_again(tool_log: Path) -> None:
    """Deciding an old waiting result would decide the wait the stored conversation is at now: refused."""
    sim = script(
        r.tool_use("delete_file", {"path": "/tmp/a.log"}, id="toolu_a"),
        r.tool_use("delete_file", {"path": "/tmp/b.log"}, id="toolu_b"),
        r.text("Both gone."),
    )
    store = SQLiteStore(":memory:")
    with over_http(sim) as client:
        agent = ApprovalAgent(client=client(), logger=None)
        first = agent.run("Delete both", store=store)
        second = agent.resume(first, store=store, trigger="approve")
        assert second.final_state == "waiting" and [c.id for c in second.pending_tool_calls] == ["toolu_b"]
        with pytest.raises(AlreadyDecidedError, match="now waiting at 'awaiting_approval' again"):
            agent.resume(first, store=store, trigger="approve")
        assert agent.resume(second, store=store, trigger="approve").final_state == "done"
    assert ran(tool_log) == ["/tmp/a.log", "/tmp/b.log"] and len(sim.requests) == 3


def test_a_waiting_result_read_back_from_its_own_json_says_what_it_lacks() -> None:
    sim = script()
    with over_http(sim) as client:
        agent = ApprovalAgent(client=client(), logger=None)
        waiting = agent.run("Delete /tmp/old.log")
    bare = RunResult.model_validate_json(waiting.model_dump_json())
    with pytest.raises(ConfigurationError, match="carries no conversation: a RunResult read back from its own JSON"):
        agent.resume(bare, trigger="approve")


# --- item 4: resume input is JSON or it is refused --------------------------------------------------------------------


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


NOT_JSON: dict[str, tuple[Any, str]] = {  # built in the test: pytest never shows a 100,000-deep value
    "deep": (lambda: deep(100_000), "nested more than 100 lists or dicts deep"),
    "deep-inside": (lambda: {"by": "ops", "nested": deep(101)}, "nested more than 100 lists or dicts deep"),
    "itself": (lambda: looped(), "nested more than 100 lists or dicts deep \\(or holds itself\\)"),
    "nan": (lambda: {"amount": math.nan}, "NaN and Infinity are not"),
    "inf": (lambda: {"amount": math.inf}, "NaN and Infinity are not"),
    "-inf": (lambda: [-math.inf], "NaN and Infinity are not"),
    "object": (lambda: {"when": object()}, "input must be JSON"),
}


def looped() -> Any:
    value: dict[str, Any] = {}
    value["me"] = value
    return value


@pytest.mark.slow  # every driver and bad input, through a store
@pytest.mark.parametrize("kind", NOT_JSON)
@pytest.mark.parametrize("how", ["resume", "aresume", "stream"])
def test_input_that_is_not_json_is_refused_and_the_stored_row_is_unchanged(how: str, kind: str) -> None:
    make, problem = NOT_JSON[kind]
    sim = script()
    store = MemoryStore()
    with over_http(sim) as client:
        agent = ApprovalAgent(client=client(asynchronous(how)), logger=None)
        waiting = first_run(agent, "arun" if asynchronous(how) else "run", store=store)
        row = store.load(waiting.conversation_id)
        with pytest.raises(ConfigurationError, match=problem):
            decide(agent, how, waiting.conversation_id, store=store, trigger="refuse", input=make())
        assert store.load(waiting.conversation_id) == row  # nothing saved
        assert store.acquire(waiting.conversation_id, "another-worker", 5)  # no lease left behind
        store.release(waiting.conversation_id, "another-worker")
        with pytest.raises(ConfigurationError, match=problem):  # and without a store: the result stays waiting
            decide(agent, how, waiting, trigger="refuse", input=make())
        done = decide(agent, how, waiting.conversation_id, store=store, trigger="refuse", input={"reason": "no"})
    assert done.final_state == "done" and len(sim.requests) == 2


def test_the_live_action_reads_the_input_a_resumed_one_would() -> None:
    """Input is stored as JSON: the live action reads it as stored (a tuple is a list, a key a string), never
    something a crash and a resume would change."""
    SEEN.clear()
    sim, store = script(), MemoryStore()
    with over_http(sim) as client:
        agent = RecordingAgent(client=client(), logger=None)
        waiting = agent.run("Delete /tmp/old.log", store=store)
        given = {"ids": (1, 2), 3: "three", "ratio": 0.1, "nested": deep(99)}
        agent.resume(waiting.conversation_id, store=store, trigger="refuse_noted", input=given)
    expected = {"ids": [1, 2], "3": "three", "ratio": 0.1, "nested": deep(99)}
    assert [expected] == SEEN and store.load(waiting.conversation_id).input == expected


def test_the_command_line_refuses_input_nested_too_deep_in_one_line(capsys: Any) -> None:
    from agentfsm.cli import main

    code = main(["runs", "decide", "x", "approve", "--input", "[" * 5000 + "]" * 5000, "--store", "x.db"])
    said = capsys.readouterr().err
    assert code == 2 and "not JSON (maximum recursion depth exceeded" in said and "Traceback" not in said


# --- item 7: a conversation id is never empty ---------------------------------------------------------------------


BAD_IDS = ["", "   ", "\n"]


@pytest.mark.parametrize("bad", BAD_IDS, ids=["empty", "spaces", "newline"])
@pytest.mark.parametrize("driver", DRIVERS)
def test_an_empty_conversation_id_is_refused_before_anything_is_sent_or_stored(driver: str, bad: str) -> None:
    sim, store = script(), MemoryStore()
    with over_http(sim) as client:
        agent = ApprovalAgent(client=client(driver.startswith("a")), logger=None)
        for kw in ({}, {"store": store}):
            with pytest.raises(InvalidConversationIdError, match=r"Agent\.run: conversation id .* is (empty|blank)"):
                first_run(agent, driver, conversation_id=bad, **kw)
        with pytest.raises(ConfigurationError, match=r"is (empty|blank)"):
            agent.start("hi", conversation_id=bad)
    assert sim.requests == [] and store.list() == []


@pytest.mark.parametrize("bad", BAD_IDS, ids=["empty", "spaces", "newline"])
def test_an_empty_id_is_refused_by_resume_load_and_every_store(bad: str, tmp_path: Path) -> None:
    sim = script()
    stores = [MemoryStore(), SQLiteStore(tmp_path / "runs.db")]
    with over_http(sim) as client:
        agent = ApprovalAgent(client=client(), logger=None)
        waiting = agent.run("Delete /tmp/old.log", store=stores[0], conversation_id="ticket-1")
        snapshot = stores[0].load("ticket-1")
        for store in stores:
            with pytest.raises(InvalidConversationIdError, match=r"Agent\.resume: conversation id"):
                agent.resume(bad, store=store, trigger="approve")
            with pytest.raises(InvalidConversationIdError):
                asyncio.run(agent.aresume(bad, store=store))
            with pytest.raises(InvalidConversationIdError):
                agent.load(bad, store=store)
            name = type(store).__name__
            with pytest.raises(InvalidConversationIdError, match=rf"{name}\.load: conversation id"):
                store.load(bad)
            with pytest.raises(InvalidConversationIdError, match=rf"{name}\.save: conversation id"):
                store.save(snapshot.model_copy(update={"conversation_id": bad}))
        assert [s.conversation_id for s in stores[0].list()] == ["ticket-1"] and stores[1].list() == []
        assert waiting.final_state == "waiting" and len(sim.requests) == 1
    stores[1].close()  # type: ignore[attr-defined]


def test_an_engine_refuses_an_empty_id_before_anything_is_enqueued() -> None:
    """``DBOSEngine.start(conversation_id="")`` was accepted, and then could not be attached; both engines make the
    workflow's input with ``start_input``, on the client, before anything is enqueued."""
    for bad in BAD_IDS:
        with pytest.raises(InvalidConversationIdError, match=r"engine\.start: conversation id"):
            start_input("waits_worker:ApprovalAgent", "Delete it", bad)
    begin = start_input("waits_worker:ApprovalAgent", "Delete it", None)
    assert begin.conversation_id.startswith("conv_") and begin.nonce


def test_the_batch_runner_refuses_an_empty_id_before_anything_is_stored(tmp_path: Path) -> None:
    from agentfsm.batch import BatchRunner

    sim = Simulator(lambda request: r.text("ok"))
    store = SQLiteStore(tmp_path / "runs.db")
    with over_http(sim) as client:
        runner = BatchRunner(Agent(client=client(), model="claude-haiku-4-5", logger=None), store=store)
        with pytest.raises(
            InvalidConversationIdError, match=r"BatchRunner\.run's prompts: conversation id '' is empty"
        ):
            runner.run({"ticket-1": "Hi", "": "Hello"})
        with pytest.raises(InvalidConversationIdError, match=r"BatchRunner\.run's run_id: conversation id '' is empty"):
            runner.run(["Hi"], run_id="")
    assert store.list() == [] and sim.requests == []
    store.close()


def test_the_command_line_refuses_an_empty_id(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentfsm.cli import main

    monkeypatch.chdir(tmp_path)
    Path("script.json").write_text(json.dumps([{"type": "text", "text": "Hi"}]))
    run = ["run", "waits_worker:ApprovalAgent", "Delete it", "--sim", "script.json", "--id", ""]
    for argv in (run, [*run, "--store", "runs.db"], ["runs", "show", "", "--store", "runs.db"]):
        code = main(argv)
        said = capsys.readouterr().err
        assert code == 1 and "conversation id '' is empty" in said and "Traceback" not in said, (argv, said)
    with SQLiteStore(tmp_path / "runs.db") as store:
        assert store.list() == []
