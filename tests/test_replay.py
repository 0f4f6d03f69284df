"""Replay: a run's events, written as JSON lines, read back offline into the very same trace."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from agentfsm import Agent, Policy, RunResult, tool
from agentfsm.errors import EventsFileError
from agentfsm.observe.replay import EventsWriter, ReplayedRun, read_events, replay, replay_one, write_events
from agentfsm.redaction import redact_processor
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r
from agentfsm.testing import assert_trace


@tool
def get_weather(location: str) -> str:
    """Get the weather."""
    return f"{location}: 31°C"


class Weather(Agent):
    model = "claude-haiku-4-5"
    tools = [get_weather]
    policy = Policy(max_continuations=1, max_pause_resumes=1, fallback_model="claude-haiku-4-5")


SCRIPTS: dict[str, Callable[[], list[Any]]] = {
    "tools-and-continuation": lambda: [
        r.tool_use("get_weather", {"location": "Hanoi"}),
        r.truncated_tool_use("get_weather", '{"loc'),
        r.tool_use("get_weather", {"location": "Hue"}),
        r.max_tokens("Hanoi is 31°C"),
        r.text(" and so is Hue."),
    ],
    "pause-then-give-up": lambda: [r.pause_turn(), r.pause_turn()],
    "refusal-fallback": lambda: [r.refusal(), r.refusal()],
    "api-error": lambda: [r.server_error()],
    "empty-nudge": lambda: [r.tool_use("get_weather", {"location": "Hue"}), r.empty_end_turn(), r.text("31°C")],
    "unknown": lambda: [r.unknown("brand_new_reason")],
}


def run_logged(script: list[Any], processor: Any) -> RunResult:
    """Run with a structlog logger whose chain holds ``processor`` (as a user would configure it)."""
    logger = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[
            redact_processor,
            structlog.processors.add_log_level,
            processor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    sim = Simulator(script)
    return Weather(client=sim.client(max_retries=0), logger=logger).run("Weather in Hanoi and Hue?")


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_the_replayed_trace_equals_the_original(name: str, tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with EventsWriter(path) as writer:
        result = run_logged(SCRIPTS[name](), writer)
    replayed = replay_one(path)
    assert replayed.trace == result.trace
    assert replayed.path == result.path
    assert replayed.final_state == result.final_state and replayed.reason == result.reason
    assert replayed.conversation_id == result.conversation_id and replayed.turns == result.turns
    assert [e.event for e in replayed.events] == [e.event for e in result.events]
    assert [e.data for e in replayed.events] == [json.loads(json.dumps(e.data)) for e in result.events]
    assert_trace(replayed, result.path)
    assert replayed.graph() == result.graph()  # the same path drawn on the same graph


def test_every_written_form_replays_the_same(tmp_path: Path) -> None:
    result = run_logged(SCRIPTS["tools-and-continuation"](), lambda _l, _m, d: d)
    flat = tmp_path / "flat.jsonl"
    write_events(result.events, flat)
    nested = [e.model_dump_json() for e in result.events]  # the Event model's own JSON
    sources = (flat, str(flat), flat.read_text().splitlines(), nested, io.StringIO(flat.read_text()), result.events)
    for source in sources:
        assert replay_one(source).trace == result.trace, type(source)


def test_several_conversations_in_one_file(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    with EventsWriter(path) as writer:
        first = run_logged(SCRIPTS["refusal-fallback"](), writer)
        second = run_logged(SCRIPTS["api-error"](), writer)
    runs = replay(path)
    assert [x.conversation_id for x in runs] == [first.conversation_id, second.conversation_id]
    assert [x.trace for x in runs] == [first.trace, second.trace]
    assert replay_one(path, second.conversation_id).final_state == "failed"
    with pytest.raises(EventsFileError, match="holds 2 conversations"):
        replay_one(path)
    with pytest.raises(EventsFileError, match="no conversation 'nope'"):
        replay_one(path, "nope")


def test_other_loggers_lines_are_skipped_and_levels_kept(tmp_path: Path) -> None:
    result = run_logged(SCRIPTS["unknown"](), lambda _l, _m, d: d)
    lines = [json.dumps({"event": "app.started", "level": "info"})]
    lines += [json.dumps({"event": e.event, "level": e.level.upper(), "conversation_id": e.conversation_id,
                          "turn": e.turn, "state": e.state, "timestamp": "2026-01-01T00:00:00Z", **e.data})
              for e in result.events]  # fmt: skip
    lines.insert(3, "")
    events = read_events(lines)
    assert len(events) == len(result.events)
    assert [e.level for e in events] == [e.level for e in result.events]
    assert events[0].timestamp == 1767225600.0
    assert replay_one(lines).trace == result.trace


def test_an_unfinished_run_replays_up_to_where_it_got() -> None:
    result = run_logged(SCRIPTS["tools-and-continuation"](), lambda _l, _m, d: d)
    cut = [e for e in result.events][:12]
    replayed = replay_one(cut)
    assert replayed.final_state is None and replayed.trace == result.trace[: len(replayed.trace)]
    assert replayed.state == replayed.trace[-1].dest
    assert isinstance(replayed, ReplayedRun)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json\n", r"line 1: not a JSON line"),
        ('{"event": "run.started"}\n[1, 2]\n', r"line 1: event 'run.started' lacks its conversation_id"),
        ('\n[1, 2]\n', r"line 2: expected a JSON object, got list"),
        ('{"event": "transition", "conversation_id": "c", "turn": "x", "state": "s"}\n', r"line 1: .*no integer turn"),
        ('{"event": "transition", "conversation_id": "c", "turn": 1, "state": "s", "source": "a"}\n',
         r"line 1: a transition event needs string source, dest and trigger"),
        ('{"event": "app.log", "msg": "hi"}\n', r"holds no agentfsm events"),
        ("", r"holds no agentfsm events"),
    ],
)  # fmt: skip
def test_a_malformed_events_file_is_a_clear_error(content: str, match: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(EventsFileError, match=match) as err:
        replay(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_broken_chain_of_transitions_is_reported() -> None:
    result = run_logged(SCRIPTS["tools-and-continuation"](), lambda _l, _m, d: d)
    dropped = [e for e in result.events if not (e.event == "transition" and e.data["trigger"] == "run_tools")]
    with pytest.raises(EventsFileError, match="events missing or out of order"):
        replay(dropped)
    lines = [json.dumps({**json.loads(e.model_dump_json()), "data": {**e.data, "final_state": "refused"}})
             if e.event == "run.finished" else e.model_dump_json() for e in result.events]  # fmt: skip
    with pytest.raises(EventsFileError, match=r"run\.finished says 'refused'"):
        replay(lines)


def test_the_events_writer_scrubs_keys_and_passes_other_lines_through() -> None:
    out = io.StringIO()
    writer = EventsWriter(out)
    event = {"event": "request.failed", "conversation_id": "c", "turn": 1, "state": "requesting",
             "message": "bad key sk-ant-api03-abcdefghijklmnop"}  # fmt: skip
    assert writer(None, "error", dict(event)) == event  # passed on unchanged
    assert writer(None, "info", {"event": "something.else"}) == {"event": "something.else"}
    written = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(written) == 1 and written[0]["level"] == "error" and "sk-ant" not in out.getvalue()
    assert written[0]["message"] == "bad key [REDACTED]"


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EventsFileError, match="no such file"):
        replay(tmp_path / "nope.jsonl")
    with pytest.raises(EventsFileError, match="is a directory"):
        replay(tmp_path)
