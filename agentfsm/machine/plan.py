"""A plan: what the next step of a conversation needs, decided before anything is done.

``core.plan`` returns one of these without touching the network or running a
tool. The loop (``agentfsm.machine.loop``) yields the ones that need a runner —
``SendRequest`` and ``RunTools`` (I/O, ``RunTools`` announced by ``ToolsDue``),
``AwaitHook`` and ``AwaitAction`` (an ``async def`` hook or action to await) —
and each runner performs them its own way and sends the outcome back: the sync and async drivers, the durable
engines' steps, the batch runner's batches. ``Fire`` and ``Suspend`` need no
runner: the loop carries them out itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentfsm.machine.table import Transition
from agentfsm.tools.calls import ToolCall, ToolResult


@dataclass(frozen=True)
class SendRequest:
    """I/O the next step needs: send this request (through ``client.beta.messages`` when ``betas`` is set),
    after waiting ``delay`` seconds; the runner answers with ``(Reply | RequestFailure, latency_ms)``."""

    params: dict[str, Any]
    timeout: float | None
    #: The agent's betas plus those this request's parameters need (compaction, fallbacks, credit tokens).
    betas: tuple[str, ...] = ()
    #: 0 for the first send; n for the n-th resend of a request whose stream broke (``core.resend``).
    attempt: int = 0
    #: Seconds to wait before sending: the backoff before a resend.
    delay: float = 0.0

    def again(self, delay: float) -> SendRequest:
        """The same request, sent again after ``delay`` seconds."""
        return SendRequest(self.params, self.timeout, self.betas, self.attempt + 1, delay)


@dataclass(frozen=True)
class RunTools:
    """I/O the next step needs: run these tool calls (the runner answers with their ``ToolResult`` list),
    then fire ``transition``."""

    transition: Transition
    calls: list[ToolCall]
    #: Commits one call's result as soon as it finished (the ledger's ``commit_call``): a runner whose
    #: executor reports each result as it completes calls it with each, from the loop's thread, one at a
    #: time; the results it returns are committed at the end either way (those not committed yet).
    commit: Callable[[ToolResult], None] | None = None


@dataclass(frozen=True)
class Reconcile:
    """I/O the next step needs first: run the ``reconcile`` checks of these calls in doubt (their tools'
    ``reconcile``, each under ``timeout`` s) and answer with their ``agentfsm.tools.reconcile.Checked``
    list, in call order (``reconcile.check_all`` / ``acheck_all`` do exactly that)."""

    calls: list[ToolCall]
    timeout: float


@dataclass(frozen=True)
class ToolsDue:
    """The step runs tool calls next: answer None when you are ready to start them. Only then does the loop
    record them as started (and save): a runner that queues work — the batch runner, applying a whole
    batch's results before it runs any tools — leaves no call in doubt if it dies before starting it.
    The drivers and the engines answer at once."""

    plan: RunTools


@dataclass(frozen=True)
class Fire:
    """No I/O: fire ``transition``."""

    transition: Transition


@dataclass(frozen=True)
class AwaitHook:
    """The state's hook is ``async def``: await ``hook(conv)`` and answer with what it returned (the loop
    plans with that choice). A sync runner refuses it."""

    state: str
    hook: Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class AwaitAction:
    """The transition's action is ``async def``: await it inside ``core.acting`` (which checks and, on
    failure, puts back what it changed), then answer None; the loop fires the transition. A sync runner
    refuses it."""

    transition: Transition


@dataclass(frozen=True)
class Suspend:
    """No transition: the run stops in ``state``, waiting for ``resume`` (the driver calls ``conv.suspend()``)."""

    state: str


Plan = SendRequest | RunTools | Fire | AwaitHook | Suspend
#: What the loop yields to its runner.
Effect = SendRequest | ToolsDue | RunTools | AwaitHook | AwaitAction | Reconcile
