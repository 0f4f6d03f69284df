"""Persistence: what a conversation is, as data, and where it is kept.

After every transition a conversation with a store saves a ``Snapshot``:
its state, history, counters, usage, trace, and the tool results it has
committed for the tool calls in progress (keyed by ``tool_use_id``).
``Agent.resume(conversation_id, store=...)`` rebuilds the conversation from
the last snapshot and carries on, so a crash loses at most the request that
was in flight (which is simply sent again) and never runs a committed tool
twice.

Tools that were *running* when the process died have no committed result.
On resume such a call is run again only if its tool is marked idempotent
(``@tool(idempotent=True)``); otherwise it is answered with an ``is_error``
result saying it was interrupted, and the model decides what to do.

A snapshot is plain JSON (pydantic), with a ``schema_version``; a newer
library reads every older version. Stores implement ``Store``; the embedded
one is ``SQLiteStore`` (``agentfsm.stores``).
"""

from __future__ import annotations

import threading
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from agentfsm.result import RunError, TraceStep, Usage
from agentfsm.tools import ToolResult

#: The snapshot format this version writes. Bump it when a field changes meaning, and teach
#: ``Snapshot.upgrade`` to read the old one.
SCHEMA_VERSION = 1


class Counters(BaseModel):
    """The numbers the guards read: each bounds one loop of the machine."""

    turns: int = 0
    continuations: int = 0
    pause_resumes: int = 0
    empty_retries: int = 0
    rung: int = 0
    fallback_used: bool = False
    discards: int = 0


class Snapshot(BaseModel):
    """One conversation at a transition, as stored."""

    schema_version: int = SCHEMA_VERSION
    conversation_id: str
    agent: str
    state: str
    messages: list[dict[str, Any]]
    model: str
    max_tokens: int
    counters: Counters
    continuation_mode: Literal["prefill", "prompt"]
    pending_kind: Literal["prefill", "prompt", "pause", "caller_prefill"] | None = None
    prefill_was_rejected: bool = False
    container: str | None = None
    reply: dict[str, Any] | None = None
    answer: str = ""
    reason: str | None = None
    error: RunError | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = 0.0
    trace: list[TraceStep] = []
    #: Results committed for the tool calls of the reply being answered, by tool_use_id.
    tool_results: dict[str, ToolResult] = {}
    #: Tool calls handed to the executor and not committed yet: if the process died, they were running.
    tools_started: list[str] = []
    elapsed_s: float = 0.0
    finished: bool = False

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> Snapshot:
        """Read a stored snapshot of any version this library knows."""
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(
                f"snapshot schema_version {version!r} is newer than this agentfsm understands "
                f"({SCHEMA_VERSION}); upgrade agentfsm to read it"
            )
        return cls.model_validate(data)


class RunSummary(BaseModel):
    """One line of ``Store.list()``."""

    conversation_id: str
    agent: str
    state: str
    turns: int
    finished: bool
    updated_at: float


@runtime_checkable
class Store(Protocol):
    """Where conversations are kept. Every method is atomic.

    ``save`` replaces the conversation's snapshot; ``load`` raises ``KeyError``
    for an unknown id and ``CorruptSnapshotError`` for a row it cannot read.
    ``acquire`` takes an exclusive lease on a conversation for ``owner`` (True
    if taken: free, expired, or already ``owner``'s), so two workers never
    advance the same conversation at once; ``release`` gives it back.
    """

    def save(self, snapshot: Snapshot) -> None: ...

    def load(self, conversation_id: str) -> Snapshot: ...

    def list(self) -> list[RunSummary]: ...

    def acquire(self, conversation_id: str, owner: str, lease_s: float) -> bool: ...

    def release(self, conversation_id: str, owner: str) -> None: ...


class MemoryStore:
    """A ``Store`` in a dict: for tests and for runs that only need resume within one process."""

    def __init__(self) -> None:
        self._rows: dict[str, str] = {}
        self._updated: dict[str, float] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def save(self, snapshot: Snapshot) -> None:
        import time

        with self._lock:
            self._rows[snapshot.conversation_id] = snapshot.model_dump_json()
            self._updated[snapshot.conversation_id] = time.time()

    def load(self, conversation_id: str) -> Snapshot:
        with self._lock:
            row = self._rows.get(conversation_id)
        if row is None:
            raise KeyError(conversation_id)
        return Snapshot.model_validate_json(row)

    def list(self) -> list[RunSummary]:
        with self._lock:
            rows = list(self._rows.items())
        out = []
        for cid, row in rows:
            snap = Snapshot.model_validate_json(row)
            out.append(
                RunSummary(
                    conversation_id=cid,
                    agent=snap.agent,
                    state=snap.state,
                    turns=snap.counters.turns,
                    finished=snap.finished,
                    updated_at=self._updated[cid],
                )
            )
        return out

    def acquire(self, conversation_id: str, owner: str, lease_s: float) -> bool:
        import time

        now = time.time()
        with self._lock:
            holder = self._leases.get(conversation_id)
            if holder is not None and holder[0] != owner and holder[1] > now:
                return False
            self._leases[conversation_id] = (owner, now + lease_s)
            return True

    def release(self, conversation_id: str, owner: str) -> None:
        with self._lock:
            if self._leases.get(conversation_id, ("", 0.0))[0] == owner:
                del self._leases[conversation_id]
