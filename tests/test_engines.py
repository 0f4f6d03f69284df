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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import engine_agents
import engines_support as es
import pytest
import scenario as sc

from agentfsm.errors import ConversationTimeoutError, InvalidHistoryError, UnknownDurableConversationError
from agentfsm.sim import Simulator


@pytest.fixture(scope="module")
def ctx() -> Any:
    return es.forkserver()


@pytest.fixture(scope="module")
def temporal_server() -> Iterator[es.TemporalServer]:
    yield from es.temporal_server()


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    yield from es.postgres_dsn()


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


def test_a_worker_run_is_agent_run(setup: es.Setup, ctx: Any) -> None:
    expected = baseline()
    sim = Simulator(sc.model)
    with (
        sim.serve() as url,
        es.workers(ctx, setup.argv("engine_agents:KillAgent"), es.test_env(setup.folder, url), setup.folder),
    ):
        engine = setup.engine()
        try:
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
    assert len(sim.requests) == expected.turns  # no request was sent twice
    assert es.executions(setup.folder) == {"a": 1, "b": 1, "c": 1}
    logged = collections.Counter(e["event"] for e in es.logged_events(setup.folder))
    assert logged == collections.Counter(e.event for e in result.events)
