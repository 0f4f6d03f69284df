"""Persistence: the lease, the saves, and the exactly-once rule for tool calls, in one room.

A conversation with a store saves its snapshot after every transition, holds a
lease while it advances (so two workers never advance it at once), and keeps a
ledger of its tool calls: *started* (handed to the executor) and *committed*
(a result saved). After a crash the ledger decides what runs again
(``settle``): a committed call never does; a call that had started and not
committed may have had its effect, so it runs again only if its tool is
idempotent, and is otherwise answered with an is_error "interrupted" result for
the model to read — unless its tool has a ``reconcile`` check, which is asked first
(``reconciled``; ``agentfsm.tools.reconcile``). Each call's result is committed as
soon as it finishes (``commit_call``, called by the runner from the loop's thread
as the executor reports it), so after a crash only the calls still running are in
doubt. The durable engines apply the same rule to what their own journal says
started (``agentfsm.engines.core``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentfsm.errors import ConversationLockedError, StaleConversationError, ToolInterruptedError
from agentfsm.tools.calls import ToolCall, ToolResult, error_result, for_history

if TYPE_CHECKING:
    from agentfsm.machine.conversation import Conversation
    from agentfsm.machine.decisions import Held
    from agentfsm.observe.events import Level
    from agentfsm.stores.base import Store
    from agentfsm.tools.definition import Tool
    from agentfsm.tools.reconcile import Checked


@dataclass
class Settled:
    """What ``settle`` decided for one reply's tool calls."""

    #: The calls to run now, in call order.
    to_run: list[ToolCall] = field(default_factory=list)
    #: The results that need no run: committed earlier, or interrupted for good (by tool_use_id).
    results: dict[str, ToolResult] = field(default_factory=dict)
    #: The calls answered "interrupted" (each a call that started and may have had its effect).
    interrupted: list[ToolCall] = field(default_factory=list)
    #: The ids of the calls in ``to_run`` that had started before (idempotent tools, run again): their
    #: ``ToolContext.attempt`` is 2 or more.
    again: set[str] = field(default_factory=set)
    #: The ids in ``results`` the ledger holds as the executor made them (``after_tool`` has not seen them).
    committed: set[str] = field(default_factory=set)
    #: The calls in doubt whose tool has a ``reconcile`` check: asked before anything else (``reconciled``).
    to_check: list[ToolCall] = field(default_factory=list)


def settle(
    calls: Sequence[ToolCall],
    *,
    committed: Mapping[str, ToolResult],
    started: Collection[str],
    tools: Mapping[str, Tool],
) -> Settled:
    """The exactly-once rule: which of ``calls`` run now, and the results of the others.

    A committed result is never run again; a call that ``started`` and did not commit runs again
    only if its tool is idempotent (``@tool(idempotent=True)``); else its tool's ``reconcile`` check is
    asked first (``to_check``), and without one it is answered as interrupted.
    """
    out = Settled()
    for call in calls:
        tool = tools.get(call.name)
        if call.id in committed:
            out.results[call.id] = committed[call.id]
            out.committed.add(call.id)
        elif call.id in started and not (tool is not None and tool.idempotent):
            if tool is not None and tool.reconcile is not None:
                out.to_check.append(call)
                continue
            out.results[call.id] = error_result(call, ToolInterruptedError(call.name))
            out.interrupted.append(call)
        else:
            out.to_run.append(call)
            if call.id in started:
                out.again.add(call.id)
    return out


def apply_checks(
    settled: Settled, checked: Sequence[Checked], *, limit: int | None, secrets: Sequence[str]
) -> list[str]:
    """Fold the answers of the reconcile checks of ``settled.to_check`` into ``settled``: happened, its result
    (as it will be sent); not happened, the call runs now (``to_run``, as a call run again); unknown, the
    "interrupted" answer. Gives the ids now answered."""
    by_id, answered = {c.id: c for c in settled.to_check}, []
    for check in checked:
        call = by_id[check.tool_use_id]
        if check.outcome == "not_happened":
            settled.to_run.append(call)
            settled.again.add(call.id)
            continue
        if check.outcome == "happened" and check.result is not None:
            settled.results[call.id] = for_history(check.result, limit=limit, secrets=secrets)
            settled.committed.add(call.id)
        else:
            settled.results[call.id] = error_result(call, ToolInterruptedError(call.name))
            settled.interrupted.append(call)
        answered.append(call.id)
    settled.to_check = []
    return answered


