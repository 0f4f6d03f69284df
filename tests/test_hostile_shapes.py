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

from agentfsm import Agent, Policy, RunResult, tool
from agentfsm.machine.streaming import StreamEvent
from agentfsm.sim import ScriptedReply, Simulator
from agentfsm.sim import replies as r
from agentfsm.testing import DRIVERS, client_for, drive, shown_text
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


@pytest.mark.beyond_schema  # the compaction parameter (tests/test_compaction.py checks the rest of these requests)
@pytest.mark.parametrize("shape", list(WRONG_SHAPES))
def test_a_compaction_reply_whose_summary_cannot_stand_first_is_a_failed_compaction(driver: str, shape: str) -> None:
    wrong = ScriptedReply(content=WRONG_SHAPES[shape], stop_reason="compaction")
    sim = Simulator([r.tool_use("lookup", {"q": "q0"}), wrong, r.text("Answer.")])
    result, shown = run(driver, sim, policy=Policy(compact_at_input_tokens=40))
    assert result.final_state == "done" and result.text == "Answer." and shown == "Answer."
    _, compaction, after = sim.requests
    assert compaction.is_compaction and not after.is_compaction
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

