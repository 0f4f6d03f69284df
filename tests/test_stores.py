"""One suite for every store: MemoryStore, SQLiteStore and PostgresStore keep the same ``Store`` protocol.

The PostgreSQL runs use a throwaway server that the session fixture ``postgres_dsn`` (in conftest) starts
(``pgserver``: installed from Debian's packages if missing, initdb'd in a temp
dir, on a free loopback port); where that cannot be done they are skipped with
the reason. Crashes are in process here (``KeyboardInterrupt`` from a tool, from
the model, or right after a save); ``test_kill.py`` kills real processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import scenario as sc

from agentfsm import Agent, Policy
from agentfsm.errors import (
    ConversationLockedError,
    CorruptSnapshotError,
    SnapshotVersionError,
    StaleConversationError,
    StoreError,
)
from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.base import SCHEMA_VERSION, Snapshot, Store
from agentfsm.stores.memory import MemoryStore
from agentfsm.stores.sqlite import SQLiteStore
from agentfsm.testing import FakeClock

V1_ROW = Path(__file__).parent / "data" / "snapshot_v1.json"
#: PostgreSQL runs a server process: its runs are in the slow tier.
BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.slow)]


# --- PostgreSQL: the session's throwaway server is conftest's ``postgres_dsn`` fixture ---------------------


# --- the backends, behind one face -----------------------------------------------------------------------


class Backend:
    """A store kind under test: fresh stores on the same storage, and raw access to its rows."""

    def __init__(self, name: str, where: str) -> None:
        self.name, self.where = name, where
        self.opened: list[Any] = []
        self.memory = MemoryStore() if name == "memory" else None

    def store(self) -> Store:
        """A store on this storage: another worker's view (the same object, for MemoryStore)."""
        if self.memory is not None:
            return self.memory
        store = sc.open_store(self.name, self.where)
        self.opened.append(store)
        return store

    def write_raw(self, cid: str, text: str, *, version: int = 1, state: str = "requesting", revision: int = 0) -> None:
        """A row as some agentfsm (this one, an older or a newer one) or a broken disk left it."""
        if self.memory is not None:
            self.memory._rows[cid] = text
            self.memory._revisions[cid] = revision
            self.memory._updated[cid] = time.time()
            return
        row = (cid, text, version, revision, "agentfsm.agent:Agent", state, 0, False, time.time(), time.time())
        self.store().list()  # makes the tables
        # The columns of layout 1, as every agentfsm names them (the listing columns come later, filled in on listing).
        columns = "(id, snapshot, schema_version, revision, agent, state, turns, finished, created_at, updated_at)"
        if self.name == "sqlite":
            with closing(sqlite3.connect(self.where)) as conn, conn:
                conn.execute(
                    f"INSERT OR REPLACE INTO agentfsm_conversations {columns} VALUES (?,?,?,?,?,?,?,?,?,?)", row
                )
            return
        import psycopg

        with psycopg.connect(self.where, autocommit=True) as conn:
            conn.execute("DELETE FROM agentfsm_conversations WHERE id = %s", (cid,))
            conn.execute(f"INSERT INTO agentfsm_conversations {columns} VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", row)

    def corrupt(self, cid: str, text: str) -> None:
        """Overwrite a stored conversation's JSON only (its summary columns stay)."""
        if self.memory is not None:
            self.memory._rows[cid] = text
        elif self.name == "sqlite":
            with closing(sqlite3.connect(self.where)) as conn, conn:
                conn.execute("UPDATE agentfsm_conversations SET snapshot = ? WHERE id = ?", (text, cid))
        else:
            import psycopg

            with psycopg.connect(self.where, autocommit=True) as conn:
                conn.execute("UPDATE agentfsm_conversations SET snapshot = %s WHERE id = %s", (text, cid))

    def close(self) -> None:
        for store in self.opened:
            store.close()


