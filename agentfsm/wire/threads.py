"""Message threads on the wire (beta ``message-threads-2026-08-12``): the shapes both sides agree on.

The server holds a conversation's history between turns. A request that sends
``thread: {"type": "create"}`` carries the whole history (with ``system`` and
``tools``); the reply's ``id`` then names what the server holds: that history
plus the reply. A request that sends ``thread: {"type": "continue",
"previous_message_id": <that id>}`` carries only the messages the server does
not have (``[]`` to resume a paused turn) and never ``system`` or ``tools``
(the thread keeps the ones it was created with). Each reply can be continued
once. The rejections a replay of the full history under a new ``create``
recovers from: a 404 ``not_found_error`` whose ``error.details.error_code`` is
``thread_not_found`` (expired after the thread's idle limit, or held by another
account), and the 400s ``thread_already_continued`` and
``thread_continue_in_flight``; ``thread_unsupported_request`` says the server
cannot thread this request at all (the SDK then sends it, and every later turn,
without a thread). Read off the installed SDK, ``anthropic/lib/threads/``.

``ThreadPosition`` is where a run stands on its thread, kept in ``RunState``;
``chain`` fingerprints the history the server holds, so the machine
continues a thread only while that history is exactly a prefix of what it
would send (``agentfsm.machine.threads``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

THREADS_BETA = "message-threads-2026-08-12"

#: The request fields a ``continue`` takes from the thread and may not repeat.
CREATE_ONLY_FIELDS = ("system", "tools")

#: ``error.details.error_code`` values a replay of the full history under a new thread recovers from.
REPLAY_CODES = ("thread_not_found", "thread_already_continued", "thread_continue_in_flight")
#: The server cannot thread this request: send it (and every later turn) with the full history, no thread.
UNSUPPORTED_CODE = "thread_unsupported_request"

ThreadErrorCode = Literal[
    "thread_not_found", "thread_already_continued", "thread_continue_in_flight", "thread_unsupported_request"
]


class ThreadPosition(BaseModel):
    """Where a run stands on its server-held thread (``RunState.thread``).

    ``previous_message_id`` is the reply the next turn continues from (None: the next threaded turn creates a
    new thread); the server holds ``held`` messages, fingerprinted by ``digest``, and the ``system``/``tools``
    fingerprinted by ``fields``. ``thread_id`` names the thread: the id of the reply that answered its
    ``create``. ``sending`` is how the request in flight was sent ("create", "continue" or "full": no thread).
    ``off`` is set once the server said it cannot thread the run's requests: every later turn is full history.
    """

    previous_message_id: str | None = None
    thread_id: str | None = None
    held: int = Field(0, ge=0)
    digest: str = ""
    #: The fingerprint of the request in flight's full history, but a final assistant turn it resumes.
    sent_digest: str = ""
    fields: str = ""
    model: str = ""
    sending: Literal["create", "continue", "full"] | None = None
    off: bool = False


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _message_bytes(message: Mapping[str, Any]) -> bytes:
    """A message as compared: string content as one text block (how a cache mark is put on it), cache marks
    taken out (they apply to the request that sent them, not to the history the server keeps)."""
    content = message.get("content")
    if isinstance(content, str):
        message = {**message, "content": [{"type": "text", "text": content}]}
    text = _canonical(message)
    if b'"cache_control"' in text:  # rare (the request's one or two marks): only then the slow walk
        text = _canonical(without_cache_control(message))
    return text


def chain(digest: str, message: Mapping[str, Any]) -> str:
    """The fingerprint of a history whose fingerprint was ``digest``, with ``message`` appended."""
    return hashlib.sha256(digest.encode() + hashlib.sha256(_message_bytes(message)).digest()).hexdigest()


def fields_digest(params: Mapping[str, Any]) -> str:
    """A fingerprint of a request's create-only fields (``system``, ``tools``)."""
    return hashlib.sha256(_canonical({k: params.get(k) for k in CREATE_ONLY_FIELDS})).hexdigest()


def held_after(sent: Sequence[Mapping[str, Any]], content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history the server holds once a request with the full history ``sent`` is answered with
    ``content``: the reply appended, or merged into a final assistant turn it continues (a resumed pause)."""
    resumed = bool(sent) and sent[-1].get("role") == "assistant"
    kept = [dict(m) for m in (sent[:-1] if resumed else sent)]
    return [*kept, reply_turn(sent[-1] if resumed else None, content)]


def reply_turn(resumed: Mapping[str, Any] | None, content: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant turn a reply makes on the server: ``content``, after the final assistant turn it resumes."""
    if resumed is None:
        return {"role": "assistant", "content": list(content)}
    old = resumed.get("content")
    old_blocks = [{"type": "text", "text": old}] if isinstance(old, str) else list(old or [])
    return {"role": "assistant", "content": old_blocks + list(content)}


def without_cache_control(value: Any) -> Any:
    """``value`` without the ``cache_control`` of any block in it (tool inputs left as they are)."""
    if isinstance(value, dict):
        return {
            k: (without_cache_control(v) if k in ("content", "source") else v)
            for k, v in value.items()
            if k != "cache_control"
        }
    if isinstance(value, list):
        return [without_cache_control(v) for v in value]
    return value
