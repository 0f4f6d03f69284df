"""Replies of the wrong shape, through the real ``anthropic`` client over HTTP (issue 21, items 5 and 6).

* **A compaction reply that cannot stand first.** The answer to our compaction request is applied only
  when it is what the API promises (``BetaCompactionConfigParam``: "a signed ``compaction`` block,
  alone ... nothing is sampled after the block"): exactly one ``compaction`` block whose ``content``
  is a non-empty string, and nothing else. Any other shape — text around the block, a tool call
  beside it, two blocks, thinking, no block — is a failed compaction: the reply is discarded, the
  history stays as it was and the next request is the ordinary one it would have been. Every
  request of these tests passes the suite's wire-rule and schema checks (``conftest``), the one
  after the compaction request included: before the fix, ``[text, compaction, text]`` sent a
  history opening with a text block and ``[compaction, tool_use]`` one ending in an unanswered call.
* **A batch results file with bad lines** and **a batch that never ends** (``BatchRunner``), on the
  simulator's Message Batches API, which writes the bad lines (``replies.batch_result_line``) and
  keeps a batch ``in_progress`` as long as asked. No real sleep: the runner waits on a ``FakeClock``.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentfsm import Agent, MemoryStore, Policy, RunResult, tool
from agentfsm.batch import BatchProgress, BatchRunner, ledger_for
from agentfsm.errors import ConfigurationError
from agentfsm.machine.streaming import StreamEvent
from agentfsm.sim import ScriptedReply, SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.testing import DRIVERS, FakeClock, client_for, drive, shown_text, use_clock
from agentfsm.wire.caching import unmarked

# --- compaction replies of the wrong shape ----------------------------------------------------------------


@tool
def lookup(q: str) -> str:
    """Look something up."""
    return f"result for {q}: " + "x" * 200


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(driver: str, sim: Simulator, **kw: Any) -> tuple[RunResult, str]:
    """Run an Agent with ``lookup`` on ``sim`` through ``driver``; the result and the text a stream showed."""
    agent = Agent(client=client_for(sim, driver, max_retries=0), tools=[lookup], logger=None, **kw)
    events: list[StreamEvent] = []
    result = drive(agent, "Do the task.", driver, stream_events=events)
    return result, shown_text(events) if events else result.text


SUMMARY = r.compaction_block("The user asked for q0; it returned x's.", encrypted_content="Enc0==")
CALL = r.tool_use_block("lookup", {"q": "again"}, id="toolu_01CompactionSideCall0000")

#: Replies to our compaction request (stop_reason "compaction") whose summary cannot stand first.
WRONG_SHAPES: dict[str, list[dict[str, Any]]] = {
    "text, compaction, text": [r.text_block("Before. "), SUMMARY, r.text_block("After.")],
    "compaction, tool_use": [SUMMARY, CALL],
    "text, compaction": [r.text_block("Here is the summary: "), SUMMARY],
    "compaction, text": [SUMMARY, r.text_block("And now the answer.")],
    "two compaction blocks": [SUMMARY, r.compaction_block("A second summary.")],
    "thinking, compaction": [r.thinking_block("Let me summarise."), SUMMARY],
    "text only": [r.text_block("I would rather not summarise.")],
    "tool_use only": [CALL],
    "no content": [],
    "an empty summary": [r.compaction_block("")],
}


def failed_compaction(driver: str, wrong: ScriptedReply) -> tuple[RunResult, SimRequest, SimRequest]:
    """A tool turn, our compaction request answered with ``wrong``, the answer: the result, the compaction
    request and the one after it (checked: the run ends done with the answer, shown as it ends)."""
    sim = Simulator([r.tool_use("lookup", {"q": "q0"}), wrong, r.text("Answer.")])
    result, shown = run(driver, sim, policy=Policy(compact_at_input_tokens=40))
    assert result.final_state == "done" and result.text == "Answer." and shown == "Answer."
    _, compaction, after = sim.requests
    assert compaction.is_compaction and not after.is_compaction
    return result, compaction, after


@pytest.mark.beyond_schema  # the compaction parameter (tests/test_compaction.py checks the rest of these requests)
@pytest.mark.parametrize("shape", list(WRONG_SHAPES))
def test_a_compaction_reply_whose_summary_cannot_stand_first_is_a_failed_compaction(driver: str, shape: str) -> None:
    result, compaction, after = failed_compaction(
        driver, ScriptedReply(content=WRONG_SHAPES[shape], stop_reason="compaction")
    )
    # nothing of the wrong reply reached the history: the next request is the one the compaction went before
    assert unmarked(after.messages) == unmarked(compaction.messages)
    assert unmarked(after.messages)[0] == {"role": "user", "content": "Do the task."}
    assert result.replaced_messages == [] and len(result.messages) == 4
    assert [s.trigger for s in result.trace][2:5] == ["compact", "compaction", "compaction_failed"]
    failed = [e.data for e in result.events if e.event == "compaction.failed"]
    assert len(failed) == 1 and failed[0]["source"] == "request"
    blocks = [b["type"] for b in WRONG_SHAPES[shape]]
    assert failed[0]["reason"] == (
        "the compaction block has no summary"
        if blocks == ["compaction"]
        else "the reply is not one compaction block with a summary, alone (it cannot go first in messages): "
        f"got [{', '.join(blocks)}]"
    )
    assert [e.data["reason"] for e in result.events if e.event == "reply.discarded"] == [failed[0]["reason"]]
    assert not any(e.event == "compaction.applied" for e in result.events)
    assert "toolu_01CompactionSideCall0000" not in str(result.messages)


@pytest.mark.beyond_schema  # the compaction parameter
@pytest.mark.parametrize("stop", ["end_turn", "tool_use", "max_tokens", "pause_turn", "refusal", "stop_sequence"])
def test_a_compaction_request_answered_under_another_stop_reason_is_a_failed_compaction(driver: str, stop: str) -> None:
    """The API answers our compaction request with stop_reason "compaction"; under any other, the reply is not
    a compaction (even one holding a summary) nor the conversation's answer: it is dropped, and the next request
    is the ordinary one. Before, an end_turn text ended the run with it as the answer, and a tool_use ran."""
    content = [SUMMARY] if stop in ("end_turn", "pause_turn") else [r.text_block("Not a summary."), CALL]
    if stop == "refusal":
        content = [r.text_block("I can't.")]
    result, compaction, after = failed_compaction(driver, ScriptedReply(content=content, stop_reason=stop))
    assert unmarked(after.messages) == unmarked(compaction.messages)
    assert [s.trigger for s in result.trace][2:4] == ["compact", "compaction_failed"]
    failed = [e.data["reason"] for e in result.events if e.event == "compaction.failed"]
    assert failed == [f"the compaction request was answered with stop_reason {stop!r}, not a compaction"]
    assert "toolu_01CompactionSideCall0000" not in str(result.messages)


@pytest.mark.beyond_schema  # the compaction parameter
def test_the_one_shape_applied_is_one_block_with_a_summary(driver: str) -> None:
    sim = Simulator([r.tool_use("lookup", {"q": "q0"}), r.compaction(**_kw(SUMMARY)), r.text("Answer.")])
    result, _ = run(driver, sim, policy=Policy(compact_at_input_tokens=40))
    assert result.final_state == "done"
    assert unmarked(sim.requests[2].messages) == [{"role": "assistant", "content": [SUMMARY]}]
    assert [e.event for e in result.events if e.event.startswith("compaction.")] == [
        "compaction.requested",
        "compaction.applied",
    ]


@pytest.mark.beyond_schema  # the compaction parameter
def test_wrong_shapes_again_and_again_are_bounded_by_max_compactions(driver: str) -> None:
    wrong = ScriptedReply(content=WRONG_SHAPES["compaction, tool_use"], stop_reason="compaction")
    turns = [r.tool_use("lookup", {"q": f"q{i}"}) for i in range(4)]
    script = [turns[0], wrong, turns[1], wrong, turns[2], turns[3], r.text("Answer.")]
    sim = Simulator(script)
    result, _ = run(driver, sim, policy=Policy(compact_at_input_tokens=40, max_compactions=2))
    assert result.final_state == "done" and result.text == "Answer."
    assert [q.is_compaction for q in sim.requests] == [False, True, False, True, False, False, False]
    assert [e.event for e in result.events].count("compaction.failed") == 2


def _kw(block: dict[str, Any]) -> dict[str, Any]:
    return {"summary": block["content"], **{k: v for k, v in block.items() if k not in ("type", "content")}}


# --- a batch results file with bad lines ------------------------------------------------------------------


@tool
def fetch(key: str) -> str:
    """Fetch a key."""
    return f"value of {key}"


def prompt_of(request: SimRequest) -> str:
    content = request.messages[0]["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


def model(request: SimRequest) -> Any:
    """Two turns per conversation: a ``fetch`` call (its id from the prompt), then the answer."""
    prompt = prompt_of(request)
    if len(request.messages) == 1:
        return r.tool_use("fetch", {"key": prompt}, id="toolu_01" + prompt.ljust(22, "0"))
    return r.text(f"answer to {prompt}")


def scripted(first: dict[str, list[Any]]) -> Any:
    """``model``, except that each listed conversation's first request is answered by its items first, in order."""

    def answer(request: SimRequest) -> Any:
        queue = first.get(prompt_of(request)) if len(request.messages) == 1 else None
        return queue.pop(0) if queue else model(request)

    return answer