def _reset_postgres(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS agentfsm_conversations, agentfsm_leases")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        made = Backend("memory", "")
    elif request.param == "sqlite":
        made = Backend("sqlite", str(tmp_path / "agentfsm.db"))
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        _reset_postgres(dsn)
        made = Backend("postgres", dsn)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The stores several processes can share."""
    if request.param == "sqlite":
        made = Backend("sqlite", str(tmp_path / "agentfsm.db"))
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        _reset_postgres(dsn)
        made = Backend("postgres", dsn)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(autouse=True)
def fresh_scenario() -> Iterator[None]:
    sc.CALLS.clear()
    sc.RAISE_ON.clear()
    sc.LOG, sc.KILL_AT, sc.POINTS, sc.DELAY = None, None, 0, 0.0
    sc.PASSED.clear()
    yield
    sc.CALLS.clear()
    sc.RAISE_ON.clear()


@pytest.fixture(scope="module")
def baseline() -> Any:
    """The scenario run once, uninterrupted, with no store."""
    result = sc.agent().run(sc.PROMPT)
    assert result.final_state == "done"
    sc.CALLS.clear()
    return result


def _crash_on_request(n: int) -> Callable[[SimRequest], Any]:
    """The scenario's model, except that the ``n``-th request it sees raises KeyboardInterrupt (the crash)."""
    seen = 0

    def model(request: SimRequest) -> Any:
        nonlocal seen
        seen += 1
        if seen == n:
            raise KeyboardInterrupt
        return sc.model(request)

    return model


def _crashed(store: Store, n: int = 3, cid: str = sc.CONVERSATION) -> None:
    """A conversation stored mid-run: the process "died" sending its ``n``-th request."""
    with pytest.raises(KeyboardInterrupt):
        sc.agent(simulator=Simulator(_crash_on_request(n))).run(sc.PROMPT, store=store, conversation_id=cid)


def _tool_result(messages: list[dict[str, Any]], label: str) -> dict[str, Any]:
    ids = {
        b["id"]: b["input"]["label"]
        for m in messages
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_use"
    }
    return next(
        b
        for m in messages
        if m["role"] == "user" and isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_result" and ids[b["tool_use_id"]] == label
    )


# --- the protocol ------------------------------------------------------------------------------------------


def test_save_load_round_trip(backend: Backend, baseline: Any) -> None:
    store = backend.store()
    assert isinstance(store, Store)
    result = sc.agent().run(sc.PROMPT, store=store, conversation_id="round")
    snap = store.load("round")
    assert snap.conversation_id == "round" and snap.state == "done" and snap.finished
    assert snap.messages == result.messages == baseline.messages
    assert snap.usage == result.usage and snap.trace == result.trace and snap.counters.turns == result.turns
    # A save per transition, the first one, and per tool batch one as it starts plus one per call as it
    # finishes (a commit per call): the one-call batch 2, the two-call batch 3.
    assert snap.schema_version == SCHEMA_VERSION and snap.revision == len(result.trace) + 1 + 2 + 3
    again = backend.store().load("round")  # another worker reads the same
    assert again == snap
    assert Snapshot.model_validate_json(snap.model_dump_json()) == snap  # plain JSON


def test_list_summarises_every_conversation(backend: Backend) -> None:
    store = backend.store()
    sc.agent().run(sc.PROMPT, store=store, conversation_id="finished")
    _crashed(store, 4, "crashed")
    runs = {s.conversation_id: s for s in backend.store().list()}
    assert set(runs) == {"finished", "crashed"}
    assert runs["finished"].state == "done" and runs["finished"].finished and runs["finished"].turns == 7
    assert runs["crashed"].state == "requesting" and not runs["crashed"].finished and runs["crashed"].turns == 3
    assert runs["finished"].agent == "agentfsm.agent:Agent"
    assert all(s.problem is None and s.updated_at > 0 for s in runs.values())


def test_unknown_id_is_a_key_error(backend: Backend) -> None:
    store = backend.store()
    with pytest.raises(KeyError):
        store.load("nope")
    with pytest.raises(KeyError):
        sc.agent().resume("nope", store=store)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"conversation_id": "bad", "state": ', "not valid JSON"),
        ("[1, 2, 3]", "not a snapshot object"),
        ('{"conversation_id": "bad", "state": "done"}', "not a conversation snapshot"),
        ('{"schema_version": "one"}', "schema_version 'one'"),
    ],
    ids=["truncated", "array", "not-a-snapshot", "bad-version"],
)
def test_a_corrupt_row_is_a_clear_error_and_the_others_are_unaffected(
    backend: Backend, baseline: Any, text: str, says: str
) -> None:
    store = backend.store()
    _crashed(store, 1, "bad")
    _crashed(store, 4, "good")
    backend.corrupt("bad", text)
    with pytest.raises(CorruptSnapshotError) as caught:
        store.load("bad")
    assert "'bad'" in str(caught.value) and says in str(caught.value)
    assert caught.value.conversation_id == "bad"
    with pytest.raises(CorruptSnapshotError):
        sc.agent().resume("bad", store=store)
    listed = {s.conversation_id: s for s in store.list()}  # listing does not fail either
    assert listed["good"].problem is None
    assert "bad" not in listed or listed["bad"].conversation_id == "bad"
    result = sc.agent().resume("good", store=store)  # the other one carries on, unaffected
    assert result.final_state == "done" and result.messages == baseline.messages


