"""Running the client tool calls of one assistant reply.

:class:`ToolExecutor` is the plug-in point (a sandbox, an approval gate, a
remote worker, an MCP bridge); :class:`DefaultExecutor` runs the tools in this
process, concurrently, with a per-call timeout. Either way a failing call never
raises: it becomes an ``is_error`` :class:`~agentfsm.tools.ToolResult` the model
can read and act on.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from agentfsm.errors import (
    ConfigurationError,
    ToolCallError,
    ToolExecutionError,
    ToolInputError,
    ToolTimeoutError,
    UnknownToolError,
)
from agentfsm.tools.calls import ToolCall, ToolResult, error_result, to_tool_result, traceback_of
from agentfsm.tools.definition import Tool

__all__ = ["DefaultExecutor", "OnResult", "ToolExecutor", "call_scope", "shared_executor"]

#: Called with each call's result as soon as it finished (``on_result``; see ``ToolExecutor``).
OnResult = Callable[["ToolResult"], None]

#: One call ready to run: its index in the batch, its tool, the call, and the job that runs it.
_Job = tuple[int, Tool, ToolCall, Callable[[], ToolResult]]

#: Set while a traced conversation runs (``agentfsm.otel``): given a call as it starts, in the context
#: it runs in, returns the context manager the call runs inside (its span, made current, so spans the
#: tool makes are its children). An executor of your own may honour it the same way; None: nothing.
call_scope: contextvars.ContextVar[Callable[[ToolCall], AbstractContextManager[Any]] | None] = contextvars.ContextVar(
    "agentfsm_call_scope", default=None
)


@runtime_checkable
class ToolExecutor(Protocol):
    """Runs the client tool calls of ONE assistant reply and returns their results.

    The contract every implementation keeps (the state machine relies on it to
    build the next user message, wire rule 2 in docs/02-state-machine.md):

    * exactly one :class:`ToolResult` per call, **in call order**, each with
      ``tool_use_id == call.id``;
    * never raise for a failing call: every failure becomes an ``is_error``
      result whose text says exactly what was wrong, using the classes in
      :mod:`agentfsm.errors`: :class:`~agentfsm.errors.UnknownToolError` (a name
      not in ``tools``; lists the known names),
      :class:`~agentfsm.errors.ToolInputError` (input fails validation; checked
      before the call), :class:`~agentfsm.errors.ToolExecutionError` (the
      function raised), :class:`~agentfsm.errors.ToolTimeoutError` (a call ran
      longer than ``timeout`` seconds, measured from when the batch started),
      :class:`~agentfsm.errors.ToolReturnError` (the value cannot be sent);
    * ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``,
      ``SystemExit``, and ``CancelledError`` of the awaiting task) propagates;
    * each result carries ``duration_ms``.

    ``tools`` maps tool name to :class:`Tool` (client tools only; server tools
    never reach an executor). Each call a conversation hands over carries its
    :class:`~agentfsm.tools.calls.ToolContext` (``call.context``): a tool that
    declares a ``ToolContext`` parameter receives it there. ``execute`` is called from synchronous runs,
    ``aexecute`` from async runs; both must keep the contract.

    **Reporting each result (optional).** An executor whose ``execute`` / ``aexecute`` also take a
    keyword ``on_result`` is given one when the conversation has a store: call it with each call's
    result as soon as that call finished, from the thread that called ``execute`` (in ``aexecute``,
    on the event loop), never twice at once, and still return the whole list. The conversation
    commits each result as it comes, so after a crash only the calls still running are in doubt
    (docs/06-persistence.md, "Exactly-once tools"). Without it the batch is committed when it returns.
    """

    def execute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
        """Run ``calls`` and block until every one has a result (or timed out)."""
        ...

    async def aexecute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
        """Run ``calls`` on the running event loop; same contract as :meth:`execute`."""
        ...


class DefaultExecutor:
    """Runs tools in this process, all calls of a batch concurrently.

    Sync tools run in a shared thread pool (created on first use, ``max_workers``
    threads named ``agentfsm-tool-N``). In :meth:`execute`, async tools run there
    too, each under its own ``asyncio.run`` (so ``execute`` works even from a
    thread that already runs an event loop); in :meth:`aexecute` they are awaited
    on the caller's loop. Each call runs in a copy of the caller's
    ``contextvars`` context, so structlog context variables reach tool code.

    **No timeout** (``math.inf``, what ``Policy(tool_timeout=None)`` passes): no
    timeout can fire, so in :meth:`execute` one call of the batch (the last sync
    one) runs inline in the calling thread, in its own copy of the context, while
    the others run in the pool: a lone sync call never pays the thread hop
    (20–500 µs, more on a busy machine). With a
    timeout every call runs in the pool, since a call running in the caller's
    thread could not be given up on. :meth:`aexecute` always runs sync tools in
    the pool: they must not block the event loop.

    **Timeouts.** An async tool that times out is cancelled. A sync tool cannot
    be stopped: its result is reported as a :class:`ToolTimeoutError` and the
    thread is *abandoned* (left to finish in the background; its result is
    dropped). A call still queued when its time is up is never started. If the
    abandoned calls still running would leave a new batch too few threads
    (``abandoned + calls > max_workers``), the pool is *replaced* by a fresh one
    and the old one is shut down without waiting, so a hung tool can never block
    later batches. The price: a tool that never returns keeps its thread forever,
    and because ``concurrent.futures`` joins its workers at interpreter exit, it
    also delays exit. Give blocking tools their own timeouts (HTTP, subprocess).
    """

    def __init__(self, max_workers: int = 16) -> None:
        if max_workers < 1:
            raise ConfigurationError(f"max_workers must be at least 1, got {max_workers}")
        self.max_workers = max_workers
        self.pools_replaced = 0  # how many times abandoned calls forced a fresh pool
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._abandoned: set[Future[ToolResult]] = set()  # timed-out calls still running in self._pool

    # --- the two drivers --------------------------------------------------------

    def execute(
        self,
        calls: Sequence[ToolCall],
        tools: Mapping[str, Tool],
        timeout: float,
        *,
        on_result: OnResult | None = None,
    ) -> list[ToolResult]:
        """Run every call concurrently in the pool; wait at most ``timeout`` s from now for each. With
        ``on_result``, each result is given to it (in this thread) as soon as its call finished."""
        limit = _check_timeout(timeout)
        started = time.monotonic()
        ready = [_prepare(call, tools) for call in calls]
        if limit is None and len(ready) == 1 and isinstance(ready[0], tuple) and not ready[0][0].is_async:
            # The common turn: one sync call and no timeout. It runs right here, as below, minus the
            # bookkeeping of a batch.
            tool, kwargs = ready[0]
            only = contextvars.copy_context().run(_run_sync, tool, kwargs, calls[0], None, None)
            if on_result is not None:
                on_result(only)
            return [only]
        if on_result is not None:
            return self._execute_reporting(calls, ready, limit, started, on_result)
        deadline = None if limit is None else started + limit
        results, jobs = _jobs(calls, ready, limit, deadline)
        # No timeout can fire: one call runs here, without a thread hop, while the others run in the pool.
        inline = _inline_job(jobs) if limit is None else None
        pooled = [j for j in jobs if j is not inline]
        if pooled:
            pool, futures = self._submit([job for *_, job in pooled])
        if inline is not None:
            results[inline[0]] = contextvars.copy_context().run(inline[3])
        if pooled:
            for (i, tool, call, _), fut in zip(pooled, futures, strict=True):
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    results[i] = fut.result(timeout=remaining)
                except TimeoutError:  # the wait timed out: job bodies never raise an Exception
                    self._abandon(fut, pool)
                    results[i] = _timeout_result(call, tool, timeout, started)
        return _all(results)

    async def aexecute(
        self,
        calls: Sequence[ToolCall],
        tools: Mapping[str, Tool],
        timeout: float,
        *,
        on_result: OnResult | None = None,
    ) -> list[ToolResult]:
        """Run every call concurrently: async tools on this loop, sync tools in the pool. With ``on_result``,
        each result is given to it (on this loop) as soon as its call finished."""
        if on_result is not None:
            return await self._aexecute_reporting(calls, tools, timeout, on_result)
        limit = _check_timeout(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        # Found and validated here, as in execute: unknown names and bad input need no task.
        ready = [_prepare(call, tools) for call in calls]
        if len(ready) == 1:
            # Nothing to overlap with: no gather. A sync call runs in the pool in its own context anyway; an
            # async one gets a task, for a context of its own as the contract says. (Awaited while it stays in
            # flight, a call's frames are what a thousand paused conversations hold: kept to the task alone.)
            prepared = ready[0]
            if isinstance(prepared, ToolResult):
                return [prepared]
            tool, kwargs = prepared
            if not tool.is_async:
                return [await self._await_sync(tool, kwargs, calls[0], limit, deadline)]
            # Cancelling this coroutine cancels the task it awaits.
            return [await asyncio.get_running_loop().create_task(_async_call(tool, kwargs, calls[0], limit))]
        results: list[ToolResult | None] = []
        running: list[Awaitable[ToolResult]] = []
        for call, prepared in zip(calls, ready, strict=True):
            if isinstance(prepared, ToolResult):
                results.append(prepared)
                continue
            tool, kwargs = prepared
            results.append(None)
            running.append(
                _async_call(tool, kwargs, call, limit)
                if tool.is_async
                else self._await_sync(tool, kwargs, call, limit, deadline)
            )
        ran = iter(await asyncio.gather(*running))
        return [result if result is not None else next(ran) for result in results]

    def _execute_reporting(
        self,
        calls: Sequence[ToolCall],
        ready: list[ToolResult | tuple[Tool, dict[str, Any]]],
        limit: float | None,
        started: float,
        on_result: OnResult,
    ) -> list[ToolResult]:
        """``execute`` reporting each result as it comes: every call in the pool (none inline: a call
        running in this thread would hold back the others' reports), this thread waiting for the next."""
        deadline = None if limit is None else started + limit
        results, jobs = _jobs(calls, ready, limit, deadline)
        for result in results:
            if result is not None:  # found and judged here (an unknown tool, invalid input): finished already
                on_result(result)
        if not jobs:
            return _all(results)
        pool, futures = self._submit([job for *_, job in jobs])
        pending = {fut: job for fut, job in zip(futures, jobs, strict=True)}
        while pending:  # each round takes at least one future out, or ends at the deadline
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = wait(pending, timeout=remaining, return_when=FIRST_COMPLETED)
            if not done:  # the deadline passed: every call still running timed out
                for fut, (i, tool, call, _) in pending.items():
                    self._abandon(fut, pool)
                    results[i] = _timeout_result(call, tool, limit, started)
                    on_result(results[i])  # type: ignore[arg-type]
                break
            dying: BaseException | None = None
            for fut in done:  # the finished ones committed first, then a call's KeyboardInterrupt goes up
                i = pending.pop(fut)[0]
                if fut.exception() is not None:
                    dying = dying or fut.exception()
                    continue
                results[i] = result = fut.result()
                on_result(result)
            if dying is not None:
                raise dying
        return _all(results)

    async def _aexecute_reporting(
        self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float, on_result: OnResult
    ) -> list[ToolResult]:
        """``aexecute`` reporting each result as it comes (each call's own, as one call of a batch)."""

        async def reported(call: ToolCall) -> ToolResult:
            (result,) = await self.aexecute([call], tools, timeout)
            on_result(result)
            return result

        # Each call under its own timeout from now: what ``aexecute`` gives every call of a batch.
        return list(await asyncio.gather(*(reported(call) for call in calls)))

    # --- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        """Shut the pool down without waiting for running calls; a later batch starts a new pool."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._abandoned = set()
        if pool is not None:
            pool.shutdown(wait=False)

    def __enter__(self) -> DefaultExecutor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DefaultExecutor(max_workers={self.max_workers})"

    # --- pool management --------------------------------------------------------

    def _submit(self, jobs: Sequence[Callable[[], ToolResult]]) -> tuple[ThreadPoolExecutor, list[Future[ToolResult]]]:
        """Submit a batch to the pool, first replacing it if abandoned calls would starve the batch."""
        with self._lock:
            pool = self._pool
            if pool is not None and self._abandoned and len(self._abandoned) + len(jobs) > self.max_workers:
                pool.shutdown(wait=False)  # running calls finish in the background; queued ones still run
                self.pools_replaced += 1
                pool = None
            if pool is None:
                pool = self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="agentfsm-tool")
                self._abandoned = set()
            # each job runs in its own copy of the caller's context (a Context cannot be entered twice at once)
            futures = [pool.submit(contextvars.copy_context().run, job) for job in jobs]
        return pool, futures

    def _abandon(self, fut: Future[ToolResult], pool: ThreadPoolExecutor) -> None:
        """Give up on a timed-out call: cancel it if it never started, else count it until it ends."""
        if fut.cancel():
            return
        with self._lock:
            if pool is not self._pool:
                return  # that pool was already replaced
            self._abandoned.add(fut)
        fut.add_done_callback(self._forget)  # runs at once if it has finished meanwhile

    def _forget(self, fut: Future[ToolResult]) -> None:
        with self._lock:
            self._abandoned.discard(fut)

    async def _await_sync(
        self, tool: Tool, kwargs: dict[str, Any], call: ToolCall, limit: float | None, deadline: float | None
    ) -> ToolResult:
        """Run a sync tool in the pool and await it under the timeout; cancellation propagates."""
        started = time.monotonic()
        pool, (fut,) = self._submit([_bind(_run_sync, tool, kwargs, call, limit, deadline)])
        scope = asyncio.timeout(limit)
        try:
            async with scope:
                return await asyncio.wrap_future(fut)
        except TimeoutError:
            if not scope.expired():
                raise
            self._abandon(fut, pool)
            return _timeout_result(call, tool, limit, started)
        except BaseException:  # our task was cancelled (or is dying): let the thread go, re-raise
            if not fut.done():
                self._abandon(fut, pool)
            raise


