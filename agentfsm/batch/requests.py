"""One conversation's request in a Message Batch: its ``custom_id``, the API's limits, its result read back.

The batch runner (``agentfsm.batch.runner``) answers each conversation's
``SendRequest`` from a batch; this is what it needs to know about a batch's
requests and results, as plain functions: a succeeded result's message is read
exactly as the plain path reads a reply body (``parse_reply``), an errored one
is described as the plain path would describe the HTTP error (``failure_of``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anthropic

from agentfsm.errors import BatchError
from agentfsm.wire import api

if TYPE_CHECKING:
    from agentfsm.batch.ledger import BatchRecord

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
#: The result types a results line may hold; a line with any other is unusable (its request counts as missing).
RESULT_TYPES = frozenset({"succeeded", "errored", "expired", "canceled"})
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


@dataclass(frozen=True)
class ResultLine:
    """One line of a batch's results file, read: its ``custom_id`` and ``result``, or why it cannot be used."""

    #: None when the line does not say (not JSON, not an object, no string ``custom_id``).
    custom_id: str | None
    #: The ``result`` object, its ``type`` one of ``RESULT_TYPES``; None when the line cannot be used.
    result: dict[str, Any] | None
    #: Why the line cannot be used (None when it can).
    problem: str | None = None


def read_result_line(line: str) -> ResultLine:
    """A line of a results file, never raising: a line that is not JSON, is JSON but not an object, has no
    ``custom_id`` or no usable ``result`` comes back with ``problem`` set (its request then counts as missing)."""
    try:
        item = json.loads(line)
    except RecursionError:
        return ResultLine(None, None, "not JSON (nested too deeply to read)")
    except ValueError as exc:
        return ResultLine(None, None, f"not JSON ({exc})")
    if not isinstance(item, dict):
        return ResultLine(None, None, f"JSON but not an object ({_JSON_TYPES.get(type(item), 'null')})")
    cid = item.get("custom_id")
    if not isinstance(cid, str):
        return ResultLine(None, None, "an object without a string custom_id")
    result = item.get("result")
    kind = result.get("type") if isinstance(result, dict) else None
    if not isinstance(result, dict) or not isinstance(kind, str) or kind not in RESULT_TYPES:
        what = f"type {kind!r:.40}" if isinstance(result, dict) else _JSON_TYPES.get(type(result), "null")
        return ResultLine(cid, None, f"no usable result ({what}; expected one of {', '.join(sorted(RESULT_TYPES))})")
    return ResultLine(cid, result)


def result_lines(lines: Iterable[str]) -> Iterator[tuple[int, ResultLine]]:
    """The lines of a results file, read (``read_result_line``), numbered from 1, blank ones left out; a second
    usable line for a ``custom_id`` is unusable (the first is the one applied)."""
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        read = read_result_line(line)
        cid = read.custom_id
        if cid is not None and read.result is not None:
            if cid in seen:
                read = replace(read, result=None, problem="a second line for this custom_id (ignored)")
            seen.add(cid)
        yield number, read


def find_orphan(batches: Any, record: BatchRecord, known: set[str], betas: Mapping[str, Any]) -> str | None:
    """The batch created for ``record`` by a process that died before storing its id, if the API lists one:
    created since the record (``ORPHAN_SLACK_S`` allowed), with as many requests, not one of ``known``.
    ``batches`` is the SDK's batches resource."""
    best: tuple[float, str] | None = None
    try:
        for batch in batches.list(limit=100, **betas):
            created = batch.created_at.timestamp()
            if created < record.created_at - ORPHAN_SLACK_S:
                break
            counts = batch.request_counts
            total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
            if batch.id not in known and total == len(record.entries) and (best is None or created < best[0]):
                best = (created, batch.id)
    except anthropic.AnthropicError as exc:
        raise BatchError("listing Message Batches (to find one a crashed run created)", exc) from exc
    return best[1] if best else None


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
