"""Helpers for testing an agent: every driver, every event, golden traces, a clock that does not wait.

* ``DRIVERS`` and ``drive(agent, prompt, driver)``: run the same test under ``run``, ``arun``,
  ``stream`` and ``astream`` (``client_for(sim, driver)`` gives the client each needs). The four
  must end the same way; a test parametrised over ``DRIVERS`` shows that they do.
* ``capture_events()``: every event of every run inside the block, as ``Event`` models (what
  ``result.events`` holds), like ``structlog.testing.capture_logs`` — also for runs whose result
  a test never sees (a resumed run, a run inside the code under test), and with logging off.
* ``assert_trace(result, [...])``: the path a run took against a golden one, with a step-by-step
  diff. Works on anything with a trace: a ``RunResult``, a ``Conversation`` (so far), a replayed
  run, or a list of ``TraceStep``; the expected path lists state names, the first included,
  exactly as ``result.path`` does.
* ``FakeClock`` and ``use_clock``: conversations started inside ``with use_clock(FakeClock())``
  read their wall time on it, and its ``sleep`` (the backoff before a broken stream is sent again)
  returns at once, moving the clock: a wall budget or a backoff is tested exactly, with no sleeping.
  The stores take ``clock=`` for their leases.
* ``explore(agent, depth=4)``: every sequence of replies up to ``depth`` requests, with faults and
  crashes, each path checked (``agentfsm.exploring``); ``evaluate`` runs cases (``agentfsm.eval``).
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, get_args

from agentfsm.clock import use as use_clock
from agentfsm.errors import ConfigurationError
from agentfsm.observe.events import Event, add_tap, remove_tap
from agentfsm.result import RunResult, TraceStep

if TYPE_CHECKING:
    import anthropic

    from agentfsm.agent import Agent
    from agentfsm.machine.streaming import StreamEvent
    from agentfsm.sim import Simulator

__all__ = [
    "DRIVERS",
    "Driver",
    "FakeClock",
    "assert_trace",
    "capture_events",
    "client_for",
    "drive",
    "evaluate",
    "explore",
    "shown_text",
    "trace_of",
    "use_clock",
]

#: The four ways to run an agent: sync or async, plain or streamed.
Driver = Literal["run", "arun", "stream", "astream"]
DRIVERS: tuple[Driver, ...] = get_args(Driver)


def _check_driver(driver: str) -> None:
    if driver not in DRIVERS:
        raise ConfigurationError(f"driver must be one of {', '.join(DRIVERS)}; got {driver!r}")


def client_for(simulator: Simulator, driver: str, **client_kw: Any) -> anthropic.Anthropic | anthropic.AsyncAnthropic:
    """The simulator's client of the kind ``driver`` needs: ``AsyncAnthropic`` for ``arun``/``astream``."""
    _check_driver(driver)
    return simulator.async_client(**client_kw) if driver.startswith("a") else simulator.client(**client_kw)