# --- what runs for one call --------------------------------------------------------


def _jobs(
    calls: Sequence[ToolCall],
    ready: list[ToolResult | tuple[Tool, dict[str, Any]]],
    limit: float | None,
    deadline: float | None,
) -> tuple[list[ToolResult | None], list[_Job]]:
    """The batch's results so far (those ``_prepare`` answered) and a job for each call left to run."""
    results: list[ToolResult | None] = [None] * len(calls)
    jobs: list[_Job] = []
    for i, (call, prepared) in enumerate(zip(calls, ready, strict=True)):
        if isinstance(prepared, ToolResult):
            results[i] = prepared
            continue
        tool, kwargs = prepared
        runner = _run_async_in_thread if tool.is_async else _run_sync
        jobs.append((i, tool, call, _bind(runner, tool, kwargs, call, limit, deadline)))
    return results, jobs


def _inline_job(jobs: Sequence[_Job]) -> _Job | None:
    """The job to run in the calling thread when no timeout can fire: the last sync one. (An async
    one stays in the pool: its private event loop must not become this thread's.)"""
    for job in reversed(jobs):
        if not job[1].is_async:
            return job
    return None


_SHARED: DefaultExecutor | None = None
_SHARED_LOCK = threading.Lock()


def shared_executor() -> DefaultExecutor:
    """The process-wide ``DefaultExecutor`` that agents use unless given their own.

    One pool for the process, like the SDK's one connection pool per client:
    making an agent must not cost a thread pool, and idle threads are shared.
    """
    global _SHARED
    if _SHARED is None:
        with _SHARED_LOCK:
            if _SHARED is None:
                _SHARED = DefaultExecutor()
    return _SHARED


