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
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from agentfsm.errors import CorruptSnapshotError, SnapshotVersionError
from agentfsm.machine.state import Counters, ForkedFrom, PendingDecision, RunState
from agentfsm.wire.usage import Usage

__all__ = [
    "SCHEMA_VERSION",
    "Counters",
    "PendingDecision",
    "RunState",
    "RunSummary",
    "Snapshot",
    "Store",
    "read_snapshot",
    "snapshot_json",
    "stored_request",
]

#: The snapshot format this version writes. Bump it when a field changes meaning, and teach
#: ``Snapshot.upgrade`` to read the old one.
SCHEMA_VERSION = 1


#: Request parameter keys whose values are credentials (an MCP server's ``authorization_token``): never stored.
_CREDENTIAL_KEY = re.compile(r"token|secret|password|authori[sz]ation|api[_-]?key|cookie", re.IGNORECASE)


#: ``stored_request``'s answers by the identity of the parameters (an agent's, the same for each of its saves).
_STORED: dict[int, tuple[Mapping[str, Any], tuple[str, ...], dict[str, Any]]] = {}


def stored_request(params: Mapping[str, Any], secrets: Iterable[str] = ()) -> dict[str, Any]:
    """The request parameters a snapshot keeps (``Snapshot.request``): ``params`` with every value under a
    credential's key replaced, and every copy of the client's credentials redacted. Worked out once per
    agent (its parameters do not change), not at every save."""
    from agentfsm.redaction import REDACTED, redact

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


class Snapshot(RunState):
    """One conversation at a transition, as stored: its ``RunState`` in an envelope."""

    schema_version: int = SCHEMA_VERSION
    conversation_id: str
    agent: str

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
        why = str(first["msg"]).removeprefix("Value error, ")  # a validator's own message says enough
        raise CorruptSnapshotError(
            conversation_id, f"the stored row is not a conversation snapshot: {where}: {why}"
        ) from None
    if snap.conversation_id != conversation_id:
        raise CorruptSnapshotError(
            conversation_id, f"the stored row holds conversation {snap.conversation_id!r} instead"
        )
    _check_content(conversation_id, snap)
    return snap


def _check_content(conversation_id: str, snap: Snapshot) -> None:
    """The row's history passes the checks ``run()`` input passes, or it is corrupt (its reply was checked as
    it was read: ``RunState.reply``)."""
    from agentfsm.errors import InvalidHistoryError
    from agentfsm.wire.messages import validate_history

    try:
        validate_history(snap.messages, stored=True)
    except InvalidHistoryError as exc:
        raise CorruptSnapshotError(conversation_id, f"its history is not valid: {exc.problem}") from None


def forked_from_json(text: str | bytes | None) -> ForkedFrom | None:
    """A stored row's ``forked_from`` object as SQL picked it out of the row's JSON (None: absent, or unreadable)."""
    if not text:
        return None
    try:
        return ForkedFrom.model_validate_json(text)
    except ValidationError:
        return None


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
    #: The run it was forked from, and at which step (``agent.fork``); filled in by ``list()``.
    forked_from: ForkedFrom | None = None

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
