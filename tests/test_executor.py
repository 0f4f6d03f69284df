"""The tool executor: one result per call, in order; failures as is_error results; timeouts; concurrency."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from agentfsm.errors import ConfigurationError, ToolInputError
from agentfsm.tools.calls import MAX_TRACEBACK_CHARS, ToolCall, ToolResult, for_history
from agentfsm.tools.definition import Tool, tool
from agentfsm.tools.executor import DefaultExecutor, ToolExecutor

# Generous: only ever used as an upper bound that a correct executor beats by far.
SLACK = 2.0

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
def nap(seconds: float, label: str = "") -> str:
    """Sleep, then say which call this was."""
    time.sleep(seconds)
    return label or f"slept {seconds}"


@tool
async def anap(seconds: float, label: str = "") -> str:
    """Sleep asynchronously, then say which call this was."""
    await asyncio.sleep(seconds)
    return label or f"slept {seconds}"


@tool
def explode(message: str) -> str:
    """Raise."""
    raise ValueError(message)


@tool
async def aexplode(message: str) -> str:
    """Raise, asynchronously."""
    raise RuntimeError(message)


@tool
def refuse(reason: str) -> str:
    """Raise an error written for the model."""
    raise ToolInputError("refuse", [f"'reason': {reason}"])


@tool
def weird() -> object:
    """Return something that cannot be sent."""
    return object()


@tool
def whoami() -> str:
    """Name the thread and the context variable the tool sees."""
    return f"{threading.current_thread().name}|{request_id.get()}"


@tool
async def awhoami() -> str:
    """The same, from an async tool."""
    return f"{threading.current_thread().name}|{request_id.get()}"


@tool
def interrupt() -> str:
    """Raise KeyboardInterrupt."""
    raise KeyboardInterrupt


@tool
async def ainterrupt() -> str:
    """Raise KeyboardInterrupt, asynchronously."""
    raise KeyboardInterrupt


@tool
def exit_now() -> str:
    """Raise SystemExit."""
    raise SystemExit(3)


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (add, nap, anap, explode, aexplode, refuse, weird, whoami, awhoami, interrupt, ainterrupt, exit_now)
}


def call(name: str, id: str | None = None, **input: object) -> ToolCall:
    return ToolCall(id=id or f"toolu_{name}", name=name, input=input)


@pytest.fixture
def executor() -> Iterator[DefaultExecutor]:
    ex = DefaultExecutor()
    yield ex
    ex.close()


class Driver(Protocol):
    def __call__(
        self, ex: DefaultExecutor, calls: Sequence[ToolCall], timeout: float = ..., tools: Mapping[str, Tool] = ...
    ) -> list[ToolResult]: ...


def run_sync(
    ex: DefaultExecutor, calls: Sequence[ToolCall], timeout: float = 5.0, tools: Mapping[str, Tool] = TOOLS
) -> list[ToolResult]:
    """Drive ``execute``."""
    return ex.execute(calls, tools, timeout)


def run_async(
    ex: DefaultExecutor, calls: Sequence[ToolCall], timeout: float = 5.0, tools: Mapping[str, Tool] = TOOLS
) -> list[ToolResult]:
    """Drive ``aexecute`` on a fresh event loop."""
    return asyncio.run(ex.aexecute(calls, tools, timeout))


DRIVERS = [pytest.param(run_sync, id="execute"), pytest.param(run_async, id="aexecute")]


def barrier_tools(n: int) -> tuple[dict[str, Tool], threading.Barrier]:
    """A sync and an async tool that only succeed if ``n`` calls wait at the barrier at the same time."""
    barrier = threading.Barrier(n, timeout=SLACK)

    @tool
    def meet(label: str) -> str:
        """Wait for the others."""
        barrier.wait()
        return label

    @tool
    async def ameet(label: str) -> str:
        """Wait for the others without blocking the loop."""
        await asyncio.to_thread(barrier.wait)
        return label

    return {"meet": meet, "ameet": ameet}, barrier


# --- the protocol ----------------------------------------------------------------------------------


def test_default_executor_implements_the_protocol() -> None:
    assert isinstance(DefaultExecutor(), ToolExecutor)


def test_a_custom_executor_is_a_tool_executor() -> None:
    class Approve:
        def execute(self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float) -> list[ToolResult]:
            return [ToolResult(tool_use_id=c.id, content="denied", is_error=True) for c in calls]

        async def aexecute(
            self, calls: Sequence[ToolCall], tools: Mapping[str, Tool], timeout: float
        ) -> list[ToolResult]:
            return self.execute(calls, tools, timeout)

    assert isinstance(Approve(), ToolExecutor)
    assert not isinstance(object(), ToolExecutor)


# --- results: order, ids, success -----------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_results_are_in_call_order_when_calls_finish_out_of_order(driver: Driver, executor: DefaultExecutor) -> None:
    calls = [
        call("nap", "c1", seconds=0.3, label="first"),
        call("anap", "c2", seconds=0.0, label="second"),
        call("nap", "c3", seconds=0.1, label="third"),
        call("add", "c4", a=2, b=3),
        call("anap", "c5", seconds=0.2, label="fifth"),
    ]
    results = driver(executor, calls)
    assert [r.tool_use_id for r in results] == ["c1", "c2", "c3", "c4", "c5"]
    assert [r.content for r in results] == ["first", "second", "third", "5", "fifth"]
    assert not any(r.is_error for r in results)


@pytest.mark.parametrize("driver", DRIVERS)
def test_every_result_has_a_duration(driver: Driver, executor: DefaultExecutor) -> None:
    calls = [call("nap", seconds=0.05), call("add", a=1, b=1), call("nope"), call("add", a="x", b=1)]
    results = driver(executor, calls)
    assert all(r.duration_ms is not None and r.duration_ms >= 0 for r in results)
    assert results[0].duration_ms is not None and results[0].duration_ms >= 40


@pytest.mark.parametrize("driver", DRIVERS)
def test_empty_batch(driver: Driver, executor: DefaultExecutor) -> None:
    assert driver(executor, []) == []


# --- concurrency -------------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("names", [("meet", "meet", "meet"), ("ameet", "ameet", "ameet"), ("meet", "ameet", "meet")])
def test_calls_of_one_batch_run_at_the_same_time(
    driver: Driver, names: tuple[str, ...], executor: DefaultExecutor
) -> None:
    # Each call blocks until all three are waiting: run one after another, the barrier would break.
    tools, barrier = barrier_tools(len(names))
    calls = [ToolCall(id=f"c{i}", name=n, input={"label": str(i)}) for i, n in enumerate(names)]
    results = driver(executor, calls, 5.0, tools)
    assert [r.content for r in results] == ["0", "1", "2"]
    assert not barrier.broken


# --- failures become is_error results ---------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_unknown_tool_lists_the_known_names(driver: Driver, executor: DefaultExecutor) -> None:
    (result,) = driver(executor, [call("get_wether", "c1", city="Paris")])
    assert result.is_error and result.tool_use_id == "c1"
    assert str(result.content).startswith("unknown tool 'get_wether'; the tools you can call are: 'add', 'aexplode', ")


@pytest.mark.parametrize("driver", DRIVERS)
def test_invalid_input_names_the_field_and_the_tool_is_not_called(driver: Driver, executor: DefaultExecutor) -> None:
    called: list[str] = []

    @tool
    def record(n: int) -> str:
        """Record a call."""
        called.append("yes")
        return "recorded"

    tools = {"record": record}
    calls = [ToolCall(id="c1", name="record", input={"n": "many"}), ToolCall(id="c2", name="record", input=[1])]
    results = driver(executor, calls, 5.0, tools)
    assert [r.is_error for r in results] == [True, True]
    assert "'n': input should be a valid integer (got 'many')" in results[0].content
    assert "input must be a JSON object" in results[1].content
    assert called == []


@pytest.mark.parametrize("driver", DRIVERS)
def test_unknown_names_and_bad_input_cost_no_thread(driver: Driver, executor: DefaultExecutor) -> None:
    results = driver(executor, [call("nope"), call("add", a=1), call("nap", seconds="long")])
    assert all(r.is_error for r in results)
    assert executor._pool is None  # the pool is created lazily: no call reached it


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(("name", "kind"), [("explode", "ValueError"), ("aexplode", "RuntimeError")])
def test_exception_becomes_an_error_with_type_and_message(
    driver: Driver, name: str, kind: str, executor: DefaultExecutor
) -> None:
    results = driver(executor, [call(name, "c1", message="disk full"), call("add", "c2", a=1, b=2)])
    assert results[0] == ToolResult(
        tool_use_id="c1",
        content=f"tool '{name}' raised {kind}: disk full",
        is_error=True,
        duration_ms=results[0].duration_ms,
        traceback=results[0].traceback,
    )
    assert results[0].traceback is not None and results[0].traceback.endswith(f"{kind}: disk full\n")
    assert results[1].content == "3" and not results[1].is_error and results[1].traceback is None


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_tool_call_error_raised_by_the_tool_is_passed_on_verbatim(driver: Driver, executor: DefaultExecutor) -> None:
    (result,) = driver(executor, [call("refuse", reason="must be polite")])
    assert result.is_error
    assert result.content == (
        "invalid input for tool 'refuse': 'reason': must be polite. Fix the input and call the tool again."
    )


@pytest.mark.parametrize("driver", DRIVERS)
def test_unserialisable_return_value(driver: Driver, executor: DefaultExecutor) -> None:
    (result,) = driver(executor, [call("weird")])
    assert result.is_error
    assert str(result.content).startswith("tool 'weird' returned a non-serialisable value of type object")


# --- timeouts ---------------------------------------------------------------------------------------------


def gated_tools() -> tuple[dict[str, Tool], threading.Event, list[str], threading.Event]:
    """A sync and an async tool that only return once the test sets ``release``; each notes when it returned,
    and sets ``started`` when it starts."""
    release, started, returned = threading.Event(), threading.Event(), []

    @tool
    def gate() -> str:
        """Wait for the test."""
        started.set()
        release.wait(30)
        returned.append("gate")
        return "opened"

    @tool
    async def agate() -> str:
        """Wait for the test without blocking the loop."""
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
        returned.append("agate")
        return "opened"

    return {"gate": gate, "agate": agate, "add": add}, release, returned, started


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("name", ["gate", "agate"])
def test_a_slow_call_times_out_and_the_others_still_answer(
    driver: Driver, name: str, executor: DefaultExecutor
) -> None:
    tools, release, returned, _started = gated_tools()
    try:
        results = driver(executor, [ToolCall(id="slow", name=name), call("add", "fast", a=1, b=2)], 0.2, tools)
        # The batch returned while the slow call was still waiting for the test: it did not wait for it.
        assert returned == []
    finally:
        release.set()
    assert results[0].tool_use_id == "slow" and results[0].is_error
    assert results[0].content == f"tool '{name}' did not finish within 0.2 s and was abandoned"
    assert results[0].duration_ms is not None and results[0].duration_ms >= 150
    assert results[1].content == "3" and not results[1].is_error


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_timed_out_async_tool_is_cancelled(driver: Driver, executor: DefaultExecutor) -> None:
    cancelled = threading.Event()

    @tool
    async def hang() -> str:
        """Wait forever."""
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "woke"

    (result,) = driver(executor, [ToolCall(id="h", name="hang")], 0.1, {"hang": hang})
    assert result.is_error and "did not finish within 0.1 s" in result.content
    assert cancelled.wait(SLACK)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_tools_own_timeout_error_is_an_execution_error(driver: Driver, executor: DefaultExecutor) -> None:
    @tool
    async def fetch() -> str:
        """Fail with the tool's own timeout."""
        raise TimeoutError("upstream took too long")

    (result,) = driver(executor, [ToolCall(id="f", name="fetch")], 5.0, {"fetch": fetch})
    assert result.content == "tool 'fetch' raised TimeoutError: upstream took too long"
    assert result.traceback is not None and "in fetch" in result.traceback


