"""The clock a run reads and waits on: real time, unless a test puts its own in.

A conversation reads its wall time (``Policy.max_wall_seconds``, ``run.finished``'s
``latency_ms``) and waits out the backoff before it resends a broken stream on one
``Clock``, taken when it starts. It is ``SYSTEM`` unless code started the conversation
inside ``use(clock)``: then a wall budget or a backoff can be tested exactly and at once,
with ``agentfsm.testing.FakeClock``, instead of with real sleeps and a bound on wall time
that a busy machine breaks. (Request latencies and tool timeouts stay real: they measure
I/O.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol, TypeVar

__all__ = ["SYSTEM", "Clock", "SystemClock", "current", "use"]


class Clock(Protocol):
    """What a conversation needs of a clock."""

    def now(self) -> float:
        """Seconds on a clock that never goes back (only differences are used)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (the sync drivers)."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Wait ``seconds`` (the async drivers)."""
        ...


class SystemClock:
    """Real time: ``time.perf_counter``, ``time.sleep``, ``asyncio.sleep``."""

    __slots__ = ()

    def now(self) -> float:
        return time.perf_counter()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM = SystemClock()

# A context variable, not a global: a clock put in for one test (or one task) is not seen by
# conversations started elsewhere, and asyncio tasks inherit it from the code that made them.
_current: ContextVar[Clock] = ContextVar("agentfsm_clock", default=SYSTEM)

_C = TypeVar("_C", bound=Clock)


def current() -> Clock:
    """The clock a conversation started now would take."""
    return _current.get()


@contextmanager
def use(clock: _C) -> Iterator[_C]:
    """Conversations started inside the block read and wait on ``clock``, to their end."""
    token = _current.set(clock)
    try:
        yield clock
    finally:
        _current.reset(token)
