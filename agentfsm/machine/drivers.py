"""Drivers: the I/O of a step, four ways — sync or async, plain or streamed.

A step is: plan (pure, ``Conversation.plan``), perform its I/O (the request
or the tool calls — the only part that differs between drivers), complete
(``complete_request`` / ``finish_tools`` fire the transition). Everything a
driver decides is on the ``Conversation``; what is left here is the lines
that must be written once with ``await`` and once without. Streamed drivers
also yield what the caller sees while the step runs (``TextView``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from agentfsm.machine.plan import RunTools, SendRequest
from agentfsm.machine.streaming import ResultEvent, StreamEvent, TextView
from agentfsm.result import RunResult, TraceStep
from agentfsm.wire import api

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation

_NEVER_RAN = api.RequestFailure(type="no_outcome", message="stream never ran")


# --- sync --------------------------------------------------------------------------------------


def _step(conv: Conversation, view: TextView | None) -> Iterator[StreamEvent]:
    plan = conv.plan()
    if isinstance(plan, SendRequest):
        client, betas = conv.agent.client, conv.agent.betas  # a client of the wrong kind raises before any request
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
    if conv.finished:
        return None
    for _ in _step(conv, None):
        pass
    return conv.trace[-1] if conv.trace else None


def run(conv: Conversation) -> RunResult:
    try:
        while not conv.finished:
            for _ in _step(conv, None):
                pass
    finally:
        conv.release()
    return conv.result()


def stream(conv: Conversation) -> Iterator[StreamEvent]:
    view = TextView()
    conv._outbox = []
    try:
        while not conv.finished:
            yield from _step(conv, view)
        yield from view.close(conv)
    finally:
        conv._outbox = None
        conv.release()
    yield ResultEvent(result=conv.result())


# --- async: the same lines, awaited ---------------------------------------------------------------


async def _astep(conv: Conversation, view: TextView | None) -> AsyncIterator[StreamEvent]:
    plan = conv.plan()
    if isinstance(plan, SendRequest):
        client, betas = conv.agent.aclient, conv.agent.betas
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
        conv.finish_tools(plan, settled, results)
    else:
        conv.fire(plan.transition)
    for event in conv.drain():
        yield event


async def astep(conv: Conversation) -> TraceStep | None:
    if conv.finished:
        return None
    async for _ in _astep(conv, None):
        pass
    return conv.trace[-1] if conv.trace else None


async def arun(conv: Conversation) -> RunResult:
    try:
        while not conv.finished:
            async for _ in _astep(conv, None):
                pass
    finally:
        conv.release()
    return conv.result()


async def astream(conv: Conversation) -> AsyncIterator[StreamEvent]:
    view = TextView()
    conv._outbox = []
    try:
        while not conv.finished:
            async for event in _astep(conv, view):
                yield event
        for event in view.close(conv):
            yield event
    finally:
        conv._outbox = None
        conv.release()
    yield ResultEvent(result=conv.result())
