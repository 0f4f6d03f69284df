"""The one loop: plan → I/O → complete, written once, as a generator of effects.

``steps(conv)`` runs a conversation until it is finished or waiting. Whenever a
step needs something it cannot do itself — send a request, run tool calls,
await an ``async def`` hook or action — it yields that effect
(``agentfsm.machine.plan``) and takes the outcome back:

==================  =============================================================
yielded             the runner sends back
==================  =============================================================
``SendRequest``     ``(Reply | RequestFailure, latency_ms)``, after ``delay`` s
``ToolsDue``        None, when it is ready to start the step's tool calls
``Reconcile``       the ``Checked`` list of the calls in doubt (their reconcile checks)
``RunTools``        the calls' ``ToolResult`` list (the calls to run now), having
                    called ``RunTools.commit`` with each as it finished, if it can
``AwaitHook``       what the awaited hook returned
``AwaitAction``     None, once the action was awaited inside ``core.acting``
==================  =============================================================

Everything else — the plan, counting the turn, resending a broken stream
(``core.resend``: a new ``SendRequest`` with its attempt and backoff), the
exactly-once ledger, firing transitions, stopping to wait — happens here and
in ``core``, the same for every runner. The runners only do I/O:
``agentfsm.machine.drivers`` (run, arun, stream, astream), the durable engines
(``agentfsm.engines.core``: each request and each tool call a durable step)
and ``agentfsm.batch`` (one loop per conversation, requests answered from a
batch). A behaviour added here reaches all of them.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from agentfsm.machine import around, core
from agentfsm.machine.plan import (
    AwaitAction,
    AwaitHook,
    Effect,
    Fire,
    Reconcile,
    RunTools,
    SendRequest,
    Suspend,
    ToolsDue,
)
from agentfsm.machine.table import Transition

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation

#: The loop as its runners see it.
Steps = Generator[Effect, Any, None]


def steps(conv: Conversation) -> Steps:
    """Run ``conv`` until it is finished or waiting, yielding each effect for the runner to perform."""
    while not conv.stopped:
        yield from step(conv)


def step(conv: Conversation) -> Steps:
    """One step: exactly one transition (or one stop to wait)."""
    plan = core.plan(conv)
    if isinstance(plan, AwaitHook):
        plan = core.plan(conv, (yield plan))
    if isinstance(plan, Suspend):
        core.suspend(conv)
    elif isinstance(plan, SendRequest):
        core.begin_request(conv)
        outcome, latency_ms = yield plan
        while (again := core.resend(conv, plan, outcome)) is not None:
            plan = again
            core.begin_request(conv)  # a resend is a request: counted against max_turns
            outcome, latency_ms = yield plan
        core.complete_request(conv, outcome, latency_ms)
    elif isinstance(plan, RunTools):
        yield ToolsDue(plan)
        screened = yield from around.screen(conv, plan)  # approvals, then before_tool (machine/around.py)
        settled = core.begin_tools(conv, screened.plan)
        if settled.to_check:  # calls in doubt whose tools can say whether the effect happened
            core.reconciled(conv, settled, (yield Reconcile(settled.to_check, core.tool_timeout(conv))))
        ran = (yield RunTools(plan.transition, settled.to_run, core.commit_call(conv))) if settled.to_run else []
        core.commit_tools(conv, ran)  # what was not committed call by call
        # From the ledger (committed before a crash), as the executor made them: after_tool has not seen them.
        held = [settled.results[c.id] for c in screened.plan.calls if c.id in settled.committed]
        results = yield from around.review(conv, screened, [*held, *ran])  # after_tool
        core.finish_tools(conv, plan, settled, [*screened.answered, *results])
        yield from fire(conv, plan.transition)
    else:
        assert isinstance(plan, Fire)  # planning with a hook's choice never asks for another hook
        yield from fire(conv, plan.transition)


def fire(conv: Conversation, transition: Transition) -> Steps:
    """Fire ``transition``, first having the runner await its action when that is ``async def``."""
    if transition.awaits:
        yield AwaitAction(transition)
    core.fire(conv, transition)