def test_a_v1_row_is_read_back_and_resumed(backend: Backend, baseline: Any) -> None:
    """A row as agentfsm 0.1 (snapshot v1, no revision) wrote it: mid-run, both parallel tools committed."""
    text = V1_ROW.read_text()
    data = json.loads(text)
    assert data["schema_version"] == 1 and "revision" not in data
    backend.write_raw("conv_v1_row", text, state=data["state"])
    store = backend.store()
    snap = store.load("conv_v1_row")
    assert snap.schema_version == 1 and snap.state == "tool_use" and snap.revision == 0
    assert len(snap.tool_results) == 2 and snap.elapsed_s == 0.25
    result = sc.agent().resume("conv_v1_row", store=store)
    assert result.final_state == "done" and result.messages == baseline.messages
    assert sc.CALLS == []  # the committed results were used, not run again
    assert store.load("conv_v1_row").revision > 0


WAITING_ROW = Path(__file__).parent / "data" / "snapshot_waiting_0f470e7.json"


def test_a_waiting_row_written_before_the_run_state_was_declared_once_loads_and_resumes(backend: Backend) -> None:
    # Written by agentfsm at 0f470e7 (the Conversation still declared its state in five places): an approval
    # run waiting with its tool call. It loads, decides and carries on, and is saved again in the same format.
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    try:
        from approval_agent import ApprovalAgent
    finally:
        sys.path.pop(0)
    text = WAITING_ROW.read_text()
    written = json.loads(text)
    backend.write_raw(written["conversation_id"], text, state=written["state"], revision=written["revision"])
    store = backend.store()
    snap = store.load(written["conversation_id"])
    assert snap.waiting == "awaiting_approval" and snap.reply is not None
    assert snap.reply.stop_reason == "tool_use" and snap.counters.turns == 1 and snap.elapsed_s == 0.5
    sim = Simulator([r.text("Deleted.")])
    agent = ApprovalAgent(client=sim.client(), logger=None, operator=lambda names: None)
    result = agent.resume(written["conversation_id"], store=store, trigger="approve")
    assert result.final_state == "done" and result.text == "Deleted."
    answers = [b for m in result.messages if isinstance(m["content"], list) for b in m["content"]]
    assert [b["content"] for b in answers if b["type"] == "tool_result"] == ["deleted notes.txt"]
    again = json.loads(Snapshot.model_validate(store.load(written["conversation_id"])).model_dump_json())
    # the same format, plus the fields added since: what it waits for, the request it is sent with, the wait's
    # name, its graph, its message thread, the fallback chain's place and what each model answered and cost, the
    # run it was forked from
    chain = ["chain_at", "thinking_before", "turn_models", "usage_by_model", "cost_by_model"]
    added = ["pending_decision", "request", "wait_token", "graph", "thread", *chain, "forked_from"]
    assert sorted(again) == sorted([*written, *added])