def _prepare(call: ToolCall, tools: Mapping[str, Tool]) -> ToolResult | tuple[Tool, dict[str, Any]]:
    """Find and validate in the caller's thread: unknown names and bad input cost no thread round trip."""
    t0 = time.perf_counter()
    err: ToolCallError
    tool = tools.get(call.name)
    if tool is None:
        err = UnknownToolError(call.name, list(tools))
    else:
        try:
            kwargs = tool.validate(call.input)
        except ToolInputError as exc:
            err = exc
        except Exception as exc:  # a user validator raised something pydantic does not wrap
            err = ToolInputError(tool.name, [f"the input could not be validated: {type(exc).__name__}: {exc}"])
        else:
            if tool.context_param is None or (call.context is None and tool.context_optional):
                return tool, kwargs
            if call.context is not None:
                kwargs[tool.context_param] = call.context
                return tool, kwargs
            err = ToolExecutionError(
                tool.name,
                ConfigurationError(
                    f"the call {call.id} has no ToolContext for parameter {tool.context_param!r}: a conversation "
                    "gives every call it runs one; to run a call yourself, pass call.with_context(ToolContext.of("
                    "conversation_id, call.id))"
                ),
            )
    result = error_result(call, err)
    result.duration_ms = (time.perf_counter() - t0) * 1000
    return result


