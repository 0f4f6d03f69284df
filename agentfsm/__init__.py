"""agentfsm: Claude agent loops (the Anthropic Messages API) as explicit finite-state machines.

The public face is here, at the top: ``Agent`` (the class you subclass),
``Policy`` (every limit of a run), ``RunResult`` and ``errors``. The rest is
one folder per part of the architecture:

* ``machine/`` — the state table, the run's state, and the one loop every runner interprets
* ``wire/``    — requests to the Messages API and replies from it; the history's wire rules, usage, caching, prices
* ``tools/``   — ``@tool`` and the executors that run tool calls
* ``stores/``  — snapshots and where they are kept (memory, SQLite, PostgreSQL)
* ``observe/`` — events, graphs, replay, the live view
* ``engines/`` — conversations as durable workflows (DBOS, Temporal)
* ``batch/``   — ``BatchRunner``: many conversations through the Message Batches API, at half the price
* ``sim/``     — the Messages API simulator the demo and the tests run on
* ``cli/``     — the ``agentfsm`` command line; ``demo`` is its scripted demo
* ``otel``     — ``instrument()``: OpenTelemetry spans of every run (the ``otel`` extra)
* ``loading``, ``redaction`` — ``MODULE:Class`` loading, and credentials kept out of events, rows and spans

Names are imported on first use, so ``import agentfsm`` (and ``agentfsm --help``)
does not pay for the anthropic SDK until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentfsm.agent import Agent
    from agentfsm.errors import (
        AgentfsmError,
        AlreadyDecidedError,
        ApprovalDecisionError,
        ConfigurationError,
        ConversationLockedError,
        CorruptSnapshotError,
        EventsFileError,
        GraphvizNotFoundError,
        InvalidActionError,
        InvalidHistoryError,
        InvalidTransitionError,
        MissingAPIKeyError,
        NoOutputError,
        SnapshotVersionError,
        StaleConversationError,
        StoreError,
        UnknownConversationError,
    )
    from agentfsm.machine import actions
    from agentfsm.machine.conversation import Conversation
    from agentfsm.machine.guards import guard
    from agentfsm.machine.table import REQUESTING, STOP_REASONS, TERMINAL_STATES, Transition, Wait
    from agentfsm.observe.events import EVENT_NAMES, Event
    from agentfsm.observe.live import LiveView
    from agentfsm.observe.replay import EventsWriter, ReplayedRun
    from agentfsm.policy import Policy
    from agentfsm.redaction import redact_processor
    from agentfsm.result import RunError, RunResult, TraceStep
    from agentfsm.stores import MemoryStore, PostgresStore, RunSummary, Snapshot, SQLiteStore, Store
    from agentfsm.tools import DefaultExecutor, Tool, ToolCall, ToolContext, ToolExecutor, ToolResult, tool
    from agentfsm.tools.hooks import Deny, Rewrite
    from agentfsm.wire.usage import Usage

#: Public name -> the module that defines it.
_WHERE: dict[str, str] = {
    "Agent": "agentfsm.agent",
    "Policy": "agentfsm.policy",
    **dict.fromkeys(("RunError", "RunResult", "TraceStep"), "agentfsm.result"),
    "Usage": "agentfsm.wire.usage",
    **dict.fromkeys(
        (
            "AgentfsmError",
            "AlreadyDecidedError",
            "ApprovalDecisionError",
            "ConfigurationError",
            "ConversationLockedError",
            "CorruptSnapshotError",
            "EventsFileError",
            "GraphvizNotFoundError",
            "InvalidActionError",
            "InvalidHistoryError",
            "InvalidTransitionError",
            "MissingAPIKeyError",
            "NoOutputError",
            "SnapshotVersionError",
            "StaleConversationError",
            "StoreError",
            "UnknownConversationError",
        ),
        "agentfsm.errors",
    ),
    "Conversation": "agentfsm.machine.conversation",
    "guard": "agentfsm.machine.guards",
    **dict.fromkeys(("REQUESTING", "STOP_REASONS", "TERMINAL_STATES", "Transition", "Wait"), "agentfsm.machine.table"),
    **dict.fromkeys(("EVENT_NAMES", "Event"), "agentfsm.observe.events"),
    "redact_processor": "agentfsm.redaction",
    "LiveView": "agentfsm.observe.live",
    **dict.fromkeys(("EventsWriter", "ReplayedRun"), "agentfsm.observe.replay"),
    **dict.fromkeys(
        ("MemoryStore", "PostgresStore", "RunSummary", "SQLiteStore", "Snapshot", "Store"), "agentfsm.stores"
    ),
    **dict.fromkeys(
        ("DefaultExecutor", "Tool", "ToolCall", "ToolContext", "ToolExecutor", "ToolResult", "tool"), "agentfsm.tools"
    ),
    **dict.fromkeys(("Deny", "Rewrite"), "agentfsm.tools.hooks"),
}
#: Public modules reachable as attributes (``from agentfsm import actions``).
_MODULES: dict[str, str] = {"actions": "agentfsm.machine.actions"}

# Literal, so type checkers see what is exported; a test keeps it equal to the two tables above.
__all__ = [
    "EVENT_NAMES",
    "REQUESTING",
    "STOP_REASONS",
    "TERMINAL_STATES",
    "Agent",
    "AgentfsmError",
    "AlreadyDecidedError",
    "ApprovalDecisionError",
    "ConfigurationError",
    "Conversation",
    "ConversationLockedError",
    "CorruptSnapshotError",
    "DefaultExecutor",
    "Deny",
    "Event",
    "EventsFileError",
    "EventsWriter",
    "GraphvizNotFoundError",
    "InvalidActionError",
    "InvalidHistoryError",
    "InvalidTransitionError",
    "LiveView",
    "MemoryStore",
    "MissingAPIKeyError",
    "NoOutputError",
    "Policy",
    "PostgresStore",
    "ReplayedRun",
    "Rewrite",
    "RunError",
    "RunResult",
    "RunSummary",
    "SQLiteStore",
    "Snapshot",
    "SnapshotVersionError",
    "StaleConversationError",
    "Store",
    "StoreError",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolExecutor",
    "ToolResult",
    "TraceStep",
    "Transition",
    "UnknownConversationError",
    "Usage",
    "Wait",
    "actions",
    "guard",
    "redact_processor",
    "tool",
]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value: Any = importlib.import_module(_MODULES[name])
    elif name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    else:
        raise AttributeError(f"module 'agentfsm' has no attribute {name!r}")
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