def drive(
    agent: Agent,
    prompt: Any,
    driver: str,
    *,
    stream_events: list[StreamEvent] | None = None,
    **kw: Any,
) -> RunResult:
    """Run ``prompt`` on ``agent`` through ``driver`` (one of ``DRIVERS``) and return the result.

    ``kw`` go to the driver (``conversation_id=``, ``store=``). The agent's client must be of the
    driver's kind (``client_for``). The async drivers run in ``asyncio.run``, so call ``drive`` from
    sync code. For ``stream``/``astream``, every event the stream yielded (the closing
    ``ResultEvent`` included) is appended to ``stream_events`` when it is given.
    """
    _check_driver(driver)
    if driver == "run":
        return agent.run(prompt, **kw)
    if driver == "arun":
        return asyncio.run(agent.arun(prompt, **kw))
    if driver == "stream":
        events = list(agent.stream(prompt, **kw))
    else:

        async def collect(stream: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
            return [event async for event in stream]

        events = asyncio.run(collect(agent.astream(prompt, **kw)))
    if stream_events is not None:
        stream_events.extend(events)
    last = events[-1]
    result = getattr(last, "result", None)
    if not isinstance(result, RunResult):  # every stream ends with one: a failure here is agentfsm's bug
        raise AssertionError(f"a stream ends with its ResultEvent; this one ended with {last!r}")
    return result


def shown_text(stream_events: Sequence[StreamEvent]) -> str:
    """What a caller showing a stream would show at its end: the text events, less what rewinds took back.

    Fails (``AssertionError``) if a rewind takes back more than was shown: agentfsm never sends one.
    """
    shown = ""
    for event in stream_events:
        if event.type == "text":
            shown += event.text
        elif event.type == "rewind":
            if event.chars > len(shown):
                raise AssertionError(f"a rewind of {event.chars} characters after only {len(shown)} were shown")
            shown = shown[: len(shown) - event.chars]
    return shown


@contextmanager
def capture_events() -> Iterator[list[Event]]:
    """Collect every event of every run while the block is open, in order, as ``Event`` models.

    ::

        with capture_events() as events:
            agent.run("Weather in Hanoi?")
        assert [e.event for e in events].count("tool.finished") == 1

    Events are taken where the run records them (``agentfsm.observe.events.add_tap``), after
    redaction and whatever the agent's ``logger`` is (``None`` included); runs in other threads
    of the process are captured too. The list is the caller's to keep after the block.
    """
    captured: list[Event] = []
    add_tap(captured.append)
    try:
        yield captured
    finally:
        remove_tap(captured.append)


class FakeClock:
    """A clock that moves only when told to, or when something sleeps on it (at once).

    ``use_clock(FakeClock())`` puts it in for the conversations started inside the block; a store
    takes it as ``clock=`` for its leases. ``now()`` (or calling it) reads it, ``advance(s)`` moves it,
    ``sleep``/``asleep`` move it and return at once (``asleep`` still yields to the event loop, as a
    real sleep does), and ``slept`` lists every sleep, in order.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        #: Every ``sleep``/``asleep``, in seconds, in order.
        self.slept: list[float] = []

    def now(self) -> float:
        return self._now

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds`` (never back)."""
        if seconds < 0:
            raise ConfigurationError(f"a clock does not go back: advance({seconds!r})")
        self._now += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"


def trace_of(run: Any) -> list[TraceStep]:
    """The trace of a result, conversation, replayed run, or the trace itself."""
    trace = getattr(run, "trace", run)
    if not isinstance(trace, Sequence) or not all(isinstance(s, TraceStep) for s in trace):
        raise TypeError(
            f"assert_trace needs a RunResult, Conversation, ReplayedRun or list of TraceStep, got {type(run).__name__}"
        )
    return list(trace)


def assert_trace(run: Any, expected: Sequence[str]) -> None:
    """Fail, with a step-by-step diff, unless ``run`` visited exactly the states ``expected`` lists."""
    __tracebackhide__ = True  # pytest: report the caller's line, not this one
    if isinstance(expected, str):
        raise TypeError("expected must be a list of state names, not one string")
    trace = trace_of(run)
    actual = [trace[0].source, *(s.dest for s in trace)] if trace else []
    want = list(expected)
    if actual == want:
        return
    raise AssertionError(_explain(want, actual, trace))


def _explain(expected: list[str], actual: list[str], trace: list[TraceStep]) -> str:
    first = next((i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b), None)
    if first is None:
        first = min(len(expected), len(actual))
    # How each actual state was reached, so the diff says which transition went another way.
    how = [""] + [f"via {s.trigger} (turn {s.turn})" for s in trace]
    lines = [
        f"the run's path differs from the expected one from step {first} on "
        f"(expected {len(expected)} states, got {len(actual)}):",
        f"  expected: {' → '.join(expected) or '(empty)'}",
        f"  actual:   {' → '.join(actual) or '(empty)'}",
        "",
        "  (- expected only, + actual only, ~ differs)",
        f"    {'step':>4}  {'expected':<{_W}}  {'actual':<{_W}}  how",
    ]
    # The common start first, so the diff lines up where a person reads the paths as diverging.
    matcher = difflib.SequenceMatcher(None, expected[first:], actual[first:], autojunk=False)
    opcodes = [("equal", 0, first, 0, first)] if first else []
    opcodes += [(op, i1 + first, i2 + first, j1 + first, j2 + first) for op, i1, i2, j1, j2 in matcher.get_opcodes()]
    for op, i1, i2, j1, j2 in opcodes:
        for k in range(max(i2 - i1, j2 - j1)):
            i, j = i1 + k, j1 + k
            want = expected[i] if i < i2 else ""
            got = actual[j] if j < j2 else ""
            if op == "equal":
                mark = " "
            elif want and got:
                mark = "~"
            else:
                mark = "-" if want else "+"
            step = j if got else i
            lines.append(f"  {mark} {step:>4}  {want:<{_W}}  {got:<{_W}}  {how[j] if got else ''}".rstrip())
    return "\n".join(lines)


_W = 28


from agentfsm.eval import evaluate  # noqa: E402  (re-exported; they import FakeClock from here)
from agentfsm.exploring import explore  # noqa: E402
