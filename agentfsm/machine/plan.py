"""A plan: what the next step of a conversation needs, decided before anything is done.

``Conversation.plan()`` returns one of these without touching the network or
running a tool; a driver (``agentfsm.machine.drivers``, or a durable engine)
performs the I/O it names and hands the outcome back to the conversation.
Two plans need no I/O but something of the driver: ``AwaitHook`` (an
``async def`` hook to await; ``conv.plan(choice)`` then plans with what it
returned) and ``Suspend`` (the run stops here, waiting: ``conv.suspend()``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentfsm.machine.table import Transition
from agentfsm.tools.calls import ToolCall


@dataclass(frozen=True)
class SendRequest:
    """I/O the next step needs: send this request (through ``client.beta.messages`` when ``betas`` is set)."""

    params: dict[str, Any]
    timeout: float | None
    #: The agent's betas plus those this request's parameters need (compaction, fallbacks, credit tokens).
    betas: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunTools:
    """I/O the next step needs: run these tool calls, then fire ``transition``."""

    transition: Transition
    calls: list[ToolCall]


@dataclass(frozen=True)
class Fire:
    """No I/O: fire ``transition``."""

    transition: Transition


@dataclass(frozen=True)
class AwaitHook:
    """The state's hook is ``async def``: await ``hook(conv)``, then plan again with ``conv.plan(choice)``."""

    state: str
    hook: Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Suspend:
    """No transition: the run stops in ``state``, waiting for ``resume`` (the driver calls ``conv.suspend()``)."""

    state: str


Plan = SendRequest | RunTools | Fire | AwaitHook | Suspend
