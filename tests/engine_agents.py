"""Agents the durable-engine tests serve from worker processes (``agentfsm worker ... --agent engine_agents:X``).

A worker builds its agent with no arguments, so everything a test varies comes
from the environment the test gives the worker process:

* ``AGENTFSM_TEST_DIR``: where ``count`` logs each real execution (``tool.log``), where the kill
  markers go, and where each worker process logs the events it emits (``events.<pid>.jsonl``);
* ``AGENTFSM_TEST_KILL``: where the worker SIGKILLs itself, once per test (a marker file remembers):
  ``tool:<label>`` after that count call's side effect (``before:<label>`` before it, with
  ``ReconcileKillAgent``), ``reply:<turn>`` right after that reply
  (in the ``tool_use`` hook, once the engine has recorded the reply).

The client sends its worker's pid in a header, so the test's simulator can kill the worker that sent
a request while it waits for the answer. The conversation is ``scenario``'s: a paused server tool,
``count("a")``, ``count("b")`` and ``count("c")`` in parallel, then a text cut at ``max_tokens``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import anthropic
import scenario as sc

from agentfsm import Agent, Policy, Tool, ToolContext
from agentfsm.machine.conversation import Conversation

PID_HEADER = "x-agentfsm-test-pid"


def _dir() -> Path:
    return Path(os.environ["AGENTFSM_TEST_DIR"])


def _kill_once(where: str) -> None:
    """SIGKILL this process if the test asked for a kill ``where`` and none happened yet."""
    if os.environ.get("AGENTFSM_TEST_KILL") != where:
        return
    marker = _dir() / "killed"
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()} {where} {time.time()}".encode())
    os.fsync(fd)
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached


def count(label: str) -> str:
    """Count one call of the given label."""
    with (_dir() / "tool.log").open("a") as f:
        f.write(label + "\n")
        f.flush()
        os.fsync(f.fileno())
    _kill_once(f"tool:{label}")
    return f"counted {label}"


def count_keyed(label: str, ctx: ToolContext) -> str:
    """Count one call of the given label."""
    _kill_once(f"before:{label}")
    with (_dir() / "tool.log").open("a") as f:  # the label and the call's key: what ``counted`` reads
        f.write(f"{label} {ctx.idempotency_key}\n")
        f.flush()
        os.fsync(f.fileno())
    _kill_once(f"tool:{label}")
    return f"counted {label}"


def counted(ctx: ToolContext) -> str | None:
    """``count_keyed``'s reconcile check: the log says whether the call's effect happened (found by the call's
    key, so only if the worker that takes over gives the call the key it ran with)."""
    log = _dir() / "tool.log"
    for line in log.read_text().splitlines() if log.exists() else []:
        label, _, key = line.partition(" ")
        if key == ctx.idempotency_key:
            return f"counted {label}"
    return None


class FileLogger:
    """The events this worker process emits, one JSON line each (line-buffered: a SIGKILL loses none)."""

    def __init__(self) -> None:
        self._file = (_dir() / f"events.{os.getpid()}.jsonl").open("a", buffering=1)

    def _log(self, level: str, event: str, **data: Any) -> None:
        self._file.write(json.dumps({"event": event, "level": level, **data}, default=str) + "\n")

    def debug(self, event: str, **data: Any) -> None:
        self._log("debug", event, **data)

    def info(self, event: str, **data: Any) -> None:
        self._log("info", event, **data)

    def warning(self, event: str, **data: Any) -> None:
        self._log("warning", event, **data)

    def error(self, event: str, **data: Any) -> None:
        self._log("error", event, **data)


class KillAgent(Agent):
    """The scenario's agent, as a worker builds it (no arguments); ``count`` is not idempotent."""

    tools = [Tool(count), sc.WEB_SEARCH]
    policy = sc.POLICY

    def __init__(self) -> None:
        client = anthropic.AsyncAnthropic(max_retries=0, default_headers={PID_HEADER: str(os.getpid())})
        logger = FileLogger() if "AGENTFSM_TEST_DIR" in os.environ else None
        super().__init__(client=client, logger=logger)

    def on_tool_use(self, conv: Conversation) -> str | None:
        _kill_once(f"reply:{conv.turns}")
        return None


class IdempotentKillAgent(KillAgent):
    """The same, with ``count`` marked idempotent (a call running at a kill runs again)."""

    tools = [Tool(count, idempotent=True), sc.WEB_SEARCH]


class ReconcileKillAgent(KillAgent):
    """The same, with a reconcile check that asks the tool's log (``AGENTFSM_TEST_KILL=before:<label>`` kills
    before the effect, ``tool:<label>`` after it)."""

    tools = [Tool(count_keyed, name="count", reconcile=counted), sc.WEB_SEARCH]


class LongAgent(Agent):
    """Many turns: the model calls ``echo`` (5 kB results) ``TURNS`` times, then answers (history size tests)."""

    policy = Policy(max_turns=200, max_tokens=1024)

    def __init__(self) -> None:
        super().__init__(client=anthropic.AsyncAnthropic(max_retries=0), logger=None, tools=[Tool(echo_block)])


def echo_block(n: int) -> str:
    """Return a block of text of about 5 kB."""
    return f"block {n}: " + ("lorem ipsum dolor sit amet " * 190)


class TextAgent(Agent):
    """One request, no tools (rate-limit and streaming tests)."""

    def __init__(self) -> None:
        client = anthropic.AsyncAnthropic(max_retries=0, default_headers={PID_HEADER: str(os.getpid())})
        super().__init__(client=client, logger=None)


class BrokenAgent(TextAgent):
    """Its hook chooses a trigger that does not leave ``end_turn``: the run raises in the worker."""

    def on_end_turn(self, conv: Conversation) -> str | None:
        return "no_such_trigger"
