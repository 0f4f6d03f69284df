"""Compaction, server-side fallbacks and fallback credit tokens, through the real anthropic client.

Every machine test here runs under the plain and the streamed drivers (sync and async), against the
simulator. Requests are checked suite-wide against the wire rules and the vendored OpenAPI schema.

Where the vendored schema predates a field, the test is marked ``beyond_schema`` (which lifts the
suite-wide schema check) and ``schema_where_it_covers`` below checks the same requests against the
schema with exactly these newer fields taken out — so everything the schema does cover is still checked:

* request parameters ``compaction``, ``fallbacks`` and ``fallback_credit_token`` (the vendored
  ``BetaCreateMessageParams`` has ``additionalProperties: false`` and none of them);
* ``signature`` and ``tool_changes`` of a ``compaction`` block (its ``BetaRequestCompactionBlock``
  knows only ``type``, ``content``, ``encrypted_content`` and ``cache_control``);
* ``fallback`` content blocks (not in its ``BetaInputContentBlock``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest
import realtraffic

from agentfsm import Agent, MemoryStore, Policy, RunResult, tool
from agentfsm.errors import ConfigurationError
from agentfsm.machine.streaming import StreamEvent, TransitionEvent
from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.sim import serverside as sim_serverside
from agentfsm.sim.wire import MESSAGES_PATH
from agentfsm.testing import DRIVERS, client_for, drive, shown_text
from agentfsm.wire.caching import unmarked
from agentfsm.wire.pricing import price_for
from agentfsm.wire.sse import ReplyAssembler, parse_sse

#: The fields stripped before the schema check of a ``beyond_schema`` test (see the module docstring).
NEWER_PARAMS = ("compaction", "fallbacks", "fallback_credit_token", "thread")
NEWER_COMPACTION_FIELDS = ("signature", "tool_changes")
NEWER_BLOCK_TYPES = ("fallback",)

COMPACT_BETA = "compact-2026-09-04"
EDIT_BETA = "compact-2026-01-12"
FALLBACK_BETA = "server-side-fallback-2026-07-01"
CREDIT_BETA = "fallback-credit-2026-07-01"
PAUSE_EDIT = {"edits": [{"type": "compact_20260112", "pause_after_compaction": True}]}
AUTO_EDIT = {"edits": [{"type": "compact_20260112"}]}


def strip_newer(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without the fields the vendored schema predates."""
    clean = {k: copy.deepcopy(v) for k, v in body.items() if k not in NEWER_PARAMS}
    if isinstance(clean.get("thinking"), dict) and clean["thinking"].get("type") == "between_tools":
        del clean["thinking"]  # Sonnet 5.5's lowest thinking setting: in the SDK's types, newer than the schema
    for message in clean.get("messages") or []:
        if isinstance(message.get("content"), list):
            message["content"] = [
                {k: v for k, v in b.items() if not (b.get("type") == "compaction" and k in NEWER_COMPACTION_FIELDS)}
                for b in message["content"]
                if b.get("type") not in NEWER_BLOCK_TYPES
            ]
    return clean


@pytest.fixture(autouse=True)
def schema_where_it_covers(request: pytest.FixtureRequest) -> Iterator[None]:
    """For ``beyond_schema`` tests: every request still validates once the newer fields are taken out."""
    if request.node.get_closest_marker("beyond_schema") is None or not realtraffic.available():
        yield
        return
    problems: list[str] = []

    def check(sim_request: SimRequest) -> None:
        if sim_request.method != "POST" or sim_request.path != MESSAGES_PATH or not sim_request.body:
            return
        name = realtraffic.schema_name(sim_request.query, sim_request.headers)
        found = realtraffic.schema_problems(strip_newer(sim_request.body), name)
        problems.extend(f"request #{sim_request.n}: {p}" for p in found or [])

    Simulator.observers.append(check)
    try:
        yield
    finally:
        Simulator.observers.remove(check)
    assert not problems, "requests do not validate where the schema covers them:\n" + "\n".join(problems)


# --- running an agent under every driver ----------------------------------------------------------------

TOOL_OUTPUT = "x" * 200


@tool
def lookup(q: str) -> str:
    """Look something up."""
    return f"result for {q}: {TOOL_OUTPUT}"


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(driver: str, sim: Simulator, prompt: Any = "Do the task.", **kw: Any) -> RunResult:
    """Run an Agent (``lookup`` tool, no logging, ``kw``) on the simulator through ``driver``."""
    kw.setdefault("tools", [lookup])
    agent = Agent(client=client_for(sim, driver, max_retries=0), logger=None, **kw)
    events: list[StreamEvent] = []
    result = drive(agent, prompt, driver, stream_events=events)
    if not events:  # run, arun
        return result
    shown = shown_text(events)
    assert shown.endswith(result.text), (shown, result.text)
    transitions = [(e.source, e.dest, e.trigger) for e in events if isinstance(e, TransitionEvent)]
    assert transitions == [(s.source, s.dest, s.trigger) for s in result.trace]
    SHOWN[:] = [shown]
    return result