def test_timeout_is_measured_from_the_start_of_the_batch() -> None:
    # One worker: the second call queues behind the first and cannot finish within the batch's 0.25 s.
    with DefaultExecutor(max_workers=1) as ex:
        results = ex.execute([call("nap", "a", seconds=0.15), call("nap", "b", seconds=0.15)], TOOLS, 0.25)
    assert [r.is_error for r in results] == [False, True]
    assert "did not finish within 0.25 s" in results[1].content


def test_a_call_still_queued_at_its_deadline_never_runs() -> None:
    release, block_done = threading.Event(), threading.Event()
    ran: list[str] = []

    @tool
    def block() -> str:
        """Hold the only worker."""
        release.wait(SLACK)
        block_done.set()
        return "released"

    @tool
    def record(tag: str) -> str:
        """Record that it ran."""
        ran.append(tag)
        return tag

    tools = {"block": block, "record": record}
    ex = DefaultExecutor(max_workers=1)
    try:
        calls = [ToolCall(id="b", name="block"), ToolCall(id="r", name="record", input={"tag": "queued"})]
        results = ex.execute(calls, tools, 0.1)
        assert [r.is_error for r in results] == [True, True]
        release.set()
        assert block_done.wait(SLACK)
        # The only worker is free: had the queued call been left in the pool's queue (first in, first out), it
        # would run before this one. So no waiting is needed to see that it never runs.
        (after,) = ex.execute([ToolCall(id="r2", name="record", input={"tag": "later"})], tools, SLACK)
        assert after.content == "later" and ran == ["later"]
    finally:
        release.set()
        ex.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_infinite_timeout_means_no_limit(driver: Driver, executor: DefaultExecutor) -> None:
    (result,) = driver(executor, [call("anap", seconds=0.05, label="done")], float("inf"))
    assert result.content == "done"


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("timeout", [0, -1.0, float("nan")])
def test_a_timeout_that_is_not_positive_is_a_configuration_error(
    driver: Driver, timeout: float, executor: DefaultExecutor
) -> None:
    with pytest.raises(ConfigurationError, match="tool timeout must be a positive number"):
        driver(executor, [call("add", a=1, b=2)], timeout)


