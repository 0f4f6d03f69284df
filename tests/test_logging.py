"""Where events go: quiet standard library logging by default, the application's configuration when it has one.

What a program that never configured logging sees is checked in a fresh interpreter (pytest installs
handlers of its own); the rest in-process, with the records the ``agentfsm`` logger produces.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from agentfsm import EVENT_NAMES, Agent, Policy, RunResult, tool
from agentfsm.observe.events import EventMessage, StdlibLogger, default_logger
from agentfsm.observe.replay import replay_one
from agentfsm.sim import Simulator
from agentfsm.sim import replies as r

MODEL = "claude-haiku-4-5"


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


@tool
def broken(key: str) -> str:
    """Always fails."""
    raise RuntimeError("no such key")


def run_once(**kw: Any) -> RunResult:
    """Two turns with a failing tool call (a warning event) and a working one."""
    sim = Simulator([r.tool_uses([("lookup", {"key": "a"}), ("broken", {"key": "b"})]), r.text("Done.")])
    agent = Agent(client=sim.client(max_retries=0), model=MODEL, tools=[lookup, broken], **kw)
    return agent.run("Look a and b up.")


@pytest.fixture
def agentfsm_records() -> Iterator[list[logging.LogRecord]]:
    """The records the ``agentfsm`` logger emits, at every level, through a handler of its own."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("agentfsm")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(autouse=True)
def _structlog_unconfigured() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def _python(*parts: str) -> subprocess.CompletedProcess[str]:
    code = "\n".join(textwrap.dedent(part) for part in parts)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


RUN = """
    from agentfsm import Agent, tool
    from agentfsm.sim import Simulator, replies as r

    @tool
    def broken(key: str) -> str:
        '''Always fails.'''
        raise RuntimeError("no such key")

    def run(script):
        agent = Agent(client=Simulator(script).client(max_retries=0), model="claude-haiku-4-5", tools=[broken])
        return agent.run("Go.")

    run([r.tool_use("broken", {"key": "k"}), r.text("Done.")])   # a warning event
    run([r.overloaded()])                                          # error events: a failed run
"""


@pytest.mark.slow  # a subprocess
def test_a_program_that_never_configured_logging_prints_nothing() -> None:
    proc = _python(RUN)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", "")