#: What the last streamed run showed its caller (text events, rewinds honoured).
SHOWN: list[str] = [""]


def names(result: RunResult, prefix: str = "compaction.") -> list[str]:
    return [e.event for e in result.events if e.event.startswith(prefix)]


def event(result: RunResult, name: str) -> dict[str, Any]:
    found = [e for e in result.events if e.event == name]
    assert found, f"no {name} event"
    return found[-1].data


def ordinary(sim: Simulator) -> list[SimRequest]:
    return [q for q in sim.requests if not q.is_compaction]


# --- 1. the compaction state: a server-side compaction paused, sent back unchanged ------------------------


def test_a_paused_compaction_is_sent_back_unchanged_and_carried(driver: str) -> None:
    block = r.compaction_block("The user wants Hanoi's weather.", encrypted_content="EncOpaque==")
    sim = Simulator([r.compaction(**block_kw(block)), r.tool_use("lookup", {"q": "Hanoi"}), r.text("31°C.")])
    result = run(driver, sim, request_params={"context_management": PAUSE_EDIT})
    assert result.final_state == "done" and result.text == "31°C."
    assert "compaction" in result.path and result.trace[1].trigger == "resume"
    assert names(result) == ["compaction.resumed"]
    second, third = sim.requests[1], sim.requests[2]
    assert EDIT_BETA in second.betas
    # sent back unchanged, as the final assistant turn (not a prefill: the server continues it)
    assert unmarked(second.messages)[-1] == {"role": "assistant", "content": [block]}
    # the continuation joined the turn; the block stays first in it, byte for byte, in every later request
    assert unmarked(third.messages)[1]["content"][0] == block
    assert result.messages[1]["content"][0] == block
    assert [b["type"] for b in result.messages[1]["content"]] == ["compaction", "tool_use"]
    assert result.replaced_messages == [] and result.transcript == result.messages


def block_kw(block: dict[str, Any]) -> dict[str, Any]:
    """``r.compaction`` arguments that rebuild ``block``."""
    return {"summary": block["content"], **{k: v for k, v in block.items() if k not in ("type", "content")}}


@pytest.mark.beyond_schema  # the block's signature and tool_changes
def test_every_field_of_the_block_goes_back_verbatim(driver: str) -> None:
    changes = [{"type": "tool_addition", "tool": {"type": "tool_definition", "definition": {"name": "lookup"}}}]
    block = r.compaction_block("Summary.", encrypted_content="Enc==", signature="Sig+/==", tool_changes=changes)
    sim = Simulator([r.compaction(**block_kw(block)), r.text("Done.")])
    result = run(driver, sim, request_params={"context_management": PAUSE_EDIT})
    assert result.final_state == "done"
    assert unmarked(sim.requests[1].messages)[-1]["content"] == [block]
    assert result.messages[-1]["content"][0] == block


def test_paused_compactions_are_bounded_by_the_policy(driver: str) -> None:
    sim = Simulator([r.compaction("one"), r.compaction("two"), r.text("never sent")])
    result = run(driver, sim, request_params={"context_management": PAUSE_EDIT}, policy=Policy(max_compactions=1))
    assert result.final_state == "truncated" and result.reason == "max_compactions"
    assert len(sim.requests) == 2 and [s.trigger for s in result.trace][-1] == "give_up"


def test_a_compaction_block_under_another_stop_reason_stays_in_the_history(driver: str) -> None:
    compacted = r.with_compaction(r.tool_use("lookup", {"q": "a"}, text="Checking."), "Earlier: the user asked.")
    sim = Simulator([compacted, r.text("Done.")])
    result = run(driver, sim, request_params={"context_management": AUTO_EDIT})
    assert result.final_state == "done"
    sent = unmarked(sim.requests[1].messages)[1]
    assert sent["role"] == "assistant"
    assert [b["type"] for b in sent["content"]] == ["compaction", "text", "tool_use"]
    assert sent["content"][0] == {"type": "compaction", "content": "Earlier: the user asked."}
    assert names(result) == ["compaction.received"]
    # the compaction pass is billed though the API leaves it out of the top-level usage
    assert result.usage.compaction_input_tokens > 0 and result.usage.compaction_output_tokens > 0


def test_a_failed_server_compaction_is_kept_as_sent_and_said(driver: str) -> None:
    sim = Simulator([r.with_compaction(r.text("Hello."), None)])
    result = run(driver, sim, request_params={"context_management": AUTO_EDIT})
    assert result.final_state == "done" and result.text == "Hello."
    assert result.messages[1]["content"][0] == {"type": "compaction", "content": None}
    failed = event(result, "compaction.failed")
    assert failed["source"] == "server"


