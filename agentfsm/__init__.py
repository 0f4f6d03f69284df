"""agentfsm: Claude agent loops (the Anthropic Messages API) as explicit finite-state machines.

The pieces, one module each:

* ``agent``        — ``Agent``, the class you subclass (model, system, tools, policy, hooks)
* ``table``        — the state table: states named for the stop reasons, transitions as data
* ``guards``       — the conditions on transitions (``continuations < max_continuations``)
* ``actions``      — what each transition does to the history
* ``conversation`` — one run: state, history, counters; ``step()`` and ``run()``
* ``api``          — one request out, one reply (or failure) back; sync, async, plain or streamed
* ``sse``          — a streamed reply assembled from raw server-sent events
* ``streaming``    — what a streaming caller sees: text, rewinds, transitions, tool calls, the result
* ``tools``        — ``@tool``: functions as tools, schemas, validation, results
* ``executor``     — the ``ToolExecutor`` protocol and the default concurrent executor
* ``policy``       — every limit of a run
* ``events``       — structured events (structlog) and their stable names
* ``result``       — ``RunResult``, ``Usage``, the trace
* ``history``      — checking a message history; the wire rules
* ``store``        — persistence: ``Snapshot``, the ``Store`` protocol, ``MemoryStore``
* ``sqlite_store`` — ``SQLiteStore``, the embedded store (one SQLite file)
* ``postgres_store`` — ``PostgresStore``, for many workers on many machines (``agentfsm[postgres]``)
* ``pricing``      — prices per model and the cost of a reply
* ``caching``      — where prompt-caching breakpoints go on the wire
* ``limits``       — cutting enormous tool results down to the policy's bound
* ``stitch``       — joining continuation chunks without lost or doubled characters
* ``graph``        — drawing an Agent's graph and the path a run took (Mermaid, DOT, SVG)
* ``replay``       — events written as JSON lines, read back into traces
* ``testing``      — ``assert_trace`` for golden traces in tests
* ``live``         — the terminal's live view of a run
* ``errors``       — every exception
* ``sim``          — the Messages API simulator the demo and tests run on
* ``demo``, ``cli`` — the scripted demo and the ``agentfsm`` command line
"""

from agentfsm.agent import Agent
from agentfsm.conversation import Conversation
from agentfsm.errors import (
    AgentfsmError,
    ConfigurationError,
    ConversationLockedError,
    CorruptSnapshotError,
    EventsFileError,
    GraphvizNotFoundError,
    InvalidHistoryError,
    InvalidTransitionError,
    MissingAPIKeyError,
    SnapshotVersionError,
    StaleConversationError,
    StoreError,
)
from agentfsm.events import EVENT_NAMES, Event, redact_processor
from agentfsm.executor import DefaultExecutor, ToolExecutor
from agentfsm.guards import guard
from agentfsm.live import LiveView
from agentfsm.policy import Policy
from agentfsm.postgres_store import PostgresStore
from agentfsm.replay import EventsWriter, ReplayedRun
from agentfsm.result import RunError, RunResult, TraceStep, Usage
from agentfsm.sqlite_store import SQLiteStore
from agentfsm.store import MemoryStore, RunSummary, Snapshot, Store
from agentfsm.table import REQUESTING, STOP_REASONS, TERMINAL_STATES, Transition
from agentfsm.tools import Tool, ToolCall, ToolResult, tool

__all__ = [
    "EVENT_NAMES",
    "REQUESTING",
    "STOP_REASONS",
    "TERMINAL_STATES",
    "Agent",
    "AgentfsmError",
    "ConfigurationError",
    "Conversation",
    "ConversationLockedError",
    "CorruptSnapshotError",
    "DefaultExecutor",
    "Event",
    "EventsFileError",
    "EventsWriter",
    "GraphvizNotFoundError",
    "InvalidHistoryError",
    "InvalidTransitionError",
    "LiveView",
    "MemoryStore",
    "MissingAPIKeyError",
    "Policy",
    "PostgresStore",
    "ReplayedRun",
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
    "ToolExecutor",
    "ToolResult",
    "TraceStep",
    "Transition",
    "Usage",
    "guard",
    "redact_processor",
    "tool",
]