# --- a saturated pool ----------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_abandoned_calls_that_fill_the_pool_do_not_block_later_batches(driver: Driver) -> None:
    release = threading.Event()

    @tool
    def stuck() -> str:
        """Never return (until the test ends)."""
        release.wait(30)
        return "unstuck"

    tools = {"stuck": stuck, "add": add}
    ex = DefaultExecutor(max_workers=2)
    try:
        first = ex.execute([ToolCall(id="s1", name="stuck"), ToolCall(id="s2", name="stuck")], tools, 0.1)
        assert all(r.is_error and "did not finish" in r.content for r in first)
        # Both threads of the pool are now held by abandoned calls (until the test ends). Queued behind them,
        # the call would time out: its answer is the proof that it was not blocked.
        later = [ToolCall(id="a", name="add", input={"a": 2, "b": 2})]
        (result,) = driver(ex, later, SLACK, tools)
        assert result.content == "4" and not result.is_error
        assert ex.pools_replaced == 1
    finally:
        release.set()
        ex.close()


def test_the_pool_is_kept_while_abandoned_calls_leave_room() -> None:
    release = threading.Event()

    @tool
    def stuck() -> str:
        """Never return (until the test ends)."""
        release.wait(30)
        return "unstuck"

    tools = {"stuck": stuck, "add": add}
    ex = DefaultExecutor(max_workers=2)
    try:
        ex.execute([ToolCall(id="s1", name="stuck")], tools, 0.1)
        (result,) = ex.execute([ToolCall(id="a", name="add", input={"a": 1, "b": 1})], tools, SLACK)
        assert result.content == "2"
        assert ex.pools_replaced == 0
        release.set()
    finally:
        release.set()
        ex.close()