# --- 2. compaction as a policy ----------------------------------------------------------------------------


def tool_turns(n: int) -> list[Any]:
    return [r.tool_use("lookup", {"q": f"q{i}"}) for i in range(n)]


@pytest.mark.beyond_schema  # the compaction parameter
def test_a_compaction_request_goes_out_between_turns_and_its_block_replaces_the_history(driver: str) -> None:
    block = r.compaction_block("The user asked for q0; it returned x's.", encrypted_content="Enc0==")
    sim = Simulator([*tool_turns(1), r.compaction(**block_kw(block)), r.text("Answer.")])
    policy = Policy(compact_at_input_tokens=40, compaction_instructions="Keep the query names.")
    result = run(driver, sim, policy=policy)
    assert result.final_state == "done" and result.text == "Answer."
    _, compaction, after = sim.requests
    assert compaction.is_compaction and COMPACT_BETA in compaction.betas
    assert compaction.body["compaction"] == {"type": "summarize", "instructions": "Keep the query names."}
    # never with unanswered tool calls: the results went first
    assert unmarked(compaction.messages)[-1]["content"][0]["type"] == "tool_result"
    # from then on the block goes first, in place of the messages it summarises
    assert unmarked(after.messages) == [{"role": "assistant", "content": [block]}]
    assert not after.is_compaction and COMPACT_BETA in after.betas  # the block goes back through the beta API
    assert result.messages == [{"role": "assistant", "content": [block, {"type": "text", "text": "Answer."}]}]
    # nothing is lost: the transcript has the replaced messages
    assert [m["role"] for m in result.replaced_messages] == ["user", "assistant", "user"]
    assert result.transcript == [*result.replaced_messages, *result.messages]
    assert names(result) == ["compaction.requested", "compaction.applied"]
    assert event(result, "compaction.requested")["reason"] == "input_tokens"
    assert event(result, "compaction.applied")["replaced_messages"] == 3
    assert [s.trigger for s in result.trace][2:5] == ["compact", "compaction", "compacted"]


@pytest.mark.beyond_schema  # the compaction and fallbacks parameters
def test_a_compaction_request_drops_the_parameters_the_api_rejects_on_one(driver: str) -> None:
    fmt = {"type": "json_schema", "schema": {"type": "object", "additionalProperties": False}}
    params = {
        "stop_sequences": ["</done>"],
        "tool_choice": {"type": "any"},
        "output_config": {"effort": "high", "format": fmt},
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
    }
    fallbacks = [{"model": "claude-opus-4-8", "output_config": {"format": fmt}}]
    sim = Simulator([*tool_turns(1), r.compaction("S."), r.text("Answer.")])
    policy = Policy(compact_at_input_tokens=40, fallbacks=fallbacks)
    # claude-opus-5: a model that takes both a forced tool_choice and a fallbacks list (agentfsm.wire.models)
    result = run(driver, sim, model="claude-opus-5", policy=policy, request_params=params)
    assert result.final_state == "done"
    first, compaction, after = sim.requests
    for name in ("stop_sequences", "tool_choice", "context_management"):
        assert name not in compaction.body and after.body[name] == first.body[name] == params[name]
    assert compaction.body["output_config"] == {"effort": "high"}
    assert compaction.body["fallbacks"] == [{"model": "claude-opus-4-8", "output_config": {}}]
    assert after.body["output_config"] == params["output_config"] and after.body["fallbacks"] == fallbacks


def test_never_compacts_in_the_middle_of_a_turn(driver: str) -> None:
    # over the threshold at once, but the reply is being continued: no compaction until the turn is over
    sim = Simulator([r.max_tokens("The first half, "), r.text("and the second half.")])
    result = run(driver, sim, policy=Policy(compact_at_input_tokens=1), model="claude-haiku-4-5")
    assert result.final_state == "done" and result.text == "The first half, and the second half."
    assert not any(q.is_compaction for q in sim.requests) and names(result) == []


def test_never_spends_the_last_turn_on_a_compaction(driver: str) -> None:
    sim = Simulator([*tool_turns(1), r.text("never sent")])
    result = run(driver, sim, policy=Policy(compact_at_input_tokens=1, max_turns=2))
    assert result.final_state == "done"
    assert not any(q.is_compaction for q in sim.requests)


