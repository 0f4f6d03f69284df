"""Drivers: the loop's I/O, four ways — sync or async, plain or streamed.

Each driver interprets ``agentfsm.machine.loop``: it performs the effects the
loop yields (send a request, run tool calls, await an ``async def`` hook or
action) and sends the outcomes back. That is all a driver does; what a run
decides is in the loop and ``core``. The streamed drivers also yield what the
caller sees while a request streams (``TextView``) and the events the run
emits (transitions, tool calls, retries), in order.

The sync drivers refuse an agent with ``async def`` hooks or actions
(``core.require_sync``) before anything is sent.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, cast

from agentfsm.machine import core, loop
from agentfsm.machine.plan import AwaitAction, AwaitHook, Effect, Reconcile, RunTools, SendRequest, ToolsDue
from agentfsm.machine.streaming import ResultEvent, StreamEvent, TextView
from agentfsm.result import RunResult, TraceStep
from agentfsm.tools import reconcile
from agentfsm.tools.calls import ToolResult
from agentfsm.tools.executor import arun_calls, run_calls
from agentfsm.tools.mcp.scope import aserving, serving
from agentfsm.wire import api

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation

_NEVER_RAN = api.RequestFailure(type="no_outcome", message="stream never ran")

Sent = tuple[api.Reply | api.RequestFailure, float]


# --- sync --------------------------------------------------------------------------------------


def _drive(conv: Conversation, steps: loop.Steps, view: TextView | None) -> Iterator[StreamEvent]:
    """Perform every effect ``steps`` yields, with the sync client and executor."""
    outcome: Any = None
    while True:
        try:
            effect = steps.send(outcome)
        except StopIteration:
            yield from core.drain(conv)
            break
        yield from core.drain(conv)
        if isinstance(effect, SendRequest):
            outcome = yield from _send(conv, effect, view)
        elif isinstance(effect, RunTools):  # each result committed as it finishes (effect.commit)
            outcome = run_calls(
                conv.agent.executor, effect.calls, conv.agent.tool_map, core.tool_timeout(conv), effect.commit
            )
        elif isinstance(effect, Reconcile):
            outcome = reconcile.check_all(effect.calls, conv.agent.tool_map, effect.timeout)
        elif isinstance(effect, ToolsDue):
            outcome = None
        else:  # an async hook or action: refused, with the reason
            core.require_sync(conv)
            raise AssertionError(f"unreachable: {effect!r}")  # require_sync raises for both


def _send(conv: Conversation, plan: SendRequest, view: TextView | None) -> Generator[StreamEvent, None, Sent]:
    if plan.delay > 0:
        conv._clock.sleep(plan.delay)
    client = conv.agent.client  # a client of the wrong kind raises before any request
    started = time.perf_counter()
    if view is None:
        outcome = api.send(client, plan.params, betas=plan.betas, timeout=plan.timeout)
    else:
        call = api.StreamCall(client, plan.params, betas=plan.betas, timeout=plan.timeout)
        view.begin(conv, retry=plan.attempt > 0)
        for delta in call:
            yield from view.feed(delta)
        outcome = call.outcome or _NEVER_RAN
        yield from view.end(ok=isinstance(outcome, api.Reply))
    return outcome, (time.perf_counter() - started) * 1000


def step(conv: Conversation) -> TraceStep | None:
    core.require_sync(conv)
    if conv.stopped:
        return None
    for _ in _drive(conv, loop.step(conv), None):
        pass
    return conv.trace[-1] if conv.trace and conv.waiting is None else None


def run(conv: Conversation) -> RunResult:
    core.require_sync(conv)
    with serving(conv.agent):  # the agent's MCP servers, open for the run
        try:
            for _ in _drive(conv, loop.steps(conv), None):
                pass
        finally:
            conv._persistence.release(conv)
    return conv.result()


def stream(conv: Conversation) -> Iterator[StreamEvent]:
    core.require_sync(conv)
    view = TextView()
    conv._outbox = []
    with serving(conv.agent):
        try:
            yield from _drive(conv, loop.steps(conv), view)
            yield from view.close(conv)
        finally:
            conv._outbox = None
            conv._persistence.release(conv)
    yield ResultEvent(result=conv.result())


# --- async: the same, awaited -----------------------------------------------------------------------


async def perform_async(conv: Conversation, effect: AwaitHook | AwaitAction) -> Any:
    """Await an ``async def`` hook (its choice is the outcome) or action (inside ``core.acting``, which checks
    what it left and puts the history back if it raised). The async drivers and the durable engines both
    await them so."""
    if isinstance(effect, AwaitHook):
        return await effect.hook(conv)
    action = cast(Callable[["Conversation"], Awaitable[None]], effect.transition.action)
    with core.acting(conv, effect.transition):
        await action(conv)
    return None


async def _adrive(conv: Conversation, steps: loop.Steps, view: TextView | None) -> AsyncIterator[StreamEvent]:
    """Perform every effect ``steps`` yields, with the async client and executor."""
    outcome: Any = None
    while True:
        try:
            effect: Effect = steps.send(outcome)
        except StopIteration:
            for event in core.drain(conv):
                yield event
            break
        for event in core.drain(conv):
            yield event
        if isinstance(effect, SendRequest) and view is not None:
            async for item in _astream_send(conv, effect, view):
                if isinstance(item, tuple):
                    outcome = item
                else:
                    yield item
        else:
            outcome = await _aperform(conv, effect)


async def _aperform(conv: Conversation, effect: Effect) -> Any:
    """Perform one effect with the async client and executor (a request not streamed), and give its outcome."""
    if isinstance(effect, SendRequest):
        if effect.delay > 0:
            await conv._clock.asleep(effect.delay)
        client = conv.agent.aclient
        started = time.perf_counter()
        reply = await api.asend(client, effect.params, betas=effect.betas, timeout=effect.timeout)
        return reply, (time.perf_counter() - started) * 1000
    if isinstance(effect, RunTools):
        results: list[ToolResult] = await arun_calls(
            conv.agent.executor, effect.calls, conv.agent.tool_map, core.tool_timeout(conv), effect.commit
        )
        return results
    if isinstance(effect, Reconcile):
        return await reconcile.acheck_all(effect.calls, conv.agent.tool_map, effect.timeout)
    if isinstance(effect, ToolsDue):
        return None
    return await perform_async(conv, effect)


async def _astream_send(conv: Conversation, plan: SendRequest, view: TextView) -> AsyncIterator[StreamEvent | Sent]:
    if plan.delay > 0:
        await conv._clock.asleep(plan.delay)
    client = conv.agent.aclient
    started = time.perf_counter()
    call = api.StreamCall(client, plan.params, betas=plan.betas, timeout=plan.timeout)
    view.begin(conv, retry=plan.attempt > 0)
    async for delta in call:
        for event in view.feed(delta):
            yield event
    outcome = call.outcome or _NEVER_RAN
    for event in view.end(ok=isinstance(outcome, api.Reply)):
        yield event
    yield outcome, (time.perf_counter() - started) * 1000


async def astep(conv: Conversation) -> TraceStep | None:
    if conv.stopped:
        return None
    async for _ in _adrive(conv, loop.step(conv), None):
        pass
    return conv.trace[-1] if conv.trace and conv.waiting is None else None


async def arun(conv: Conversation) -> RunResult:
    # _adrive with nothing to yield, as a plain coroutine: no async generator to step through every effect,
    # and, while a tool call is in flight, one frame fewer held by each of a thousand paused conversations.
    steps = loop.steps(conv)
    outcome: Any = None
    async with aserving(conv.agent):
        try:
            while True:
                try:
                    effect = steps.send(outcome)
                except StopIteration:
                    break
                finally:
                    core.drain(conv)  # nobody streams: whatever is in the outbox goes nowhere
                outcome = await _aperform(conv, effect)
        finally:
            conv._persistence.release(conv)
    return conv.result()


async def astream(conv: Conversation) -> AsyncIterator[StreamEvent]:
    view = TextView()
    conv._outbox = []
    async with aserving(conv.agent):
        try:
            async for event in _adrive(conv, loop.steps(conv), view):
                yield event
            for event in view.close(conv):
                yield event
        finally:
            conv._outbox = None
            conv._persistence.release(conv)
    yield ResultEvent(result=conv.result())