def test_an_abandoned_call_that_finishes_frees_its_place() -> None:
    tools, release, returned, _started = gated_tools()
    ex = DefaultExecutor(max_workers=1)
    try:
        (abandoned,) = ex.execute([ToolCall(id="g", name="gate")], tools, 0.05)
        assert abandoned.is_error and returned == []
        release.set()
        # Wait for the executor to see the call end (its future's callback), not for some time to pass.
        deadline = time.monotonic() + SLACK
        while ex._abandoned:
            assert time.monotonic() < deadline, "the abandoned call never ended"
            time.sleep(0.001)
        (result,) = ex.execute([call("add", a=1, b=1)], tools, SLACK)
        assert result.content == "2"
        assert ex.pools_replaced == 0
    finally:
        ex.close()


# --- BaseException and cancellation propagate ---------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("name", ["interrupt", "ainterrupt"])
def test_keyboard_interrupt_propagates(driver: Driver, name: str, executor: DefaultExecutor) -> None:
    with pytest.raises(KeyboardInterrupt):
        driver(executor, [call("add", a=1, b=1), call(name)])


@pytest.mark.parametrize("driver", DRIVERS)
def test_system_exit_propagates(driver: Driver, executor: DefaultExecutor) -> None:
    with pytest.raises(SystemExit):
        driver(executor, [call("exit_now")])


