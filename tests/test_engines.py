"""The durable engines keep the Agent.run contract: DBOS on SQLite and on PostgreSQL, and Temporal.

Each test runs real worker processes (``agentfsm worker dbos|temporal``, the command line) against the
simulator on a loopback port, and a client (``DBOSEngine`` / ``TemporalEngine``) in the test process:

* a conversation run by a worker ends with exactly the result ``Agent.arun`` gives in process;
* starting the same conversation id again attaches (nothing runs twice), ``engine.result(id)`` attaches
  from a fresh client, an unknown id and an invalid prompt are clear errors, and a conversation no
  worker serves times out with the error that says so;
* every event is logged once by the worker (the engine's replays log nothing);
* the engine's store grows linearly: a 50-turn conversation's recorded bytes stay within a small
  multiple of its final history (``test_store_grows_linearly``).

The kill tests (``test_engines_kill.py``) crash the workers.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import engine_agents
import engines_support as es
import pytest
import scenario as sc

from agentfsm.errors import (
    ConversationTimeoutError,
    DurableRunError,
    InvalidHistoryError,
    UnknownDurableConversationError,
)
from agentfsm.sim import ScriptedReply, SimRequest, Simulator
from agentfsm.sim import replies as r


@pytest.fixture(scope="module")
def ctx() -> Any:
    return es.forkserver()


@pytest.fixture(scope="module")
def temporal_server() -> Iterator[str]:
    yield from es.temporal_server()


@pytest.fixture(params=es.ENGINES)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> es.Setup:
    return es.Setup(request.param, tmp_path, request)


def baseline(idempotent: bool = False) -> Any:
    """The scenario's conversation run in process: what a worker must end with."""
    agent = sc.agent(idempotent=idempotent)
    from agentfsm import Agent

    return asyncio.run(
        Agent(
            client=Simulator(sc.model).async_client(max_retries=0),
            tools=agent.tools,
            policy=agent.policy,
            logger=None,
        ).arun(sc.PROMPT, conversation_id="conv_baseline")
    )


@pytest.mark.slow  # worker processes
def test_a_worker_run_is_agent_run(setup: es.Setup, ctx: Any) -> None:
    expected = baseline()
    sim = Simulator(sc.model)
    argv = setup.argv("engine_agents:KillAgent", "--agent", "engine_agents:BrokenAgent")
    with sim.serve() as url, es.workers(ctx, argv, es.test_env(setup.folder, url), setup.folder) as started:
        engine = setup.engine()
        try:
            broken = engine.start("engine_agents:BrokenAgent", "Hello.", conversation_id="conv_broken")
            with pytest.raises(DurableRunError, match="no_such_trigger"):
                broken.result(timeout=60)
            before = len(sim.requests)
            handle = engine.start("engine_agents:KillAgent", sc.PROMPT, conversation_id="conv_one")
            result = handle.result(timeout=60)
            seen = len(sim.requests)
            again = engine.start(engine_agents.KillAgent, "a different prompt", conversation_id="conv_one")
            assert again.result(timeout=10).messages == result.messages
            assert len(sim.requests) == seen  # attached: nothing ran again
            other = setup.engine()
            try:
                assert other.result("conv_one", timeout=10).trace == result.trace
                with pytest.raises(UnknownDurableConversationError):
                    other.result("conv_never_started", timeout=5)
            finally:
                other.close()
            with pytest.raises(InvalidHistoryError):
                engine.start("engine_agents:KillAgent", [{"role": "assistant", "content": "no user turn"}])
            lonely = engine.start("engine_agents:IdempotentKillAgent", sc.PROMPT, conversation_id="conv_unserved")
            with pytest.raises(ConversationTimeoutError, match="still running on the workers"):
                lonely.result(timeout=1)
        finally:
            engine.close()
    assert result.final_state == expected.final_state == "done"
    assert result.messages == expected.messages
    assert result.text == expected.text
    assert result.trace == expected.trace
    assert result.usage == expected.usage, (result.usage, expected.usage)
    assert [e.event for e in result.events] == [e.event for e in expected.events]
    assert len(sim.requests) - before == expected.turns  # no request was sent twice
    assert es.executions(setup.folder) == {"a": 1, "b": 1, "c": 1}
    logged = collections.Counter(e["event"] for e in es.logged_events(setup.folder))
    assert logged == collections.Counter(e.event for e in result.events)
    worker_log = started[0].log.read_text()  # one line per conversation started and finished
    assert "conversation conv_one started" in worker_log and "conversation conv_one finished: done" in worker_log


TURNS = 30


def long_model(request: SimRequest) -> ScriptedReply:
    """``echo_block`` (5 kB results) until the conversation has ``TURNS`` requests, then an answer."""
    answered = sum(
        1
        for m in request.messages
        if m["role"] == "user" and isinstance(m["content"], list) and m["content"][0].get("type") == "tool_result"
    )
    if answered < TURNS - 1:
        return r.tool_use("echo_block", {"n": answered}, id=f"toolu_{answered:04d}")
    return r.text("All blocks echoed.")


