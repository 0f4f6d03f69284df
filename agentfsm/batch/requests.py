"""One conversation's request in a Message Batch: its ``custom_id``, the API's limits, its result read back.

The batch runner (``agentfsm.batch.runner``) answers each conversation's
``SendRequest`` from a batch; this is what it needs to know about a batch's
requests and results, as plain functions: a succeeded result's message is read
exactly as the plain path reads a reply body (``parse_reply``), an errored one
is described as the plain path would describe the HTTP error (``failure_of``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

from agentfsm.wire import api

#: The API's limits on one batch.
MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
#: ``{"requests":[]}`` around the requests, with room to spare.
ENVELOPE_BYTES = 64

#: Errored results sent again in the next batch (up to ``Policy.stream_retries`` times per request).
RETRYABLE_ERRORS = frozenset({"overloaded_error", "rate_limit_error", "api_error", "timeout_error"})
#: Expired or canceled requests are sent again this many times, then the conversation fails.
LAPSE_RESENDS = 1
#: How far before a record's time a batch it lost may have been created (clocks differ).
ORPHAN_SLACK_S = 300.0

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


def parse_reply(body: object) -> api.Reply | api.RequestFailure:
    """A succeeded result's ``message``, read exactly as the plain path reads a reply body.

    The one place the batch runner turns a Message into a ``Reply``: ``agentfsm.wire.api.reply_from``,
    so both paths accept and reject the same bodies (a malformed one is ``invalid_response``).
    """
    return api.reply_from(body)


def custom_id(conversation_id: str, turn: int, revision: int, attempt: int) -> str:
    """The ``custom_id`` of a conversation's request: its id (or a hash of it), turn, stored revision, attempt.

    Matches the API's ``^[a-zA-Z0-9_-]{1,64}$``.
    """
    head = conversation_id
    if not _SAFE_ID.fullmatch(head):
        head = "h" + hashlib.blake2b(conversation_id.encode(), digest_size=8).hexdigest()
    return f"{head}-t{turn}-r{revision}-a{attempt}"[:64]


class Sized(Protocol):
    """A request about to go into a batch, with its size in bytes (JSON, one line)."""

    size: int


S = TypeVar("S", bound=Sized)


def chunks(pending: Sequence[S], *, max_requests: int, max_bytes: int) -> list[list[S]]:
    """``pending`` split at a batch's limits (a request larger than the byte limit goes alone)."""
    found: list[list[S]] = []
    current: list[S] = []
    size = ENVELOPE_BYTES
    for item in pending:
        full = len(current) >= max_requests or size + item.size > max_bytes
        if current and full:
            found.append(current)
            current, size = [], ENVELOPE_BYTES
        current.append(item)
        size += item.size
    if current:
        found.append(current)
    return found


def failure_of(result: Mapping[str, Any]) -> api.RequestFailure:
    """An ``errored`` result's error as the plain path would have described the HTTP error."""
    body = result.get("error")
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return api.RequestFailure(type="api_error", message=f"errored batch result without an error: {result!r:.200}")
    kind = str(err.get("type") or "api_error")
    return api.RequestFailure(
        type=kind, message=str(err.get("message") or kind), status_code=api.ERROR_STATUS.get(kind)
    )