@pytest.mark.parametrize("name", ["gate", "agate"])
def test_cancelling_aexecute_propagates(name: str, executor: DefaultExecutor) -> None:
    tools, release, returned, started = gated_tools()

    async def main() -> None:
        calls = [ToolCall(id="g", name=name), call("add", a=1, b=1)]
        task = asyncio.create_task(executor.aexecute(calls, tools, SLACK))
        assert await asyncio.to_thread(started.wait, SLACK)  # cancelled while the tool runs
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    try:
        asyncio.run(main())
        assert returned == []  # cancelled while the tool still waited for the test: it did not wait for the tool
    finally:
        release.set()


def test_cancelling_aexecute_cancels_async_tools(executor: DefaultExecutor) -> None:
    seen: list[str] = []

    @tool
    async def hang() -> str:
        """Wait forever."""
        seen.append("started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "woke"

    async def main() -> None:
        task = asyncio.create_task(executor.aexecute([ToolCall(id="h", name="hang")], {"hang": hang}, SLACK))
        while not seen:  # cancelled once the tool runs, not after some time
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert seen == ["started", "cancelled"]


def test_an_outer_timeout_around_aexecute_is_not_swallowed(executor: DefaultExecutor) -> None:
    async def main() -> None:
        async with asyncio.timeout(0.05):
            await executor.aexecute([call("anap", seconds=1.0)], TOOLS, SLACK)

    with pytest.raises(TimeoutError):
        asyncio.run(main())


# --- where tools run ---------------------------------------------------------------------------------------


def test_async_tools_in_execute_work_from_inside_a_running_event_loop(executor: DefaultExecutor) -> None:
    async def main() -> list[ToolResult]:
        # a synchronous run called from async code: execute must not need this thread's loop
        return executor.execute([call("anap", seconds=0.01, label="ok"), call("add", a=1, b=2)], TOOLS, SLACK)

    results = asyncio.run(main())
    assert [r.content for r in results] == ["ok", "3"]


def test_sync_tools_run_in_pool_threads_and_see_the_callers_context(executor: DefaultExecutor) -> None:
    request_id.set("req-42")
    try:
        results = run_sync(executor, [call("whoami"), call("awhoami")])
        for r in results:
            thread, seen = str(r.content).split("|")
            assert thread.startswith("agentfsm-tool")
            assert seen == "req-42"
    finally:
        request_id.set("-")


def test_aexecute_runs_sync_tools_in_the_pool_and_async_tools_on_the_loop(executor: DefaultExecutor) -> None:
    async def main() -> tuple[str, list[ToolResult]]:
        request_id.set("req-7")
        results = await executor.aexecute([call("whoami"), call("awhoami")], TOOLS, SLACK)
        return threading.current_thread().name, results

    loop_thread, (sync_result, async_result) = asyncio.run(main())
    assert str(sync_result.content).startswith("agentfsm-tool")
    assert str(sync_result.content).endswith("|req-7")
    assert async_result.content == f"{loop_thread}|req-7"


def test_close_then_reuse_and_context_manager() -> None:
    with DefaultExecutor(max_workers=2) as ex:
        assert run_sync(ex, [call("add", a=1, b=1)])[0].content == "2"
        ex.close()
        assert ex._pool is None
        assert run_sync(ex, [call("add", a=2, b=2)])[0].content == "4"
    assert ex._pool is None


def test_max_workers_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="max_workers"):
        DefaultExecutor(max_workers=0)


# --- no timeout: one call inline -----------------------------------------------------------------


def test_without_a_timeout_the_last_sync_call_runs_inline_and_the_batch_still_overlaps(
    executor: DefaultExecutor,
) -> None:
    barrier = threading.Barrier(3, timeout=SLACK)

    @tool
    def meet(label: str) -> str:
        """Wait for the others, then say where it ran."""
        barrier.wait()
        return threading.current_thread().name

    calls = [ToolCall(id=f"c{i}", name="meet", input={"label": str(i)}) for i in range(3)]
    results = executor.execute(calls, {"meet": meet}, float("inf"))
    assert not barrier.broken  # all three at once: the inline call did not serialise the batch
    threads = [str(r.content) for r in results]
    assert threads[2] == threading.current_thread().name
    assert all(t.startswith("agentfsm-tool") for t in threads[:2])