@pytest.mark.beyond_schema  # the compaction parameter
def test_a_failed_compaction_is_a_no_op(driver: str) -> None:
    sim = Simulator([*tool_turns(1), r.failed_compaction(), r.text("Answer.")])
    result = run(driver, sim, policy=Policy(compact_at_input_tokens=40))
    assert result.final_state == "done" and result.text == "Answer."
    _, compaction, after = sim.requests
    assert unmarked(after.messages) == unmarked(compaction.messages)  # the history did not change
    assert result.replaced_messages == [] and len(result.messages) == 4
    assert names(result) == ["compaction.requested", "compaction.failed"]
    assert event(result, "compaction.failed")["reason"] == "the compaction block has no summary"
    assert [s.trigger for s in result.trace][2:5] == ["compact", "compaction", "compaction_failed"]


@pytest.mark.beyond_schema  # the compaction parameter
def test_a_rejected_compaction_request_turns_compaction_off_and_the_run_carries_on(driver: str) -> None:
    rejected = r.http_error(400, "invalid_request_error", "compaction: not supported for this model")
    sim = Simulator([*tool_turns(1), rejected, r.text("Answer.")])
    result = run(driver, sim, policy=Policy(compact_at_input_tokens=40))
    assert result.final_state == "done" and result.error is None
    assert [q.is_compaction for q in sim.requests] == [False, True, False]
    failed = event(result, "compaction.failed")
    assert failed["status_code"] == 400 and failed["compaction_off"] is True
    assert ("requesting", "requesting", "compaction_failed") in [(s.source, s.dest, s.trigger) for s in result.trace]


@pytest.mark.beyond_schema  # the compaction parameter
def test_the_context_window_compacts_and_carries_on_instead_of_ending_truncated(driver: str) -> None:
    sim = Simulator([r.context_window_exceeded("A partial ans"), r.compaction("S."), r.text("The full answer.")])
    result = run(driver, sim, policy=Policy(compact_at_input_tokens=10_000_000))
    assert result.final_state == "done" and result.text == "The full answer."
    assert [s.trigger for s in result.trace][:3] == ["model_context_window_exceeded", "compact", "compaction"]
    assert event(result, "compaction.requested")["reason"] == "context_window"
    # the cut reply was dropped, the summary is of the history it answered
    assert unmarked(sim.requests[1].messages) == [{"role": "user", "content": "Do the task."}]
    assert "A partial ans" not in json.dumps(result.transcript)
    if driver.endswith("stream"):
        assert SHOWN[0] == "The full answer."  # the dropped reply's text was taken back


def test_the_context_window_without_compaction_still_ends_truncated(driver: str) -> None:
    sim = Simulator([r.context_window_exceeded("Partial")])
    result = run(driver, sim)
    assert result.final_state == "truncated" and result.reason == "model_context_window_exceeded"


@pytest.mark.beyond_schema  # the compaction parameter
def test_a_compaction_that_does_not_bring_the_input_below_the_threshold_does_not_loop(driver: str) -> None:
    # a threshold the summary alone is over: one compaction, then none, however long the run
    sim = Simulator([*tool_turns(6), r.text("Answer.")], auto_compact=True)
    result = run(driver, sim, policy=Policy(compact_at_input_tokens=5, max_turns=30))
    assert result.final_state == "done"
    assert sum(q.is_compaction for q in sim.requests) == 1
    assert names(result) == ["compaction.requested", "compaction.applied", "compaction.ineffective"]
    assert ("requesting", "requesting", "stop_compacting") in [(s.source, s.dest, s.trigger) for s in result.trace]


@pytest.mark.beyond_schema  # the compaction parameter
def test_compactions_are_bounded_by_max_compactions(driver: str) -> None:
    sim = Simulator([*tool_turns(12), r.text("Answer.")], auto_compact=True)
    result = run(driver, sim, policy=Policy(compact_at_input_tokens=250, max_compactions=2, max_turns=40))
    assert result.final_state == "done"
    assert sum(q.is_compaction for q in sim.requests) == 2
    assert names(result).count("compaction.applied") == 2


@pytest.mark.beyond_schema  # the compaction parameter
def test_a_compacted_conversation_is_stored_and_resumed_with_its_transcript() -> None:
    store = MemoryStore()
    sim = Simulator([*tool_turns(1), r.compaction("S."), *tool_turns(1), r.text("Answer.")])
    agent = Agent(client=sim.client(), tools=[lookup], logger=None, policy=Policy(compact_at_input_tokens=40))
    conv = agent.start("Do the task.", store=store)
    for _ in range(10):  # a crash right after the compaction: stop stepping there
        conv.step()
        if conv.trace[-1].trigger == "compacted":
            break
    assert conv.trace[-1].trigger == "compacted" and not conv.finished
    conv.release()
    result = Agent(client=sim.client(), tools=[lookup], logger=None, policy=Policy(compact_at_input_tokens=40)).resume(
        conv.id, store=store
    )
    assert result.final_state == "done" and result.text == "Answer."
    assert [m["role"] for m in result.replaced_messages] == ["user", "assistant", "user"]
    assert result.messages[0]["content"][0] == {"type": "compaction", "content": "S."}
    snap = store.load(conv.id)
    assert snap.counters.compactions == 1 and snap.compaction_applied_at == 2