def _run_sync(
    tool: Tool, kwargs: dict[str, Any], call: ToolCall, limit: float | None, deadline: float | None
) -> ToolResult:
    """Call a sync tool (in a pool thread, or inline). Raises only non-Exception BaseExceptions."""
    scope = call_scope.get()
    if scope is None:
        return _call_sync(tool, kwargs, call, limit, deadline)
    with scope(call):
        return _call_sync(tool, kwargs, call, limit, deadline)


def _call_sync(
    tool: Tool, kwargs: dict[str, Any], call: ToolCall, limit: float | None, deadline: float | None
) -> ToolResult:
    t0 = time.perf_counter()
    if deadline is not None and time.monotonic() >= deadline:  # queued past its deadline: never start it
        result = error_result(call, ToolTimeoutError(tool.name, limit or 0.0))
    else:
        try:
            value = tool.fn(**kwargs)
        except ToolCallError as exc:  # the tool wrote its own message for the model
            result = error_result(call, exc)
        except Exception as exc:  # a bug: the model reads what it was, the developer where (the traceback)
            result = error_result(call, ToolExecutionError(tool.name, exc))
            result.traceback = traceback_of(exc)
        else:
            result = to_tool_result(call, value, tool.name)
    result.duration_ms = (time.perf_counter() - t0) * 1000
    return result


