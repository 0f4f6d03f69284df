"""What a conversation in flight holds: its events and its trace kept packed, read back exactly.

A run keeps every event (``RunResult.events``) and every transition (``trace``) while it runs, and a
thousand runs may be in flight at once (``benchmarks/bench.py --memory``). These tests check that the
packed forms give back exactly what was recorded, keep what they cannot pack as it is, and are small.
"""

from __future__ import annotations

import copy
import gc
import json
import pickle
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from agentfsm import Agent, Policy, tool
from agentfsm.machine.state import TraceLog
from agentfsm.observe.events import EventLog, EventRecord, RawEvent
from agentfsm.result import TraceStep
from agentfsm.sim import SimRequest, Simulator
from agentfsm.sim import replies as r
from agentfsm.stores.base import Snapshot

MODEL = "claude-haiku-4-5"


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


def tool_loop(turns: int) -> Callable[[SimRequest], Any]:
    def reply(request: SimRequest) -> Any:
        done = sum(1 for m in request.messages if m["role"] == "assistant")
        if done + 1 < turns:
            return r.tool_use("lookup", {"key": f"k{done}"}, text="Looking that up.")
        return r.text("Every key looked up.")

    return reply


def shape(value: Any) -> Any:
    """``value`` with every object replaced by its type, containers walked: equal shapes, equal types."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return (type(value), [shape(v) for v in value])
    return type(value)


def retained(build: Callable[[], Any]) -> tuple[Any, int]:
    """What ``build`` returns, and the bytes still allocated once it has (after gc)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        made = build()
        gc.collect()
        return made, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


# --- events ----------------------------------------------------------------------------------------


def varied(i: int) -> RawEvent:
    data = {
        "n": i,
        "ratio": i / 7,
        "zero": -0.0,
        "big": 2**70 + i,
        "flag": i % 2 == 0,
        "none": None,
        "text": f"Tiếng Việt {i} \ud800",  # a lone surrogate, as a reply can carry one
        "pair": (i, "a"),
        "nested": {"list": [1, [2, "x"]], "dict": {"k": 1.5}},
    }
    return ("transition", "info", i, "tool_use", time.time(), data)


def test_an_event_record_gives_back_every_event_exactly_with_the_same_types() -> None:
    record = EventRecord()
    events = [varied(i) for i in range(400)]  # many packed chunks and an unpacked tail
    for event in events:
        record.add(event, plain=True)
    back = list(record)
    assert back == events and shape(back) == shape(events)
    assert len(record) == 400 and record[-1] == events[-1] and record[10:12] == events[10:12]
    assert list(reversed(record)) == events[::-1]


def test_fields_that_cannot_be_packed_exactly_are_kept_as_they_are() -> None:
    class Name(str):
        pass

    odd: list[Any] = [bytearray(b"raw"), Name("a str subclass"), object(), {"deep": [[[1]]]}]
    log = EventLog("conv_1", None)
    for value in odd:
        log.emit("transition", turn=1, state="tool_use", value=value)
        log.emit("tool.started", turn=1, state="tool_use", tool="lookup")  # plain ones in between
    back = list(log.raw)
    assert [event[0] for event in back] == ["transition", "tool.started"] * len(odd)
    for value, event in zip(odd, back[::2], strict=True):
        assert event[5]["value"] is value  # the very object: nothing was converted
    assert all(event[5] == {"tool": "lookup"} for event in back[1::2])
    log.emit("transition", turn=1, state="tool_use", value={1: "an int key"})  # packed: marshal keeps it
    assert shape(list(log.raw)[-1][5]) == {"value": {1: str}}


def test_a_name_or_state_that_is_not_a_plain_str_is_kept_as_it_is() -> None:
    class State(str):
        pass

    record = EventRecord()
    event: RawEvent = ("transition", "info", 1, State("tool_use"), 1.0, {"source": "requesting"})
    record.add(event, plain=True)
    assert type(record[0][3]) is State


def test_a_record_read_while_it_grows_pickled_and_copied_gives_the_same_events() -> None:
    record = EventRecord()
    events = [varied(i) for i in range(60)]
    for i, event in enumerate(events):
        record.add(event, plain=True)
        assert list(record) == events[: i + 1]
    again = pickle.loads(pickle.dumps(record))
    assert type(again) is EventRecord and again == record and copy.deepcopy(record) == record
    assert EventRecord(list(record)) == record