@pytest.mark.beyond_schema  # the compaction parameter
def test_a_compacted_conversation_carries_on_with_a_new_prompt(driver: str) -> None:
    first = Simulator([*tool_turns(1), r.compaction("S."), r.text("Answer.")])
    done = run(driver, first, policy=Policy(compact_at_input_tokens=40))
    follow_up = [*done.messages, {"role": "user", "content": "And then?"}]
    second = Simulator([r.text("Then this.")])
    result = run(driver, second, follow_up)
    assert result.final_state == "done" and result.text == "Then this."
    (sent,) = second.requests
    assert COMPACT_BETA in sent.betas  # a compaction block goes back only through the beta API
    assert unmarked(sent.messages) == unmarked(follow_up)


@pytest.mark.beyond_schema  # the compaction parameter
def test_compaction_passes_count_in_usage_budgets_and_cost() -> None:
    sim = Simulator([*tool_turns(1), r.compaction("S."), r.text("Answer.")])
    policy = Policy(compact_at_input_tokens=40, prompt_caching=False)
    result = run("run", sim, policy=policy, model="claude-sonnet-4-6")
    compaction_reply_usage = event(result, "compaction.applied")["usage"]
    assert len(compaction_reply_usage) == 1 and compaction_reply_usage[0]["type"] == "compaction"
    pass_input = compaction_reply_usage[0]["input_tokens"]
    assert result.usage.compaction_input_tokens == pass_input > 0
    top_level = sum(
        e.data["usage"]["input_tokens"] for e in result.events if e.event == "response.received"
    )  # the compaction reply's top level is 0
    assert result.usage.input_tokens == top_level + pass_input
    price = price_for("claude-sonnet-4-6")
    assert price is not None and result.cost_usd is not None
    expected = (result.usage.input_tokens * price.input + result.usage.output_tokens * price.output) / 1e6
    assert result.cost_usd == pytest.approx(expected, rel=1e-6)


# --- a long conversation ------------------------------------------------------------------------------------


@pytest.mark.beyond_schema  # the compaction parameter
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "stream"])
def test_forty_tool_turns_compact_again_and_again_and_end_done(streamed: bool) -> None:
    sim = Simulator([*tool_turns(40), r.text("All forty done.")], auto_compact=True)
    policy = Policy(compact_at_input_tokens=300, max_compactions=40, max_turns=100)
    result = run("stream" if streamed else "run", sim, policy=policy)
    assert result.final_state == "done" and result.text == "All forty done."
    compactions = [q for q in sim.requests if q.is_compaction]
    assert len(compactions) >= 5, "the low threshold should compact many times"
    assert len(sim.requests) == 41 + len(compactions)
    assert all(q.status == 200 for q in sim.requests)
    # each compaction's block (what the simulator answered) is sent back verbatim, first, in every later request
    block: dict[str, Any] | None = None
    for q in sim.requests:
        if block is not None:
            assert q.messages[0]["role"] == "assistant" and q.messages[0]["content"][0] == block
        if q.is_compaction:
            block = sim_serverside.summarize(q).content[0]
    # every tool call was answered, once, in order; the transcript holds them all
    blocks = [b for m in result.transcript for b in m["content"] if isinstance(b, dict)]
    calls = [b["input"]["q"] for b in blocks if b.get("type") == "tool_use"]
    assert calls == [f"q{i}" for i in range(40)]
    results = [b for m in result.transcript if m["role"] == "user" for b in m["content"] if isinstance(b, dict)]
    assert sum(b.get("type") == "tool_result" for b in results) == 40
    assert names(result).count("compaction.applied") == len(compactions)


# --- 3. server-side fallbacks ------------------------------------------------------------------------------


@pytest.mark.beyond_schema  # the fallbacks parameter; the fallback block
def test_server_side_fallbacks_are_sent_and_the_result_says_which_model_answered(driver: str) -> None:
    served = r.served_by_fallback(r.tool_use("lookup", {"q": "a"}), declined_text="Let me")
    sim = Simulator([served, r.text("Answer.")])
    result = run(driver, sim, model="claude-fable-5", policy=Policy(fallbacks=[{"model": "claude-opus-4-8"}]))
    assert result.final_state == "done"
    first, second = sim.requests
    assert first.body["fallbacks"] == [{"model": "claude-opus-4-8"}] and FALLBACK_BETA in first.betas
    # the fallback block is carried in its place, byte for byte
    assert [b["type"] for b in second.messages[1]["content"]] == ["text", "fallback", "tool_use"]
    hop = second.messages[1]["content"][1]
    assert hop == {
        "type": "fallback",
        "from": {"model": "claude-fable-5"},
        "to": {"model": "claude-opus-4-8"},
        "trigger": {"type": "refusal", "category": "cyber"},
    }
    served_events = [e.data for e in result.events if e.event == "fallback.served"]
    assert (
        served_events[0]["served_by"] == "claude-opus-4-8" and served_events[0]["requested_model"] == "claude-fable-5"
    )
    assert result.model == "claude-fable-5"  # what we asked for; the last reply was not a fallback's
    assert result.answered_by == "claude-fable-5"