def test_without_a_timeout_an_async_call_stays_in_the_pool(executor: DefaultExecutor) -> None:
    (result,) = executor.execute([call("awhoami")], TOOLS, float("inf"))
    assert str(result.content).startswith("agentfsm-tool")


def test_with_a_timeout_no_call_runs_in_the_callers_thread(executor: DefaultExecutor) -> None:
    (result,) = executor.execute([call("whoami")], TOOLS, 60.0)
    assert str(result.content).startswith("agentfsm-tool")


def test_an_inline_call_runs_in_a_copy_of_the_callers_context(executor: DefaultExecutor) -> None:
    @tool
    def stamp() -> str:
        """Read the caller's value, then set another."""
        seen = request_id.get()
        request_id.set("set-by-tool")
        return seen

    request_id.set("req-9")
    try:
        (result,) = executor.execute([call("stamp")], {"stamp": stamp}, float("inf"))
        assert result.content == "req-9"
        assert request_id.get() == "req-9"  # the tool's own change stayed in its copy
    finally:
        request_id.set("-")


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("timeout", [5.0, float("inf")], ids=["timeout", "no-timeout"])
def test_every_call_runs_inside_the_call_scope_in_its_own_thread(
    driver: Driver, timeout: float, executor: DefaultExecutor
) -> None:
    """``call_scope`` (what tracing sets) wraps each call where it runs, whatever runs it."""
    from contextlib import contextmanager

    from agentfsm.tools.executor import call_scope

    entered: list[tuple[str, str]] = []

    @contextmanager
    def scope(c: ToolCall) -> Iterator[None]:
        entered.append((c.id, threading.current_thread().name))
        request_id.set(f"in scope of {c.id}")  # seen by the call, not by the caller
        yield

    calls = [call("whoami", "w1"), call("awhoami", "a1"), call("whoami", "w2"), call("add", "x", a=1, b="no")]
    token = call_scope.set(scope)
    try:
        results = driver(executor, calls, timeout)
    finally:
        call_scope.reset(token)
    assert sorted(c for c, _ in entered) == ["a1", "w1", "w2"]  # the invalid call never ran
    for r in results[:3]:
        thread, seen = str(r.content).split("|")
        assert seen == f"in scope of {r.tool_use_id}"
        assert (r.tool_use_id, thread) in entered
    assert request_id.get() == "-"


@pytest.mark.parametrize("name", ["stamp", "astamp"])
def test_a_lone_call_in_aexecute_cannot_change_the_callers_context(name: str, executor: DefaultExecutor) -> None:
    @tool
    def stamp() -> str:
        """Set a context variable."""
        request_id.set("set-by-tool")
        return "ok"

    @tool
    async def astamp() -> str:
        """Set a context variable, asynchronously."""
        request_id.set("set-by-tool")
        return "ok"

    tools = {"stamp": stamp, "astamp": astamp}

    async def main() -> str:
        request_id.set("caller")
        await executor.aexecute([ToolCall(id="c", name=name, input={})], tools, SLACK)
        return request_id.get()

    assert asyncio.run(main()) == "caller"


def test_by_default_a_sync_tool_runs_in_the_thread_that_called_run() -> None:
    """The default policy has no tool timeout, so a tool can use what belongs to the calling thread,
    as in a hand-written loop: here a sqlite3 connection, which refuses other threads."""
    import sqlite3

    from agentfsm import Agent, Policy
    from agentfsm.sim import Simulator
    from agentfsm.sim import replies as r

    db = sqlite3.connect(":memory:")
    db.execute("create table t (v text)")
    db.execute("insert into t values ('forty-two')")

    @tool
    def query() -> str:
        """Read the value."""
        return str(db.execute("select v from t").fetchone()[0])

    assert Policy().tool_timeout is None
    sim = Simulator([r.tool_use("query", {}), r.text("It is forty-two.")])
    result = Agent(client=sim.client(max_retries=0), model="claude-sonnet-4-6", tools=[query], logger=None).run("?")
    assert result.final_state == "done", result.error
    assert sim.requests[1].messages[-1]["content"][0]["content"] == "forty-two"
    assert not sim.requests[1].messages[-1]["content"][0].get("is_error")