def test_a_packed_event_holds_no_reference_to_its_fields_and_takes_tens_of_bytes() -> None:
    sim = Simulator(tool_loop(20), prompt_cache=False)
    result = Agent(client=sim.client(max_retries=0), model=MODEL, tools=[lookup], logger=None).run("Look up.")
    events = list(result._raw_events)
    assert len(events) > 100

    def pack() -> EventRecord:
        record = EventRecord()
        for event in copy.deepcopy(events):  # fresh dicts, dropped as soon as they are packed
            record.add(event, plain=True)
        return record

    record, size = retained(pack)
    assert record == events
    # As tuples of dicts these events held ~450 bytes each; packed, ~45.
    assert size / len(events) < 100, size / len(events)


def test_run_events_read_back_as_the_logger_saw_them() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    class Keep:
        def __getattr__(self, level: str) -> Callable[..., None]:
            return lambda event, **fields: seen.append((event, fields))

    sim = Simulator(tool_loop(12), prompt_cache=False)
    result = Agent(client=sim.client(max_retries=0), model=MODEL, tools=[lookup], logger=Keep()).run("Look up.")
    assert len(result.events) == len(seen) > 60
    for event, (name, fields) in zip(result.events, seen, strict=True):
        assert event.event == name
        assert {"conversation_id": event.conversation_id, "turn": event.turn, "state": event.state, **event.data} == (
            fields
        )


# --- the history ------------------------------------------------------------------------------------


def test_replies_kept_in_the_history_share_their_keys_type_and_tool_name_and_are_sent_as_received() -> None:
    sim = Simulator(tool_loop(5), prompt_cache=False)
    agent = Agent(client=sim.client(), model=MODEL, tools=[lookup], logger=None, policy=Policy(prompt_caching=False))
    result = agent.run("Look up.")
    kept = [block for m in result.messages if m["role"] == "assistant" for block in m["content"]]
    assert len(kept) == 9  # four text + tool_use replies, and the answer
    for block in kept:
        assert all(key is sys.intern(key) for key in block)
        assert block["type"] is sys.intern(block["type"])
        if block["type"] == "tool_use":
            assert block["name"] is sys.intern("lookup")
    # Equal to what the model sent: the next request carried each reply back as it came.
    assert sim.requests[-1].messages == result.messages[:-1]
    assert result.messages[-1] == {"role": "assistant", "content": [{"type": "text", "text": "Every key looked up."}]}


# --- the trace -------------------------------------------------------------------------------------


def test_the_trace_reads_as_trace_steps_and_is_stored_as_it_always_was() -> None:
    sim = Simulator(tool_loop(6), prompt_cache=False)
    conv = Agent(client=sim.client(max_retries=0), model=MODEL, tools=[lookup], logger=None).start("Look up.")
    steps = []
    while (step := conv.step()) is not None:
        steps.append(step)
    trace = conv.trace
    assert isinstance(trace, TraceLog) and len(trace) == len(steps) == 12
    assert trace == steps and list(trace) == steps and list(reversed(trace)) == steps[::-1]
    assert trace[-1] == steps[-1] and trace[2:4] == steps[2:4] and conv.result().trace == steps
    with pytest.raises(IndexError):
        trace[12]
    snap = conv.snapshot()
    stored = json.loads(snap.model_dump_json())
    assert stored["trace"] == [step.model_dump(mode="json") for step in steps]
    again = Snapshot.model_validate(stored)
    assert isinstance(again.trace, TraceLog) and again.trace == steps
    assert again.model_dump() == snap.model_dump() and again.model_dump()["trace"] == [s.model_dump() for s in steps]
    assert pickle.loads(pickle.dumps(trace)) == trace and copy.deepcopy(trace) == trace


def test_a_trace_without_history_sizes_round_trips() -> None:
    old = [TraceStep(source="requesting", dest="end_turn", trigger="end_turn", turn=1)]
    trace = TraceLog(old)
    assert trace == old and trace[0].history_size is None


def test_a_stored_trace_with_a_turn_beyond_32_bits_is_refused_as_invalid() -> None:
    with pytest.raises(ValidationError, match="below 2\\*\\*31"):
        Snapshot.model_validate(
            {
                "conversation_id": "c",
                "agent": "a:A",
                "messages": [{"role": "user", "content": "hi"}],
                "model": MODEL,
                "max_tokens": 1024,
                "trace": [{"source": "a", "dest": "b", "trigger": "t", "turn": 2**40}],
            }
        )


def test_a_trace_step_takes_a_few_dozen_bytes() -> None:
    def build() -> TraceLog:
        trace = TraceLog()
        for turn in range(1000):
            trace.record("requesting", "tool_use", "tool_use", turn, (2 * turn + 1, 1, 20))
            trace.record("tool_use", "requesting", "run_tools", turn, (2 * turn + 3, 1, 0))
        return trace

    trace, size = retained(build)
    assert len(trace) == 2000 and trace[-1].history_size == (2001, 1, 0)
    assert size / 2000 < 40, size / 2000  # as TraceStep models: ~1,000 bytes each