@pytest.mark.beyond_schema  # the fallbacks parameter; the fallback block
def test_the_answering_fallback_model_is_on_the_result(driver: str) -> None:
    sim = Simulator([r.served_by_fallback(r.text("Gutenberg, around 1440."))])
    result = run(driver, sim, model="claude-fable-5", policy=Policy(fallbacks="default"))
    assert sim.requests[0].body["fallbacks"] == "default"
    assert result.final_state == "done" and result.text == "Gutenberg, around 1440."
    assert result.answered_by == sim_serverside.DEFAULT_FALLBACK_MODEL != result.model


@pytest.mark.beyond_schema  # the fallbacks parameter
def test_a_fallbacks_list_to_a_model_without_fallbacks_is_the_apis_400(driver: str) -> None:
    sim = Simulator([r.text("never served")])
    result = run(driver, sim, model="claude-haiku-4-5", policy=Policy(fallbacks=[{"model": "claude-opus-4-8"}]))
    assert result.final_state == "failed" and result.error is not None and result.error.status_code == 400
    assert "does not support" in result.error.message


def test_fallback_entries_are_checked_like_the_api_does() -> None:
    with pytest.raises(ValueError, match="may set only"):
        Policy(fallbacks=[{"model": "claude-opus-4-8", "temperature": 0}])
    with pytest.raises(ValueError, match="'model'"):
        Policy(fallbacks=[{"max_tokens": 10}])
    with pytest.raises(ValueError, match="at least one"):
        Policy(fallbacks=[])


# --- 3. fallback credit tokens -------------------------------------------------------------------------------


@pytest.mark.beyond_schema  # the fallback_credit_token parameter
@pytest.mark.parametrize("before", [0, 1], ids=["first_request", "after_a_tool_turn"])
def test_a_refusals_credit_token_goes_on_the_retry_and_is_redeemed(driver: str, before: int) -> None:
    sim = Simulator([*tool_turns(before), r.refusal(credit_token=True), r.text("Answer.")])
    policy = Policy(fallback_model="claude-opus-4-8")
    result = run(driver, sim, model="claude-fable-5", policy=policy, system="Be brief.")
    assert result.final_state == "done" and result.text == "Answer."
    refused, retry = sim.requests[before], sim.requests[before + 1]
    assert CREDIT_BETA in refused.betas and "fallback_credit_token" not in refused.body
    token = event(result, "refusal.fallback")
    assert token["credit_token"] is True
    assert retry.model == "claude-opus-4-8"
    assert retry.body["fallback_credit_token"]["mode"] == "best_effort"
    assert retry.body["fallback_credit_token"]["token"].startswith("fct_")
    # the same body as the refused request, so the API redeems it
    for name in ("system", "messages", "tools"):
        assert retry.body[name] == refused.body[name]
    assert event(result, "fallback.credit") == {"status": "redeemed", "reason": None, "remove_to_redeem": None}


def test_fallbacks_and_a_client_side_chain_are_refused_together() -> None:
    # The API rejects a credit token beside `fallbacks`, and a refusal would fall back twice: one of the two.
    policy = Policy(fallback_model="claude-opus-4-8", fallbacks=[{"model": "claude-sonnet-5-5"}])
    with pytest.raises(ConfigurationError, match=r"cannot be combined.*Use\s+fallback_models"):
        Agent(client=Simulator([]).client(), model="claude-fable-5", policy=policy)


def test_without_credit_tokens_the_retry_is_plain(driver: str) -> None:
    sim = Simulator([r.refusal(credit_token=True), r.text("Answer.")])
    policy = Policy(fallback_model="claude-opus-4-8", fallback_credit_tokens=False)
    result = run(driver, sim, model="claude-fable-5", policy=policy)
    assert result.final_state == "done"
    refused, retry = sim.requests
    assert not refused.betas and not retry.betas  # no beta asked for: the refusal carried no token
    assert "fallback_credit_token" not in (refused.body | retry.body)
    assert result.events and event(result, "refusal.fallback")["credit_token"] is False


# --- configuration -------------------------------------------------------------------------------------------