# --- the traceback of a tool that raised ------------------------------------------------------------------------


def _ratio(a: int, b: int) -> float:
    return a / b  # the ZeroDivisionError: line RATIO_LINE


@tool
def divide(a: int, b: int) -> float:
    """Divide a by b."""
    return _ratio(a, b)  # line DIVIDE_LINE


@tool
async def adivide(a: int, b: int) -> float:
    """Divide a by b, asynchronously."""
    return _ratio(a, b)  # line ADIVIDE_LINE


def line_of(marker: str) -> int:
    lines = Path(__file__).read_text(encoding="utf-8").splitlines()
    return next(n for n, text in enumerate(lines, 1) if text.rstrip().endswith(f"line {marker}"))


def assert_points_at_the_tool(tb: str | None, tool_name: str, marker: str) -> None:
    """The tool's file and line, then the helper's raising line, and nothing of agentfsm's executor."""
    assert tb is not None and tb.startswith("Traceback (most recent call last):\n")
    assert f'File "{__file__}", line {line_of(marker)}, in {tool_name}' in tb
    assert f'File "{__file__}", line {line_of("RATIO_LINE")}, in _ratio' in tb
    assert tb.index(f"in {tool_name}") < tb.index("in _ratio")  # outermost first, as Python prints it
    assert tb.endswith("ZeroDivisionError: division by zero\n")
    assert "agentfsm/tools/executor.py" not in tb  # the executor's frames are trimmed


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(("name", "marker"), [("divide", "DIVIDE_LINE"), ("adivide", "ADIVIDE_LINE")])
def test_a_tool_that_raises_keeps_its_traceback_on_the_result_not_in_what_the_model_reads(
    driver: Driver, name: str, marker: str, executor: DefaultExecutor
) -> None:
    tools = {"divide": divide, "adivide": adivide}
    (result,) = driver(executor, [call(name, "c1", a=1, b=0)], 5.0, tools)
    assert result.is_error and result.content == f"tool '{name}' raised ZeroDivisionError: division by zero"
    assert_points_at_the_tool(result.traceback, name, marker)
    assert result.to_block() == {
        "type": "tool_result",
        "tool_use_id": "c1",
        "content": result.content,
        "is_error": True,
    }


@pytest.mark.parametrize("driver", DRIVERS)
def test_calls_that_did_not_raise_carry_no_traceback(driver: Driver, executor: DefaultExecutor) -> None:
    calls = [call("add", a=1, b=2), call("refuse", reason="rude"), call("weird"), call("nope")]
    results = driver(executor, calls)
    assert [r.is_error for r in results] == [False, True, True, True]
    assert [r.traceback for r in results] == [None] * 4  # a message written for the model is not a bug


def test_a_long_traceback_keeps_the_tools_line_and_the_error() -> None:
    @tool
    def shout() -> str:
        """Fail with a very long message."""
        raise ValueError("A" * 30_000 + " the end")  # line SHOUT_LINE

    (result,) = DefaultExecutor().execute([ToolCall(id="s", name="shout")], {"shout": shout}, float("inf"))
    tb = result.traceback
    assert tb is not None and len(tb) <= MAX_TRACEBACK_CHARS + 100
    assert f'File "{__file__}", line {line_of("SHOUT_LINE")}, in shout' in tb
    assert "characters of the traceback cut by agentfsm" in tb and tb.endswith(" the end\n")


def test_the_traceback_is_redacted_like_every_other_field() -> None:
    key = "sk-live-secret-0123456789"

    @tool
    def leak() -> str:
        """Fail, quoting a credential."""
        raise PermissionError(f"401 for key {key} and sk-ant-api03-abcdefghijkl")

    (raw,) = DefaultExecutor().execute([ToolCall(id="k", name="leak")], {"leak": leak}, float("inf"))
    assert raw.traceback is not None and key in raw.traceback  # redacted on its way to the history
    kept = for_history(raw, limit=None, secrets=[key])
    assert kept.traceback is not None and key not in kept.traceback and "sk-ant-api03" not in kept.traceback
    assert "PermissionError: 401 for key [REDACTED] and [REDACTED]" in kept.traceback and "in leak" in kept.traceback
    assert key not in str(kept.content)