def test_a_row_from_a_newer_agentfsm_is_a_clear_error(backend: Backend) -> None:
    store = backend.store()
    _crashed(store, 2, "ok")
    future = json.loads(V1_ROW.read_text()) | {"schema_version": SCHEMA_VERSION + 98, "conversation_id": "future"}
    backend.write_raw("future", json.dumps(future), version=SCHEMA_VERSION + 98)
    with pytest.raises(SnapshotVersionError) as caught:
        store.load("future")
    message = str(caught.value)
    assert "'future'" in message and "newer than this agentfsm understands" in message and "upgrade agentfsm" in message
    assert isinstance(caught.value, CorruptSnapshotError)
    listed = {s.conversation_id: s for s in store.list()}
    assert listed["future"].problem is not None and "newer than this agentfsm" in listed["future"].problem
    assert listed["ok"].problem is None and store.load("ok").state == "requesting"


def test_save_refuses_a_snapshot_that_is_not_newer(backend: Backend) -> None:
    store = backend.store()
    _crashed(store, 2)
    snap = store.load(sc.CONVERSATION)
    with pytest.raises(StaleConversationError) as caught:
        store.save(snap)
    assert isinstance(caught.value, ConversationLockedError) and "load it again" in str(caught.value)
    store.save(snap.model_copy(update={"revision": snap.revision + 1, "state": "done"}))
    assert store.load(sc.CONVERSATION).state == "done"


# --- leases ---------------------------------------------------------------------------------------------------


def test_a_lease_is_exclusive_renewable_and_released(backend: Backend) -> None:
    store, other = backend.store(), backend.store()
    assert store.acquire("c", "w1", 30)
    assert not other.acquire("c", "w2", 30)
    assert store.acquire("c", "w1", 30)  # the holder renews
    other.release("c", "w2")  # releasing what one does not hold changes nothing
    assert not other.acquire("c", "w2", 30)
    store.release("c", "w1")
    assert other.acquire("c", "w2", 30)
    assert not store.acquire("c", "w1", 30)
    assert store.acquire("d", "w1", 30)  # leases are per conversation
    other.release("c", "w2")
    store.release("d", "w1")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_lease_expires_and_renewing_extends_it(kind: str, tmp_path: Path) -> None:
    """On an injected clock (leases are read on ``clock=``), so each step is exact: no sleeping, and no
    slow machine that oversleeps and makes the check prove nothing."""
    clock = FakeClock(start=1_700_000_000.0)  # seconds since the epoch, like time.time
    if kind == "memory":
        store = other = MemoryStore(clock=clock)
    else:
        store, other = (SQLiteStore(tmp_path / "leases.db", clock=clock) for _ in range(2))
    assert store.acquire("c", "w1", 8)  # held until t=8
    clock.advance(5)
    assert store.acquire("c", "w1", 8)  # past half its time: renewed, until t=13
    clock.advance(4)  # t=9: past the first expiry
    assert not other.acquire("c", "w2", 8)  # still held: the renewal extended it
    clock.advance(3.5)  # t=12.5
    assert not other.acquire("c", "w2", 8)
    clock.advance(1)  # t=13.5: expired
    assert other.acquire("c", "w2", 30)
    assert not store.acquire("c", "w1", 30)
    for opened in (store, other):
        if isinstance(opened, SQLiteStore):
            opened.close()


