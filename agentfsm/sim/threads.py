"""Message threads in the simulator: the history the server holds between turns.

A request that sends ``thread`` (with the ``message-threads-2026-08-12`` beta) is
resolved before anything else reads it: a ``create`` is taken as it is; a
``continue`` is rebuilt into the request the model sees — the thread's history,
then the messages sent, with the thread's ``system`` and ``tools`` — so
validation, prompt caching, token counts, scripts and observers all read the
full history (``SimRequest.body``; ``SimRequest.thread_held`` says how many of
its messages came from the thread). A served reply is recorded under its ``id``
as the history plus the reply (merged into a final assistant turn it resumes);
a reply that failed, dropped or carried a stream fault records nothing, so the
same continue can be sent again.

The rejections, as the SDK reads them (``anthropic/lib/threads/``): an unknown
or expired ``previous_message_id`` is a 404 ``not_found_error`` with
``error.details.error_code: "thread_not_found"``; continuing a reply twice is a
400 ``thread_already_continued``; continuing one whose continuation is still
being answered is a 400 ``thread_continue_in_flight``. A thread expires when it
was idle (not continued) for ``Simulator(thread_idle_limit=...)`` seconds of the
simulator's clock; ``sim.threads.forget()`` loses every thread at once (what a
request on another account, or after the server lost its state, meets). Message
Batches cannot carry a thread (400).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentfsm.wire.threads import CREATE_ONLY_FIELDS, THREADS_BETA, held_after, without_cache_control


@dataclass
class ThreadProblem:
    """A thread request the server rejects: status, error type, message, and ``details.error_code``."""

    status: int
    error_type: str
    message: str
    code: str | None = None


@dataclass
class _Held:
    messages: list[dict[str, Any]]
    fields: dict[str, Any]
    touched: float
    continued: bool = False
    in_flight: bool = False


@dataclass
class _Pending:
    previous: str | None
    messages: list[dict[str, Any]]
    fields: dict[str, Any]


@dataclass
class SimThreads:
    """The threads one simulator holds, by the id of the reply each continues from."""

    clock: Callable[[], float]
    idle_limit: float | None = None
    _held: dict[str, _Held] = field(default_factory=dict)
    _pending: dict[int, _Pending] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __len__(self) -> int:
        return len(self._held)

    def forget(self) -> int:
        """Lose every thread (the next ``continue`` of any is ``thread_not_found``); how many there were."""
        with self._lock:
            n = len(self._held)
            self._held.clear()
            return n

    def resolve(
        self, n: int, body: dict[str, Any], headers: Mapping[str, str], *, batched: bool
    ) -> tuple[dict[str, Any], int | None, ThreadProblem | None]:
        """Request ``n``'s body as the model sees it, how many of its messages the thread held, and the
        rejection if the thread cannot take it. A body without ``thread`` is returned as it is."""
        thread = body.get("thread")
        if thread is None:
            return body, None, None
        problem = _check(thread, body, headers, batched=batched)
        if problem is not None:
            return body, None, problem
        sent = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        if thread["type"] == "create":
            with self._lock:
                self._pending[n] = _Pending(None, sent, {k: body[k] for k in CREATE_ONLY_FIELDS if k in body})
            return body, 0, None
        previous = thread["previous_message_id"]
        with self._lock:
            held = self._held.get(previous)
            if held is not None and self.idle_limit is not None and self.clock() - held.touched > self.idle_limit:
                del self._held[previous]
                held = None
            if held is None:
                return body, None, ThreadProblem(
                    404, "not_found_error",
                    f"thread not found: no message thread holds previous_message_id {previous!r} (it may have "
                    "expired); send the full history with thread {\"type\": \"create\"}",
                    "thread_not_found",
                )  # fmt: skip
            if held.in_flight:
                return body, None, ThreadProblem(
                    400, "invalid_request_error",
                    f"thread: a continuation of {previous!r} is still being answered", "thread_continue_in_flight",
                )  # fmt: skip
            if held.continued:
                return body, None, ThreadProblem(
                    400, "invalid_request_error",
                    f"thread: {previous!r} was continued already; each reply can be continued once",
                    "thread_already_continued",
                )  # fmt: skip
            held.in_flight = True
            held.touched = self.clock()
            full = [*held.messages, *sent]
            self._pending[n] = _Pending(previous, full, dict(held.fields))
        resolved = {**body, **held.fields, "messages": full}
        return resolved, len(held.messages), None

    def served(self, n: int, message_id: str, content: list[dict[str, Any]]) -> None:
        """Request ``n`` was answered with ``content`` under ``message_id``: the server now holds that turn."""
        with self._lock:
            pending = self._pending.pop(n, None)
            if pending is None:
                return
            if pending.previous is not None and pending.previous in self._held:
                previous = self._held[pending.previous]
                previous.continued, previous.in_flight = True, False
            messages = without_cache_control(held_after(pending.messages, content))
            self._held[message_id] = _Held(messages, pending.fields, self.clock())

    def done(self, n: int) -> None:
        """Request ``n`` is answered, whatever the answer: a continuation not served holds nothing."""
        with self._lock:
            pending = self._pending.pop(n, None)
            if pending is not None and pending.previous is not None and pending.previous in self._held:
                self._held[pending.previous].in_flight = False


def _check(
    thread: object, body: Mapping[str, Any], headers: Mapping[str, str], *, batched: bool
) -> ThreadProblem | None:
    def bad(message: str) -> ThreadProblem:
        return ThreadProblem(400, "invalid_request_error", message)

    on = {b.strip() for b in headers.get("anthropic-beta", "").split(",")}
    if THREADS_BETA not in on:
        return bad(f"thread: Extra inputs are not permitted (send the `{THREADS_BETA}` beta)")
    if batched:
        return bad("thread: message threads are not supported in Message Batches; send the full history")
    if not isinstance(thread, dict) or thread.get("type") not in ("create", "continue"):
        return bad("thread.type: Input should be 'create' or 'continue'")
    if thread["type"] == "create":
        if set(thread) != {"type"}:
            return bad(f"thread: unexpected field(s) {sorted(set(thread) - {'type'})}")
        return None
    if set(thread) - {"type", "previous_message_id"}:
        return bad(f"thread: unexpected field(s) {sorted(set(thread) - {'type', 'previous_message_id'})}")
    if not isinstance(thread.get("previous_message_id"), str) or not thread["previous_message_id"]:
        return bad("thread.previous_message_id: Field required")
    repeated = [name for name in CREATE_ONLY_FIELDS if name in body]
    if repeated:
        return bad(
            f"{repeated[0]}: a `continue` request cannot set `{repeated[0]}`: the thread keeps the "
            "`system` and `tools` it was created with"
        )
    if not isinstance(body.get("messages"), list):
        return bad("messages: Input should be a valid list")
    return None