@pytest.mark.slow  # worker processes
def test_the_engine_store_grows_linearly(setup: es.Setup, ctx: Any) -> None:
    """A long conversation's recorded bytes stay a small multiple of its final history (quadratic would be ~TURNS/2)."""
    sim = Simulator(long_model)
    argv = setup.argv("engine_agents:LongAgent")
    with sim.serve() as url, es.workers(ctx, argv, es.test_env(setup.folder, url), setup.folder):
        engine = setup.engine()
        try:
            result = engine.start("engine_agents:LongAgent", "Echo the blocks.").result(timeout=120)
            stored = engine.stored_bytes(result.conversation_id)
        finally:
            engine.close()
    assert result.final_state == "done" and result.turns == TURNS
    history = len(json.dumps(result.messages))
    assert history > TURNS * 4000
    assert stored < 4 * history, f"{setup.kind}: {stored} bytes stored for a {history}-byte history"


def _screen(events: list[Any]) -> str:
    """The text a streaming caller ends with: every text appended, every rewind honoured."""
    shown = ""
    for event in events:
        if event.type == "text":
            shown += event.text
        elif event.type == "rewind":
            shown = shown[: len(shown) - event.chars]
    return shown


def _killing_server(sim: Simulator, request_n: int, after_chunks: int) -> Any:
    """The simulator on a loopback port; while streaming the answer to request ``request_n`` it SIGKILLs the
    worker that sent it, ``after_chunks`` SSE events in."""
    import dataclasses
    import os
    import signal

    from agentfsm.sim.server import SimHTTPServer

    def respond(method: str, path: str, query: str, headers: dict[str, str], raw: bytes) -> Any:
        wire = sim.respond(method, path, query, headers, raw)
        if len(sim.requests) != request_n or not wire.streaming:
            return wire
        pid = int(headers[engine_agents.PID_HEADER])

        def chunks() -> Iterator[bytes]:
            for i, chunk in enumerate(wire.chunks):
                if i == after_chunks:
                    time.sleep(0.3)  # let the worker write what it got to the stream
                    os.kill(pid, signal.SIGKILL)
                    server.killed.append(pid)
                yield chunk

        return dataclasses.replace(wire, chunks=chunks())

    server = SimHTTPServer(("127.0.0.1", 0), respond)
    server.killed = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


async def _streamed_in_process() -> list[Any]:
    from agentfsm import Agent

    a = sc.agent()
    agent = Agent(client=Simulator(sc.model).async_client(max_retries=0), tools=a.tools, policy=a.policy, logger=None)
    return [event async for event in agent.astream(sc.PROMPT)]


def _stream_through_a_crash(
    ctx: Any, tmp_path: Path, request: pytest.FixtureRequest, agent: str, prompt: str, server: Any
) -> list[Any]:
    """Start a streamed conversation of ``agent`` on a DBOS worker; read its stream in this process; when
    the worker is killed (by ``server``), start another, as an operator would."""
    setup = es.Setup("dbos-sqlite", tmp_path, request)
    env = es.test_env(tmp_path, server.base_url)
    argv = setup.argv(agent)
    first = es.WorkerProcess(ctx, argv, env, tmp_path / "first.log")
    engine = setup.engine()
    engine.poll_interval = 0.02
    second: list[es.WorkerProcess] = []

    def replace_the_dead() -> None:
        first.process.join(90)
        if server.killed:
            second.append(es.WorkerProcess(ctx, argv, env, tmp_path / "second.log"))

    watcher = threading.Thread(target=replace_the_dead, daemon=True)
    watcher.start()
    try:
        first.wait_ready()
        events = list(engine.start(agent, prompt, stream=True).stream(timeout=60))
    finally:
        engine.close()
        first.stop()
        watcher.join(30)
        for w in second:
            w.stop()
        server.shutdown()
        server.server_close()
    assert server.killed in ([], [first.pid])
    return events


@pytest.mark.slow  # worker processes
@pytest.mark.parametrize("crash", [False, True])
def test_dbos_streams_text_and_transitions_to_a_client_process(
    ctx: Any, tmp_path: Path, crash: bool, request: pytest.FixtureRequest
) -> None:
    """``handle.stream()`` in the client sees the worker's text as it comes. After a crash mid-reply the
    request is sent again, and the text the dead worker already showed is not shown twice."""
    expected = baseline()
    streamed = asyncio.run(_streamed_in_process())
    sim = Simulator(sc.model)
    server = _killing_server(sim, request_n=6 if crash else 0, after_chunks=8)
    events = _stream_through_a_crash(ctx, tmp_path, request, "engine_agents:KillAgent", sc.PROMPT, server)
    result = events[-1].result
    assert events[-1].type == "result" and result.messages == expected.messages
    assert _screen(events) == _screen(streamed)  # what Agent.astream shows in process
    transitions = [(e.source, e.dest, e.trigger) for e in events if e.type == "transition"]
    assert transitions == [(t.source, t.dest, t.trigger) for t in result.trace]
    assert len(server.killed) == crash
    if crash:
        assert len(sim.requests) == expected.turns + 1  # the request streaming at the kill, once more
        assert not [e for e in events if e.type == "rewind"]  # the resent reply repeated what was shown