def _run_async_in_thread(
    tool: Tool, kwargs: dict[str, Any], call: ToolCall, limit: float | None, deadline: float | None
) -> ToolResult:
    """Run an async tool on a private event loop in a pool thread, with the time left until ``deadline``."""
    remaining = None if deadline is None else deadline - time.monotonic()
    if remaining is not None and remaining <= 0:
        result = error_result(call, ToolTimeoutError(tool.name, limit or 0.0))
        result.duration_ms = 0.0
        return result
    return asyncio.run(_run_async(tool, kwargs, call, remaining, reported=limit))


def _async_call(
    tool: Tool, kwargs: dict[str, Any], call: ToolCall, limit: float | None
) -> Coroutine[Any, Any, ToolResult]:
    """The coroutine that runs an async call: ``_run_async``, or, with no call scope set, the call itself (one
    frame fewer for as long as the call is in flight)."""
    if call_scope.get() is None:
        return _call_async(tool, kwargs, call, limit, None)
    return _run_async(tool, kwargs, call, limit)


async def _run_async(
    tool: Tool,
    kwargs: dict[str, Any],
    call: ToolCall,
    limit: float | None,
    *,
    reported: float | None = None,
) -> ToolResult:
    """Await an async tool, cancelling it after ``limit`` s. Cancellation of the caller propagates."""
    scope = call_scope.get()
    if scope is None:
        return await _call_async(tool, kwargs, call, limit, reported)
    with scope(call):
        return await _call_async(tool, kwargs, call, limit, reported)