@pytest.mark.slow  # a PostgreSQL server process
def test_a_postgres_lease_expires_and_renewing_extends_it_on_the_servers_clock(postgres_dsn: str) -> None:
    """PostgresStore reads lease expiry on the server's clock (so workers' clocks need not agree): the test
    moves a lease's expiry on that clock, in its row, instead of waiting for it."""
    from agentfsm.stores.postgres import PostgresStore

    _reset_postgres(postgres_dsn)
    store, other = PostgresStore(postgres_dsn), PostgresStore(postgres_dsn)

    def expire_in(seconds: float) -> None:
        with store._lock:
            store._connection().execute(
                "UPDATE agentfsm_leases SET expires_at = clock_timestamp() + make_interval(secs => %s) "
                "WHERE conversation_id = 'c'",
                (seconds,),
            )

    def left() -> float:
        with store._lock:
            row = (
                store._connection()
                .execute(
                    "SELECT extract(epoch FROM expires_at - clock_timestamp()) FROM agentfsm_leases "
                    "WHERE conversation_id = 'c'"
                )
                .fetchone()
            )
        assert row is not None
        return float(row[0])

    try:
        assert store.acquire("c", "w1", 30)
        expire_in(20)  # more than half of it left: the holder need not renew
        assert store.acquire("c", "w1", 30) and left() <= 20
        expire_in(10)  # less than half left: renewed for another 30 s
        assert store.acquire("c", "w1", 30) and 20 < left() <= 30
        assert not other.acquire("c", "w2", 30)  # held, by a live session
        expire_in(-1)  # expired
        assert other.acquire("c", "w2", 30)
        assert not store.acquire("c", "w1", 30)
    finally:
        store.close()
        other.close()


@pytest.mark.slow  # a forkserver worker
def test_a_lease_of_a_dead_process_does_not_block(shared_backend: Backend, tmp_path: Path) -> None:
    """A worker SIGKILLed while holding a long lease: its claim is free at once, not in 10 minutes."""
    ctx = sc.forkserver()
    ready = tmp_path / "ready"
    holder = ctx.Process(target=sc.hold_lease, args=(shared_backend.name, shared_backend.where, "c", str(ready)))
    holder.start()
    deadline = time.monotonic() + 30
    while not ready.exists() and holder.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ready.exists(), "the holder process never took its lease"
    store = shared_backend.store()
    assert not store.acquire("c", "w2", 30)  # its holder is alive: respected
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    assert sc.exit_code(holder, tmp_path / "no-report") == -signal.SIGKILL
    deadline = time.monotonic() + 10  # PostgreSQL notices the closed connection within moments
    while not store.acquire("c", "w2", 30):
        assert time.monotonic() < deadline, "the dead process's lease still blocks"
        time.sleep(0.05)


# --- crash and resume through the agent ---------------------------------------------------------------------


@pytest.mark.parametrize("request_n", [1, 3, 5, 7])
def test_crash_while_requesting_then_resume(backend: Backend, baseline: Any, request_n: int) -> None:
    store = backend.store()
    _crashed(store, request_n)
    sim = Simulator(sc.model)
    result = sc.agent(simulator=sim).resume(sc.CONVERSATION, store=backend.store())
    assert result.final_state == "done" and result.text == baseline.text
    assert result.messages == baseline.messages
    assert sorted(sc.CALLS) == ["a", "b", "c"]  # each tool ran once, before or after the crash
    assert any(e.event == "run.resumed" for e in result.events)


def test_an_interrupted_tool_is_not_run_again_unless_idempotent(backend: Backend, baseline: Any) -> None:
    store = backend.store()
    sc.RAISE_ON.add("a")  # the process dies inside count("a"), after its effect
    with pytest.raises(KeyboardInterrupt):
        sc.agent().run(sc.PROMPT, store=store, conversation_id=sc.CONVERSATION)
    snap = store.load(sc.CONVERSATION)
    assert snap.state == "tool_use" and len(snap.tools_started) == 1 and not snap.tool_results
    sc.RAISE_ON.clear()
    result = sc.agent().resume(sc.CONVERSATION, store=store)
    assert result.final_state == "done"
    assert sorted(sc.CALLS) == ["a", "b", "c"]  # "a" ran once, before the crash
    answer = _tool_result(result.messages, "a")
    assert answer["is_error"] is True and sc.INTERRUPTED in answer["content"]
    assert "not marked idempotent" in answer["content"]
    assert [e for e in result.events if e.event == "tool.interrupted"]
    assert _tool_result(result.messages, "b") == _tool_result(baseline.messages, "b")  # the model read it; run on