def test_configurations_the_api_would_reject_later_are_refused_now() -> None:
    sim = Simulator([])
    with pytest.raises(ConfigurationError, match="compact_at_input_tokens"):
        Agent(client=sim.client(), request_params={"compaction": {"type": "summarize"}})
    with pytest.raises(ConfigurationError, match=r"Policy\.fallbacks"):
        Agent(client=sim.client(), request_params={"fallbacks": "default"})
    with pytest.raises(ConfigurationError, match="compact_20260112"):
        Agent(
            client=sim.client(),
            request_params={"context_management": AUTO_EDIT},
            policy=Policy(compact_at_input_tokens=1000),
        )
    with pytest.raises(ValueError, match="needs compact_at_input_tokens"):
        Policy(compaction_instructions="Keep names.")


# --- 4. the simulator, on the wire ---------------------------------------------------------------------------

BUILDERS = {
    "compaction": lambda: r.compaction("Sum.", encrypted_content="Enc==", signature="Sig=="),
    "failed_compaction": r.failed_compaction,
    "with_compaction": lambda: r.with_compaction(r.text("Hi."), "Earlier."),
    "refusal_credit": lambda: r.refusal(credit_token=True, text="I can"),
    "fallback": lambda: r.served_by_fallback(r.text("Served."), declined_text="Part"),
}


def raw_exchange(sim: Simulator, stream: bool) -> tuple[int, bytes]:
    headers = {
        "anthropic-version": "2023-06-01",
        "x-api-key": "sk-ant-sim-0000000000000000",
        "anthropic-beta": f"{FALLBACK_BETA},{CREDIT_BETA}",
        "content-type": "application/json",
    }
    body = {
        "model": "claude-fable-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Q"}],
        "fallbacks": "default",
        "stream": stream,
    }
    with httpx2.Client(transport=httpx2.MockTransport(sim.handle)) as http:
        response = http.post("https://api.anthropic.com/v1/messages?beta=true", json=body, headers=headers)
        return response.status_code, response.read()


@pytest.mark.parametrize("name", BUILDERS)
def test_every_new_reply_is_the_same_message_as_json_and_as_sse(name: str, no_foreign_observers: None) -> None:
    """The SSE framing (one compaction_delta, a fallback block without deltas, iterations and the token in
    message_delta) folds into the JSON body, by agentfsm's assembler and by the SDK's own accumulator."""
    status, raw = raw_exchange(Simulator([BUILDERS[name]()]), stream=False)
    assert status == 200
    body = json.loads(raw)
    status, raw_sse = raw_exchange(Simulator([BUILDERS[name]()]), stream=True)
    assembler = ReplyAssembler()
    for kind, data in parse_sse(raw_sse.decode().splitlines()):
        assembler.feed(kind, data)
    folded = assembler.body()
    for key in ("content", "model", "stop_reason", "stop_details"):
        assert folded[key] == body[key], key  # a fresh simulator mints the same token for the same request
    assert folded["usage"].get("iterations") == body["usage"].get("iterations")
    # the SDK reads the same stream to the same blocks
    sim = Simulator([BUILDERS[name]()])
    client = sim.client(max_retries=0)
    with client.beta.messages.stream(
        model="claude-fable-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "Q"}],
        fallbacks="default",
        betas=[FALLBACK_BETA, CREDIT_BETA],
    ) as stream:
        message = stream.get_final_message()
    sdk_blocks = [b.model_dump(mode="json", by_alias=True, exclude_none=True) for b in message.content]
    assert sdk_blocks == [{k: v for k, v in b.items() if v is not None} for b in body["content"]]
    assert message.model == body["model"]


def ask(model: str = "claude-sonnet-5-5", **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "Q"}], **extra}


SUMMARIZE = {"type": "summarize"}
TOOL_TURN = [
    {"role": "user", "content": "Q"},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01A", "name": "lookup", "input": {}}]},
]
FORMAT = {"type": "json_schema", "schema": {}}