class Fetcher(Agent):
    model = "claude-haiku-4-5"
    tools = [fetch]
    policy = Policy(max_tokens=256)


def batch_runner(sim: Simulator, *, policy: Policy | None = None, **kw: Any) -> BatchRunner:
    agent = Fetcher(client=sim.client(max_retries=0), logger=None, **({"policy": policy} if policy else {}))
    kw.setdefault("poll_interval", 0)
    return BatchRunner(agent, **kw)


def plain(prompt: str) -> RunResult:
    return Fetcher(client=Simulator(model).client(max_retries=0), logger=None).run(prompt)


PROMPTS = {"a": "a", "b": "b", "c": "c"}

#: Lines of a results file that cannot be used, and what the runner says of each.
BAD_LINES = {
    "cut off mid-way": ('{"custom_id":"{custom_id}","result":{"type":"succ', None, "not JSON ("),
    "JSON but an array": ("[1, 2, 3]", None, "JSON but not an object (an array)"),
    "JSON but a string": ('"succeeded"', None, "JSON but not an object (a string)"),
    "JSON but null": ("null", None, "JSON but not an object (null)"),
    "nested too deeply": ("[" * 100_000 + "]" * 100_000, None, "not JSON (nested too deeply to read)"),
    "no custom_id": ('{"result":{"type":"succeeded"}}', None, "an object without a string custom_id"),
    "custom_id not a string": ('{"custom_id":7,"result":{"type":"succeeded"}}', None, "an object without a string"),
    "result not an object": ('{"custom_id":"{custom_id}","result":"succeeded"}', "b", "no usable result (a string;"),
    "an unknown result type": ('{"custom_id":"{custom_id}","result":{"type":"exploded"}}', "b", "no usable result"),
    "a result type that is a list": ('{"custom_id":"{custom_id}","result":{"type":[1]}}', "b", "no usable result"),
}


