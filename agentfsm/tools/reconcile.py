"""Reconcile: asking a tool's owner whether a call in doubt had its effect.

A call is *in doubt* when the ledger says it started and no result was committed: the process
running it died (or the run was cancelled) while it ran. A tool that is not idempotent is not run
again then; with ``@tool(reconcile=check)`` it is asked first. ``check(ctx)`` gets the call's
:class:`~agentfsm.tools.calls.ToolContext` (its ``idempotency_key`` is the one the call ran with)
and answers, sync or ``async def``:

* **a result** — the effect happened: anything a tool may return (``str``, a dict or model sent as
  JSON, a list of content blocks, a ``ToolResult``) is the call's result; it is committed and sent;
* **None** — it did not happen: the call runs now, once (recorded as started first);
* **raises, or runs past the tool timeout** (``Policy.tool_timeout``) — nobody knows: the call is
  answered as interrupted, as a tool without ``reconcile`` is.

Each outcome is a ``tool.reconciled`` event (``outcome``: ``happened``, ``not_happened`` or
``unknown``). The decision is the core's (``agentfsm.machine.persistence``); the runners only run
the checks, with ``check_all`` (sync runners) or ``acheck_all`` (async runners, the engines' tool steps).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from agentfsm.tools.calls import ToolCall, ToolContext, ToolResult, to_tool_result

if TYPE_CHECKING:
    from agentfsm.tools.definition import Tool

Outcome = Literal["happened", "not_happened", "unknown"]


@dataclass(frozen=True)
class Checked:
    """What a reconcile check said about one call."""

    tool_use_id: str
    outcome: Outcome
    #: The call's result when the effect happened.
    result: ToolResult | None = None
    #: Why the outcome is unknown (the check raised, timed out, or returned something unusable).
    reason: str | None = None


def judge(call: ToolCall, value: object) -> Checked:
    """The outcome a check's return value means."""
    if value is None:
        return Checked(call.id, "not_happened")
    if isinstance(value, ToolResult):
        return Checked(call.id, "happened", value.model_copy(update={"tool_use_id": call.id}))
    result = to_tool_result(call, value, call.name)
    if result.is_error and not isinstance(value, str):  # a value that cannot be sent: not an answer
        return Checked(call.id, "unknown", reason=f"the check returned a value that cannot be sent: {result.content}")
    return Checked(call.id, "happened", result)


def _failed(call: ToolCall, exc: BaseException) -> Checked:
    return Checked(call.id, "unknown", reason=f"the check raised {type(exc).__name__}: {exc}")


def _timed_out(call: ToolCall, limit: float) -> Checked:
    return Checked(call.id, "unknown", reason=f"the check ran longer than the tool timeout ({limit:g} s)")


def _context(call: ToolCall) -> ToolContext:
    return call.context if call.context is not None else ToolContext.of("", call.id)


def _no_check(call: ToolCall) -> Checked:
    return Checked(call.id, "unknown", reason=f"tool {call.name!r} has no reconcile check")


def check(call: ToolCall, tool: Tool, timeout: float) -> Checked:
    """Run ``tool.reconcile`` for ``call`` in this thread's way: a sync check inline when no timeout can fire,
    else (and an async one always) in a thread of its own, given up on after ``timeout`` s."""
    fn = tool.reconcile
    if fn is None:
        return _no_check(call)
    ctx = _context(call)
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
    if timeout == float("inf") and not is_async:
        try:
            return judge(call, fn(ctx))
        except Exception as exc:
            return _failed(call, exc)
    box: list[Checked] = []

    def body() -> None:
        try:
            value = asyncio.run(fn(ctx)) if is_async else fn(ctx)
            box.append(judge(call, value))
        except Exception as exc:
            box.append(_failed(call, exc))

    thread = threading.Thread(target=body, name="agentfsm-reconcile", daemon=True)
    thread.start()
    thread.join(None if timeout == float("inf") else timeout)
    return box[0] if box else _timed_out(call, timeout)  # a check still running is abandoned


async def acheck(call: ToolCall, tool: Tool, timeout: float) -> Checked:
    """Await ``tool.reconcile`` for ``call`` (a sync check in a worker thread), under ``timeout`` s."""
    fn = tool.reconcile
    if fn is None:
        return _no_check(call)
    ctx = _context(call)
    limit = None if timeout == float("inf") else timeout
    try:
        async with asyncio.timeout(limit):
            is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
            value = await fn(ctx) if is_async else await asyncio.to_thread(fn, ctx)
    except TimeoutError:
        return _timed_out(call, timeout)
    except Exception as exc:
        return _failed(call, exc)
    return judge(call, value)


def check_all(calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[Checked]:
    """Check every call (concurrently when there are several), in call order."""
    started = time.monotonic()
    if len(calls) <= 1:
        return [check(call, tools[call.name], timeout) for call in calls]
    out: list[Checked | None] = [None] * len(calls)

    def one(i: int) -> None:
        left = max(0.001, timeout - (time.monotonic() - started)) if timeout != float("inf") else timeout
        out[i] = check(calls[i], tools[calls[i].name], left)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # each check bounds itself by the timeout
    return [c if c is not None else _timed_out(calls[i], timeout) for i, c in enumerate(out)]


async def acheck_all(calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[Checked]:
    """Check every call concurrently on the running loop, in call order."""
    return list(await asyncio.gather(*(acheck(call, tools[call.name], timeout) for call in calls)))