class Persistence:
    """One conversation's store, lease and tool ledger. Without a store, only the ledger is kept (in memory),
    so the same conversation object run again after an interruption knows which calls had started."""

    __slots__ = ("_leased", "decision", "owner", "store")

    def __init__(self, store: Store | None) -> None:
        self.store = store
        #: A decision under way on a conversation with no store: spent at the first save, given back on a
        #: release before one (``agentfsm.machine.decisions``).
        self.decision: Held | None = None
        # host:pid:nonce — host and pid let a store see that a crashed holder is gone (see SQLiteStore).
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}" if store is not None else ""
        self._leased = False  # this worker holds the store's lease (checked fresh when first taken)

    def save(self, conv: Conversation) -> None:
        """Save the conversation as it stands (after a transition, or a change of its ledger)."""
        if self.store is not None:
            conv.runstate.revision += 1
            self.store.save(conv.snapshot())
        if self.decision is not None:  # the decision's first save: it stands, whatever happens next
            held, self.decision = self.decision, None
            held.spend()

    def claim(self, conv: Conversation) -> None:
        """Hold (or renew) this worker's lease on the conversation; refuse to advance without it.

        When the lease is first taken, the stored conversation must still be the one this worker
        holds: a worker that loaded it while another was advancing it would fork its history (and
        run again the tools the other committed).
        """
        store = self.store
        if store is None:
            return
        if not store.acquire(conv.id, self.owner, conv.policy.lease_seconds):
            raise ConversationLockedError(conv.id)
        if not self._leased:
            revision = conv.runstate.revision
            try:
                stored = store.load(conv.id).revision
            except KeyError:  # not stored (yet, or any more): nothing to fork
                stored = revision
            if stored != revision:
                store.release(conv.id, self.owner)
                raise StaleConversationError(conv.id, revision, stored)
            self._leased = True

    def release(self, conv: Conversation) -> None:
        """Give up this worker's lease (the drivers do it when a run returns or stops)."""
        if self.decision is not None:  # stopped before the decision's first save: nothing of it happened
            held, self.decision = self.decision, None
            held.give_back()
        if self.store is not None:
            self._leased = False
            self.store.release(conv.id, self.owner)

    def start_tools(self, conv: Conversation, calls: Sequence[ToolCall]) -> Settled:
        """Settle ``calls`` against the ledger and record the ones about to run as started (saved first).

        An "interrupted" answer is committed with them: it is the call's answer for good, and a call
        dropped from the started list must not look never started to a later resume.
        """
        run = conv.runstate
        settled = settle(calls, committed=run.tool_results, started=run.tools_started, tools=conv.agent.tool_map)
        for call in settled.interrupted:
            conv.emit("tool.interrupted", level="warning", tool=call.name, tool_use_id=call.id)
            if self.store is not None:
                run.tool_results[call.id] = settled.results[call.id]
        if settled.to_run:
            run.tools_started = [c.id for c in [*settled.to_run, *settled.to_check]]
            self.save(conv)
        return settled

    def reconciled(self, conv: Conversation, settled: Settled, checked: Sequence[Checked]) -> None:
        """Carry out what the reconcile checks of ``settled.to_check`` said (``apply_checks``), committing the
        results it settled (happened, or interrupted); a call that runs now stays recorded as started (a crash
        while it runs leaves it in doubt again). One save for all of them."""
        run, by_id = conv.runstate, {c.id: c for c in settled.to_check}
        for check in checked:
            call = by_id[check.tool_use_id]
            extra = {"reason": check.reason} if check.reason is not None else {}
            level: Level = "warning" if check.outcome == "unknown" else "info"
            said = {"outcome": check.outcome, **extra}
            conv.emit("tool.reconciled", level=level, tool=call.name, tool_use_id=call.id, **said)
            if check.outcome == "unknown":
                conv.emit("tool.interrupted", level="warning", tool=call.name, tool_use_id=call.id)
        limit, secrets = conv.policy.max_tool_result_chars, conv.agent.secrets()
        settled_now = apply_checks(settled, checked, limit=limit, secrets=secrets)
        if self.store is not None:
            run.tool_results.update((i, settled.results[i]) for i in settled_now)
        run.tools_started = [c.id for c in settled.to_run]
        if checked:
            self.save(conv)

    def commit_call(self, conv: Conversation, result: ToolResult) -> None:
        """Commit one call's result as soon as it finished (the runner calls it from the loop's thread, one at
        a time, as the executor reports each result): stored as it will be sent (cut, credentials redacted),
        as the executor made it (``after_tool`` reviews it when the step goes on, on a resume too)."""
        if self.store is None:
            return
        run = conv.runstate
        run.tool_results[result.tool_use_id] = for_history(
            result, limit=conv.policy.max_tool_result_chars, secrets=conv.agent.secrets()
        )
        if result.tool_use_id in run.tools_started:  # started and not finished: the calls in doubt, only
            run.tools_started = [i for i in run.tools_started if i != result.tool_use_id]
        self.save(conv)

    def commit(self, conv: Conversation, results: Sequence[ToolResult]) -> None:
        """Commit what ran and was not committed call by call (an executor that reports only the whole
        batch): one save, none when every result is committed already."""
        if self.store is None:
            return
        run, policy, secrets = conv.runstate, conv.policy, conv.agent.secrets()
        fresh = [r for r in results if r.tool_use_id not in run.tool_results]
        if not fresh:
            return
        for result in fresh:
            run.tool_results[result.tool_use_id] = for_history(
                result, limit=policy.max_tool_result_chars, secrets=secrets
            )
        run.tools_started = [i for i in run.tools_started if i not in run.tool_results]
        self.save(conv)