@pytest.mark.parametrize("name", list(BAD_LINES))
def test_one_bad_line_costs_only_its_own_conversation_which_is_resent(name: str) -> None:
    line, named, problem = BAD_LINES[name]
    sim = Simulator(scripted({"b": [r.batch_result_line(line)]}))
    runner = batch_runner(sim)
    results = runner.run(PROMPTS)
    for cid in PROMPTS:  # every other result was applied; b was resent once and carried on
        assert results[cid].ok and results[cid].messages == plain(cid).messages, cid
    (bad,) = [e.data for e in runner.events if e.event == "batch.result_unreadable"]
    assert str(bad["problem"]).startswith(problem), bad["problem"]
    assert bad["custom_id"] is None if named is None else str(bad["custom_id"]).startswith("b-t1-")
    resent = [e.data for e in results["b"].events if e.event == "batch.request_resent"]
    assert resent == [{"reason": "missing", "attempt": 2}]
    assert not any(e.event == "batch.request_resent" for cid in "ac" for e in results[cid].events)
    assert [len(b.requests) for b in sim.batches.batches.values()] == [3, 3, 1]  # b's resend went with a's and c's


def test_a_bad_line_every_time_fails_that_conversation_and_no_other() -> None:
    bad = r.batch_result_line("not json at all")
    results = batch_runner(Simulator(scripted({"b": [bad, bad]}))).run(PROMPTS)
    assert results["a"].ok and results["c"].ok
    b = results["b"]
    assert b.final_state == "failed" and b.error is not None and b.error.type == "batch_missing"
    assert "gave no usable result for the request ('missing')" in b.error.message


def test_a_succeeded_line_whose_message_is_not_a_message_is_read_as_the_plain_path_reads_it() -> None:
    line = '{"custom_id":"{custom_id}","result":{"type":"succeeded","message":[]}}'
    results = batch_runner(Simulator(scripted({"b": [r.batch_result_line(line)]}))).run(PROMPTS)
    assert results["a"].ok and results["c"].ok
    b = results["b"]
    assert b.final_state == "failed" and b.error is not None and b.error.type == "invalid_response"


