"""Drivers: the I/O of a step, four ways — sync or async, plain or streamed.

A step is: plan (pure, ``Conversation.plan``), perform its I/O (the request
or the tool calls — the only part that differs between drivers), complete
(``complete_request`` / ``finish_tools`` fire the transition). Everything a
driver decides is on the ``Conversation``; what is left here is the lines
that must be written once with ``await`` and once without. Streamed drivers
also yield what the caller sees while the step runs (``TextView``).

A run ends when the conversation is ``stopped``: finished, or waiting (a
``Suspend`` plan). The async drivers also await what a subclass made
``async def``: a hook (``AwaitHook``: await it, then plan with its choice) and
an action (awaited inside ``conv.acting``, then the transition fires); the
sync drivers refuse an agent that has either (``conv.require_sync``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, cast

from agentfsm.machine.plan import AwaitHook, RunTools, SendRequest, Suspend
from agentfsm.machine.streaming import ResultEvent, StreamEvent, TextView
from agentfsm.machine.table import Transition
from agentfsm.result import RunResult, TraceStep
from agentfsm.wire import api

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation

_NEVER_RAN = api.RequestFailure(type="no_outcome", message="stream never ran")


# --- sync --------------------------------------------------------------------------------------


def _step(conv: Conversation, view: TextView | None) -> Iterator[StreamEvent]:
    plan = conv.plan()
    if isinstance(plan, AwaitHook):
        conv.require_sync()  # raises: an async hook cannot be awaited here
        return
    if isinstance(plan, Suspend):
        conv.suspend()
    elif isinstance(plan, SendRequest):
        client, betas = conv.agent.client, plan.betas  # a client of the wrong kind raises before any request
        conv.begin_request()
        attempt = 0
        while True:
            started = time.perf_counter()
            if view is None:
                outcome = api.send(client, plan.params, betas=betas, timeout=plan.timeout)
            else:
                call = api.StreamCall(client, plan.params, betas=betas, timeout=plan.timeout)
                view.begin(conv, retry=attempt > 0)
                for delta in call:
                    yield from view.feed(delta)
                outcome = call.outcome or _NEVER_RAN
                yield from view.end(ok=isinstance(outcome, api.Reply))
            delay = conv.retry_delay(outcome, attempt)
            if delay is None:
                break
            attempt += 1
            yield from conv.drain()
            time.sleep(delay)
            conv.begin_request()  # a resend is a request: counted against max_turns
        conv.complete_request(outcome, latency_ms=(time.perf_counter() - started) * 1000)
    elif isinstance(plan, RunTools):
        to_run, settled = conv.begin_tools(plan)
        yield from conv.drain()
        results = conv.agent.executor.execute(to_run, conv.agent.tool_map, conv.tool_timeout) if to_run else []
        conv.finish_tools(plan, settled, results)
    else:
        conv.fire(plan.transition)
    yield from conv.drain()


def step(conv: Conversation) -> TraceStep | None:
    conv.require_sync()
    if conv.stopped:
        return None
    for _ in _step(conv, None):
        pass
    return conv.trace[-1] if conv.trace and conv.waiting is None else None


def run(conv: Conversation) -> RunResult:
    conv.require_sync()
    try:
        while not conv.stopped:
            for _ in _step(conv, None):
                pass
    finally:
        conv.release()
    return conv.result()


def stream(conv: Conversation) -> Iterator[StreamEvent]:
    conv.require_sync()
    view = TextView()
    conv._outbox = []
    try:
        while not conv.stopped:
            yield from _step(conv, view)
        yield from view.close(conv)
    finally:
        conv._outbox = None
        conv.release()
    yield ResultEvent(result=conv.result())


# --- async: the same lines, awaited ---------------------------------------------------------------


async def afire(conv: Conversation, transition: Transition) -> None:
    """Fire ``transition``, first awaiting its action when that is ``async def`` (inside ``conv.acting``,
    which checks what it left). The async drivers and the durable engines fire every transition so."""
    if transition.awaits:
        action = cast(Callable[["Conversation"], Awaitable[None]], transition.action)
        with conv.acting(transition):
            await action(conv)
    conv.fire(transition)


async def _astep(conv: Conversation, view: TextView | None) -> AsyncIterator[StreamEvent]:
    plan = conv.plan()
    if isinstance(plan, AwaitHook):
        plan = conv.plan(await plan.hook(conv))
    if isinstance(plan, Suspend):
        conv.suspend()
    elif isinstance(plan, SendRequest):
        client, betas = conv.agent.aclient, plan.betas
        conv.begin_request()
        attempt = 0
        while True:
            started = time.perf_counter()
            if view is None:
                outcome = await api.asend(client, plan.params, betas=betas, timeout=plan.timeout)
            else:
                call = api.StreamCall(client, plan.params, betas=betas, timeout=plan.timeout)
                view.begin(conv, retry=attempt > 0)
                async for delta in call:
                    for event in view.feed(delta):
                        yield event
                outcome = call.outcome or _NEVER_RAN
                for event in view.end(ok=isinstance(outcome, api.Reply)):
                    yield event
            delay = conv.retry_delay(outcome, attempt)
            if delay is None:
                break
            attempt += 1
            for event in conv.drain():
                yield event
            await asyncio.sleep(delay)
            conv.begin_request()
        conv.complete_request(outcome, latency_ms=(time.perf_counter() - started) * 1000)
    elif isinstance(plan, RunTools):
        to_run, settled = conv.begin_tools(plan)
        for event in conv.drain():
            yield event
        executor = conv.agent.executor
        results = await executor.aexecute(to_run, conv.agent.tool_map, conv.tool_timeout) if to_run else []
        conv.finish_tools(plan, settled, results, fire=False)
        await afire(conv, plan.transition)
    elif not isinstance(plan, AwaitHook):
        await afire(conv, plan.transition)
    for event in conv.drain():
        yield event


async def astep(conv: Conversation) -> TraceStep | None:
    if conv.stopped:
        return None
    async for _ in _astep(conv, None):
        pass
    return conv.trace[-1] if conv.trace and conv.waiting is None else None


async def arun(conv: Conversation) -> RunResult:
    try:
        while not conv.stopped:
            async for _ in _astep(conv, None):
                pass
    finally:
        conv.release()
    return conv.result()


async def astream(conv: Conversation) -> AsyncIterator[StreamEvent]:
    view = TextView()
    conv._outbox = []
    try:
        while not conv.stopped:
            async for event in _astep(conv, view):
                yield event
        for event in view.close(conv):
            yield event
    finally:
        conv._outbox = None
        conv.release()
    yield ResultEvent(result=conv.result())