def test_an_interrupted_idempotent_tool_is_run_again(backend: Backend, baseline: Any) -> None:
    store = backend.store()
    sc.RAISE_ON.add("a")
    with pytest.raises(KeyboardInterrupt):
        sc.agent(idempotent=True).run(sc.PROMPT, store=store, conversation_id=sc.CONVERSATION)
    sc.RAISE_ON.clear()
    result = sc.agent(idempotent=True).resume(sc.CONVERSATION, store=store)
    assert result.final_state == "done" and result.messages == baseline.messages
    assert sorted(sc.CALLS) == ["a", "a", "b", "c"]


class _CrashAfterCommit:
    """A store that "dies" right after committing a batch of tool results, before the transition that uses them."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def save(self, snapshot: Snapshot) -> None:
        self.inner.save(snapshot)
        if len(snapshot.tool_results) == 2:
            raise KeyboardInterrupt

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_committed_tool_results_are_not_run_again(backend: Backend, baseline: Any) -> None:
    store = backend.store()
    with pytest.raises(KeyboardInterrupt):
        sc.agent().run(sc.PROMPT, store=_CrashAfterCommit(store), conversation_id=sc.CONVERSATION)  # type: ignore[arg-type]
    assert sorted(sc.CALLS) == ["a", "b", "c"]
    snap = store.load(sc.CONVERSATION)
    assert snap.state == "tool_use" and len(snap.tool_results) == 2 and not snap.tools_started
    result = sc.agent().resume(sc.CONVERSATION, store=store)
    assert result.final_state == "done" and result.messages == baseline.messages
    assert sorted(sc.CALLS) == ["a", "b", "c"]  # not one more


def test_resuming_a_finished_conversation_returns_its_result(backend: Backend, baseline: Any) -> None:
    store = backend.store()
    first = sc.agent().run(sc.PROMPT, store=store, conversation_id=sc.CONVERSATION)
    sim = Simulator(sc.model)
    again = sc.agent(simulator=sim).resume(sc.CONVERSATION, store=backend.store())
    assert sim.requests == []
    assert again.final_state == first.final_state == "done"
    assert again.text == first.text and again.messages == first.messages and again.usage == first.usage
    assert again.trace == first.trace and again.turns == first.turns and again.reason == first.reason


def test_aresume_carries_on_with_an_async_client(backend: Backend, baseline: Any) -> None:
    store = backend.store()
    _crashed(store, 4)
    agent = Agent(
        client=Simulator(sc.model).async_client(max_retries=0),
        tools=[sc.counter(), sc.WEB_SEARCH],
        policy=sc.POLICY,
        logger=None,
    )
    result = asyncio.run(agent.aresume(sc.CONVERSATION, store=store))
    assert result.final_state == "done" and result.messages == baseline.messages


def test_a_run_through_stream_releases_its_lease(backend: Backend) -> None:
    store = backend.store()
    events = list(sc.agent().stream(sc.PROMPT, store=store, conversation_id=sc.CONVERSATION))
    assert events[-1].result.final_state == "done"  # type: ignore[union-attr]
    assert backend.store().acquire(sc.CONVERSATION, "someone-else", 30)


def test_a_second_worker_cannot_advance_a_conversation_being_advanced(backend: Backend, baseline: Any) -> None:
    _crashed(backend.store(), 2)
    first = sc.agent().load(sc.CONVERSATION, store=backend.store())
    second = sc.agent().load(sc.CONVERSATION, store=backend.store())
    first.step()  # takes the lease
    with pytest.raises(ConversationLockedError) as caught:
        second.step()
    assert "another worker" in str(caught.value)
    assert first.run().messages == baseline.messages
    # Now free, but the second worker holds a stale copy: it must not fork the history.
    with pytest.raises(StaleConversationError):
        second.run()
    assert backend.store().load(sc.CONVERSATION).messages == baseline.messages
    assert sorted(sc.CALLS) == ["a", "b", "c"]


@pytest.mark.slow  # forkserver workers
def test_two_processes_resume_the_same_conversation_at_once(shared_backend: Backend, tmp_path: Path) -> None:
    """Two workers race to resume one stored conversation: one advances it, the other is refused."""
    store = shared_backend.store()
    _crashed(store, 2)
    ctx = sc.forkserver()
    barrier = ctx.Barrier(2)
    log = tmp_path / "tool.log"
    outs = [tmp_path / f"worker{i}.json" for i in range(2)]
    workers = [
        ctx.Process(
            target=sc.worker,
            args=(shared_backend.name, shared_backend.where, str(log), str(out)),
            kwargs={"barrier": barrier, "delay": 0.3},
        )
        for out in outs
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [sc.exit_code(w, out) for w, out in zip(workers, outs, strict=True)] == [0, 0]
    reports = [json.loads(out.read_text()) for out in outs]
    advanced = [rep for rep in reports if rep["outcome"] == "done" and rep["advanced"]]
    assert len(advanced) == 1, reports  # exactly one advanced it ...
    other = next(rep for rep in reports if rep is not advanced[0])
    if other["outcome"] == "locked":  # ... the other was refused (or, very late, found it finished)
        assert "ConversationLockedError" in other["error"] or "StaleConversationError" in other["error"]
    else:
        assert other["outcome"] == "done" and not other["advanced"]
    assert all(not rep["problems"] for rep in reports)
    assert sorted(label for label, _ in sc.logged(log)) == ["a", "b", "c"]  # every tool ran once, by one worker
    final = shared_backend.store().load(sc.CONVERSATION)
    assert final.state == "done"
    assert final.messages == advanced[0]["messages"]
    assert final.messages == sc.agent().run(sc.PROMPT).messages  # a single consistent run


# --- what a store says when it cannot work --------------------------------------------------------------------


def test_sqlite_store_on_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database " * 100)
    with pytest.raises(StoreError) as caught:
        SQLiteStore(path)
    assert "notes.txt" in str(caught.value) and "not an agentfsm store" in str(caught.value)


def test_sqlite_store_made_by_a_newer_agentfsm(tmp_path: Path) -> None:
    path = tmp_path / "agentfsm.db"
    SQLiteStore(path).close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError) as caught:
        SQLiteStore(path)
    assert "newer than this agentfsm" in str(caught.value)


def test_postgres_store_without_a_server_is_a_clear_error() -> None:
    pytest.importorskip("psycopg")
    from agentfsm.stores.postgres import PostgresStore

    store = PostgresStore("host=127.0.0.1 port=1 user=nobody password=hunter2 connect_timeout=2")
    with pytest.raises(StoreError) as caught:
        store.load("x")
    assert str(caught.value).startswith("PostgreSQL store: ") and "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(store)


def test_postgres_store_without_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from agentfsm.errors import ConfigurationError
    from agentfsm.stores.postgres import PostgresStore

    real_import = builtins.__import__

    def no_psycopg(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "psycopg" or name.startswith("psycopg."):
            raise ImportError("No module named 'psycopg'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psycopg)
    with pytest.raises(ConfigurationError) as caught:
        PostgresStore("dbname=x")
    assert "pip install 'agentfsm[postgres]'" in str(caught.value)


def test_policy_lease_seconds_is_what_a_conversation_asks_for(tmp_path: Path) -> None:
    clock = FakeClock(start=time.time())
    store = SQLiteStore(tmp_path / "agentfsm.db", clock=clock)
    sim = Simulator([r.text("Hi.")])
    agent = Agent(client=sim.client(), policy=Policy(lease_seconds=0.6), logger=None)
    conv = agent.start("Hello", conversation_id="c", store=store)
    conv.step()  # took the lease (for 0.6 s), and still holds it: step() does not release
    clock.advance(0.55)
    assert not store.acquire("c", "other", 30)
    clock.advance(0.1)
    assert store.acquire("c", "other", 30)
    store.close()