@pytest.mark.slow  # worker processes
def test_dbos_stream_rewinds_what_a_dead_worker_showed_when_the_resent_reply_differs(
    ctx: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    first_answer = "Hello world, this is the first answer, which the worker never finishes showing."
    sim = Simulator([r.text(first_answer), r.text("A different answer.")])
    server = _killing_server(sim, request_n=1, after_chunks=8)
    events = _stream_through_a_crash(ctx, tmp_path, request, "engine_agents:TextAgent", "Hello.", server)
    assert len(server.killed) == 1 and len(sim.requests) == 2
    shown_before = _screen(events[: next(i for i, e in enumerate(events) if e.type == "rewind")])
    assert shown_before and first_answer.startswith(shown_before)  # the dead worker showed part of its reply
    assert _screen(events) == events[-1].result.text == "A different answer."


@pytest.mark.slow  # worker processes
@pytest.mark.parametrize("kind", ["dbos-postgres", "dbos-sqlite", "temporal"])
def test_a_rate_limit_holds_across_workers(kind: str, ctx: Any, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """``--rate-limit 4/1 --max-in-flight 2``: eight one-request conversations (on two workers sharing PostgreSQL;
    on SQLite one, as DBOS counts the global bounds there without a lock; on Temporal one, its in-flight bound
    is per worker) never have more than two requests outstanding, and take the time four a second need (DBOS's
    limiter is a rolling window, not exact: at least half of it), where unlimited they would all go out at once."""
    setup = es.Setup(kind, tmp_path, request)
    lock = threading.Lock()
    state = {"now": 0, "most": 0}
    starts: list[float] = []

    def slow(request: SimRequest) -> ScriptedReply:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            starts.append(time.monotonic())
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return r.text("Done.")

    sim = Simulator(slow)
    argv = setup.argv("engine_agents:TextAgent", "--rate-limit", "4/1", "--max-in-flight", "2")
    workers = 2 if kind == "dbos-postgres" else 1  # DBOS on SQLite counts its global bounds without a lock
    with sim.serve() as url, es.workers(ctx, argv, es.test_env(tmp_path, url), tmp_path, n=workers):
        engine = setup.engine()
        try:
            handles = [engine.start("engine_agents:TextAgent", f"Say done ({i}).") for i in range(8)]
            results = [h.result(timeout=60) for h in handles]
        finally:
            engine.close()
    assert all(res.final_state == "done" for res in results)
    assert len(starts) == 8 and state["most"] <= 2
    assert max(starts) - min(starts) >= 0.5, f"8 requests at 4/s went out within {max(starts) - min(starts):.2f} s"


@pytest.mark.slow  # importing the engines runs 'file' (platform.architecture)
def test_worker_command_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from agentfsm.cli import main

    assert main(["worker", "dbos", "--database", "mysql://x", "--agent", "engine_agents:TextAgent"]) == 1
    assert "sqlite:///PATH" in capsys.readouterr().err
    assert main(["worker", "dbos", "--database", "sqlite:///x.db", "--agent", "no_such_module:Agent"]) == 1
    assert "no module named 'no_such_module'" in capsys.readouterr().err
    assert main(["worker", "temporal", "--address", "127.0.0.1:1", "--agent", "engine_agents:TextAgent",
                 "--rate-limit", "fast"]) == 1  # fmt: skip
    assert "REQUESTS/SECONDS" in capsys.readouterr().err
    assert main(["worker", "temporal", "--agent", "engine_agents:TextAgent"]) == 2  # --address is required


@pytest.mark.slow  # a worker process on PostgreSQL
def test_a_dbos_worker_that_loses_its_liveness_lock_stops(
    ctx: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Its connection gone, other workers will take its conversations: it must not carry on with them."""
    import psycopg

    setup = es.Setup("dbos-postgres", tmp_path, request)
    worker = es.WorkerProcess(
        ctx, setup.argv("engine_agents:TextAgent"), es.test_env(tmp_path, "http://127.0.0.1:9"), tmp_path / "w.log"
    )
    try:
        worker.wait_ready()
        with psycopg.connect(request.getfixturevalue("postgres_dsn"), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'agentfsm-liveness'"
            )
        worker.process.join(20)
        assert not worker.process.is_alive()
        assert "lost its connection" in worker.output()
    finally:
        worker.stop()
