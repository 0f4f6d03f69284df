"""``BatchRunner``: many conversations through the Message Batches API on the simulator, via the real client.

The model is a pure function of the request (tool ids come from the conversation's
own text), so the same conversation gets the same replies whether it runs through
``Agent.run`` or in a batch — which is what lets the histories be compared exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agentfsm import Agent, Policy, tool
from agentfsm.batch import (
    BatchProgress,
    BatchRecord,
    BatchRunner,
    Entry,
    MemoryLedger,
    ProgressDisplay,
    SQLiteLedger,
    custom_id,
    ledger_for,
)
from agentfsm.cli import EXIT_NOT_DONE, main
from agentfsm.errors import BatchError, ConfigurationError
from agentfsm.machine.table import REQUESTING
from agentfsm.observe.events import EVENT_NAMES
from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.memory import MemoryStore
from agentfsm.stores.sqlite import SQLiteStore
from agentfsm.wire.usage import Usage

ROOT = Path(__file__).resolve().parent.parent

# --- the scenario: a tool loop of up to three turns ----------------------------------------------------------


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


def prompt_of(request: SimRequest) -> str:
    """The conversation's first user text (a resent request carries it as a block with a cache mark)."""
    content = request.messages[0]["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


def _tool_id(request: SimRequest, turn: int) -> str:
    seed = f"{prompt_of(request)}:{turn}"
    return "toolu_01" + hashlib.sha256(seed.encode()).hexdigest()[:22]


def turns_of(prompt: str) -> int:
    """How many requests the conversation takes: ``"... /N"`` asks for N (1-3), else 3."""
    tail = prompt.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 3


def model(request: SimRequest) -> Any:
    """Turn 1 and 2 call ``lookup``; the last turn answers."""
    prompt = prompt_of(request)
    turn = (len(request.messages) + 1) // 2
    if turn < turns_of(prompt):
        return r.message(
            [
                r.text_block(f"step {turn}"),
                r.tool_use_block("lookup", {"key": f"{prompt}#{turn}"}, id=_tool_id(request, turn)),
            ],
            "tool_use",
        )
    return r.text(f"answer to {prompt}")


class Looker(Agent):
    model = "claude-haiku-4-5"
    system = "Look things up."
    tools = [lookup]
    policy = Policy(max_tokens=256)


def agent(sim: Simulator, **kwargs: Any) -> Looker:
    return Looker(client=sim.client(max_retries=0), logger=None, **kwargs)


def runner(sim: Simulator, **kwargs: Any) -> BatchRunner:
    agent_kwargs = {k: kwargs.pop(k) for k in ("policy", "betas") if k in kwargs}
    kwargs.setdefault("poll_interval", 0)
    return BatchRunner(agent(sim, **agent_kwargs), **kwargs)


def inner_requests(sim: Simulator) -> list[SimRequest]:
    return [q for q in sim.requests if q.batch_id is not None]


# --- the acceptance test ----------------------------------------------------------------------------------------


@pytest.mark.slow  # 500 conversations: a scale test (~25 s)
def test_500_conversations_end_as_run_would_and_take_one_batch_per_turn() -> None:
    prompts = {f"t{i}": f"ticket {i}" + ("/1" if i % 5 == 0 else "/2" if i % 7 == 0 else "") for i in range(500)}
    sim = Simulator(model, batch_polls=2)
    results = runner(sim).run(prompts)

    # The reference runs take the plain path, which the rest of the suite checks request by request; only the
    # batched requests above are new, so the suite-wide per-request checks (a JSON Schema validation each)
    # are left out for these 500 reference runs, which would otherwise double this test's time.
    saved, Simulator.observers[:] = list(Simulator.observers), []
    try:
        plain = agent(Simulator(model))
        references = {cid: plain.run(prompt) for cid, prompt in prompts.items()}
    finally:
        Simulator.observers[:] = saved
    for cid, expected in references.items():
        got = results[cid]
        assert got.messages == expected.messages, cid
        assert (got.final_state, got.text, got.turns, got.trace) == (
            expected.final_state,
            expected.text,
            expected.turns,
            expected.trace,
        )
        assert got.batched and not expected.batched
        assert got.usage == expected.usage
        assert got.cost_usd == pytest.approx(expected.cost_usd / 2)  # type: ignore[operator]
    # One batch per turn of the longest conversation, not one per request; later batches are smaller.
    batches = list(sim.batches.batches.values())
    assert len(batches) == 3
    assert [len(b.requests) for b in batches] == [500, 500 - 100, 500 - 100 - 57]
    assert sim.batches.billed["requests"] == sum(r.turns for r in results.values())
    assert sum(r.cost_usd for r in results.values()) == pytest.approx(sim.batches.billed_usd())  # type: ignore[misc]


def test_a_list_of_prompts_gives_results_in_order_and_run_finished_says_batched() -> None:
    sim = Simulator(model)
    results = runner(sim).run(["a/1", "b/2", "c/1"], run_id="nightly")
    assert [r.conversation_id for r in results] == ["nightly-0", "nightly-1", "nightly-2"]
    assert [r.text for r in results] == ["answer to a/1", "answer to b/2", "answer to c/1"]
    finished = [e for e in results[1].events if e.event == "run.finished"]
    assert finished[0].data["batched"] is True and finished[0].data["cost_usd"] == results[1].cost_usd
    added = [e.data for e in results[1].events if e.event == "batch.request_added"]
    assert [d["custom_id"] for d in added] == ["nightly-1-t1-r1-a1", "nightly-1-t2-r5-a1"]
    assert {e.event for r in results for e in r.events} <= set(EVENT_NAMES)


def test_the_progress_adds_up_every_usage_field_of_every_conversation() -> None:
    # Usage adds up field by field on Usage itself (it used to be added here by hand, without the compaction
    # fields): here a compaction pass on one reply must reach the run's totals.
    def compacting(request: SimRequest) -> Any:
        reply = model(request)
        if request.messages[0]["content"] == "b/1":
            passes = [
                {"type": "compaction", "input_tokens": 40, "output_tokens": 7},
                {"type": "message", "input_tokens": 3},
            ]
            reply = reply.model_copy(update={"usage": {"iterations": passes}})
        return reply

    sim = Simulator(compacting)
    batch = runner(sim)
    results = batch.run(["a/1", "b/1"])
    assert batch.last_progress is not None
    total = batch.last_progress.usage
    assert total == sum((res.usage for res in results), Usage())
    assert total.compaction_input_tokens == 40 and total.compaction_output_tokens == 7


def test_usages_add_up_field_by_field() -> None:
    one = Usage(input_tokens=1, output_tokens=2, requests=1, compaction_input_tokens=5, compaction_output_tokens=6)
    two = Usage(cache_read_input_tokens=3, cache_creation_input_tokens=4, requests=2, compaction_output_tokens=1)
    assert one + two == Usage(
        input_tokens=1,
        output_tokens=2,
        cache_read_input_tokens=3,
        cache_creation_input_tokens=4,
        requests=3,
        compaction_input_tokens=5,
        compaction_output_tokens=7,
    )
    assert sum([one, two]) == one + two and one.requests == 1  # the operands are unchanged


def test_batches_split_at_the_request_and_byte_limits() -> None:
    sim = Simulator(model)
    results = runner(sim, max_batch_requests=4).run({f"c{i}": f"q{i}/1" for i in range(10)})
    assert all(r.ok for r in results.values())
    assert [len(b.requests) for b in sim.batches.batches.values()] == [4, 4, 2]
    sim = Simulator(model)
    size = len(json.dumps(inner_body("q0/1"))) + 100  # about one request's bytes
    runner(sim, max_batch_bytes=2 * size + 64).run({f"c{i}": f"q{i}/1" for i in range(5)})
    assert [len(b.requests) for b in sim.batches.batches.values()] == [2, 2, 1]


def inner_body(prompt: str) -> dict[str, Any]:
    sim = Simulator(model)
    runner(sim).run({"probe": prompt})
    return {"custom_id": "probe-t1-r2-a1", "params": inner_requests(sim)[0].body}


# --- errored, expired, canceled -------------------------------------------------------------------------------


def scripted(failures: dict[tuple[str, int], list[Any]]) -> Any:
    """``model``, except that the request of (prompt, turn) is answered by the listed items first, in order."""

    def answer(request: SimRequest) -> Any:
        key = (prompt_of(request), (len(request.messages) + 1) // 2)
        queue = failures.get(key)
        if queue:
            return queue.pop(0)
        return model(request)

    return answer


def test_a_retryable_error_goes_into_the_next_batch_and_the_conversation_carries_on() -> None:
    sim = Simulator(scripted({("b", 2): [r.overloaded(), r.rate_limited()], ("c", 1): [r.server_error()]}))
    results = runner(sim).run({"a": "a", "b": "b", "c": "c"})
    plain = agent(Simulator(model))
    for cid in "abc":
        assert results[cid].ok and results[cid].messages == plain.run(cid).messages
    resent = [e.data for e in results["b"].events if e.event == "batch.request_resent"]
    assert resent == [{"reason": "overloaded_error", "attempt": 2}, {"reason": "rate_limit_error", "attempt": 3}]
    assert results["b"].turns == 5  # every resend is a request: max_turns bounds them too
    assert len(sim.batches.batches) == 5  # b's turn 2 needed three batches


def test_retryable_errors_beyond_the_policy_fail_the_conversation_and_no_other() -> None:
    sim = Simulator(scripted({("b", 1): [r.overloaded()] * 3}))
    results = runner(sim, policy=Policy(max_tokens=256, stream_retries=2)).run({"a": "a", "b": "b"})
    assert results["a"].ok
    b = results["b"]
    assert b.final_state == "failed" and b.error is not None
    assert (b.error.type, b.error.status_code, b.error.message) == ("overloaded_error", 529, "Overloaded")
    assert [e.data["reason"] for e in b.events if e.event == "batch.request_resent"] == ["overloaded_error"] * 2


def test_a_non_retryable_error_fails_that_conversation_at_once() -> None:
    sim = Simulator(scripted({("b", 2): [r.prompt_too_long()]}))
    results = runner(sim).run({"a": "a", "b": "b", "c": "c/1"})
    assert results["a"].ok and results["c"].ok
    b = results["b"]
    assert b.final_state == "failed" and b.error is not None and b.error.status_code == 400
    assert "prompt is too long" in b.error.message
    applied = [e.data for e in b.events if e.event == "batch.result_applied"]
    assert applied[-1]["result"] == "errored" and applied[-1]["error_type"] == "invalid_request_error"


def test_max_turns_bounds_resends() -> None:
    sim = Simulator(scripted({("b", 1): [r.overloaded()] * 5}))
    results = runner(sim, policy=Policy(max_tokens=256, max_turns=2, stream_retries=10)).run({"b": "b"})
    assert results["b"].final_state == "truncated" and results["b"].reason == "max_turns"


@pytest.mark.parametrize("kind", ["expired", "canceled"])
def test_an_expired_or_canceled_request_is_resent_once_then_fails(kind: str) -> None:
    lapse = r.batch_expired() if kind == "expired" else r.batch_canceled()
    sim = Simulator(scripted({("once", 2): [lapse], ("twice", 1): [lapse, lapse]}))
    results = runner(sim).run({"once": "once", "twice": "twice", "fine": "fine/2"})
    assert results["once"].ok and results["once"].messages == agent(Simulator(model)).run("once").messages
    assert results["fine"].ok
    twice = results["twice"]
    assert twice.final_state == "failed" and twice.error is not None and twice.error.type == f"batch_{kind}"
    assert f"was {kind} in Message Batch" in twice.error.message
    assert [e.data["reason"] for e in twice.events if e.event == "batch.request_resent"] == [kind]


def test_a_whole_batch_canceled_from_outside_is_resent_once() -> None:
    sim = Simulator(model, batch_polls=2)
    client = sim.client(max_retries=0)
    canceled: list[str] = []

    def cancel_first(progress: BatchProgress) -> None:
        if progress.batches and not canceled:
            canceled.append(progress.batches[0].batch_id)
            client.messages.batches.cancel(canceled[0])

    results = runner(sim, progress=cancel_first).run({"a": "a/1", "b": "b/2"})
    assert all(r.ok for r in results.values())
    first = sim.batches.batches[canceled[0]]
    assert set(first.result_types().values()) == {"canceled"}
    assert len(sim.batches.batches) == 3  # the canceled one, its resend, b's turn 2


def test_a_batch_the_api_refuses_fails_its_conversations_with_the_error() -> None:
    sim = Simulator(model)

    def refuse(request: SimRequest) -> None:
        if request.path == "/v1/messages/batches" and request.method == "POST":
            raise ValueError("this batch is refused")  # the loopback server answers 400 with this

    Simulator.observers.append(refuse)
    try:
        with sim.serve() as url:
            import anthropic

            client = anthropic.Anthropic(base_url=url, api_key="sk-ant-test-0000", max_retries=0)
            store = MemoryStore()
            results = BatchRunner(Looker(client=client, logger=None), store=store, poll_interval=0).run({"a": "a"})
            client.close()
    finally:
        Simulator.observers.remove(refuse)
    a = results["a"]
    assert a.final_state == "failed" and a.error is not None and a.error.status_code == 400
    assert "this batch is refused" in a.error.message
    assert ledger_for(store).records() == []  # refused: no batch exists, nothing to resume


def test_custom_ids_keep_the_api_pattern_for_any_conversation_id() -> None:
    assert custom_id("ticket-7", 2, 5, 1) == "ticket-7-t2-r5-a1"
    for cid in ("x" * 80, "with space", "ünïcode", "a/b"):
        made = custom_id(cid, 12345, 99999, 9)
        assert made.startswith("h") and len(made) <= 64
        assert all(c.isascii() and (c.isalnum() or c in "-_") for c in made)
    assert custom_id("a/b", 1, 1, 1) != custom_id("a/c", 1, 1, 1)
    sim = Simulator(model)
    assert runner(sim).run({"x" * 80: "long/1"})["x" * 80].ok


def test_a_rejected_prefill_in_a_batch_falls_back_as_run_does() -> None:
    from agentfsm.sim.replies import writer

    document = "The batch continued this text across replies that max_tokens cut, as run() would. " * 3
    prompt = "Write it."
    sim = Simulator(writer(document), prefill_unsupported=["claude-haiku"])
    plain_sim = Simulator(writer(document), prefill_unsupported=["claude-haiku"])
    policy = Policy(max_tokens=16, max_continuations=30)
    results = runner(sim, policy=policy).run({"w": prompt})
    expected = agent(plain_sim, policy=policy).run(prompt)
    assert results["w"].messages == expected.messages and results["w"].final_state == expected.final_state
    assert any(e.event == "continuation.fallback" for e in results["w"].events)


def test_budgets_apply_per_conversation_at_batch_prices() -> None:
    free = runner(Simulator(model)).run({"a": "a"})["a"]
    assert free.ok and free.cost_usd is not None
    # A budget just under what the conversation costs batched: every conversation (each its own
    # budget) gets all three requests; priced at list prices, the same budget stops the third.
    policy = Policy(max_tokens=256, max_cost_usd=free.cost_usd * 0.99)
    results = runner(Simulator(model), policy=policy).run({"a": "a", "b": "b"})
    assert results["a"].ok and results["b"].ok
    plain = agent(Simulator(model), policy=policy).run("a")
    assert plain.final_state == "truncated" and plain.reason == "max_cost_usd" and plain.turns == 2
    tight = Policy(max_tokens=256, max_cost_usd=free.cost_usd * 0.3)
    stopped = runner(Simulator(model), policy=tight).run({"a": "a", "c": "c/1"})
    assert stopped["a"].final_state == "truncated" and stopped["a"].reason == "max_cost_usd"
    assert stopped["c"].ok


# --- conversations that fail on their own ------------------------------------------------------------------------


class Grumpy(Looker):
    def on_tool_use(self, conv: Any) -> str | None:
        if conv.messages[0]["content"] == "boom":  # the history as stored: the prompt string
            raise RuntimeError("the hook of boom raised")
        return None


def test_a_conversation_whose_hook_raises_stops_and_the_others_finish() -> None:
    sim = Simulator(model)
    batch = BatchRunner(Grumpy(client=sim.client(max_retries=0), logger=None), poll_interval=0)
    results = batch.run({"ok": "fine", "boom": "boom"})
    assert results["ok"].ok
    boom = results["boom"]
    assert boom.final_state == "tool_use" and boom.error is not None
    assert (boom.error.type, boom.error.message) == ("RuntimeError", "the hook of boom raised")
    assert [e.event for e in boom.events][-1] == "batch.conversation_error"


def test_a_conversation_locked_by_a_live_worker_is_left_to_it() -> None:
    store = MemoryStore()
    sim = Simulator(model)
    first = runner(sim, store=store)
    first.agent.start("held", conversation_id="held", store=store)
    assert store.acquire("held", "another-worker", 600)
    results = runner(sim, store=store).run({"held": "held", "free": "free/1"})
    assert results["free"].ok
    assert results["held"].final_state == REQUESTING and results["held"].error is not None
    assert results["held"].error.type == "ConversationLockedError"
    assert all(prompt_of(q) != "held" for q in inner_requests(sim))


# --- resume in one process (the SIGKILL suite is tests/test_batch_kill.py) ------------------------------------------


class Crash(BaseException):
    """Stands for the process dying at a chosen moment."""


def test_a_runner_stopped_while_a_batch_is_in_flight_resumes_by_polling_it() -> None:
    store = MemoryStore()
    sim = Simulator(model, batch_polls=3)
    polls: list[int] = []

    def die_on_second_batch(progress: BatchProgress) -> None:
        if progress.batches_submitted == 2 and progress.batches and progress.batches[0].processing_status:
            polls.append(1)
            if len(polls) == 2:
                raise Crash

    with pytest.raises(Crash):
        runner(sim, store=store, progress=die_on_second_batch).run({f"c{i}": f"q{i}" for i in range(6)})
    assert len(sim.batches.batches) == 2
    resumed = runner(sim, store=store)
    results = resumed.run({f"c{i}": f"q{i}" for i in range(6)})
    plain = agent(Simulator(model))
    for i in range(6):
        expected = plain.run(f"q{i}")
        assert results[f"c{i}"].messages == expected.messages and results[f"c{i}"].turns == expected.turns
    assert len(sim.batches.batches) == 3  # the second batch was polled again, not sent again
    assert next(e.event for e in resumed.events if e.event.startswith("batch.")) == "batch.resumed"
    assert_no_turn_sent_twice(sim)


def assert_no_turn_sent_twice(sim: Simulator) -> None:
    """Every (conversation, point in it) was in exactly one batch created (polled or not: the API runs it)."""
    seen = Counter(
        (prompt_of(SimRequest(n=0, body=params)), len(params["messages"]))
        for batch in sim.batches.batches.values()
        for _, params in batch.requests
    )
    twice = {k: n for k, n in seen.items() if n > 1}
    assert not twice, f"requests sent in more than one batch: {twice}"


class CrashingStore:
    """A store that "dies" (raises ``Crash``) just before its ``n``-th save of a reply's transition into ``state``."""

    def __init__(self, inner: MemoryStore, state: str, n: int) -> None:
        self.inner, self.state, self.n = inner, state, n

    def save(self, snapshot: Any) -> None:
        if snapshot.state == self.state and not snapshot.tools_started and not snapshot.tool_results:
            self.n -= 1
            if self.n == 0:
                raise Crash
        self.inner.save(snapshot)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_results_partly_applied_before_a_crash_are_not_applied_again() -> None:
    store, ledger = MemoryStore(), MemoryLedger()
    sim = Simulator(model)
    calls: list[str] = []

    @tool
    def lookup(key: str) -> str:  # the same tool, counting its runs
        """Look a key up."""
        calls.append(key)
        return f"value of {key}"

    def make(store: Any) -> BatchRunner:
        looker = Looker(client=sim.client(max_retries=0), logger=None, tools=[lookup])
        return BatchRunner(looker, store=store, ledger=ledger, poll_interval=0)

    prompts = {f"c{i}": f"q{i}" for i in range(5)}
    with pytest.raises(Crash):  # dies applying batch 2's third result: two applied and saved, none settled
        make(CrashingStore(store, "tool_use", 5 + 3)).run(prompts)
    (record,) = ledger.open_batches()
    assert len(record.unsettled) == 5
    results = make(store).run(prompts)
    plain = agent(Simulator(model))
    for i in range(5):
        assert results[f"c{i}"].messages == plain.run(f"q{i}").messages
    assert_no_turn_sent_twice(sim)
    # Batch 2 was polled again, not sent again; the two conversations it had already moved on sent their
    # turn 3 at once (batch 3), the other three once batch 2's results were applied (batch 4).
    assert [len(b.requests) for b in sim.batches.batches.values()] == [5, 5, 2, 3]
    assert sorted(calls) == sorted(f"q{i}#{t}" for i in range(5) for t in (1, 2))  # every tool ran once
    assert ledger.open_batches() == [] and {e.outcome for r in ledger.records() for e in r.entries.values()} == {
        "succeeded",
        "stale",
    }


def test_a_batch_created_by_a_process_that_died_before_storing_its_id_is_adopted(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    sim = Simulator(model)
    agent_ = agent(sim)
    conv = agent_.start("orphan/1", conversation_id="o", store=store)
    params = conv.pending.params  # type: ignore[union-attr]
    entry = Entry(
        custom_id=custom_id("o", 1, conv.runstate.revision, 1),
        conversation_id="o",
        revision=conv.runstate.revision,
        turn=1,
    )
    ledger = SQLiteLedger(tmp_path / "runs.db")
    ledger.begin(BatchRecord(key="k1", batch_id=None, created_at=time.time(), entries={entry.custom_id: entry}))
    sim.client(max_retries=0).messages.batches.create(requests=[{"custom_id": entry.custom_id, "params": params}])
    conv.release()
    batch = BatchRunner(agent_, store=store, poll_interval=0)
    result = batch.run({"o": "orphan/1"})["o"]
    assert result.ok and result.turns == 1
    assert len(sim.batches.batches) == 1  # adopted, not sent again
    assert [e.event for e in batch.events][:2] == ["batch.adopted", "batch.resumed"]


def test_a_record_whose_batch_never_reached_the_api_is_dropped_and_its_requests_made_again() -> None:
    store = MemoryStore()
    sim = Simulator(model)
    conv = agent(sim).start("lost/1", conversation_id="l", store=store)
    entry = Entry(custom_id="l-t1-r1-a1", conversation_id="l", revision=conv.runstate.revision, turn=1)
    ledger_for(store).begin(
        BatchRecord(key="k", batch_id=None, created_at=time.time(), entries={entry.custom_id: entry})
    )
    conv.release()
    results = runner(sim, store=store).run({"l": "lost/1"})
    assert results["l"].ok and len(sim.batches.batches) == 1
    assert ledger_for(store).open_batches() == []


def test_finished_conversations_are_reported_not_run_again() -> None:
    store = MemoryStore()
    sim = Simulator(model)
    first = runner(sim, store=store).run({"a": "a/2"})
    again = runner(sim, store=store).run({"a": "ignored now"})
    assert again["a"].messages == first["a"].messages and len(sim.batches.batches) == 2


# --- the SDK failing ------------------------------------------------------------------------------------------------


def test_an_unreachable_api_is_one_clear_error_and_nothing_is_lost(tmp_path: Path) -> None:
    import anthropic

    store = MemoryStore()
    dead = anthropic.Anthropic(base_url="http://127.0.0.1:9", api_key="sk-ant-test-0", max_retries=0)
    batch = BatchRunner(Looker(client=dead, logger=None), store=store, poll_interval=0, submit_retries=1)
    with pytest.raises(BatchError, match="creating a Message Batch of 1 requests failed: APIConnectionError"):
        batch.run({"a": "a"})
    (record,) = ledger_for(store).open_batches()  # kept: a rerun looks for the batch, then sends it
    assert record.batch_id is None
    sim = Simulator(model)
    assert runner(sim, store=store).run({"a": "a"})["a"].ok


def test_a_create_that_timed_out_after_the_api_made_the_batch_is_not_sent_twice() -> None:
    """The SDK's own retries would send the create again; the runner looks for the batch first, and adopts it."""
    import anthropic

    sim = Simulator(model)
    slow: list[str] = []

    def slow_first_create(request: SimRequest) -> None:
        if request.path == "/v1/messages/batches" and request.method == "POST" and not slow:
            slow.append("slept")
            time.sleep(0.4)  # longer than the client's timeout: the client gives up, the batch is made anyway

    Simulator.observers.append(slow_first_create)
    try:
        with sim.serve() as url:
            client = anthropic.Anthropic(base_url=url, api_key="sk-ant-test-0000", timeout=0.2, max_retries=2)
            batch = BatchRunner(Looker(client=client, logger=None), poll_interval=0.5)
            results = batch.run({"a": "a/1", "b": "b/1"})
            client.close()
    finally:
        Simulator.observers.remove(slow_first_create)
    assert all(r.ok for r in results.values())
    assert len(sim.batches.batches) == 1
    assert "batch.adopted" in [e.event for e in batch.events]


def test_configuration_errors() -> None:
    sim = Simulator(model)
    with pytest.raises(ConfigurationError, match="many prompts"):
        runner(sim).run("one prompt")
    with pytest.raises(ConfigurationError, match="poll_interval"):
        runner(sim, poll_interval=-1)
    with pytest.raises(ConfigurationError, match="max_batch_requests"):
        runner(sim, max_batch_requests=100_001)

    class Odd:
        pass

    with pytest.raises(ConfigurationError, match="pass one"):
        runner(sim, store=Odd())


# --- the ledger on every store ------------------------------------------------------------------------------------


def test_the_ledger_round_trips_on_sqlite_and_memory(tmp_path: Path) -> None:
    for ledger in (MemoryLedger(), SQLiteLedger(tmp_path / "l.db")):
        entries = {f"c{i}": Entry(f"c{i}", f"conv{i}", revision=i, turn=1) for i in range(3)}
        ledger.begin(BatchRecord("k", None, 5.0, beta=True, entries=entries))
        ledger.submitted("k", "msgbatch_1")
        ledger.settle("k", {"c0": "succeeded", "c1": "stale"})
        (open_,) = ledger.open_batches()
        assert (open_.batch_id, open_.beta, [e.custom_id for e in open_.unsettled]) == ("msgbatch_1", True, ["c2"])
        assert {e.outcome for e in ledger.entries_for(["conv0", "conv2"])} == {"succeeded", None}
        ledger.settle("k", {"c2": "errored:overloaded_error"})
        ledger.finish("k")
        assert ledger.open_batches() == [] and ledger.batch_ids() == {"msgbatch_1"}
        assert len(ledger.records()) == 1
        ledger.begin(BatchRecord("gone", None, 6.0, entries={"x": Entry("x", "conv9", 1, 1)}))
        ledger.abandon("gone")
        assert [r.key for r in ledger.records()] == ["k"]


@pytest.mark.slow  # a PostgreSQL server process
def test_the_ledger_on_postgres(postgres_database: str) -> None:
    from agentfsm.stores.postgres import PostgresStore

    store = PostgresStore(postgres_database)
    sim = Simulator(model)
    results = runner(sim, store=store).run({f"p{i}": f"q{i}/2" for i in range(3)})
    assert all(r.ok for r in results.values())
    ledger = ledger_for(store)
    assert len(ledger.records()) == 2 and ledger.open_batches() == []
    assert {e.outcome for e in ledger.entries_for(["p0", "p1", "p2"])} == {"succeeded"}
    store.close()


# --- progress and the command line ----------------------------------------------------------------------------------


def test_progress_is_redrawn_on_a_terminal_and_plain_lines_elsewhere() -> None:
    for tty in (True, False):
        out = io.StringIO()
        sim = Simulator(model, batch_polls=2)
        runner(sim, progress=ProgressDisplay(out, tty=tty)).run({"a": "a/2", "b": "b/1"})
        text = out.getvalue()
        assert "conversations 2: done 2" in text and "(finished)" in text and "requests succeeded 3" in text
        assert ("\x1b[5F\x1b[J" in text) is tty
        if not tty:
            lines = text.splitlines()
            assert all(" | batches submitted " in line for line in lines) and len(lines) == len(set(lines))


def test_the_batch_command_runs_a_prompts_file_and_writes_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # its folder on the path: the current directory is not searched
    (tmp_path / "agents.py").write_text(
        "from agentfsm import Agent\n\nclass Echo(Agent):\n    model = 'claude-haiku-4-5'\n"
    )
    (tmp_path / "script.json").write_text(json.dumps([{"type": "text", "text": t} for t in "ABC"]))
    prompts = tmp_path / "tickets.jsonl"
    prompts.write_text(
        '"first"\n\n{"id": "t-2", "prompt": "second"}\n{"messages": [{"role": "user", "content": "3"}]}\n'
    )
    argv = ["batch", "--agent", "agents:Echo", "--prompts", str(prompts), "--store", "runs.db", "--poll", "0"]
    assert main([*argv, "--sim", "script.json", "--events", "ev.jsonl"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [(x["id"], x["text"], x["batched"]) for x in lines] == [
        ("tickets-1", "A", True),
        ("t-2", "B", True),
        ("tickets-4", "C", True),
    ]
    assert "(finished)" in captured.err and "requests succeeded 3" in captured.err
    events = [json.loads(line)["event"] for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert "batch.submitted" in events and "run.finished" in events
    # Again on the same store: everything is finished, nothing is sent, the results are the same.
    assert main([*argv, "--sim", "script.json", "--out", "results.jsonl"]) == 0
    again = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [x["text"] for x in again] == ["A", "B", "C"]


def test_the_batch_command_exits_3_when_a_conversation_did_not_finish_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # its folder on the path: the current directory is not searched
    (tmp_path / "refusing_agents.py").write_text(
        "from agentfsm import Agent\n\nclass E(Agent):\n    model = 'claude-haiku-4-5'\n"
    )
    (tmp_path / "script.json").write_text(json.dumps([{"type": "refusal"}]))
    (tmp_path / "p.jsonl").write_text('"no"\n')
    argv = [
        "batch",
        "--agent",
        "refusing_agents:E",
        "--prompts",
        "p.jsonl",
        "--store",
        "s.db",
        "--poll",
        "0",
        "--sim",
        "script.json",
    ]
    assert main(argv) == EXIT_NOT_DONE
    assert json.loads(capsys.readouterr().out)["final_state"] == "refused"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("not json\n", "line 1 is not JSON"),
        ('{"id": "x"}\n', "needs 'prompt'"),
        ('{"id": 3, "prompt": "p"}\n', "'id' must be a non-empty string"),
        ('{"id": "a", "prompt": "p"}\n{"id": "a", "prompt": "q"}\n', "used twice"),
        ("\n", "holds no prompts"),
    ],
)
def test_bad_prompts_files_are_one_line_errors(
    tmp_path: Path, content: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.jsonl").write_text(content)
    argv = [
        "batch",
        "--agent",
        "agentfsm:Agent",
        "--prompts",
        str(tmp_path / "p.jsonl"),
        "--store",
        str(tmp_path / "s.db"),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("agentfsm: error: ") and needle in err and "\n" not in err


@pytest.mark.slow  # a benchmark in a subprocess
def test_the_batch_benchmark_runs_in_quick_mode() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "batch.py"), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    billed = proc.stdout.split("1. Billed cost")[1].split("2. CPU time")[0]
    (row,) = [line for line in billed.splitlines() if line.strip().startswith("BatchRunner")]
    assert row.rstrip().endswith("0.50x"), proc.stdout  # half the price, same tokens
    assert "ms of CPU per conversation-turn" in proc.stdout


def test_batch_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["batch", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--agent", "--prompts", "--store", "--poll", "--out", "--sim"):
        assert option in out
