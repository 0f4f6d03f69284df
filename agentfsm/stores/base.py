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
library reads every older version (``read_snapshot``). Stores implement
``Store``: ``MemoryStore`` (``agentfsm.stores.memory``), the embedded
``SQLiteStore`` (``agentfsm.stores.sqlite``) and ``PostgresStore``
(``agentfsm.stores.postgres``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field, ValidationError
from pydantic_core import PydanticSerializationError

from agentfsm.errors import CorruptSnapshotError, SnapshotVersionError
from agentfsm.result import RunError, TraceStep, Usage
from agentfsm.tools.calls import ToolCall, ToolResult

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
    compactions: int = 0


class PendingDecision(BaseModel):
    """What a waiting conversation waits for, written when it stops to wait.

    Stored with the snapshot so that whoever looks at a waiting run (``agentfsm runs show``,
    the inspector) can say what it waits for without importing the agent's code: the
    triggers are the Agent class's, and loading a class named by a stored row runs code.
    """

    #: The state it waits in.
    state: str
    #: The triggers that can decide it: those leaving the state whose guards passed when it stopped.
    triggers: list[str]
    #: The client tool calls awaiting the decision, in call order (empty when the wait is about no call).
    tool_calls: list[ToolCall] = []
    #: Why it waits: the guards of the transition that led into the wait (None when it has none).
    why: str | None = None


#: Request parameter keys whose values are credentials (an MCP server's ``authorization_token``): never stored.
_CREDENTIAL_KEY = re.compile(r"token|secret|password|authori[sz]ation|api[_-]?key|cookie", re.IGNORECASE)


#: ``stored_request``'s answers by the identity of the parameters (an agent's, the same for each of its saves).
_STORED: dict[int, tuple[Mapping[str, Any], tuple[str, ...], dict[str, Any]]] = {}


def stored_request(params: Mapping[str, Any], secrets: Iterable[str] = ()) -> dict[str, Any]:
    """The request parameters a snapshot keeps (``Snapshot.request``): ``params`` with every value under a
    credential's key replaced, and every copy of the client's credentials redacted. Worked out once per
    agent (its parameters do not change), not at every save."""
    from agentfsm.observe.redaction import REDACTED, redact

    found = tuple(secrets)
    cached = _STORED.get(id(params))
    if cached is not None and cached[0] is params and cached[1] == found:
        return cached[2]

    def scrub(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: REDACTED if _CREDENTIAL_KEY.search(str(k)) else scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [scrub(v) for v in value]
        return value

    scrubbed: dict[str, Any] = redact(scrub(params), found)
    if len(_STORED) > 256:
        _STORED.clear()
    _STORED[id(params)] = (params, found, scrubbed)
    return scrubbed


class Snapshot(BaseModel):
    """One conversation at a transition, as stored."""

    schema_version: int = SCHEMA_VERSION
    conversation_id: str
    agent: str
    state: str
    messages: list[dict[str, Any]]
    model: str
    max_tokens: int
    #: What every request of the run is sent with besides its messages, model and max_tokens (the system
    #: prompt, the tools with their schemas, temperature, ...), credentials replaced: for inspectors, which
    #: show a run without importing its Agent class. None in rows an earlier agentfsm wrote.
    request: dict[str, Any] | None = None
    counters: Counters
    continuation_mode: Literal["prefill", "prompt"]
    pending_kind: Literal["prefill", "prompt", "pause", "caller_prefill", "compaction", "compacted"] | None = None
    prefill_was_rejected: bool = False
    container: str | None = None
    #: Compaction: turns of the last compaction request and of the last one applied; whether it is off.
    compaction_requested_at: int | None = None
    compaction_applied_at: int | None = None
    compaction_off: bool = False
    #: The messages compactions took out of ``messages``, oldest first.
    replaced_messages: list[dict[str, Any]] = []
    #: A refusal's fallback credit token, for the retry not yet sent.
    credit_token: str | None = None
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
    #: How long each client tool call answered in the history took: tool_use_id → duration_ms (None: not measured).
    tool_ms: dict[str, float | None] = {}
    elapsed_s: float = 0.0
    finished: bool = False
    #: Saves so far (1 for the first): a worker that takes the lease checks nobody saved since it loaded.
    revision: int = 0
    #: The state the run stopped in to wait for a decision from outside (None while it runs or once finished).
    waiting: str | None = None
    #: While waiting, what it waits for (None otherwise, and in rows an earlier agentfsm wrote).
    pending_decision: PendingDecision | None = None
    #: The trigger a resume decided on, until its transition has fired (a crash in between carries it out).
    decision: str | None = None
    #: What the latest resume gave (``resume(..., input=...)``): JSON, read by the hook and the action.
    input: Any = None
    #: Whether ``reply`` is in ``messages`` already (an action kept it).
    reply_kept: bool = False
    #: Run through the Message Batches API (``agentfsm.batch``).
    batched: bool = False

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


def read_snapshot(conversation_id: str, raw: str | bytes) -> Snapshot:
    """A stored row's text as a ``Snapshot`` of any known version, or ``CorruptSnapshotError`` naming the problem."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CorruptSnapshotError(conversation_id, f"the stored row is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CorruptSnapshotError(
            conversation_id, f"the stored row is JSON {type(data).__name__}, not a snapshot object"
        )
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CorruptSnapshotError(conversation_id, f"the stored row has schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise SnapshotVersionError(conversation_id, version, SCHEMA_VERSION)
    try:
        snap = Snapshot.upgrade(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the row"
        raise CorruptSnapshotError(
            conversation_id, f"the stored row is not a conversation snapshot: {where}: {first['msg']}"
        ) from None
    if snap.conversation_id != conversation_id:
        raise CorruptSnapshotError(
            conversation_id, f"the stored row holds conversation {snap.conversation_id!r} instead"
        )
    _check_content(conversation_id, snap)
    return snap


def _check_content(conversation_id: str, snap: Snapshot) -> None:
    """The row's history and reply pass the checks ``run()`` input and a received reply pass, or it is corrupt."""
    from agentfsm.errors import InvalidHistoryError
    from agentfsm.machine.history import validate_history
    from agentfsm.wire.api import RequestFailure, reply_from

    try:
        validate_history(snap.messages, stored=True)
    except InvalidHistoryError as exc:
        raise CorruptSnapshotError(conversation_id, f"its history is not valid: {exc.problem}") from None
    if snap.reply is not None:
        reply = reply_from(snap.reply)
        if isinstance(reply, RequestFailure):
            raise CorruptSnapshotError(conversation_id, f"its reply is not valid: {reply.message}")


def snapshot_json(snapshot: Snapshot) -> str:
    """The text a store keeps for ``snapshot``: its JSON, whatever strings it holds.

    A lone UTF-16 surrogate (which a caller's message may hold) cannot be encoded as UTF-8, so
    a snapshot holding one is written with every non-ASCII character escaped (``\\ud800``), which
    reads back to the same strings; NUL is escaped as ``\\u0000`` either way.
    """
    try:
        return snapshot.model_dump_json()
    except PydanticSerializationError:
        return json.dumps(snapshot.model_dump(mode="json"), ensure_ascii=True, separators=(",", ":"))


class RunSummary(BaseModel):
    """One line of ``Store.list()``."""

    conversation_id: str
    agent: str
    state: str
    turns: int
    finished: bool
    updated_at: float
    #: Why this row cannot be loaded (corrupt, or written by a newer agentfsm); None when it is sound.
    problem: str | None = None
    # What a run list shows, filled in by ``page`` (``agentfsm.stores.listing``); ``list()`` may leave them None.
    #: The state it waits in, when it stopped to wait for a decision.
    waiting: str | None = None
    reason: str | None = None
    tokens: int | None = None
    #: None also when its model has no price.
    cost_usd: float | None = None
    elapsed_s: float | None = None
    usage: Usage | None = None
    #: When it was first saved (Unix time; None where the store does not keep it).
    created_at: float | None = None

    @property
    def status(self) -> str:
        """Its final state once finished, ``waiting`` while it waits for a decision, else ``unfinished``."""
        if self.finished:
            return self.state
        return "waiting" if self.waiting is not None else "unfinished"


@runtime_checkable
class Store(Protocol):
    """Where conversations are kept. Every method is atomic.

    ``save`` replaces the conversation's snapshot, and refuses one whose
    ``revision`` is not newer than the stored one (``StaleConversationError``:
    a fencing token, so a worker that lost its lease cannot overwrite the
    history another worker has moved on); ``load`` raises ``KeyError`` for an
    unknown id and ``CorruptSnapshotError`` for a row it cannot read (other
    rows stay readable); ``list`` never fails for one bad row (it is listed,
    with ``problem`` set where the store can tell without parsing every row). ``acquire`` takes an exclusive lease on a
    conversation for ``owner`` (True if taken: free, expired, held by a worker
    known to be dead, or already ``owner``'s — then it is renewed to ``lease_s``
    from now, or left as it is while more than half of it remains), so two
    workers never advance the same conversation at once; ``release`` gives it
    back.
    """

    def save(self, snapshot: Snapshot) -> None: ...

    def load(self, conversation_id: str) -> Snapshot: ...

    def list(self) -> list[RunSummary]: ...

    def acquire(self, conversation_id: str, owner: str, lease_s: float) -> bool: ...

    def release(self, conversation_id: str, owner: str) -> None: ...
