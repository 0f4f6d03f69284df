"""Kill suite for the durable engines: SIGKILL a worker process mid-conversation; another finishes it.

Per engine (DBOS on SQLite, DBOS on PostgreSQL, Temporal), the scenario's conversation (``scenario``:
a paused search, ``count("a")``, ``count("b")`` and ``count("c")`` in parallel, a text cut at
``max_tokens``) runs on a worker that is SIGKILLed:

* ``request``   — while it waits for the answer to request 2 (the simulator kills the worker that sent it);
* ``tool``      — in ``count("a")``, after its side effect, the tool not idempotent;
* ``idempotent`` — the same with ``@tool(idempotent=True)``;
* ``reply``     — right after reply 2 (the one calling ``count("a")``) was recorded, before any tool runs.

Then a fresh worker process is started and finishes the conversation. Checked each time: the final history
equals the uninterrupted run's (with a non-idempotent tool, except that the call running at the kill is
answered with the is_error "interrupted" result); every committed tool call ran exactly once (the
interrupted one once, an idempotent one at most twice); only the request in flight at the kill was sent
again; no event was logged twice across the workers (the engine's replay logs nothing; on Temporal a
worker that dies *inside* a workflow task — the ``reply`` kill — has that task's few events logged again
by the worker that takes over); the wire rules held on every request (the suite's observers).

And with two live workers, the one running the conversation is killed in a tool: the survivor finishes
it, within 30 seconds of the kill.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import engine_agents
import engines_support as es
import pytest
import scenario as sc

from agentfsm.sim import SimRequest, Simulator

pytestmark = pytest.mark.slow  # every test runs DBOS/Temporal worker processes and SIGKILLs them

KILLS = ["request", "tool", "idempotent", "reply"]
#: Killed in ``count("b")`` (run beside ``count("c")``) with a reconcile check that asks the tool's log: after its
#: effect (the check says it happened) and before it (it did not: the call runs now).
RECONCILE_KILLS = {"reconciled-happened": "tool:b", "reconciled-not-happened": "before:b"}
CONVERSATION = "conv_killed"


@pytest.fixture(scope="module")
def ctx() -> Any:
    return es.forkserver()


@pytest.fixture(scope="module")
def temporal_server() -> Iterator[str]:
    yield from es.temporal_server()


@pytest.fixture(scope="module")
def baseline() -> dict[str, Any]:
    """The uninterrupted conversation, in process: its history and how many requests it sends."""
    import asyncio

    from agentfsm import Agent

    agent = sc.agent()
    sim = Simulator(sc.model)
    result = asyncio.run(
        Agent(client=sim.async_client(max_retries=0), tools=agent.tools, policy=agent.policy, logger=None).arun(
            sc.PROMPT, conversation_id=CONVERSATION
        )
    )
    assert result.final_state == "done"
    return {"messages": result.messages, "text": result.text, "requests": len(sim.requests)}


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _killing_model(kill_at: int | None) -> Any:
    """The scenario's model; on request ``kill_at`` it first SIGKILLs the worker that sent it."""
    done: list[int] = []

    def model(request: SimRequest) -> Any:
        if request.n == kill_at and not done:
            pid = int(request.headers[engine_agents.PID_HEADER])
            done.append(pid)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while not _dead(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
        return sc.model(request)

    return model


def _labels(messages: list[dict[str, Any]]) -> dict[str, str]:
    return {
        b["id"]: b["input"]["label"]
        for m in messages
        if m["role"] == "assistant" and isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_use"
    }


def _interrupted(messages: list[dict[str, Any]]) -> list[str]:
    return [
        b["tool_use_id"]
        for m in messages
        if m["role"] == "user" and isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_result" and sc.INTERRUPTED in str(b.get("content"))
    ]


def _duplicates(folder: Path, setup: es.Setup, kill: str) -> list[str]:
    """Events some worker logged twice (the same event of the same turn and tool call)."""
    keys = collections.Counter(
        json.dumps([e["event"], e.get("turn"), e.get("state"), e.get("tool_use_id"), e.get("attempt")])
        for e in es.logged_events(folder)
    )
    twice = [k for k, n in keys.items() if n > 1]
    if setup.kind == "temporal" and kill == "reply":
        return []  # the dead worker's last workflow task is run again, its few events logged again
    return twice


def _one_kill(ctx: Any, setup: es.Setup, kill: str, baseline: dict[str, Any], survivors: int = 0) -> str | None:
    """Run the conversation, kill its worker at ``kill``, finish it on another worker; the problem found, or None."""
    folder = setup.folder
    agent = {"idempotent": "engine_agents:IdempotentKillAgent"}.get(kill, "engine_agents:KillAgent")
    if kill in RECONCILE_KILLS:
        agent = "engine_agents:ReconcileKillAgent"
    trigger = {"request": "", "tool": "tool:a", "idempotent": "tool:a", "reply": "reply:2", **RECONCILE_KILLS}[kill]
    sim = Simulator(_killing_model(2 if kill == "request" else None))
    with sim.serve() as url:
        env = es.test_env(folder, url, AGENTFSM_TEST_KILL=trigger)
        argv = setup.argv(agent)
        first = [es.WorkerProcess(ctx, argv, env, folder / f"first{i}.log") for i in range(1 + survivors)]
        engine = setup.engine()
        try:
            for w in first:
                w.wait_ready()
            conversation = es.unique("conv_killed")
            engine.start(agent, sc.PROMPT, conversation_id=conversation)
            deadline = time.monotonic() + 60
            while all(w.process.is_alive() for w in first) and time.monotonic() < deadline:
                time.sleep(0.02)
            dead = [w for w in first if not w.process.is_alive()]
            if len(dead) != 1:
                return f"{kill}: expected one worker killed, {len(dead)} died: {[w.output() for w in first]}"
            killed_at = time.time()
            dead[0].process.join(5)
            code, said = dead[0].process.exitcode, dead[0].output()
            # 255 is what multiprocessing's forkserver reports when it could not pass a child's status on
            # (seen under load right after a SIGKILL); it is accepted only if the worker said nothing wrong.
            lost_status = code == 255 and "Traceback" not in said and "error" not in said.lower()
            if code != -signal.SIGKILL and not lost_status:
                return f"{kill}: the worker exited with {code}: {said}"
            second = [] if survivors else [es.WorkerProcess(ctx, argv, env, folder / "second.log")]
            try:
                for w in second:
                    w.wait_ready()
                result = engine.result(conversation, timeout=60)
                took = time.time() - killed_at
            finally:
                for w in second:
                    w.stop()
        finally:
            engine.close()
            for w in first:
                w.stop()
    return _check(kill, setup, folder, baseline, result, sim, took, survivors)


def _check(
    kill: str, setup: es.Setup, folder: Path, baseline: dict[str, Any], result: Any, sim: Simulator, took: float,
    survivors: int,
) -> str | None:  # fmt: skip
    where = f"{setup.kind} {kill}{' (survivor)' if survivors else ''}"
    if result.final_state != "done":
        return f"{where}: ended {result.final_state} ({result.error})"
    labels = _labels(baseline["messages"])
    expected = json.loads(json.dumps(baseline["messages"]))
    interrupted = _interrupted(result.messages)
    if kill in ("tool",):
        a = next(i for i, label in labels.items() if label == "a")
        if interrupted != [a]:
            return f"{where}: interrupted calls {interrupted}, expected only count('a') {a}"
        for m in expected:
            for b in m["content"] if isinstance(m["content"], list) else []:
                if b.get("type") == "tool_result" and b["tool_use_id"] == a:
                    b["is_error"] = True
                    b["content"] = next(
                        x["content"]
                        for mm in result.messages
                        for x in (mm["content"] if isinstance(mm["content"], list) else [])
                        if x.get("type") == "tool_result" and x["tool_use_id"] == a
                    )
    elif interrupted:
        return f"{where}: calls answered as interrupted: {interrupted}"
    if result.messages != expected:
        return f"{where}: the final history differs from the uninterrupted run's"
    if result.text != baseline["text"]:
        return f"{where}: the final text differs"
    runs = es.executions(folder)
    want = {"a": 2 if kill == "idempotent" else 1, "b": 1, "c": 1}
    if runs != want:
        return f"{where}: tool executions {runs}, expected {want}"
    resent = 1 if kill == "request" else 0
    if len(sim.requests) != baseline["requests"] + resent:
        return f"{where}: the simulator saw {len(sim.requests)} requests, expected {baseline['requests'] + resent}"
    twice = _duplicates(folder, setup, kill)
    if twice:
        return f"{where}: events logged twice: {twice}"
    if took > 30:
        return f"{where}: finished {took:.1f} s after the kill (more than 30 s)"
    return None


@pytest.mark.parametrize("kind", es.ENGINES)
def test_sigkill_a_worker_then_another_finishes(
    kind: str, ctx: Any, baseline: dict[str, Any], tmp_path: Path, request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Each kill point with a restarted worker, and a tool kill with a live second worker taking over."""
    cases = [(kill, 0) for kill in KILLS] + [("tool", 1)]
    setups = {}
    for kill, survivors in cases:
        folder = tmp_path / f"{kill}{survivors}"
        folder.mkdir()
        setups[(kill, survivors)] = es.Setup(kind, folder, request)
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        found = list(pool.map(lambda c: _one_kill(ctx, setups[c], c[0], baseline, c[1]), cases))
    problems = [p for p in found if p is not None]
    with capsys.disabled():
        print(
            f"\nengine kill suite ({kind}): {len(cases) - len(problems)} of {len(cases)} SIGKILLs survived "
            f"(request, tool, idempotent tool, after a reply; a survivor taking over) in "
            f"{time.perf_counter() - started:.1f} s"
        )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kind", es.ENGINES)
def test_a_call_in_doubt_is_reconciled_in_its_own_step(
    kind: str, ctx: Any, baseline: dict[str, Any], tmp_path: Path, request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    """Each call is a durable step of its own: killed inside ``count("b")``, another worker gives back the calls
    whose steps finished (never run again) and asks ``b``'s reconcile check — happened (not run again) or did not
    (run now, once). No call is answered interrupted: the history is exactly the uninterrupted run's."""
    ids = {label: call_id for call_id, label in _labels(baseline["messages"]).items()}
    for kill, outcome in (("reconciled-happened", "happened"), ("reconciled-not-happened", "not_happened")):
        folder = tmp_path / kill
        folder.mkdir()
        problem = _one_kill(ctx, es.Setup(kind, folder, request), kill, baseline)
        assert problem is None, problem
        said = {(e["tool_use_id"], e["outcome"]) for e in es.logged_events(folder) if e["event"] == "tool.reconciled"}
        assert (ids["b"], outcome) in said, said