#: Request body, the betas it is sent with, and a part of the 400's message.
INVALID: dict[str, tuple[dict[str, Any], tuple[str, ...], str]] = {
    "compaction without its beta": (ask(compaction=SUMMARIZE), (), "compaction: Extra inputs"),
    "compaction with context_management": (
        ask(compaction=SUMMARIZE, context_management=AUTO_EDIT),
        (COMPACT_BETA, EDIT_BETA),
        "cannot be combined with `context_management`",
    ),
    "compaction with stop_sequences": (ask(compaction=SUMMARIZE, stop_sequences=["x"]), (COMPACT_BETA,), "stop_seq"),
    "compaction forcing tool use": (ask(compaction=SUMMARIZE, tool_choice={"type": "any"}), (COMPACT_BETA,), "tool_ch"),
    "compaction with an output format": (
        ask(compaction=SUMMARIZE, output_config={"format": FORMAT}),
        (COMPACT_BETA,),
        "output_config.format",
    ),
    "compaction with an output format in a fallback": (
        ask(compaction=SUMMARIZE, fallbacks=[{"model": "claude-opus-4-8", "output_config": {"format": FORMAT}}]),
        (COMPACT_BETA, FALLBACK_BETA),
        "fallbacks.output_config.format",
    ),
    "compaction with unanswered tool calls": (
        ask(compaction=SUMMARIZE, messages=TOOL_TURN),
        (COMPACT_BETA,),
        "unanswered `tool_use`",
    ),
    "an empty compaction summary": (
        ask(messages=[{"role": "assistant", "content": [{"type": "compaction", "content": ""}]}]),
        (EDIT_BETA,),
        "non-empty summary",
    ),
    "fallbacks without their beta": (ask(fallbacks="default"), (), "fallbacks: Extra inputs"),
    "a fallbacks list to a model without fallbacks": (
        ask("claude-haiku-4-5", fallbacks=[{"model": "claude-opus-4-8"}]),
        (FALLBACK_BETA,),
        "does not support",
    ),
    "a fallbacks entry with another key": (
        ask(fallbacks=[{"model": "claude-opus-4-8", "temperature": 1}]),
        (FALLBACK_BETA,),
        "Extra inputs",
    ),
    "a credit token with fallbacks": (
        ask("claude-opus-4-8", fallbacks="default", fallback_credit_token="fct_x"),
        (FALLBACK_BETA, CREDIT_BETA),
        "cannot be combined with `fallbacks`",
    ),
    "a credit token object without its beta": (
        ask("claude-opus-4-8", fallback_credit_token={"token": "fct_x", "mode": "best_effort"}),
        (),
        "object form needs",
    ),
    "an unknown credit token": (ask("claude-opus-4-8", fallback_credit_token="fct_x"), (), "unknown token"),
}


@pytest.mark.parametrize("case", INVALID)
def test_the_simulator_answers_invalid_combinations_with_the_apis_400(case: str, no_foreign_observers: None) -> None:
    body, betas, expected = INVALID[case]
    core = {k: body[k] for k in ("model", "max_tokens", "messages")}
    rest = {k: v for k, v in body.items() if k not in core}
    sim = Simulator([r.text("never served")])
    client = sim.client(max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as caught:
        if betas:
            client.beta.messages.create(**core, betas=list(betas), extra_body=rest)
        else:
            client.beta.messages.create(**core, extra_body=rest)
    assert expected in str(caught.value)
    assert sim.replies_served == 0


@pytest.mark.parametrize(
    ("change", "mode", "outcome"),
    [
        (None, "strict", "redeemed"),
        ("body", "strict", "400 body_mismatch"),
        ("body", "best_effort", "body_mismatch"),
        ("model", "best_effort", "invalid_target_model"),
        ("time", "best_effort", "expired"),
        ("time", "strict", "400 expired"),
    ],
)
def test_the_simulator_redeems_credit_tokens_like_the_api(
    change: str | None, mode: str, outcome: str, no_foreign_observers: None
) -> None:
    now = [0.0]
    sim = Simulator([r.refusal(credit_token=True), r.text("Served.")], clock=lambda: now[0])
    client = sim.client(max_retries=0)
    base: dict[str, Any] = {
        "model": "claude-fable-5",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Q"}],
        "betas": [CREDIT_BETA],
    }
    refused = client.beta.messages.create(**base)
    assert refused.stop_details is not None
    token = refused.stop_details.fallback_credit_token
    assert token is not None and refused.stop_details.fallback_has_prefill_claim is False
    retry = {**base, "model": "claude-fable-5" if change == "model" else "claude-opus-4-8"}
    if change == "body":
        retry["messages"] = [{"role": "user", "content": "Q, asked differently"}]
    if change == "time":
        now[0] += sim_serverside.CREDIT_TOKEN_TTL_S + 1
    retry["fallback_credit_token"] = token if mode == "strict" else {"token": token, "mode": mode}
    if outcome.startswith("400"):
        with pytest.raises(anthropic.BadRequestError, match=outcome.split()[1]):
            client.beta.messages.create(**retry)
        return
    served = client.beta.messages.create(**retry)
    credit = served.usage.fallback_credit
    assert credit is not None
    assert credit.status.type == ("redeemed" if outcome == "redeemed" else "not_applied")
    if outcome != "redeemed":
        assert getattr(credit.status, "reason", None) == outcome


def test_refusals_carry_no_credit_token_without_the_beta(no_foreign_observers: None) -> None:
    sim = Simulator([r.refusal(credit_token=True)])
    refused = sim.client(max_retries=0).messages.create(
        model="claude-fable-5", max_tokens=16, messages=[{"role": "user", "content": "Q"}]
    )
    assert refused.stop_reason == "refusal" and refused.stop_details is not None
    assert refused.stop_details.model_dump().get("fallback_credit_token") is None