@pytest.mark.slow  # a subprocess
def test_basic_config_shows_the_events_and_none_of_the_state_machine_librarys_chatter() -> None:
    proc = _python(
        """
        import logging, sys
        logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(levelname)s %(name)s %(message)s")
        for noisy in ("httpx2", "anthropic", "httpcore2"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        """,
        RUN,
        """
        # the application's own transitions machines still log as they always did
        from transitions import Machine
        class Door: pass
        door = Door()
        Machine(model=door, states=["shut", "open"], initial="shut").add_transition("push", "shut", "open")
        door.push()
        """,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    ours = [line for line in lines if line.split()[1] == "agentfsm"]
    theirs = [line for line in lines if line.split()[1].startswith("transitions")]
    assert ours[0].startswith("INFO agentfsm run.started conversation_id=conv_")
    assert any(line.startswith("WARNING agentfsm tool.finished ") and "is_error=true" in line for line in ours)
    assert any(line.startswith("ERROR agentfsm request.failed ") for line in ours)
    assert {line.split()[2] for line in ours} <= set(EVENT_NAMES)
    assert theirs and all("agentfsm" not in line for line in theirs)  # only the application's machine
    assert any("Finished processing state shut exit callbacks" in line for line in theirs)


def test_records_carry_the_event_as_data_and_read_as_one_line(agentfsm_records: list[logging.LogRecord]) -> None:
    result = run_once()
    assert [rec.msg["event"] for rec in agentfsm_records] == [e.event for e in result.events]  # type: ignore[index]
    for rec, event in zip(agentfsm_records, result.events, strict=True):
        assert isinstance(rec.msg, EventMessage)
        assert rec.name == "agentfsm" and rec.levelname.lower() == event.level
        assert rec.msg == {
            "event": event.event,
            "level": event.level,
            "conversation_id": event.conversation_id,
            "turn": event.turn,
            "state": event.state,
            "timestamp": event.timestamp,
            **event.data,
        }
    line = next(rec.getMessage() for rec in agentfsm_records if rec.msg["event"] == "transition")  # type: ignore[index]
    assert line == (
        f"transition conversation_id={result.conversation_id} turn=1 state=tool_use "
        "source=requesting dest=tool_use trigger=tool_use stop_reason=tool_use history_size=[1,1,16]"
    )
    failed = next(rec.getMessage() for rec in agentfsm_records if rec.levelno == logging.WARNING)
    assert failed.startswith("tool.finished ") and "tool=broken" in failed and "is_error=true" in failed


def test_nothing_is_built_below_the_loggers_level_and_set_level_takes_effect_at_once(
    agentfsm_records: list[logging.LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    original = EventMessage.__init__

    def counting(self: EventMessage, *args: Any, **kwargs: Any) -> None:
        built.append(kwargs.get("event", "?"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(EventMessage, "__init__", counting)
    logger = logging.getLogger("agentfsm")
    logger.setLevel(logging.WARNING)
    result = run_once()
    warnings = [e.event for e in result.events if e.level in ("warning", "error")]
    assert warnings and built == warnings  # info events cost no message, no record
    assert [rec.msg["event"] for rec in agentfsm_records] == warnings  # type: ignore[index]
    built.clear()
    logger.setLevel(logging.INFO)  # the standard library's per-level cache is cleared: seen at once
    result = run_once()
    assert len(built) == len(result.events)
    logging.disable(logging.CRITICAL)
    try:
        built.clear()
        run_once()
        assert built == []
    finally:
        logging.disable(logging.NOTSET)


def test_logger_none_logs_nothing_and_still_records_every_event(agentfsm_records: list[logging.LogRecord]) -> None:
    result = run_once(logger=None)
    assert agentfsm_records == []
    assert [e.event for e in result.events][:2] == ["run.started", "request.sent"]
    assert result.events[-1].event == "run.finished"


def test_a_structlog_logger_given_to_the_agent_gets_every_event(agentfsm_records: list[logging.LogRecord]) -> None:
    seen: list[dict[str, Any]] = []

    def keep(logger: Any, method: str, event_dict: dict[str, Any]) -> str:
        seen.append({"level": method, **event_dict})
        return ""

    logger = structlog.wrap_logger(structlog.PrintLogger(io.StringIO()), processors=[keep])
    result = run_once(logger=logger)
    assert [(e["event"], e["level"]) for e in seen] == [(e.event, e.level) for e in result.events]
    assert all(e["conversation_id"] == result.conversation_id for e in seen)
    assert agentfsm_records == []


def test_once_the_application_configures_structlog_its_configuration_takes_over(
    agentfsm_records: list[logging.LogRecord],
) -> None:
    with structlog.testing.capture_logs() as captured:
        result = run_once()
    assert [(e["event"], e["log_level"]) for e in captured] == [(e.event, e.level) for e in result.events]
    assert agentfsm_records == []  # not twice


def test_a_structlog_processor_formatter_renders_json_that_replay_reads(
    agentfsm_records: list[logging.LogRecord], tmp_path: Path
) -> None:
    path = tmp_path / "run.jsonl"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.JSONRenderer()]
        )
    )
    logger = logging.getLogger("agentfsm")
    logger.addHandler(handler)
    try:
        result = run_once()
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == [e.event for e in result.events]
    assert lines[0]["conversation_id"] == result.conversation_id and lines[0]["level"] == "info"
    assert replay_one(path).trace == result.trace


def test_the_default_logger_is_also_a_structlog_style_logger(agentfsm_records: list[logging.LogRecord]) -> None:
    logger = default_logger()
    assert isinstance(logger, StdlibLogger) and logger is default_logger()
    logger.warning("custom.thing", detail="x y")
    (rec,) = agentfsm_records
    assert rec.levelno == logging.WARNING and rec.getMessage() == 'custom.thing detail="x y"'
    assert logger.enabled("debug")


def test_agent_default_logger_is_the_stdlib_one() -> None:
    agent = Agent(client=Simulator([r.text("hi")]).client(), model=MODEL, policy=Policy())
    assert agent.logger is default_logger()