async def _call_async(
    tool: Tool, kwargs: dict[str, Any], call: ToolCall, limit: float | None, reported: float | None
) -> ToolResult:
    t0 = time.perf_counter()
    scope = asyncio.timeout(limit)
    try:
        async with scope:
            value = await tool.fn(**kwargs)
    except ToolCallError as exc:
        result = error_result(call, exc)
    except TimeoutError as exc:
        if scope.expired():
            seconds = reported if reported is not None else limit
            result = error_result(call, ToolTimeoutError(tool.name, seconds or 0.0))
        else:  # the tool's own timeout (an HTTP call, say): an ordinary failure
            result = error_result(call, ToolExecutionError(tool.name, exc))
            result.traceback = traceback_of(exc)
    except Exception as exc:
        result = error_result(call, ToolExecutionError(tool.name, exc))
        result.traceback = traceback_of(exc)
    else:
        result = to_tool_result(call, value, tool.name)
    result.duration_ms = (time.perf_counter() - t0) * 1000
    return result


# --- small helpers -----------------------------------------------------------------


def _bind(
    fn: Callable[[Tool, dict[str, Any], ToolCall, float | None, float | None], ToolResult],
    tool: Tool,
    kwargs: dict[str, Any],
    call: ToolCall,
    limit: float | None,
    deadline: float | None,
) -> Callable[[], ToolResult]:
    def job() -> ToolResult:
        return fn(tool, kwargs, call, limit, deadline)

    return job


def _check_timeout(timeout: float) -> float | None:
    """Seconds, or None for no limit (``math.inf``)."""
    if not timeout > 0:  # also rejects NaN
        raise ConfigurationError(f"tool timeout must be a positive number of seconds, got {timeout!r}")
    return None if timeout == float("inf") else float(timeout)


def _timeout_result(call: ToolCall, tool: Tool, timeout: float | None, started: float) -> ToolResult:
    result = error_result(call, ToolTimeoutError(tool.name, timeout or 0.0))
    result.duration_ms = (time.monotonic() - started) * 1000
    return result


_REPORTS: dict[type, bool] = {}


def _reports(executor: object) -> bool:
    """Whether ``executor``'s ``execute``/``aexecute`` take ``on_result`` (asked once per class)."""
    kind = type(executor)
    known = _REPORTS.get(kind)
    if known is None:
        try:
            known = "on_result" in inspect.signature(kind.execute).parameters  # type: ignore[attr-defined]
            known = known and "on_result" in inspect.signature(kind.aexecute).parameters  # type: ignore[attr-defined]
        except (AttributeError, TypeError, ValueError):
            known = False
        _REPORTS[kind] = known
    return known


def _reporting(executor: ToolExecutor, on_result: OnResult | None) -> dict[str, Any]:
    """The keyword that gives ``executor`` the ``on_result`` callback, when there is one and it takes it."""
    return {"on_result": on_result} if on_result is not None and _reports(executor) else {}


def run_calls(
    executor: ToolExecutor,
    calls: Sequence[ToolCall],
    tools: Mapping[str, Tool],
    timeout: float,
    on_result: OnResult | None,
) -> list[ToolResult]:
    """``executor.execute``, given ``on_result`` when there is one and the executor takes it."""
    return executor.execute(calls, tools, timeout, **_reporting(executor, on_result))


async def arun_calls(
    executor: ToolExecutor,
    calls: Sequence[ToolCall],
    tools: Mapping[str, Tool],
    timeout: float,
    on_result: OnResult | None,
) -> list[ToolResult]:
    """``executor.aexecute``, given ``on_result`` when there is one and the executor takes it."""
    return await executor.aexecute(calls, tools, timeout, **_reporting(executor, on_result))


def _all(results: list[ToolResult | None]) -> list[ToolResult]:
    done = [r for r in results if r is not None]
    assert len(done) == len(results), "every call has a result"
    return done