def test_a_second_line_for_a_custom_id_is_ignored_and_the_first_outcome_is_kept() -> None:
    store = MemoryStore()
    other = '{"custom_id":"a-t1-r1-a1","result":{"type":"expired"}}'  # in b's place, a second line for a's request
    sim = Simulator(scripted({"b": [r.batch_result_line(other)]}))
    runner = batch_runner(sim, store=store)
    results = runner.run(PROMPTS)
    assert all(result.ok for result in results.values())
    (second,) = [e.data for e in runner.events if e.event == "batch.result_unreadable"]
    assert second["custom_id"] == "a-t1-r1-a1" and second["problem"] == "a second line for this custom_id (ignored)"
    first_batch = ledger_for(store).records()[0]
    assert first_batch.entries["a-t1-r1-a1"].outcome in ("succeeded", "expired")  # whichever came first; not stale


# --- a batch that never ends ------------------------------------------------------------------------------


class StillPolling(AssertionError):
    pass


def bounded(clock: FakeClock, limit: float = 8.0) -> Any:
    """``clock.sleep``, failing the test once the fake time passes ``limit`` s (a runner that polls forever)."""

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now() > limit:
            raise StillPolling(f"still polling after {clock.now():g} s")

    return sleep


def test_a_batch_that_never_ends_is_polled_until_the_wall_budget_then_reported_unfinished() -> None:
    store = MemoryStore()
    progress: list[BatchProgress] = []
    with use_clock(FakeClock()) as clock:
        sim = Simulator(model, batch_polls=10**9)
        runner = batch_runner(
            sim, store=store, policy=Policy(max_tokens=256, max_wall_seconds=2), poll_interval=0.75,
            sleep=bounded(clock), progress=progress.append,
        )  # fmt: skip
        results = runner.run(PROMPTS)
    assert clock.slept == [0.75, 0.75, 0.5]  # the last wait is cut short: the last poll is at the budget
    (batch_id,) = sim.batches.batches
    assert sim.batches.batches[batch_id].status == "in_progress"
    for cid, result in results.items():
        assert result.final_state == "requesting" and result.reason == "batch_unfinished" and not result.ok
        assert result.error is not None and result.error.type == "batch_unfinished"
        assert result.error.message == (
            f"Message Batch {batch_id} had not ended when the runner stopped polling at its "
            "Policy.max_wall_seconds=2 s; run again with the same store to carry it on (a batch is polled again, "
            "never resent)"
        )
        (said,) = [e.data for e in result.events if e.event == "batch.unfinished"]
        assert said == {"batch_id": batch_id, "custom_id": f"{cid}-t1-r1-a1", "stopped_by": "max_wall_seconds"}
    (event,) = [e.data for e in runner.events if e.event == "batch.unfinished"]
    assert event["batch_id"] == batch_id and event["waiting"] == 3 and event["stopped_by"] == "max_wall_seconds"
    assert event["processing_status"] == "in_progress" and event["elapsed_s"] == 2.0
    last = progress[-1]
    assert last.finished and last.unfinished == 3 and [b.batch_id for b in last.batches] == [batch_id]
    assert last.lines()[-1] == (
        "stopped at the deadline: 3 conversation(s) unfinished, waiting on 1 batch(es) still in progress; "
        "run again with the same store to carry them on"
    )
    (record,) = ledger_for(store).open_batches()  # recorded as unfinished: still open, every entry still waiting
    assert record.batch_id == batch_id and {e.outcome for e in record.entries.values()} == {"unfinished"}
    assert len(record.unsettled) == 3


def test_a_restart_on_the_same_store_polls_the_unfinished_batch_again() -> None:
    store = MemoryStore()
    with use_clock(FakeClock()) as clock:
        sim = Simulator(model, batch_polls=10**9)
        first = batch_runner(sim, store=store, deadline=3, poll_interval=1, sleep=bounded(clock)).run(PROMPTS)
        assert {r.reason for r in first.values()} == {"batch_unfinished"}
        assert all("deadline=3 s" in str(r.error) for r in first.values())
        (batch_id,) = sim.batches.batches
        sim.batches.batches[batch_id].polls_to_end = sim.batches.polls_to_end = 1  # it ends now, and so do new ones
        restarted = batch_runner(sim, store=store, deadline=3, poll_interval=1, sleep=bounded(clock, 20))
        results = restarted.run(PROMPTS)
    for cid in PROMPTS:
        assert results[cid].ok and results[cid].messages == plain(cid).messages
        assert results[cid].error is None and results[cid].reason != "batch_unfinished"
    assert [e.event for e in restarted.events if e.event.startswith("batch.")][:1] == ["batch.resumed"]
    assert list(sim.batches.batches) == [batch_id, *list(sim.batches.batches)[1:]]  # polled again, not resent
    assert [len(b.requests) for b in sim.batches.batches.values()] == [3, 3]
    assert ledger_for(store).open_batches() == []
    assert {e.outcome for e in ledger_for(store).records()[0].entries.values()} == {"succeeded"}


def test_requests_due_after_the_deadline_are_not_sent_and_a_restart_sends_them() -> None:
    store = MemoryStore()
    with use_clock(FakeClock()) as clock:
        sim = Simulator(model)  # a batch ends at its first poll, which is at the deadline
        first = batch_runner(sim, store=store, deadline=1, poll_interval=1, sleep=bounded(clock)).run(PROMPTS)
        assert len(sim.batches.batches) == 1
        for result in first.values():  # turn 1 applied, its tool run; turn 2 not sent
            assert result.reason == "batch_unfinished" and result.error is not None
            said = "its next request was not sent: the runner's deadline=1 s had passed"
            assert result.error.message.startswith(said)
        again = batch_runner(sim, store=store, deadline=10, poll_interval=1, sleep=bounded(clock, 20)).run(PROMPTS)
    assert all(again[cid].ok and again[cid].messages == plain(cid).messages for cid in PROMPTS)
    assert len(sim.batches.batches) == 2


def test_a_restart_under_the_wall_budget_polls_the_batch_again_for_up_to_the_budget() -> None:
    store = MemoryStore()
    policy = Policy(max_tokens=256, max_wall_seconds=2)
    with use_clock(FakeClock()) as clock:
        sim = Simulator(model, batch_polls=10**9)
        first = batch_runner(sim, store=store, policy=policy, poll_interval=1, sleep=bounded(clock)).run(PROMPTS)
        assert {r.reason for r in first.values()} == {"batch_unfinished"} and clock.now() == 2
        again = batch_runner(sim, store=store, policy=policy, poll_interval=1, sleep=bounded(clock)).run(PROMPTS)
        assert {r.reason for r in again.values()} == {"batch_unfinished"} and clock.now() == 4
        # (the time spent waiting on a batch is the conversation's once it is next saved, as for a request in flight)
        (batch_id,) = sim.batches.batches
        sim.batches.batches[batch_id].polls_to_end = sim.batches.polls_to_end = 1
        done = batch_runner(sim, store=store, policy=policy, poll_interval=1, sleep=bounded(clock)).run(PROMPTS)
    assert all(done[cid].ok and done[cid].messages == plain(cid).messages for cid in PROMPTS)
    assert len(sim.batches.batches) == 2


def test_a_restart_whose_conversations_stop_at_a_limit_first_does_not_poll_their_batch() -> None:
    store = MemoryStore()
    with use_clock(FakeClock()) as clock:
        sim = Simulator(model)  # turn 1's batch ends at its first poll, at the deadline: turn 2 is not sent
        batch_runner(sim, store=store, deadline=1, poll_interval=1, sleep=bounded(clock)).run(PROMPTS)
        sim.batches.polls_to_end = 10**9  # turn 2's batch never ends
        unfinished = batch_runner(sim, store=store, deadline=2, poll_interval=1, sleep=bounded(clock)).run(PROMPTS)
        assert {r.reason for r in unfinished.values()} == {"batch_unfinished"} and len(sim.batches.batches) == 2
        # Restarted with a stricter policy and no deadline: planned again, each stops at max_turns first.
        strict = Policy(max_tokens=256, max_turns=1)
        results = batch_runner(sim, store=store, policy=strict, poll_interval=1, sleep=bounded(clock, 20)).run(PROMPTS)
    for result in results.values():
        assert result.final_state == "truncated" and result.reason == "max_turns"
    assert ledger_for(store).open_batches() == []  # settled stale, not polled for nobody
    assert {e.outcome for rec in ledger_for(store).records()[1:] for e in rec.entries.values()} == {"stale"}


@pytest.mark.parametrize("deadline", [0, -1, float("nan")])
def test_a_deadline_must_be_positive(deadline: float) -> None:
    with pytest.raises(ConfigurationError, match="deadline must be a number of seconds > 0"):
        batch_runner(Simulator(model), deadline=deadline)
